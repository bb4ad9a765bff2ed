/**
 * iSCSI constants (RFC 7143), in one place: opcodes (§11.2.1.2), flag bits,
 * login stages and status classes (§11.13.5), reject reasons (§11.17.1),
 * async events (§11.9.1), task management functions (§11.5.1), key names
 * (§13) and the limits we declare.
 */

/** Length of the Basic Header Segment (§11.2.1). */
export const BHS_LENGTH = 48;
/** A digest is one CRC32C word (§11.2.4.3). */
export const DIGEST_LENGTH = 4;
/** The reserved tag value (§11.2.1.9): no ITT / no TTT. */
export const RESERVED_TAG = 0xffffffff;
/** Well-known iSCSI TCP port (§13.9 of RFC 7143, IANA). */
export const ISCSI_PORT = 3260;

/** Initiator opcodes (§11.2.1.2). */
export const OP_NOP_OUT = 0x00;
export const OP_SCSI_CMD = 0x01;
export const OP_TASK_MGMT_REQ = 0x02;
export const OP_LOGIN_REQ = 0x03;
export const OP_TEXT_REQ = 0x04;
export const OP_DATA_OUT = 0x05;
export const OP_LOGOUT_REQ = 0x06;
export const OP_SNACK_REQ = 0x10;

/** Target opcodes (§11.2.1.2). */
export const OP_NOP_IN = 0x20;
export const OP_SCSI_RESP = 0x21;
export const OP_TASK_MGMT_RESP = 0x22;
export const OP_LOGIN_RESP = 0x23;
export const OP_TEXT_RESP = 0x24;
export const OP_DATA_IN = 0x25;
export const OP_LOGOUT_RESP = 0x26;
export const OP_R2T = 0x31;
export const OP_ASYNC_MSG = 0x32;
export const OP_REJECT = 0x3f;

/** Every opcode a target may send us. */
export const TARGET_OPCODES: ReadonlySet<number> = new Set([
  OP_NOP_IN,
  OP_SCSI_RESP,
  OP_TASK_MGMT_RESP,
  OP_LOGIN_RESP,
  OP_TEXT_RESP,
  OP_DATA_IN,
  OP_LOGOUT_RESP,
  OP_R2T,
  OP_ASYNC_MSG,
  OP_REJECT,
]);

/** Names for logs. */
export const OPCODE_NAMES: Readonly<Record<number, string>> = {
  [OP_NOP_OUT]: "NOP-Out",
  [OP_SCSI_CMD]: "SCSI Command",
  [OP_TASK_MGMT_REQ]: "Task Management Request",
  [OP_LOGIN_REQ]: "Login Request",
  [OP_TEXT_REQ]: "Text Request",
  [OP_DATA_OUT]: "SCSI Data-Out",
  [OP_LOGOUT_REQ]: "Logout Request",
  [OP_SNACK_REQ]: "SNACK Request",
  [OP_NOP_IN]: "NOP-In",
  [OP_SCSI_RESP]: "SCSI Response",
  [OP_TASK_MGMT_RESP]: "Task Management Response",
  [OP_LOGIN_RESP]: "Login Response",
  [OP_TEXT_RESP]: "Text Response",
  [OP_DATA_IN]: "SCSI Data-In",
  [OP_LOGOUT_RESP]: "Logout Response",
  [OP_R2T]: "R2T",
  [OP_ASYNC_MSG]: "Async Message",
  [OP_REJECT]: "Reject",
};

/** Byte 0: the Immediate delivery bit (§11.2.1.1). */
export const FLAG_IMMEDIATE = 0x40;
/** Byte 0: the opcode mask. */
export const OPCODE_MASK = 0x3f;
/** Byte 1: Final bit (§11.2.1.3). */
export const FLAG_FINAL = 0x80;

/** SCSI Command byte 1 (§11.3.1). */
export const CMD_FLAG_READ = 0x40;
export const CMD_FLAG_WRITE = 0x20;
/** Task attribute SIMPLE (§11.3.1). */
export const CMD_ATTR_SIMPLE = 0x01;

/** SCSI Response / Data-In byte 1 residual flags (§11.4.5, §11.7). */
export const RESP_FLAG_BIDI_OVERFLOW = 0x10;
export const RESP_FLAG_BIDI_UNDERFLOW = 0x08;
export const RESP_FLAG_OVERFLOW = 0x04;
export const RESP_FLAG_UNDERFLOW = 0x02;
/** Data-In byte 1: Acknowledge (§11.7.2) and Status (§11.7.3) bits. */
export const DATA_IN_FLAG_ACK = 0x40;
export const DATA_IN_FLAG_STATUS = 0x01;

/** SCSI Response "Response" byte (§11.4.3). */
export const RESPONSE_COMPLETED = 0x00;
export const RESPONSE_TARGET_FAILURE = 0x01;

/** Login/Text byte 1 (§11.12, §11.10): Transit and Continue bits. */
export const LOGIN_FLAG_TRANSIT = 0x80;
export const TEXT_FLAG_CONTINUE = 0x40;
/** Login byte 1 (§11.12.1): CSG in bits 3-2, NSG in bits 1-0, each one of the stages below. */
export const LOGIN_CSG_SHIFT = 2;
export const LOGIN_STAGE_MASK = 3;
/** Login stages (§11.12.3). */
export const STAGE_SECURITY = 0;
export const STAGE_OPERATIONAL = 1;
export const STAGE_FULL_FEATURE = 3;

/** Login status classes (§11.13.5). */
export const LOGIN_CLASS_SUCCESS = 0x00;
export const LOGIN_CLASS_REDIRECT = 0x01;
export const LOGIN_CLASS_INITIATOR_ERROR = 0x02;
export const LOGIN_CLASS_TARGET_ERROR = 0x03;

/** Login status (class << 8 | detail) with their RFC names (§11.13.5). */
export const LOGIN_STATUS_NAMES: Readonly<Record<number, string>> = {
  0x0000: "success",
  0x0101: "target moved temporarily",
  0x0102: "target moved permanently",
  0x0200: "initiator error",
  0x0201: "authentication failure",
  0x0202: "authorization failure",
  0x0203: "target not found",
  0x0204: "target removed",
  0x0205: "unsupported version",
  0x0206: "too many connections",
  0x0207: "missing parameter",
  0x0208: "can't include in session",
  0x0209: "session type not supported",
  0x020a: "session does not exist",
  0x020b: "invalid request during login",
  0x0300: "target error",
  0x0301: "service unavailable",
  0x0302: "out of resources",
};

/** Logout reason codes (§11.14.1). */
export const LOGOUT_CLOSE_SESSION = 0;
export const LOGOUT_CLOSE_CONNECTION = 1;
export const LOGOUT_REMOVE_CONNECTION = 2;

/** Task management functions (§11.5.1) and responses (§11.6.1). */
export const TMF_ABORT_TASK = 1;
export const TMF_ABORT_TASK_SET = 2;
export const TMF_LOGICAL_UNIT_RESET = 5;
export const TMF_RESP_COMPLETE = 0;
export const TMF_RESP_NO_TASK = 1;
export const TMF_RESP_NO_LUN = 2;
export const TMF_RESP_NAMES: Readonly<Record<number, string>> = {
  0: "function complete",
  1: "task does not exist",
  2: "LUN does not exist",
  3: "task still allegiant",
  4: "task allegiance reassignment not supported",
  5: "task management function not supported",
  6: "function authorization failed",
  255: "function rejected",
};

/** Async events (§11.9.1). */
export const ASYNC_SCSI_EVENT = 0;
export const ASYNC_LOGOUT_REQUEST = 1;
export const ASYNC_DROP_CONNECTION = 2;
export const ASYNC_DROP_ALL_CONNECTIONS = 3;
export const ASYNC_NEGOTIATION_REQUEST = 4;
export const ASYNC_TASK_TERMINATION = 5;

/**
 * The longest Time2Wait we honour, s: the top of DefaultTime2Wait's range
 * (§13.15). A Logout Response or an Async Message may name up to 65535 s in
 * its 16-bit field; a root disk is not left waiting 18 hours on one PDU.
 */
export const TIME2WAIT_MAX = 3600;

/** Reject reason: the target found a data digest error in what we sent (§11.17.1). */
export const REJECT_DATA_DIGEST_ERROR = 0x02;

/** Reject reasons (§11.17.1). */
export const REJECT_REASON_NAMES: Readonly<Record<number, string>> = {
  0x01: "reserved",
  0x02: "data (payload) digest error",
  0x03: "SNACK reject",
  0x04: "protocol error",
  0x05: "command not supported",
  0x06: "immediate command reject",
  0x07: "task in progress",
  0x08: "invalid data ack",
  0x09: "invalid PDU field",
  0x0a: "long operation reject",
  0x0b: "deprecated",
  0x0c: "waiting for logout",
};

/** Reject reason: too many immediate commands, resend later (§11.17.1). */
export const REJECT_IMMEDIATE_COMMAND = 0x06;
/** Reject reason: the target is out of resources (no Target Transfer Tag), resend later. */
export const REJECT_LONG_OPERATION = 0x0a;
/** Reject reason: the target asked for a logout and takes no new commands until it. */
export const REJECT_WAITING_FOR_LOGOUT = 0x0c;

/**
 * What the session does with a SCSI command the target rejected, by reason
 * (§11.17.1; docs/iscsi.md, "Rejects", says why):
 * - `recover`: the connection is recovered and the command replayed (at
 *   ErrorRecoveryLevel 0 data cannot be resent alone);
 * - `retry`: resent after a short delay (the RFC's table says the PDU can
 *   be resent; the target was only busy);
 * - `relogin`: held, and replayed after a logout and a new login;
 * - every other reason fails the command with the reason's name.
 */
export const REJECT_ACTIONS: Readonly<Record<number, "recover" | "retry" | "relogin">> = {
  [REJECT_DATA_DIGEST_ERROR]: "recover",
  [REJECT_IMMEDIATE_COMMAND]: "retry",
  [REJECT_LONG_OPERATION]: "retry",
  [REJECT_WAITING_FOR_LOGOUT]: "relogin",
};

/** Text key names (§13) that we send or act on. */
export const KEY = {
  AuthMethod: "AuthMethod",
  HeaderDigest: "HeaderDigest",
  DataDigest: "DataDigest",
  MaxConnections: "MaxConnections",
  SendTargets: "SendTargets",
  TargetName: "TargetName",
  InitiatorName: "InitiatorName",
  TargetAlias: "TargetAlias",
  InitiatorAlias: "InitiatorAlias",
  TargetAddress: "TargetAddress",
  TargetPortalGroupTag: "TargetPortalGroupTag",
  InitialR2T: "InitialR2T",
  ImmediateData: "ImmediateData",
  MaxRecvDataSegmentLength: "MaxRecvDataSegmentLength",
  MaxBurstLength: "MaxBurstLength",
  FirstBurstLength: "FirstBurstLength",
  DefaultTime2Wait: "DefaultTime2Wait",
  DefaultTime2Retain: "DefaultTime2Retain",
  MaxOutstandingR2T: "MaxOutstandingR2T",
  DataPDUInOrder: "DataPDUInOrder",
  DataSequenceInOrder: "DataSequenceInOrder",
  ErrorRecoveryLevel: "ErrorRecoveryLevel",
  SessionType: "SessionType",
  CHAP_A: "CHAP_A",
  CHAP_I: "CHAP_I",
  CHAP_C: "CHAP_C",
  CHAP_N: "CHAP_N",
  CHAP_R: "CHAP_R",
} as const;

/**
 * What we declare as our MaxRecvDataSegmentLength (256 KiB): large segments
 * mean fewer PDUs per read and fewer headers to digest (docs/performance.md).
 */
export const OUR_MAX_RECV_DATA_SEGMENT_LENGTH = 262144;
/**
 * Before full feature phase the peer's limit is the default 8192 (§13.12),
 * and login text we accept is bounded so endless continuation cannot grow
 * memory (docs/iscsi.md, "Recovery").
 */
export const DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH = 8192;
/** Upper bound on one login or negotiation text exchange we accept, all PDUs together. */
export const MAX_LOGIN_TEXT = 65536;
/** Upper bound on a SendTargets answer, all PDUs together. */
export const MAX_DISCOVERY_TEXT = 4 << 20;
