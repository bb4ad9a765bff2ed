/**
 * iSCSI PDU layout (RFC 7143 §11): the 48-byte Basic Header Segment, the
 * Additional Header Segments, padding and digests.
 *
 * Received headers are read through {@link PduHeader}, a view with getters
 * named after the RFC fields (no copies, no BigInt). Outgoing headers are
 * built by the `encode*` functions into a 48-byte buffer. Everything that
 * comes off the wire is bounds-checked by {@link parseHeader} before any
 * field is used; a bad header raises {@link IscsiProtocolError}.
 */
import {
  BHS_LENGTH,
  CMD_ATTR_SIMPLE,
  CMD_FLAG_READ,
  CMD_FLAG_WRITE,
  DIGEST_LENGTH,
  FLAG_FINAL,
  FLAG_IMMEDIATE,
  LOGIN_CSG_SHIFT,
  LOGIN_FLAG_TRANSIT,
  LOGIN_STAGE_MASK,
  OP_DATA_OUT,
  OP_LOGIN_REQ,
  OP_LOGOUT_REQ,
  OP_NOP_OUT,
  OP_SCSI_CMD,
  OP_TASK_MGMT_REQ,
  OP_TEXT_REQ,
  OPCODE_MASK,
  OPCODE_NAMES,
  RESERVED_TAG,
  TARGET_OPCODES,
  TEXT_FLAG_CONTINUE,
} from "./constants.ts";
import type { Crc32c } from "./digest.ts";
import { IscsiProtocolError } from "./errors.ts";

/**
 * Where each BHS field sits (RFC 7143 §11), for the getters and the encoders
 * alike. Some bytes carry a different field by PDU: bytes 24..31 are CmdSN and
 * ExpStatSN in what the initiator sends, StatSN and ExpCmdSN in what the
 * target sends; byte 2 is the Response of a SCSI, Task Management or Logout
 * Response, the Reason of a Reject, Version-max of a Login Response; byte 3
 * the SCSI status (SCSI Response, Data-In with S) or Version-active (Login
 * Response).
 */
export const BHS_OFFSET = {
  opcode: 0,
  flags: 1,
  response: 2,
  rejectReason: 2,
  versionMax: 2,
  status: 3,
  versionActive: 3,
  totalAhsLength: 4,
  dataSegmentLength: 5,
  lun: 8,
  isid: 8,
  tsih: 14,
  itt: 16,
  ttt: 20,
  expectedDataTransferLength: 20,
  referencedTaskTag: 20,
  cid: 20,
  cmdSN: 24,
  statSN: 24,
  expStatSN: 28,
  expCmdSN: 28,
  maxCmdSN: 32,
  cdb: 32,
  refCmdSN: 32,
  dataSN: 36,
  r2tSN: 36,
  expDataSN: 36,
  statusClass: 36,
  statusDetail: 37,
  asyncEvent: 36,
  asyncParameter1: 38,
  asyncParameter2: 40,
  asyncParameter3: 42,
  bufferOffset: 40,
  time2Wait: 40,
  time2Retain: 42,
  residualCount: 44,
  desiredDataTransferLength: 44,
} as const;

const O = BHS_OFFSET;

/** The low 7 bits of byte 1: a Logout's reason code, a Task Management function (§11.5.1, §11.14.1). */
const FUNCTION_MASK = 0x7f;

/** Bytes of padding that bring `n` to a multiple of 4 (§11.2.3). */
export function padLength(n: number): number {
  return (4 - (n & 3)) & 3;
}

/**
 * A received BHS, read in place. Getter names follow the RFC; each is only
 * meaningful for the opcodes whose layout has that field.
 */
export class PduHeader {
  /** The 48 header bytes. */
  readonly bytes: Uint8Array;
  readonly #v: DataView;

  constructor(bytes: Uint8Array) {
    if (bytes.length < BHS_LENGTH) {
      throw new IscsiProtocolError(`PDU header is ${bytes.length} bytes, need ${BHS_LENGTH}`);
    }
    this.bytes = bytes;
    this.#v = new DataView(bytes.buffer, bytes.byteOffset, BHS_LENGTH);
  }

  get opcode(): number {
    return this.bytes[O.opcode] & OPCODE_MASK;
  }
  get immediate(): boolean {
    return (this.bytes[O.opcode] & FLAG_IMMEDIATE) !== 0;
  }
  /** Byte 1: F bit and opcode-specific flags. */
  get flags(): number {
    return this.bytes[O.flags];
  }
  get final(): boolean {
    return (this.bytes[O.flags] & FLAG_FINAL) !== 0;
  }
  /** Response of a SCSI Response (§11.4.3), Task Management (§11.6.1) or Logout Response (§11.15.1). */
  get response(): number {
    return this.bytes[O.response];
  }
  /** SCSI status of a SCSI Response or of a Data-In with the S bit (§11.4.2, §11.7.4). */
  get status(): number {
    return this.bytes[O.status];
  }
  /** Reason of a Reject (§11.17.1). */
  get rejectReason(): number {
    return this.bytes[O.rejectReason];
  }
  /** Version-max and Version-active of a Login Response (§11.13.2). */
  get versionMax(): number {
    return this.bytes[O.versionMax];
  }
  get versionActive(): number {
    return this.bytes[O.versionActive];
  }
  /** TotalAHSLength in bytes (the field counts 4-byte words, §11.2.1.4). */
  get totalAhsLength(): number {
    return this.bytes[O.totalAhsLength] * 4;
  }
  get dataSegmentLength(): number {
    const b = this.bytes, o = O.dataSegmentLength;
    return (b[o] << 16) | (b[o + 1] << 8) | b[o + 2];
  }
  /** The 8-byte LUN field as a view. */
  get lunBytes(): Uint8Array {
    return this.bytes.subarray(O.lun, O.lun + 8);
  }
  /** Login: ISID (6 bytes). */
  get isid(): Uint8Array {
    return this.bytes.subarray(O.isid, O.isid + 6);
  }
  /** Login: TSIH. */
  get tsih(): number {
    return this.#v.getUint16(O.tsih);
  }
  get itt(): number {
    return this.#v.getUint32(O.itt);
  }
  /** Target Transfer Tag (Data-In, R2T, NOP-In, Text). */
  get ttt(): number {
    return this.#v.getUint32(O.ttt);
  }
  get statSN(): number {
    return this.#v.getUint32(O.statSN);
  }
  get expCmdSN(): number {
    return this.#v.getUint32(O.expCmdSN);
  }
  get maxCmdSN(): number {
    return this.#v.getUint32(O.maxCmdSN);
  }
  /** Data-In DataSN (§11.7.5). */
  get dataSN(): number {
    return this.#v.getUint32(O.dataSN);
  }
  /** R2T R2TSN (§11.8.4). */
  get r2tSN(): number {
    return this.#v.getUint32(O.r2tSN);
  }
  /** SCSI Response ExpDataSN (§11.4.6). */
  get expDataSN(): number {
    return this.#v.getUint32(O.expDataSN);
  }
  /** Data-In / R2T Buffer Offset. */
  get bufferOffset(): number {
    return this.#v.getUint32(O.bufferOffset);
  }
  /** SCSI Response / Data-In Residual Count. */
  get residualCount(): number {
    return this.#v.getUint32(O.residualCount);
  }
  /** R2T Desired Data Transfer Length. */
  get desiredDataTransferLength(): number {
    return this.#v.getUint32(O.desiredDataTransferLength);
  }
  /** Login Response Status-Class and Status-Detail. */
  get statusClass(): number {
    return this.bytes[O.statusClass];
  }
  get statusDetail(): number {
    return this.bytes[O.statusDetail];
  }
  /** Async Message: AsyncEvent, Parameter1..3 (§11.9). */
  get asyncEvent(): number {
    return this.bytes[O.asyncEvent];
  }
  get asyncParameter1(): number {
    return this.#v.getUint16(O.asyncParameter1);
  }
  get asyncParameter2(): number {
    return this.#v.getUint16(O.asyncParameter2);
  }
  get asyncParameter3(): number {
    return this.#v.getUint16(O.asyncParameter3);
  }
  /** Logout Response Time2Wait / Time2Retain (§11.15). */
  get time2Wait(): number {
    return this.#v.getUint16(O.time2Wait);
  }
  get time2Retain(): number {
    return this.#v.getUint16(O.time2Retain);
  }

  /** Opcode name for messages. */
  get name(): string {
    return OPCODE_NAMES[this.opcode] ?? `opcode 0x${this.opcode.toString(16)}`;
  }
}

/** Limits a received header is checked against. */
export interface HeaderLimits {
  /** Our declared MaxRecvDataSegmentLength (or the login-phase bound). */
  maxDataSegmentLength: number;
}

/**
 * Check a received BHS: a target opcode, no AHS beyond what we can skip, and
 * a DataSegmentLength within what we declared. Returns the header view.
 *
 * @example
 * ```ts
 * const h = parseHeader(bhs, { maxDataSegmentLength: 262144 });
 * if (h.opcode === OP_DATA_IN) { ... }
 * ```
 */
export function parseHeader(bhs: Uint8Array, limits: HeaderLimits): PduHeader {
  const h = new PduHeader(bhs);
  if (!TARGET_OPCODES.has(h.opcode)) {
    throw new IscsiProtocolError(`unknown or initiator-only opcode 0x${h.opcode.toString(16)}`);
  }
  if (h.dataSegmentLength > limits.maxDataSegmentLength) {
    throw new IscsiProtocolError(
      `${h.name}: DataSegmentLength ${h.dataSegmentLength} exceeds our MaxRecvDataSegmentLength ${limits.maxDataSegmentLength}`,
    );
  }
  return h;
}

/** A whole PDU decoded from one buffer (tests, fuzzing, scripted peers). */
export interface DecodedPdu {
  header: PduHeader;
  ahs: Uint8Array;
  data: Uint8Array;
  /** Bytes of `buf` this PDU used, padding and digests included. */
  length: number;
}

/**
 * Decode one complete PDU from the start of `buf`, checking lengths and
 * (when `crc` is given) the header and data digests.
 *
 * @example
 * ```ts
 * const { header, data } = decodePdu(bytes, { maxDataSegmentLength: 8192 });
 * ```
 */
export function decodePdu(
  buf: Uint8Array,
  opts: HeaderLimits & { headerDigest?: boolean; dataDigest?: boolean; crc?: Crc32c },
): DecodedPdu {
  if (buf.length < BHS_LENGTH) {
    throw new IscsiProtocolError(`truncated PDU: ${buf.length} bytes`);
  }
  const header = parseHeader(buf.subarray(0, BHS_LENGTH), opts);
  let off = BHS_LENGTH;
  const ahsLen = header.totalAhsLength;
  if (off + ahsLen > buf.length) throw new IscsiProtocolError("truncated AHS");
  const ahs = buf.subarray(off, off + ahsLen);
  off += ahsLen;
  if (opts.headerDigest) {
    if (off + DIGEST_LENGTH > buf.length) throw new IscsiProtocolError("truncated header digest");
    if (opts.crc) {
      const want = opts.crc.digest(buf.subarray(0, off));
      const got = new DataView(buf.buffer, buf.byteOffset + off, 4).getUint32(0, true);
      if (want !== got) throw new IscsiProtocolError(`${header.name}: header digest mismatch`);
    }
    off += DIGEST_LENGTH;
  }
  const dsl = header.dataSegmentLength;
  const padded = dsl + padLength(dsl);
  if (off + padded > buf.length) {
    throw new IscsiProtocolError(`${header.name}: truncated data segment`);
  }
  const data = buf.subarray(off, off + dsl);
  off += padded;
  if (opts.dataDigest && dsl > 0) {
    if (off + DIGEST_LENGTH > buf.length) throw new IscsiProtocolError("truncated data digest");
    if (opts.crc) {
      const want = opts.crc.digest(buf.subarray(off - padded, off));
      const got = new DataView(buf.buffer, buf.byteOffset + off, 4).getUint32(0, true);
      if (want !== got) throw new IscsiProtocolError(`${header.name}: data digest mismatch`);
    }
    off += DIGEST_LENGTH;
  }
  return { header, ahs, data, length: off };
}

// ---- encoders (initiator PDUs) --------------------------------------------

function setDsl(b: Uint8Array, n: number): void {
  if (n < 0 || n > 0xffffff) throw new RangeError(`DataSegmentLength ${n} out of range`);
  const o = O.dataSegmentLength;
  b[o] = n >>> 16;
  b[o + 1] = (n >>> 8) & 0xff;
  b[o + 2] = n & 0xff;
}

function u32(b: Uint8Array, off: number, v: number): void {
  b[off] = v >>> 24;
  b[off + 1] = (v >>> 16) & 0xff;
  b[off + 2] = (v >>> 8) & 0xff;
  b[off + 3] = v & 0xff;
}

function u16(b: Uint8Array, off: number, v: number): void {
  b[off] = (v >>> 8) & 0xff;
  b[off + 1] = v & 0xff;
}

/** Zero a BHS and set its opcode byte and flags byte (byte 1). */
function start(b: Uint8Array, opcode: number, flags: number): void {
  b.fill(0, 0, BHS_LENGTH);
  b[O.opcode] = opcode;
  b[O.flags] = flags;
}

/** The fields every initiator PDU below carries: ITT, CmdSN, ExpStatSN. */
function sequence(b: Uint8Array, itt: number, cmdSN: number, expStatSN: number): void {
  u32(b, O.itt, itt);
  u32(b, O.cmdSN, cmdSN);
  u32(b, O.expStatSN, expStatSN);
}

/**
 * Encode a LUN number into the 8-byte SAM LUN field (SAM-5 §4.7): peripheral
 * addressing below 256, flat space addressing up to 16383.
 */
export function encodeLun(b: Uint8Array, off: number, lun: number): void {
  b.fill(0, off, off + 8);
  if (lun < 256) {
    b[off + 1] = lun;
  } else if (lun < 16384) {
    b[off] = 0x40 | (lun >>> 8);
    b[off + 1] = lun & 0xff;
  } else {
    throw new RangeError(`LUN ${lun} out of range`);
  }
}

/** Fields of a SCSI Command PDU (§11.3). */
export interface ScsiCommandFields {
  immediate?: boolean;
  /** F bit: no unsolicited Data-Out follows. */
  final: boolean;
  read: boolean;
  write: boolean;
  lun: number;
  itt: number;
  expectedDataTransferLength: number;
  cmdSN: number;
  expStatSN: number;
  cdb: Uint8Array;
  dataSegmentLength: number;
}

/** Write a SCSI Command BHS into `b` (48 bytes, zeroed here). */
export function encodeScsiCommand(b: Uint8Array, f: ScsiCommandFields): void {
  if (f.cdb.length > 16) throw new RangeError("CDBs over 16 bytes need an AHS (not supported)");
  start(
    b,
    OP_SCSI_CMD | (f.immediate ? FLAG_IMMEDIATE : 0),
    (f.final ? FLAG_FINAL : 0) | (f.read ? CMD_FLAG_READ : 0) | (f.write ? CMD_FLAG_WRITE : 0) |
      CMD_ATTR_SIMPLE,
  );
  setDsl(b, f.dataSegmentLength);
  encodeLun(b, O.lun, f.lun);
  sequence(b, f.itt, f.cmdSN, f.expStatSN);
  u32(b, O.expectedDataTransferLength, f.expectedDataTransferLength);
  b.set(f.cdb, O.cdb);
}

/** Fields of a SCSI Data-Out PDU (§11.8). */
export interface DataOutFields {
  final: boolean;
  lun: number;
  itt: number;
  ttt: number;
  expStatSN: number;
  dataSN: number;
  bufferOffset: number;
  dataSegmentLength: number;
}

/** Write a Data-Out BHS. */
export function encodeDataOut(b: Uint8Array, f: DataOutFields): void {
  start(b, OP_DATA_OUT, f.final ? FLAG_FINAL : 0);
  setDsl(b, f.dataSegmentLength);
  encodeLun(b, O.lun, f.lun);
  u32(b, O.itt, f.itt);
  u32(b, O.ttt, f.ttt);
  u32(b, O.expStatSN, f.expStatSN); // bytes 24..27 are reserved in a Data-Out (§11.7)
  u32(b, O.dataSN, f.dataSN);
  u32(b, O.bufferOffset, f.bufferOffset);
}

/** Fields of a NOP-Out (§11.18). */
export interface NopOutFields {
  itt: number;
  ttt: number;
  cmdSN: number;
  expStatSN: number;
  lunBytes?: Uint8Array;
  dataSegmentLength: number;
}

/** Write a NOP-Out BHS; always immediate (a ping must not consume a CmdSN, §11.18). */
export function encodeNopOut(b: Uint8Array, f: NopOutFields): void {
  start(b, OP_NOP_OUT | FLAG_IMMEDIATE, FLAG_FINAL);
  setDsl(b, f.dataSegmentLength);
  if (f.lunBytes) b.set(f.lunBytes.subarray(0, 8), O.lun);
  sequence(b, f.itt, f.cmdSN, f.expStatSN);
  u32(b, O.ttt, f.ttt);
}

/** Fields of a Login Request (§11.12). */
export interface LoginRequestFields {
  transit: boolean;
  cont: boolean;
  csg: number;
  nsg: number;
  isid: Uint8Array;
  tsih: number;
  itt: number;
  cid: number;
  cmdSN: number;
  expStatSN: number;
  dataSegmentLength: number;
}

/** CSG (Current Stage) of a Login Request or Response's byte 1 (RFC 7143 §11.12.1). */
export function loginCsg(flags: number): number {
  return (flags >> LOGIN_CSG_SHIFT) & LOGIN_STAGE_MASK;
}

/** NSG (Next Stage) of a Login Request or Response's byte 1; meaningful with T=1. */
export function loginNsg(flags: number): number {
  return flags & LOGIN_STAGE_MASK;
}

/** Write a Login Request BHS (always immediate, Version-max = Version-min = 0). */
export function encodeLoginRequest(b: Uint8Array, f: LoginRequestFields): void {
  start(
    b,
    OP_LOGIN_REQ | FLAG_IMMEDIATE,
    (f.transit ? LOGIN_FLAG_TRANSIT : 0) | (f.cont ? TEXT_FLAG_CONTINUE : 0) |
      ((f.csg & LOGIN_STAGE_MASK) << LOGIN_CSG_SHIFT) | (f.nsg & LOGIN_STAGE_MASK),
  );
  setDsl(b, f.dataSegmentLength);
  b.set(f.isid.subarray(0, 6), O.isid);
  u16(b, O.tsih, f.tsih);
  u16(b, O.cid, f.cid);
  sequence(b, f.itt, f.cmdSN, f.expStatSN);
}

/** Fields of a Text Request (§11.10). */
export interface TextRequestFields {
  final: boolean;
  cont: boolean;
  itt: number;
  ttt: number;
  cmdSN: number;
  expStatSN: number;
  dataSegmentLength: number;
  immediate?: boolean;
}

/** Write a Text Request BHS. */
export function encodeTextRequest(b: Uint8Array, f: TextRequestFields): void {
  start(
    b,
    OP_TEXT_REQ | (f.immediate ? FLAG_IMMEDIATE : 0),
    (f.final ? FLAG_FINAL : 0) | (f.cont ? TEXT_FLAG_CONTINUE : 0),
  );
  setDsl(b, f.dataSegmentLength);
  sequence(b, f.itt, f.cmdSN, f.expStatSN);
  u32(b, O.ttt, f.ttt);
}

/** Fields of a Logout Request (§11.14). */
export interface LogoutRequestFields {
  reason: number;
  itt: number;
  cid: number;
  cmdSN: number;
  expStatSN: number;
}

/** Write a Logout Request BHS (immediate, so it is not stuck behind a closed window). */
export function encodeLogoutRequest(b: Uint8Array, f: LogoutRequestFields): void {
  start(b, OP_LOGOUT_REQ | FLAG_IMMEDIATE, FLAG_FINAL | (f.reason & FUNCTION_MASK));
  u16(b, O.cid, f.cid);
  sequence(b, f.itt, f.cmdSN, f.expStatSN);
}

/** Fields of a Task Management Function Request (§11.5). */
export interface TaskMgmtFields {
  func: number;
  lun: number;
  itt: number;
  referencedTaskTag: number;
  cmdSN: number;
  expStatSN: number;
  refCmdSN: number;
}

/** Write a Task Management Function Request BHS (immediate, §11.5). */
export function encodeTaskMgmt(b: Uint8Array, f: TaskMgmtFields): void {
  start(b, OP_TASK_MGMT_REQ | FLAG_IMMEDIATE, FLAG_FINAL | (f.func & FUNCTION_MASK));
  encodeLun(b, O.lun, f.lun);
  sequence(b, f.itt, f.cmdSN, f.expStatSN);
  u32(b, O.referencedTaskTag, f.referencedTaskTag);
  u32(b, O.refCmdSN, f.refCmdSN);
}

export { RESERVED_TAG };
