/**
 * iSCSI Boot Firmware Table (iBFT) 1.03 constants: structure ids, versions,
 * lengths, offsets and flag bits, in one place. Names follow the iBFT 1.03
 * specification (Microsoft, "iSCSI Boot Firmware Table (iBFT) as Defined in
 * ACPI 1.0b Specification", §3) and Linux `include/linux/iscsi_ibft.h`.
 *
 * @module
 */

/** Table signatures: `iBFT` (spec), `IBFT` (ACPI table name some firmware uses), `BIFT` (Broadcom). */
export const IBFT_SIGNATURES = ["iBFT", "IBFT", "BIFT"] as const;
/** Signatures the kernel looks for in low memory (drivers/firmware/iscsi_ibft_find.c). */
export const IBFT_MEM_SIGNATURES = ["iBFT", "BIFT"] as const;

/** The only table revision defined (§3.3); the kernel refuses others. */
export const IBFT_REVISION = 1;

/**
 * §3.3 table header: the 36-byte ACPI header with the iBFT's own naming
 * (oem_revision..creator_revision are "reserved"), plus 12 reserved bytes.
 */
export const HEADER = {
  LENGTH: 48,
  SIGNATURE: 0, // 4 bytes
  TABLE_LENGTH: 4, // u32
  REVISION: 8, // u8
  CHECKSUM: 9, // u8: all `length` bytes sum to 0 mod 256
  OEM_ID: 10, // 6 bytes
  OEM_ID_LENGTH: 6,
  OEM_TABLE_ID: 16, // 8 bytes
  OEM_TABLE_ID_LENGTH: 8,
} as const;

/** The largest table we accept: every structure and string offset is a u16. */
export const IBFT_MAX_LENGTH = 0x10000;

/** §3.2 structure ids. */
export const STRUCTURE_ID = {
  RESERVED: 0,
  CONTROL: 1,
  INITIATOR: 2,
  NIC: 3,
  TARGET: 4,
  EXTENSIONS: 5,
} as const;

/** Every structure is version 1 in iBFT 1.03. */
export const STRUCTURE_VERSION = 1;

/** Common structure header (§3.2): id u8, version u8, length u16, index u8, flags u8. */
export const STRUCT_HEADER = {
  ID: 0,
  VERSION: 1,
  LENGTH: 2,
  INDEX: 4,
  FLAGS: 5,
  SIZE: 6,
} as const;

/**
 * §3.4 control structure. After the fixed part come u16 offsets in pairs
 * (NIC n, target n); pairs past the first two are the "expansion" area that
 * iPXE fills for more NICs/targets. The length says how many there are.
 */
export const CONTROL = {
  MIN_LENGTH: 18,
  EXTENSIONS: 6, // u16, offset of an extensions structure (none defined)
  INITIATOR_OFFSET: 8,
  FIRST_PAIR: 10, // NIC0, target0, NIC1, target1, then the expansion area
  PAIR_SIZE: 4,
} as const;

/** §3.5 initiator structure: exactly 74 bytes. */
export const INITIATOR = {
  LENGTH: 74,
  ISNS_SERVER: 6,
  SLP_SERVER: 22,
  PRIMARY_RADIUS: 38,
  SECONDARY_RADIUS: 54,
  NAME_LENGTH: 70,
  NAME_OFFSET: 72,
} as const;

/** §3.6 NIC structure: exactly 102 bytes. */
export const NIC = {
  LENGTH: 102,
  IP: 6,
  PREFIX_LENGTH: 22, // "subnet mask prefix"
  ORIGIN: 23,
  GATEWAY: 24,
  PRIMARY_DNS: 40,
  SECONDARY_DNS: 56,
  DHCP: 72,
  VLAN: 88, // u16
  MAC: 90, // 6 bytes
  PCI_BDF: 96, // u16: bus << 8 | device << 3 | function
  HOSTNAME_LENGTH: 98,
  HOSTNAME_OFFSET: 100,
} as const;

/** §3.7 target structure: exactly 54 bytes. */
export const TARGET = {
  LENGTH: 54,
  IP: 6,
  PORT: 22, // u16
  LUN: 24, // 8 bytes, SAM-2 LUN structure
  CHAP_TYPE: 32,
  NIC_ASSOCIATION: 33,
  NAME_LENGTH: 34,
  NAME_OFFSET: 36,
  CHAP_NAME_LENGTH: 38,
  CHAP_NAME_OFFSET: 40,
  CHAP_SECRET_LENGTH: 42,
  CHAP_SECRET_OFFSET: 44,
  REVERSE_CHAP_NAME_LENGTH: 46,
  REVERSE_CHAP_NAME_OFFSET: 48,
  REVERSE_CHAP_SECRET_LENGTH: 50,
  REVERSE_CHAP_SECRET_OFFSET: 52,
} as const;

/** Control structure flags (§3.4). */
export const CONTROL_FLAG = {
  /** Set: firmware supports boot failover (several logins); clear: single login only. */
  BOOT_FAILOVER: 0x01,
} as const;

/** Initiator, NIC and target flags (§3.5–3.7). */
export const FLAG = {
  BLOCK_VALID: 0x01,
  FIRMWARE_BOOT_SELECTED: 0x02,
  /** NIC only: the IP address is global (clear: link-local). */
  NIC_GLOBAL: 0x04,
  /** Target only: CHAP through RADIUS. */
  TARGET_RADIUS_CHAP: 0x04,
  /** Target only: reverse CHAP through RADIUS. */
  TARGET_RADIUS_REVERSE_CHAP: 0x08,
} as const;

/** Target CHAP types (§3.7). */
export const CHAP_TYPE = { NONE: 0, CHAP: 1, MUTUAL: 2 } as const;

/** NIC address origins: Windows' NL_PREFIX_ORIGIN values, as §3.6 says. */
export const ORIGINS = ["other", "manual", "well-known", "dhcp", "router-advertisement"] as const;

/** Standard structure alignment the encoder uses (EDK2 uses 8 as well). */
export const STRUCTURE_ALIGNMENT = 8;

/** Where `mem` scans (drivers/firmware/iscsi_ibft_find.c): 512 KiB to 1 MiB, 16-byte steps. */
export const MEM_SCAN = {
  START: 0x80000,
  END: 0x100000,
  STEP: 16,
  /** VGA memory and ROM shadows; never holds the table. */
  HOLE_START: 0xa0000,
  HOLE_END: 0xc0000,
} as const;

/** Where the iscsi_ibft module shows the kernel-parsed table, below the sysfs root. */
export const SYSFS_IBFT_DIR = "firmware/ibft";
/** ACPI tables below the sysfs root, tried in this order. */
export const ACPI_TABLE_NAMES = ["IBFT", "iBFT", "BIFT"] as const;
export const SYSFS_ACPI_TABLES_DIR = "firmware/acpi/tables";
