/**
 * The decoded iBFT: typed values that the boot, network and iSCSI layers
 * consume. Every source (ACPI table, sysfs, /dev/mem, a file) yields this
 * model; `isboot ibft --json` prints it (README's field names, plus a few
 * documented extras: `control`, `nics[].global`, `targets[].radiusChap`,
 * `targets[].radiusReverseChap`).
 *
 * Conventions (README, "isboot ibft"):
 * - addresses are strings: dotted quad for IPv4 (stored IPv4-mapped in the
 *   table), RFC 5952 text for IPv6, `null` when the field is zero;
 * - strings the table does not carry (length 0) are `null`;
 * - `mac` is lower-case colon form, `pciBdf` is `bus:device.function` in hex
 *   as lspci prints it (`00:03.0`).
 *
 * @example
 * ```ts
 * import type { IbftTable } from "./model.ts";
 * function bootTargetNames(t: IbftTable): string[] {
 *   return t.targets.filter((x) => x.valid).map((x) => x.name ?? "?");
 * }
 * ```
 *
 * @module
 */

/** How the NIC got its address (Windows NL_PREFIX_ORIGIN, iBFT §3.6). */
export type Origin = "other" | "manual" | "well-known" | "dhcp" | "router-advertisement";

/** Target authentication (iBFT §3.7 CHAP type). */
export type ChapType = "none" | "chap" | "mutual";

/** Table header (ACPI header as iBFT §3.3 names it). */
export interface IbftHeader {
  /** `iBFT`, `IBFT` or `BIFT`. */
  signature: string;
  /** Table length in bytes; `null` when the source (sysfs) does not show it. */
  length: number | null;
  /** Always 1 after validation. */
  revision: number;
  /** Whether the bytes sum to 0; `null` when unknown. Sysfs reports true: the kernel checked it. */
  checksumValid: boolean | null;
  /** OEM id, trailing NULs removed (iPXE: `FENSYS`). */
  oemId: string;
  /** OEM table id, trailing NULs removed (iPXE: `iPXE`). */
  oemTableId: string;
}

/** Control structure (§3.4): what is left after the offsets are followed. */
export interface IbftControl {
  /** Flag bit 0: the firmware supports boot failover (multiple logins). */
  bootFailover: boolean;
}

/** Initiator structure (§3.5). */
export interface IbftInitiator {
  /** iSCSI initiator name (IQN/EUI), or null when absent. */
  name: string | null;
  valid: boolean;
  bootSelected: boolean;
  isnsServer: string | null;
  slpServer: string | null;
  primaryRadius: string | null;
  secondaryRadius: string | null;
}

/** NIC structure (§3.6). `index` is its slot in the control structure. */
export interface IbftNic {
  index: number;
  valid: boolean;
  bootSelected: boolean;
  /** Flag bit 2: the address is global (clear: link-local). */
  global: boolean;
  ip: string | null;
  /** Prefix length (the "subnet mask prefix"), 0..32 for IPv4, 0..128 for IPv6. */
  prefixLength: number;
  origin: Origin;
  gateway: string | null;
  primaryDns: string | null;
  secondaryDns: string | null;
  dhcpServer: string | null;
  /** 802.1Q VLAN id (the low 12 bits of the field); 0 = no VLAN. */
  vlan: number;
  /** `52:54:00:12:34:56`. */
  mac: string;
  /** `bus:device.function` in hex (`00:03.0`); null when the source cannot show it (sysfs without a `device` link). */
  pciBdf: string | null;
  hostname: string | null;
}

/** Target structure (§3.7). `index` is its slot in the control structure. */
export interface IbftTarget {
  index: number;
  valid: boolean;
  bootSelected: boolean;
  /** Flag bit 2: CHAP through RADIUS. */
  radiusChap: boolean;
  /** Flag bit 3: reverse CHAP through RADIUS. */
  radiusReverseChap: boolean;
  ip: string | null;
  /** TCP port (3260 is the iSCSI default). */
  port: number;
  /**
   * LUN number from the 8-byte SAM LUN: single-level peripheral (bus 0) or
   * flat addressing; null for other forms (use {@link lunRaw}).
   */
  lun: number | null;
  /** The 8 LUN bytes as 16 lower-case hex digits, exactly as the table holds them. */
  lunRaw: string;
  chap: ChapType;
  /** Index of the NIC this target is reached through ("NIC association"). */
  nicIndex: number;
  /** iSCSI target name. */
  name: string | null;
  chapName: string | null;
  chapSecret: string | null;
  reverseChapName: string | null;
  reverseChapSecret: string | null;
}

/** A decoded iBFT. */
export interface IbftTable {
  header: IbftHeader;
  /** null when the source (sysfs) does not show it. */
  control: IbftControl | null;
  /** null when the table has no initiator structure. */
  initiator: IbftInitiator | null;
  /** In slot order. */
  nics: IbftNic[];
  /** In slot order. */
  targets: IbftTarget[];
}

/** A table with where it came from, as the sources return it. */
export interface LoadedIbft {
  /** `acpi:PATH`, `sysfs:DIR`, `mem:PATH@0xADDR` or `file:PATH`. */
  source: string;
  table: IbftTable;
  /** Things the user should hear about (e.g. a checksum ignored); never secrets. */
  warnings: string[];
}
