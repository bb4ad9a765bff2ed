/**
 * One connection of the fake target ({@link FakeConn}): the wire (whole
 * initiator PDUs in, target PDUs out with padding and, once negotiated,
 * CRC32C digests, or wrong ones on purpose), the target's sequence numbers
 * (StatSN, ExpCmdSN, MaxCmdSN, stamped on every PDU built here and recorded
 * for the tests), and the target PDUs a script sends: Login Response,
 * Reject, Async Message, Task Management, NOP-In, Text and Logout Response.
 * Digests received are skipped, not checked: the initiator's own digests are
 * tested against tgtd.
 *
 * @example
 * ```ts
 * const first = await c.acceptLogin();
 * const cmd = await c.read();
 * await c.reject(cmd!, 0x0c); // Waiting for Logout
 * ```
 */
import {
  BHS_LENGTH,
  DIGEST_LENGTH,
  OP_ASYNC_MSG,
  OP_LOGIN_RESP,
  OP_LOGOUT_RESP,
  OP_NOP_IN,
  OP_REJECT,
  OP_TASK_MGMT_RESP,
  OP_TEXT_RESP,
  RESERVED_TAG,
} from "../../../src/iscsi/constants.ts";
import type { Crc32c } from "../../../src/iscsi/digest.ts";
import { BHS_OFFSET, padLength, PduHeader } from "../../../src/iscsi/pdu.ts";
import { decodeText, encodeText, type TextPair } from "../../../src/iscsi/text.ts";
import { type LoginOptions, serveLogin } from "./login.ts";

/** One initiator PDU as read: its header (a copy), data segment and the fields scripts look at. */
export interface FakePdu {
  bhs: Uint8Array;
  h: PduHeader;
  data: Uint8Array;
  opcode: number;
  itt: number;
  cmdSN: number;
  expStatSN: number;
  flags: number;
  /** The data segment as text pairs. */
  pairs: () => TextPair[];
}

/** What a test may get wrong on purpose in a PDU it sends. */
export interface SendFaults {
  badHeaderDigest?: boolean;
  badDataDigest?: boolean;
  /** DataSegmentLength to declare instead of the data's length. */
  dslOverride?: number;
}

/** What the FakeTarget tells a connection it accepted. */
export interface ConnOptions {
  /** 1 for the first connection accepted, and so on (for the event log). */
  id?: number;
  /** StatSN of the first response (default 0). */
  firstStatSN?: number;
  /** ExpCmdSN of the Login Responses (default: the Login Request's CmdSN, as a real target answers). */
  firstCmdSN?: number;
  /** Where the connection's events go (the target's log). */
  log?: (line: string) => void;
  /** Called the first time the connection misbehaves on purpose. */
  onMisbehave?: () => void;
}

/** The login's outcome the fake works with (RFC 7143 defaults until a login settles them). */
export interface ConnParams {
  /** The initiator's MaxRecvDataSegmentLength: the largest Data-In segment we send (§13.12). */
  peerMrdsl: number;
  /** The largest burst one R2T asks for. */
  maxBurst: number;
}

/** Login Response fields a script chooses (§11.13). */
export interface LoginReply {
  transit?: boolean;
  cont?: boolean;
  nsg?: number;
  /** Status-Class << 8 | Status-Detail (e.g. 0x0201: authentication failed). */
  status?: number;
  tsih?: number;
  pairs?: TextPair[];
  /** The data segment as it is, instead of `pairs`. */
  raw?: Uint8Array;
  /** MaxCmdSN - ExpCmdSN + 1 (default 32). */
  window?: number;
}

const EMPTY = new Uint8Array(0);

/** Set a big-endian 32-bit field (of a BHS, or SCSI data). */
export function setU32(b: Uint8Array, off: number, v: number): void {
  new DataView(b.buffer, b.byteOffset, b.byteLength).setUint32(off, v >>> 0);
}

/** Read a big-endian 32-bit field. */
export function getU32(b: Uint8Array, off: number): number {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(off);
}

/** One accepted connection: reads initiator PDUs, builds and sends target PDUs. */
export class FakeConn {
  readonly tcp: Deno.Conn;
  readonly id: number;
  /** Digests are sent (and expected) once the login agreed to them. */
  headerDigest = false;
  dataDigest = false;
  crc: Crc32c | null = null;
  /** Corrupt the data digest of the next PDU sent with data. */
  corruptNextDataDigest = false;
  /** StatSN of the next response. */
  statSN: number;
  /** ExpCmdSN stamped on what we send; {@link take} moves it past a command. */
  expCmdSN = 0;
  /** Fixed ExpCmdSN for the Login Responses, if any ({@link ConnOptions.firstCmdSN}). */
  readonly firstCmdSN?: number;
  params: ConnParams = { peerMrdsl: 8192, maxBurst: 262144 };
  /** StatSNs used up, in order, and the CmdSNs of non-immediate SCSI commands received. */
  readonly statSNs: number[] = [];
  readonly cmdSNs: number[] = [];
  /**
   * Received CmdSNs past the MaxCmdSN the initiator knew when it sent them
   * (outside the window, §4.2.2.1), by {@link knownMaxCmdSN}.
   */
  readonly outOfWindow: number[] = [];
  /** When the connection first misbehaved on purpose ({@link misbehave}), else null. */
  misbehavedAt: number | null = null;
  /** A Logout Response went out. */
  loggedOut = false;
  /** The initiator closed the connection (a read met EOF). */
  eof = false;
  #nextTtt = 1;
  readonly #log: (line: string) => void;
  readonly #onMisbehave: () => void;
  /** [StatSN, MaxCmdSN] stamped on each PDU sent, oldest first. */
  readonly #windows: [number, number][] = [];
  #buf = new Uint8Array(65536);
  #start = 0;
  #end = 0;
  #sending: Promise<void> = Promise.resolve();

  constructor(tcp: Deno.Conn, o: ConnOptions = {}) {
    this.tcp = tcp;
    this.id = o.id ?? 1;
    this.statSN = (o.firstStatSN ?? 0) >>> 0;
    if (o.firstCmdSN !== undefined) this.firstCmdSN = o.firstCmdSN >>> 0;
    this.#log = o.log ?? (() => {});
    this.#onMisbehave = o.onMisbehave ?? (() => {});
  }

  /** The TCP connection (a script may write raw bytes or close it). */
  get conn(): Deno.Conn {
    return this.tcp;
  }

  /** Note an event in the target's log, as `conn N: ...`. */
  log(m: string): void {
    this.#log(`conn ${this.id}: ${m}`);
  }

  /** Record that this connection now breaks the protocol on purpose (`what`, for the log). */
  misbehave(what: string): void {
    if (this.misbehavedAt === null) {
      this.misbehavedAt = performance.now();
      this.#onMisbehave();
    }
    this.log(`misbehaved: ${what}`);
  }

  // ---- the wire ------------------------------------------------------------

  /** Have at least `n` unread bytes buffered; false at EOF (or a reset). */
  async #need(n: number): Promise<boolean> {
    while (this.#end - this.#start < n) {
      if (this.#start > 0) {
        this.#buf.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      }
      if (this.#buf.length < n) {
        const b = new Uint8Array(Math.max(n, this.#buf.length * 2));
        b.set(this.#buf.subarray(0, this.#end));
        this.#buf = b;
      }
      const got = await this.tcp.read(this.#buf.subarray(this.#end)).catch(() => null);
      if (got === null) {
        this.eof = true;
        return false;
      }
      this.#end += got;
    }
    return true;
  }

  #take(n: number): Uint8Array {
    const out = this.#buf.slice(this.#start, this.#start + n);
    this.#start += n;
    return out;
  }

  /** The next PDU from the initiator, or null at EOF. */
  async read(): Promise<FakePdu | null> {
    if (!(await this.#need(BHS_LENGTH))) return null;
    const bhs = this.#take(BHS_LENGTH);
    const h = new PduHeader(bhs);
    const skip = h.totalAhsLength + (this.headerDigest ? DIGEST_LENGTH : 0);
    const n = h.dataSegmentLength;
    const body = n + padLength(n) + (this.dataDigest && n > 0 ? DIGEST_LENGTH : 0);
    if (!(await this.#need(skip + body))) return null;
    this.#start += skip;
    const data = this.#take(body).subarray(0, n);
    return {
      bhs,
      h,
      data,
      opcode: h.opcode,
      itt: h.itt,
      cmdSN: getU32(bhs, BHS_OFFSET.cmdSN),
      expStatSN: getU32(bhs, BHS_OFFSET.expStatSN),
      flags: h.flags,
      pairs: () => decodeText(data),
    };
  }

  /**
   * Send a BHS (48 bytes; DataSegmentLength filled in here) and its data
   * (padded here). Sends are queued, so a script may answer from a timer
   * while it reads on.
   */
  send(bhs: Uint8Array, data: Uint8Array = EMPTY, faults: SendFaults = {}): Promise<void> {
    if (this.corruptNextDataDigest && data.length > 0 && this.dataDigest) {
      this.corruptNextDataDigest = false;
      faults = { ...faults, badDataDigest: true };
    }
    const b = bhs.slice(0, BHS_LENGTH);
    const next = this.#sending.then(() => this.#send(b, data, faults));
    this.#sending = next.catch(() => {});
    return next;
  }

  async #send(bhs: Uint8Array, data: Uint8Array, faults: SendFaults): Promise<void> {
    const dsl = faults.dslOverride ?? data.length;
    bhs[5] = (dsl >>> 16) & 0xff;
    bhs[6] = (dsl >>> 8) & 0xff;
    bhs[7] = dsl & 0xff;
    const crc = this.crc;
    const hd = this.headerDigest && crc ? DIGEST_LENGTH : 0;
    const padded = data.length + padLength(data.length);
    const dd = this.dataDigest && crc && data.length > 0 ? DIGEST_LENGTH : 0;
    const out = new Uint8Array(BHS_LENGTH + hd + padded + dd);
    const v = new DataView(out.buffer);
    out.set(bhs);
    if (hd) v.setUint32(BHS_LENGTH, crc!.digest(bhs) ^ (faults.badHeaderDigest ? 1 : 0), true);
    out.set(data, BHS_LENGTH + hd);
    if (dd) {
      const seg = out.subarray(BHS_LENGTH + hd, BHS_LENGTH + hd + padded);
      const d = crc!.digest(seg) ^ (faults.badDataDigest ? 1 : 0);
      v.setUint32(BHS_LENGTH + hd + padded, d >>> 0, true);
    }
    let off = 0;
    while (off < out.length) off += await this.tcp.write(out.subarray(off));
  }

  close(): void {
    try {
      this.tcp.close();
    } catch {
      // gone
    }
  }

  // ---- sequence numbers ------------------------------------------------------

  /**
   * Stamp StatSN / ExpCmdSN / MaxCmdSN (ExpCmdSN + window - 1) into a BHS;
   * StatSN moves on unless `advance` is false (a Data-In without status, an
   * R2T).
   */
  stamp(b: Uint8Array, o: { advance?: boolean; window?: number } = {}): void {
    const statSN = this.statSN;
    setU32(b, 24, statSN);
    if (o.advance ?? true) {
      this.statSNs.push(statSN);
      this.statSN = (statSN + 1) >>> 0;
    }
    setU32(b, 28, this.expCmdSN);
    const maxCmdSN = (this.expCmdSN + (o.window ?? 32) - 1) >>> 0;
    setU32(b, 32, maxCmdSN);
    this.#windows.push([statSN, maxCmdSN]);
  }

  /**
   * The largest MaxCmdSN the initiator can have seen when it sent a PDU
   * carrying `expStatSN`: that of the newest PDU stamped with a StatSN up to
   * it (serial arithmetic), one response more than it surely saw, so the
   * check errs towards allowing. Older entries are dropped (ExpStatSN never
   * goes back).
   */
  knownMaxCmdSN(expStatSN: number): number | undefined {
    let k = -1;
    while (k + 1 < this.#windows.length && ((this.#windows[k + 1][0] - expStatSN) | 0) <= 0) k++;
    if (k < 0) return undefined;
    const max = this.#windows[k][1];
    this.#windows.splice(0, k);
    return max;
  }

  /** Record a SCSI command received: its CmdSN, and whether it was past the window. */
  noteCommand(pdu: FakePdu): void {
    if (pdu.h.immediate) return;
    this.cmdSNs.push(pdu.cmdSN);
    const known = this.knownMaxCmdSN(pdu.expStatSN);
    // Serial arithmetic (RFC 1982): past MaxCmdSN even across the wrap.
    if (known !== undefined && ((pdu.cmdSN - known) | 0) > 0) this.outOfWindow.push(pdu.cmdSN);
  }

  /** Count a non-immediate command's CmdSN as received (ExpCmdSN moves past it). */
  take(pdu: FakePdu): void {
    if ((pdu.bhs[0] & 0x40) === 0 && ((pdu.cmdSN + 1 - this.expCmdSN) | 0) > 0) {
      this.expCmdSN = (pdu.cmdSN + 1) >>> 0;
    }
  }

  /** A fresh Target Transfer Tag (for R2Ts). */
  nextTtt(): number {
    return this.#nextTtt++;
  }

  // ---- target PDUs ---------------------------------------------------------

  /**
   * A target BHS: opcode, F bit, ITT, TTT reserved, StatSN (advanced unless
   * `advance` is false), ExpCmdSN, MaxCmdSN = ExpCmdSN + 31.
   */
  bhs(op: number, itt: number, advance = true): Uint8Array {
    const b = new Uint8Array(BHS_LENGTH);
    b[0] = op;
    b[1] = 0x80;
    setU32(b, 16, itt);
    setU32(b, 20, RESERVED_TAG);
    this.stamp(b, { advance });
    return b;
  }

  /** A Login Response to `req` (§11.13), in the stage the request is in. */
  loginResponse(req: FakePdu, o: LoginReply = {}): Promise<void> {
    const b = new Uint8Array(BHS_LENGTH);
    const csg = (req.flags >> 2) & 3;
    b[0] = OP_LOGIN_RESP;
    b[1] = (o.transit ? 0x80 : 0) | (o.cont ? 0x40 : 0) | (csg << 2) | ((o.nsg ?? 0) & 3);
    b.set(req.bhs.subarray(8, 14), 8); // ISID
    new DataView(b.buffer).setUint16(14, o.tsih ?? 0);
    setU32(b, 16, req.itt);
    this.expCmdSN = this.firstCmdSN ?? req.cmdSN;
    this.stamp(b, { window: o.window });
    new DataView(b.buffer).setUint16(36, o.status ?? 0);
    return this.send(b, o.raw ?? encodeText(o.pairs ?? []));
  }

  /**
   * Play a whole login (see {@link serveLogin}; by default no authentication,
   * operational keys answered with the initiator's own values, digests
   * None). Returns the first CmdSN of the session; throws if the login does
   * not complete.
   */
  async acceptLogin(o: LoginOptions = {}): Promise<number> {
    const first = await serveLogin(this, o);
    if (first === null) throw new Error("fake target: the login did not complete");
    return first;
  }

  /** Reject `pdu` with `reason` (§11.17); the rejected header is the data segment. */
  reject(pdu: FakePdu, reason: number): Promise<void> {
    const b = this.bhs(OP_REJECT, RESERVED_TAG);
    b[2] = reason;
    return this.send(b, pdu.bhs.slice(0, BHS_LENGTH));
  }

  /** Async Message (§11.9) with AsyncEvent and Parameter1-3. */
  asyncMessage(event: number, p: { p1?: number; p2?: number; p3?: number } = {}): Promise<void> {
    const b = this.bhs(OP_ASYNC_MSG, RESERVED_TAG);
    const v = new DataView(b.buffer);
    b[36] = event;
    v.setUint16(38, p.p1 ?? 0);
    v.setUint16(40, p.p2 ?? 0);
    v.setUint16(42, p.p3 ?? 0);
    return this.send(b);
  }

  /** Task Management Function Response with `response` (0: function complete). */
  tmfResponse(pdu: FakePdu, response = 0): Promise<void> {
    const b = this.bhs(OP_TASK_MGMT_RESP, pdu.itt);
    b[2] = response;
    return this.send(b);
  }

  /** NOP-In answering a NOP-Out ping: its LUN and data back (§11.19). */
  nopIn(pdu: FakePdu): Promise<void> {
    const b = this.bhs(OP_NOP_IN, pdu.itt);
    b.set(pdu.bhs.subarray(8, 16), 8);
    return this.send(b, pdu.data);
  }

  /** A final Text Response carrying `pairs` (§11.11). */
  textResponse(pdu: FakePdu, pairs: TextPair[]): Promise<void> {
    return this.send(this.bhs(OP_TEXT_RESP, pdu.itt), encodeText(pairs));
  }

  /** Logout Response "closed successfully" (§11.15). */
  logoutResponse(pdu: FakePdu): Promise<void> {
    this.loggedOut = true;
    return this.send(this.bhs(OP_LOGOUT_RESP, pdu.itt));
  }
}
