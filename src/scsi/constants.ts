/**
 * SCSI constants in one place: operation codes (SPC-4, SBC-3), SAM status
 * codes, sense keys and the additional sense codes a disk initiator meets.
 * Names follow the T10 standards so that a reader can look them up.
 */

/** Operation codes (SPC-4 §4.3, SBC-3 §5). */
export const OP = {
  TEST_UNIT_READY: 0x00,
  REQUEST_SENSE: 0x03,
  INQUIRY: 0x12,
  MODE_SENSE_6: 0x1a,
  READ_CAPACITY_10: 0x25,
  READ_10: 0x28,
  WRITE_10: 0x2a,
  SYNCHRONIZE_CACHE_10: 0x35,
  WRITE_SAME_10: 0x41,
  UNMAP: 0x42,
  MODE_SENSE_10: 0x5a,
  READ_16: 0x88,
  WRITE_16: 0x8a,
  SYNCHRONIZE_CACHE_16: 0x91,
  WRITE_SAME_16: 0x93,
  /** SERVICE ACTION IN(16); READ CAPACITY(16) is its service action 0x10. */
  SERVICE_ACTION_IN_16: 0x9e,
  REPORT_LUNS: 0xa0,
} as const;

/** SERVICE ACTION IN(16) service actions (SBC-3 §5.16). */
export const SAI_READ_CAPACITY_16 = 0x10;

/** Names of operation codes, for messages. */
export const OP_NAMES: Readonly<Record<number, string>> = {
  [OP.TEST_UNIT_READY]: "TEST UNIT READY",
  [OP.REQUEST_SENSE]: "REQUEST SENSE",
  [OP.INQUIRY]: "INQUIRY",
  [OP.MODE_SENSE_6]: "MODE SENSE(6)",
  [OP.READ_CAPACITY_10]: "READ CAPACITY(10)",
  [OP.READ_10]: "READ(10)",
  [OP.WRITE_10]: "WRITE(10)",
  [OP.SYNCHRONIZE_CACHE_10]: "SYNCHRONIZE CACHE(10)",
  [OP.WRITE_SAME_10]: "WRITE SAME(10)",
  [OP.UNMAP]: "UNMAP",
  [OP.MODE_SENSE_10]: "MODE SENSE(10)",
  [OP.READ_16]: "READ(16)",
  [OP.WRITE_16]: "WRITE(16)",
  [OP.SYNCHRONIZE_CACHE_16]: "SYNCHRONIZE CACHE(16)",
  [OP.WRITE_SAME_16]: "WRITE SAME(16)",
  [OP.SERVICE_ACTION_IN_16]: "READ CAPACITY(16)",
  [OP.REPORT_LUNS]: "REPORT LUNS",
};

/** SAM-5 status codes (SAM-5 §5.3). */
export const STATUS = {
  GOOD: 0x00,
  CHECK_CONDITION: 0x02,
  CONDITION_MET: 0x04,
  BUSY: 0x08,
  RESERVATION_CONFLICT: 0x18,
  TASK_SET_FULL: 0x28,
  ACA_ACTIVE: 0x30,
  TASK_ABORTED: 0x40,
} as const;

export const STATUS_NAMES: Readonly<Record<number, string>> = {
  0x00: "GOOD",
  0x02: "CHECK CONDITION",
  0x04: "CONDITION MET",
  0x08: "BUSY",
  0x18: "RESERVATION CONFLICT",
  0x28: "TASK SET FULL",
  0x30: "ACA ACTIVE",
  0x40: "TASK ABORTED",
};

/** Sense keys (SPC-4 §4.5.6, table 48). */
export const SENSE_KEY = {
  NO_SENSE: 0x0,
  RECOVERED_ERROR: 0x1,
  NOT_READY: 0x2,
  MEDIUM_ERROR: 0x3,
  HARDWARE_ERROR: 0x4,
  ILLEGAL_REQUEST: 0x5,
  UNIT_ATTENTION: 0x6,
  DATA_PROTECT: 0x7,
  BLANK_CHECK: 0x8,
  VENDOR_SPECIFIC: 0x9,
  COPY_ABORTED: 0xa,
  ABORTED_COMMAND: 0xb,
  VOLUME_OVERFLOW: 0xd,
  MISCOMPARE: 0xe,
  COMPLETED: 0xf,
} as const;

export const SENSE_KEY_NAMES: readonly string[] = [
  "NO SENSE",
  "RECOVERED ERROR",
  "NOT READY",
  "MEDIUM ERROR",
  "HARDWARE ERROR",
  "ILLEGAL REQUEST",
  "UNIT ATTENTION",
  "DATA PROTECT",
  "BLANK CHECK",
  "VENDOR SPECIFIC",
  "COPY ABORTED",
  "ABORTED COMMAND",
  "RESERVED (0xc)",
  "VOLUME OVERFLOW",
  "MISCOMPARE",
  "COMPLETED",
];

/**
 * Additional sense code / qualifier pairs the retry policy and the error
 * mapping look at (SPC-4 Annex D). Key is `asc << 8 | ascq`.
 */
export const ASC = {
  NO_ADDITIONAL_SENSE: 0x0000,
  LUN_NOT_READY_CAUSE_NOT_REPORTABLE: 0x0400,
  LUN_BECOMING_READY: 0x0401,
  LUN_NOT_READY_INITIALIZING_COMMAND_REQUIRED: 0x0402,
  LUN_NOT_READY_MANUAL_INTERVENTION_REQUIRED: 0x0403,
  LUN_NOT_READY_FORMAT_IN_PROGRESS: 0x0404,
  LUN_NOT_READY_OPERATION_IN_PROGRESS: 0x0407,
  LUN_NOT_READY_ASYMMETRIC_ACCESS_STATE_TRANSITION: 0x040a,
  LUN_NOT_READY_TARGET_PORT_IN_STANDBY: 0x040b,
  LUN_NOT_READY_TARGET_PORT_UNAVAILABLE: 0x040c,
  LUN_NOT_READY_SPACE_ALLOCATION_IN_PROGRESS: 0x0414,
  LUN_NOT_READY_OFFLINE: 0x0412,
  WRITE_ERROR: 0x0c00,
  UNRECOVERED_READ_ERROR: 0x1100,
  MISCOMPARE_DURING_VERIFY: 0x1d00,
  PARAMETER_LIST_LENGTH_ERROR: 0x1a00,
  INVALID_COMMAND_OPERATION_CODE: 0x2000,
  LBA_OUT_OF_RANGE: 0x2100,
  INVALID_FIELD_IN_CDB: 0x2400,
  LUN_NOT_SUPPORTED: 0x2500,
  INVALID_FIELD_IN_PARAMETER_LIST: 0x2600,
  WRITE_PROTECTED: 0x2700,
  HARDWARE_WRITE_PROTECTED: 0x2701,
  LUN_SOFTWARE_WRITE_PROTECTED: 0x2702,
  SPACE_ALLOCATION_FAILED_WRITE_PROTECT: 0x2707,
  NOT_READY_TO_READY_CHANGE: 0x2800,
  POWER_ON_RESET_OR_BUS_DEVICE_RESET: 0x2900,
  POWER_ON_OCCURRED: 0x2901,
  SCSI_BUS_RESET_OCCURRED: 0x2902,
  BUS_DEVICE_RESET_FUNCTION_OCCURRED: 0x2903,
  I_T_NEXUS_LOSS_OCCURRED: 0x2907,
  PARAMETERS_CHANGED: 0x2a00,
  MODE_PARAMETERS_CHANGED: 0x2a01,
  CAPACITY_DATA_HAS_CHANGED: 0x2a09,
  COMMANDS_CLEARED_BY_ANOTHER_INITIATOR: 0x2f00,
  MEDIUM_NOT_PRESENT: 0x3a00,
  REPORTED_LUNS_DATA_HAS_CHANGED: 0x3f0e,
  INQUIRY_DATA_HAS_CHANGED: 0x3f03,
  INTERNAL_TARGET_FAILURE: 0x4400,
  THIN_PROVISIONING_SOFT_THRESHOLD_REACHED: 0x3807,
  ASYMMETRIC_ACCESS_STATE_CHANGED: 0x2a06,
} as const;

/** Human names for the codes above and a few more (SPC-4 Annex D.2). */
export const ASC_NAMES: ReadonlyMap<number, string> = new Map([
  [0x0000, "No additional sense information"],
  [0x0400, "Logical unit not ready, cause not reportable"],
  [0x0401, "Logical unit is in process of becoming ready"],
  [0x0402, "Logical unit not ready, initializing command required"],
  [0x0403, "Logical unit not ready, manual intervention required"],
  [0x0404, "Logical unit not ready, format in progress"],
  [0x0407, "Logical unit not ready, operation in progress"],
  [0x040a, "Logical unit not accessible, asymmetric access state transition"],
  [0x040b, "Logical unit not accessible, target port in standby state"],
  [0x040c, "Logical unit not accessible, target port in unavailable state"],
  [0x0412, "Logical unit not ready, offline"],
  [0x0414, "Logical unit not ready, space allocation in progress"],
  [0x0800, "Logical unit communication failure"],
  [0x0c00, "Write error"],
  [0x0c02, "Write error - auto reallocation failed"],
  [0x1100, "Unrecovered read error"],
  [0x1a00, "Parameter list length error"],
  [0x1d00, "Miscompare during verify operation"],
  [0x2000, "Invalid command operation code"],
  [0x2100, "Logical block address out of range"],
  [0x2400, "Invalid field in CDB"],
  [0x2500, "Logical unit not supported"],
  [0x2600, "Invalid field in parameter list"],
  [0x2700, "Write protected"],
  [0x2701, "Hardware write protected"],
  [0x2702, "Logical unit software write protected"],
  [0x2707, "Space allocation failed write protect"],
  [0x2800, "Not ready to ready change, medium may have changed"],
  [0x2900, "Power on, reset, or bus device reset occurred"],
  [0x2901, "Power on occurred"],
  [0x2902, "SCSI bus reset occurred"],
  [0x2903, "Bus device reset function occurred"],
  [0x2907, "I_T nexus loss occurred"],
  [0x2a00, "Parameters changed"],
  [0x2a01, "Mode parameters changed"],
  [0x2a06, "Asymmetric access state changed"],
  [0x2a09, "Capacity data has changed"],
  [0x2c00, "Command sequence error"],
  [0x2f00, "Commands cleared by another initiator"],
  [0x3807, "Thin provisioning soft threshold reached"],
  [0x3a00, "Medium not present"],
  [0x3f03, "Inquiry data has changed"],
  [0x3f0e, "Reported LUNs data has changed"],
  [0x4400, "Internal target failure"],
  [0x4700, "SCSI parity error"],
  [0x4b00, "Data phase error"],
  [0x5d00, "Failure prediction threshold exceeded"],
]);

/** Peripheral device types (SPC-4 §6.4.2, table 141). */
export const DEVICE_TYPE_NAMES: Readonly<Record<number, string>> = {
  0x00: "disk",
  0x01: "tape",
  0x05: "cd/dvd",
  0x07: "optical",
  0x08: "medium changer",
  0x0c: "storage array controller",
  0x0d: "enclosure",
  0x0e: "simplified direct-access",
  0x1f: "unknown or no device",
};

/** Peripheral device type of a direct-access block device (SBC). */
export const TYPE_DISK = 0x00;

/** VPD page codes (SPC-4 §7.8, SBC-3 §6.6). */
export const VPD = {
  SUPPORTED_PAGES: 0x00,
  UNIT_SERIAL_NUMBER: 0x80,
  DEVICE_IDENTIFICATION: 0x83,
  BLOCK_LIMITS: 0xb0,
  BLOCK_DEVICE_CHARACTERISTICS: 0xb1,
  LOGICAL_BLOCK_PROVISIONING: 0xb2,
} as const;

/** Designator types in the Device Identification VPD page (SPC-4 table 604). */
export const DESIGNATOR_TYPE_NAMES: readonly string[] = [
  "vendor-specific",
  "t10-vendor-id",
  "eui-64",
  "naa",
  "relative-target-port",
  "target-port-group",
  "logical-unit-group",
  "md5-logical-unit",
  "scsi-name-string",
  "protocol-specific-port",
  "uuid",
];

/** Associations in the Device Identification VPD page. */
export const ASSOCIATION_NAMES: readonly string[] = [
  "logical-unit",
  "target-port",
  "target-device",
  "reserved",
];

/** Provisioning types in the LBP VPD page (SBC-3 §6.6.4, table 213). */
export const PROVISIONING_TYPE_NAMES: readonly string[] = [
  "full",
  "resource",
  "thin",
];
