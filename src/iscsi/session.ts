/**
 * The iSCSI session in full feature phase (RFC 7143 §3.2, §4.2): it
 * implements {@link ScsiTransport} for the SCSI layer.
 *
 * Split of concerns (so that recovery can replace a connection):
 * - Session (this file): what happens to each command (issue, Data-Out,
 *   answers, timeouts and task management, Rejects, replay), the ISID/TSIH,
 *   negotiated parameters, CmdSN window and ExpStatSN. It outlives
 *   connections.
 * - The task table (tasks.ts): where each command is (queued, in flight,
 *   deferred) and the ITTs.
 * - The immediate requests' waits (immediate.ts): pings, task management,
 *   logout, by ITT.
 * - The reconnect loop (recovery.ts): Time2Wait, portals, backoff.
 * - Connection (connection.ts): socket and PDU framing only.
 * A lost connection (see {@link Session.#fail}) starts recovery: the tasks
 * are kept, new ones held, the session logs in again with the same ISID
 * and TSIH 0 (session reinstatement at ErrorRecoveryLevel 0, RFC 7143
 * §6.3.5), on the next portal of `portals` when one cannot be reached, and
 * re-issues every unfinished task in its original CmdSN order with a fresh
 * ITT and CmdSN (docs/iscsi.md, "Recovery").
 *
 * Data path (docs/performance.md): Data-In is read by the connection straight into the
 * caller's buffer (the DataPlacer below), Data-Out is sent as views of the
 * caller's buffer, sequence numbers are plain 32-bit serial arithmetic
 * (RFC 1982) on numbers, and the window is refilled on every PDU that moves
 * MaxCmdSN.
 */
import { reactor } from "../sys/reactor.ts";
import { IsbootError, OperationalError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { PathDownError, type ScsiCommand, type ScsiResponse } from "../scsi/transport.ts";
import type { PathTransport } from "../scsi/multipath.ts";
import {
  ASYNC_DROP_ALL_CONNECTIONS,
  ASYNC_DROP_CONNECTION,
  ASYNC_LOGOUT_REQUEST,
  ASYNC_NEGOTIATION_REQUEST,
  ASYNC_SCSI_EVENT,
  ASYNC_TASK_TERMINATION,
  BHS_LENGTH,
  DATA_IN_FLAG_STATUS,
  LOGOUT_CLOSE_SESSION,
  OP_ASYNC_MSG,
  OP_DATA_IN,
  OP_LOGOUT_RESP,
  OP_NOP_IN,
  OP_NOP_OUT,
  OP_R2T,
  OP_REJECT,
  OP_SCSI_CMD,
  OP_SCSI_RESP,
  OP_TASK_MGMT_RESP,
  REJECT_ACTIONS,
  REJECT_REASON_NAMES,
  RESERVED_TAG,
  RESP_FLAG_OVERFLOW,
  RESP_FLAG_UNDERFLOW,
  RESPONSE_COMPLETED,
  TIME2WAIT_MAX,
  TMF_ABORT_TASK,
  TMF_LOGICAL_UNIT_RESET,
  TMF_RESP_COMPLETE,
  TMF_RESP_NAMES,
  TMF_RESP_NO_TASK,
} from "./constants.ts";
import type { Connection } from "./connection.ts";
import { type Crc32c, defaultCrc32c } from "./digest.ts";
import { IscsiProtocolError } from "./errors.ts";
import { ImmediateWaits } from "./immediate.ts";
import { claimIsid, type IsidClaim } from "./isid.ts";
import { login, type LoginResult, randomIsid } from "./login.ts";
import type { SessionParams } from "./negotiate.ts";
import {
  encodeDataOut,
  encodeLogoutRequest,
  encodeNopOut,
  encodeScsiCommand,
  encodeTaskMgmt,
  PduHeader,
} from "./pdu.ts";
import { reconnect } from "./recovery.ts";
import { serialLe, serialLt } from "./serial.ts";
import {
  loginConfigFor,
  RECOVERY_DEFAULTS,
  type SessionConfig,
  type SessionInfo,
} from "./session_config.ts";
import { byCmdSN, newTask, type Task, TaskTable } from "./tasks.ts";
import { formatPortal } from "./uri.ts";

/**
 * Lifecycle of a session. "recovering": the connection is lost, commands
 * are held while the reconnect loop logs in again; "failed" and "closed"
 * are final.
 *
 * ```text
 *              connection lost                  close()
 *   open ─────────────────────► recovering ──────────────────────► closed
 *    │ ▲   relogin, replay         │                                  ▲
 *    │ └───────────────────────────┘                                  │
 *    │ close()          logout answered or timed out                  │
 *    ├────────► closing ──────────────────────────────────────────────┘
 *    │             │ connection lost while closing
 *    │             ▼
 *    └────────► failed ◄──── recovery off (connection lost), or the
 *                            target refused the relogin's authentication
 * ```
 */
export type State = "open" | "recovering" | "closing" | "closed" | "failed";

/** The transitions of {@link State}, as drawn above; any other is a bug. */
const TRANSITIONS: Readonly<Record<State, readonly State[]>> = {
  open: ["recovering", "closing", "failed"],
  recovering: ["open", "closed", "failed"],
  closing: ["closed", "failed"],
  closed: [],
  failed: [],
};

const EMPTY = new Uint8Array(0);

/**
 * A logged-in iSCSI session (full feature phase).
 *
 * @example
 * ```ts
 * const s = await loginSession(config, log);
 * const r = await s.execute({ lun: 1, cdb: readCapacity16Cdb, dataInLength: 32 });
 * await s.close();
 * ```
 */
export class Session implements PathTransport {
  readonly #cfg: SessionConfig;
  readonly #log: Logger;
  #conn: Connection;
  #login: LoginResult;
  #state: State = "open";
  #failure: Error | null = null;
  #params: SessionParams;
  readonly #isid: Uint8Array;
  readonly #crc: Crc32c;
  readonly #sentChallenges: Set<string>;
  /** Successful reinstatements since the first login. */
  #reconnects = 0;
  /** Why the current recovery started; set while recovering. */
  #recoveryCause: Error | null = null;
  /** The recovery timeout passed: commands fail at once until reconnected. */
  #recoveryExpired = false;
  #recoveryTimer?: ReturnType<typeof setTimeout>;
  /** Time2Wait (s) announced by the target for the next reconnect (Async Message, Logout Response). */
  #time2Wait: number | null = null;
  /** Wakes the reconnect loop's sleep (close()). */
  #wake: (() => void) | null = null;
  /** What the recovery waits for now, for the progress line. */
  #waitingFor = "";
  #recoveryStarted = 0;
  #progressTimer?: ReturnType<typeof setInterval>;
  /** Since when queued commands wait for the target's CmdSN window (0: they do not). */
  #windowClosedSince = 0;
  /**
   * Why new commands are held on an open connection (the target asked for a
   * logout or a renegotiation, §11.9.1); null: they are not.
   */
  #holding: string | null = null;
  /** Command timeout escalations run one at a time, as a SCSI error handler does. */
  #escalation: Promise<void> = Promise.resolve();

  /** CmdSN for the next non-immediate command. */
  #cmdSN: number;
  #expCmdSN: number;
  #maxCmdSN: number;
  #expStatSN: number;

  /** Every unfinished command: queued, in flight or deferred (tasks.ts). */
  readonly #t = new TaskTable();
  /** Immediate requests (pings, task management, logout) waiting for their answers. */
  readonly #pending = new ImmediateWaits();
  readonly #bhs = new Uint8Array(BHS_LENGTH);
  #nopTimer?: ReturnType<typeof setInterval>;
  #lastRx = performance.now();
  #ended!: (e: Error | null) => void;
  /**
   * Settles when the session ends: null after close(), the error when the
   * connection failed (serve/attach can exit or report on it).
   */
  readonly ended: Promise<Error | null> = new Promise((r) => (this.#ended = r));

  private constructor(
    cfg: SessionConfig,
    log: Logger,
    r: LoginResult,
    crc: Crc32c,
    sentChallenges: Set<string>,
  ) {
    this.#cfg = cfg;
    this.#log = log;
    this.#crc = crc;
    this.#isid = r.isid;
    this.#sentChallenges = sentChallenges;
    this.#conn = r.conn;
    this.#login = r;
    this.#params = r.params;
    this.#cmdSN = r.cmdSN;
    this.#expCmdSN = r.expCmdSN;
    this.#maxCmdSN = r.maxCmdSN;
    this.#expStatSN = r.expStatSN;
  }

  /** Log in and start the full feature phase. Prefer {@link loginSession}. */
  static async open(cfg: SessionConfig, log: Logger): Promise<Session> {
    const crc = cfg.crc ?? (await defaultCrc32c());
    const claim: IsidClaim = cfg.isidPurpose
      ? claimIsid(cfg.initiatorName, cfg.isidPurpose, { runDir: cfg.runDir, log })
      : { isid: randomIsid(), slot: -1, release: () => {} };
    // Kept for the session's relogins: a target that sends back one of our
    // challenges is refused (reflection, §12.1.3).
    const sentChallenges = new Set<string>();
    let r: LoginResult;
    try {
      r = await login(loginConfigFor(cfg, cfg.portal, claim.isid, sentChallenges), crc, log);
    } catch (e) {
      claim.release();
      throw e;
    }
    const s = new Session(cfg, log, r, crc, sentChallenges);
    // The ISID is ours until the session ends (closed or failed for good).
    void s.ended.then(() => claim.release());
    s.#progressTimer = setInterval(
      () => s.#progress(),
      cfg.progressIntervalMs ?? RECOVERY_DEFAULTS.progressIntervalMs,
    );
    log.debug(() =>
      `logged in to ${cfg.targetName} at ${formatPortal(r.portal)}: tsih=${r.tsih} ` +
      `auth=${r.auth}${r.chapAlgorithm ? `/${r.chapAlgorithm}` : ""} ` +
      `window=${r.expCmdSN}..${r.maxCmdSN} ${JSON.stringify(r.params)}`
    );
    s.#start();
    return s;
  }

  #start(): void {
    // Busy polling pays only at low depth (sys/reactor.ts): say how deep we are.
    void this.ended.then(reactor().addDepthSource(() => this.#t.inFlight.size));
    const conn = this.#conn;
    this.#lastRx = performance.now();
    void this.#readLoop(conn);
    const every = this.#cfg.nopIntervalMs ?? RECOVERY_DEFAULTS.nopIntervalMs;
    if (every > 0) {
      // Checked at half the interval so an idle connection is pinged between
      // 1 and 1.5 intervals after the last PDU, not 2.
      let pinging = false;
      this.#nopTimer = setInterval(() => {
        if (pinging || this.#state !== "open" || performance.now() - this.#lastRx < every) return;
        const timeout = this.#cfg.nopTimeoutMs ?? RECOVERY_DEFAULTS.nopTimeoutMs;
        pinging = true;
        this.ping(timeout).then(
          () => (pinging = false),
          (e) => {
            pinging = false;
            // A send error already failed the connection; what reaches the
            // current connection here is the unanswered ping.
            this.#failConn(conn, e);
          },
        );
      }, Math.max(1, every / 2));
    }
  }

  /** Fail the session's connection, unless `conn` is an old one already replaced. */
  #failConn(conn: Connection, e: unknown): void {
    if (conn === this.#conn) this.#fail(e);
  }

  /** Negotiated parameters and login facts (no secrets). */
  /** Move to `next`, which must be a transition of {@link State}. */
  #setState(next: State): void {
    if (!TRANSITIONS[this.#state].includes(next)) {
      throw new Error(`iSCSI session: no transition from ${this.#state} to ${next}`);
    }
    this.#state = next;
    for (const f of this.#stateListeners) f(next);
  }

  #stateListeners: ((s: State) => void)[] = [];

  /**
   * Call `listener` after every change of {@link state} (the multipath layer,
   * scsi/multipath.ts, learns so when a path is down and when it is back).
   */
  onChange(listener: (s: State) => void): void {
    this.#stateListeners.push(listener);
  }

  /** Whether the session takes commands now (open, not recovering or closed). */
  get up(): boolean {
    return this.#state === "open";
  }

  get info(): SessionInfo {
    const r = this.#login;
    const local = this.#state === "open" ? this.#conn.local : null;
    return {
      portal: formatPortal(r.portal),
      ...(local ? { local } : {}),
      targetName: this.#cfg.targetName,
      isid: Array.from(r.isid, (b) => b.toString(16).padStart(2, "0")).join(""),
      tsih: r.tsih,
      auth: r.auth,
      ...(r.chapAlgorithm ? { chapAlgorithm: r.chapAlgorithm } : {}),
      loginMs: r.loginMs,
      params: { ...this.#params },
    };
  }

  /** iSCSI sets no per-command limit (Expected Data Transfer Length is 32-bit); the SCSI layer's Block Limits decide. */
  get maxTransferHint(): number {
    return 0;
  }

  /** "open", "recovering", "closing", "closed" or "failed". */
  get state(): State {
    return this.#state;
  }

  /** Connections recovered (session reinstated) since the first login, for `isboot status`. */
  get reconnects(): number {
    return this.#reconnects;
  }

  /** Commands sent and not yet answered, and commands waiting for the window. */
  get outstanding(): { inFlight: number; queued: number } {
    return { inFlight: this.#t.inFlight.size, queued: this.#t.queue.length };
  }

  /** Current CmdSN window, for tests and status. */
  get window(): { cmdSN: number; expCmdSN: number; maxCmdSN: number; expStatSN: number } {
    return {
      cmdSN: this.#cmdSN,
      expCmdSN: this.#expCmdSN,
      maxCmdSN: this.#maxCmdSN,
      expStatSN: this.#expStatSN,
    };
  }

  // ---- commands -----------------------------------------------------------

  /**
   * Run one SCSI command. Resolves with status, data and sense; rejects only
   * when the command could not be carried out (session failed, rejected,
   * timed out and aborted).
   */
  execute(cmd: ScsiCommand): Promise<ScsiResponse> {
    if (this.#state === "recovering" && this.#recoveryExpired) {
      return Promise.reject(this.#recoveryError());
    }
    if (this.#state !== "open" && this.#state !== "recovering") {
      return Promise.reject(this.#failure ?? new OperationalError("iSCSI session is closed"));
    }
    const inLen = cmd.dataInLength ?? 0;
    const outLen = cmd.dataOut?.length ?? 0;
    if (cmd.cdb.length < 6 || cmd.cdb.length > 16) {
      return Promise.reject(new RangeError(`CDB length ${cmd.cdb.length} not in 6..16`));
    }
    if (!Number.isInteger(cmd.lun) || cmd.lun < 0 || cmd.lun > 16383) {
      return Promise.reject(new RangeError(`LUN ${cmd.lun} out of range`));
    }
    if (!Number.isInteger(inLen) || inLen < 0 || inLen > 0xffffffff) {
      return Promise.reject(new RangeError(`dataInLength ${inLen} out of range`));
    }
    if (inLen && outLen) {
      return Promise.reject(new RangeError("bidirectional commands are not supported"));
    }
    if (cmd.dataInBuffer && cmd.dataInBuffer.length < inLen) {
      return Promise.reject(new RangeError("dataInBuffer shorter than dataInLength"));
    }
    return new Promise<ScsiResponse>((resolve, reject) => {
      const task = newTask(cmd, this.#cfg.commandTimeoutMs ?? 0, resolve, reject);
      this.#t.queue.push(task);
      this.#pump();
    });
  }

  /** Issue queued commands while the target's window (ExpCmdSN..MaxCmdSN) has room (§4.2.2.1). */
  #pump(): void {
    while (
      this.#t.queue.length && this.#state === "open" && this.#holding === null &&
      serialLe(this.#cmdSN, this.#maxCmdSN)
    ) {
      this.#issue(this.#t.queue.shift() as Task);
    }
    if (this.#t.queue.length === 0 || this.#state !== "open") this.#windowClosedSince = 0;
    else if (this.#windowClosedSince === 0) this.#windowClosedSince = performance.now();
  }

  /** The progress line (RECOVERY_DEFAULTS.progressIntervalMs): what the session waits for. */
  #progress(): void {
    const now = performance.now();
    if (this.#state === "recovering") {
      this.#log.warn(
        `iSCSI recovery: ${((now - this.#recoveryStarted) / 1000).toFixed(1)} s since the ` +
          `connection was lost; waiting for ${this.#waitingFor}; ${this.#t.queue.length} command(s) held`,
      );
    } else if (
      this.#state === "open" && this.#windowClosedSince > 0 &&
      now - this.#windowClosedSince >= RECOVERY_DEFAULTS.progressIntervalMs
    ) {
      this.#log.warn(
        `iSCSI: ${this.#t.queue.length} command(s) waiting ${
          ((now - this.#windowClosedSince) / 1000).toFixed(0)
        } s for the target's CmdSN window (CmdSN ${this.#cmdSN}, MaxCmdSN ${this.#maxCmdSN})`,
      );
    }
  }

  #allocItt(): number {
    return this.#t.allocItt((itt) => this.#pending.has(itt));
  }

  #send(data: Uint8Array = EMPTY): void {
    const conn = this.#conn;
    conn.send(this.#bhs, data).catch((e) => this.#failConn(conn, e));
  }

  #issue(t: Task): void {
    t.itt = this.#allocItt();
    t.cmdSN = this.#cmdSN;
    this.#cmdSN = (this.#cmdSN + 1) >>> 0;
    this.#t.inFlight.set(t.itt, t);
    this.#sendCommand(t);
  }

  /** Send the command PDU of an issued task (its ITT and CmdSN set) and start its timer. */
  #sendCommand(t: Task): void {
    const p = this.#params;
    t.received = 0;
    t.nextDataSN = 0;
    t.nextR2TSN = 0;
    t.aborting = false;
    const sends = ++t.sends;
    const out = t.cmd.dataOut ?? EMPTY;
    const len = t.write ? out.length : 0;
    // Immediate data (§13.11) and unsolicited Data-Out (§13.10) up to FirstBurstLength.
    const imm = t.write && p.immediateData
      ? Math.min(len, p.firstBurstLength, p.maxXmitDataSegmentLength)
      : 0;
    const unsolicitedEnd = t.write && !p.initialR2T ? Math.min(len, p.firstBurstLength) : imm;
    encodeScsiCommand(this.#bhs, {
      final: unsolicitedEnd === imm,
      read: t.read,
      write: t.write,
      lun: t.lun,
      itt: t.itt,
      expectedDataTransferLength: t.expectedLength,
      cmdSN: t.cmdSN,
      expStatSN: this.#expStatSN,
      cdb: t.cmd.cdb,
      dataSegmentLength: imm,
    });
    this.#send(out.subarray(0, imm));
    if (unsolicitedEnd > imm) this.#sendDataOut(t, RESERVED_TAG, imm, unsolicitedEnd);
    if (t.timer !== undefined) clearTimeout(t.timer);
    t.timer = undefined;
    if (t.timeoutMs > 0) t.timer = setTimeout(() => this.#timedOut(t, sends), t.timeoutMs);
  }

  /** One Data-Out sequence for [from, to) of the task's buffer (§11.8), PDUs within the target's limit. */
  #sendDataOut(t: Task, ttt: number, from: number, to: number): void {
    const out = t.cmd.dataOut as Uint8Array;
    const max = this.#params.maxXmitDataSegmentLength;
    let dataSN = 0;
    for (let off = from; off < to; off += max) {
      const n = Math.min(max, to - off);
      encodeDataOut(this.#bhs, {
        final: off + n === to,
        lun: t.lun,
        itt: t.itt,
        ttt,
        expStatSN: this.#expStatSN,
        dataSN: dataSN++,
        bufferOffset: off,
        dataSegmentLength: n,
      });
      this.#send(out.subarray(off, off + n));
    }
  }

  /**
   * A command failed in a way that is retried (aborted, reset, rejected as
   * "not now"): may it be issued again? Always, unless the recovery timeout
   * is finite and has passed since its first such failure (0: never), so a
   * root disk that waits forever never sees an error from this.
   */
  #mayRetry(t: Task): boolean {
    const limit = this.#cfg.recoveryTimeoutMs;
    if (limit === undefined || !Number.isFinite(limit)) return true;
    const now = performance.now();
    if (t.firstRetryAt === 0) t.firstRetryAt = now;
    return now - t.firstRetryAt < limit;
  }

  /**
   * Put in-flight tasks back at the front of the queue, in CmdSN order, to
   * be issued again with a fresh ITT and CmdSN; those out of retries fail
   * with `err`.
   */
  #reissue(tasks: Task[], err: Error): void {
    const again: Task[] = [];
    for (const t of tasks.sort(byCmdSN)) {
      if (!this.#t.takeOut(t)) continue;
      if (!this.#mayRetry(t)) {
        this.#t.checkDrained();
        t.reject(err);
        continue;
      }
      const base = this.#cfg.commandTimeoutMs ?? 0;
      t.timeoutMs = Math.min(t.timeoutMs * 2, base * RECOVERY_DEFAULTS.commandTimeoutGrowth);
      again.push(t);
    }
    this.#t.queue = [...again, ...this.#t.queue];
    this.#pump();
  }

  #complete(t: Task, status: number, flags: number, residual: number, sense?: Uint8Array): void {
    if (!this.#t.finish(t)) return;
    const underflow = flags & RESP_FLAG_UNDERFLOW ? residual : 0;
    const overflow = flags & RESP_FLAG_OVERFLOW ? residual : 0;
    const dataLen = t.read ? Math.max(0, Math.min(t.received, t.expectedLength - underflow)) : 0;
    t.resolve({
      status,
      data: t.dataIn ? t.dataIn.subarray(0, dataLen) : EMPTY,
      residualUnderflow: underflow,
      residualOverflow: overflow,
      ...(sense ? { sense } : {}),
    });
    this.#pump();
  }

  // ---- receiving ----------------------------------------------------------

  /** Where a Data-In segment goes: straight into the task's buffer, after the checks. */
  readonly #place = (h: PduHeader): Uint8Array | null => {
    if (h.opcode !== OP_DATA_IN) return null;
    const t = this.#t.inFlight.get(h.itt);
    if (!t && this.#t.endedByTmf(h.itt)) return null; // read and dropped by #onDataIn
    if (!t) throw new IscsiProtocolError(`Data-In for unknown ITT 0x${h.itt.toString(16)}`);
    if (!t.read || !t.dataIn) {
      throw new IscsiProtocolError(`Data-In for a command that reads nothing`);
    }
    const off = h.bufferOffset;
    const n = h.dataSegmentLength;
    // DataPDUInOrder=Yes and DataSequenceInOrder=Yes (§13.18, §13.19): data arrives in order.
    if (off !== t.received) {
      throw new IscsiProtocolError(
        `Data-In at offset ${off}, expected ${t.received} (out of order)`,
      );
    }
    if (off + n > t.expectedLength) {
      throw new IscsiProtocolError(`Data-In past the buffer: ${off}+${n} > ${t.expectedLength}`);
    }
    if (h.dataSN !== t.nextDataSN) {
      throw new IscsiProtocolError(`Data-In DataSN ${h.dataSN}, expected ${t.nextDataSN}`);
    }
    return t.dataIn.subarray(off, off + n);
  };

  async #readLoop(conn: Connection): Promise<void> {
    try {
      while (!conn.closed) {
        const { header, data } = await conn.readPdu(this.#place);
        if (conn !== this.#conn) return;
        this.#lastRx = performance.now();
        this.#dispatch(header, data);
      }
    } catch (e) {
      this.#failConn(conn, e);
    }
  }

  #updateWindow(h: PduHeader): void {
    const exp = h.expCmdSN;
    const max = h.maxCmdSN;
    // §4.2.2.1: MaxCmdSN < ExpCmdSN - 1 means the fields must be ignored.
    if (serialLt(max, (exp - 1) >>> 0)) return;
    if (serialLt(this.#expCmdSN, exp)) this.#expCmdSN = exp;
    if (serialLt(this.#maxCmdSN, max)) this.#maxCmdSN = max;
  }

  #ackStatus(h: PduHeader): void {
    if (serialLe(this.#expStatSN, h.statSN)) this.#expStatSN = (h.statSN + 1) >>> 0;
  }

  #dispatch(h: PduHeader, data: Uint8Array): void {
    this.#updateWindow(h);
    switch (h.opcode) {
      case OP_DATA_IN:
        this.#onDataIn(h);
        break;
      case OP_SCSI_RESP:
        this.#ackStatus(h);
        this.#onScsiResponse(h, data);
        break;
      case OP_R2T:
        this.#onR2T(h);
        break;
      case OP_NOP_IN:
        this.#onNopIn(h, data);
        break;
      case OP_TASK_MGMT_RESP:
      case OP_LOGOUT_RESP:
        this.#ackStatus(h);
        this.#answerPending(h, data);
        break;
      case OP_ASYNC_MSG:
        this.#ackStatus(h);
        this.#onAsync(h, data);
        break;
      case OP_REJECT:
        this.#ackStatus(h);
        this.#onReject(h, data);
        break;
      default:
        throw new IscsiProtocolError(`unexpected ${h.name} in full feature phase`);
    }
    this.#pump();
  }

  #onDataIn(h: PduHeader): void {
    const t = this.#t.inFlight.get(h.itt);
    if (!t) {
      // #place let through only the ITT of a task that task management ended.
      const final = (h.flags & DATA_IN_FLAG_STATUS) !== 0;
      if (final) this.#ackStatus(h);
      return this.#late(h, final);
    }
    t.received += h.dataSegmentLength;
    t.nextDataSN = (t.nextDataSN + 1) >>> 0;
    if (h.flags & DATA_IN_FLAG_STATUS) {
      if (!h.final) throw new IscsiProtocolError("Data-In with S bit but without F bit");
      this.#ackStatus(h);
      this.#checkResidual(t, h);
      this.#complete(t, h.status, h.flags, h.residualCount);
    }
  }

  #checkResidual(t: Task, h: PduHeader): void {
    if ((h.flags & RESP_FLAG_UNDERFLOW) && h.residualCount > t.expectedLength) {
      throw new IscsiProtocolError(
        `residual underflow ${h.residualCount} > expected ${t.expectedLength}`,
      );
    }
  }

  #onScsiResponse(h: PduHeader, data: Uint8Array): void {
    const t = this.#t.inFlight.get(h.itt);
    if (!t && this.#t.endedByTmf(h.itt)) return this.#late(h, true);
    if (!t) throw new IscsiProtocolError(`SCSI Response for unknown ITT 0x${h.itt.toString(16)}`);
    this.#checkResidual(t, h);
    let sense: Uint8Array | undefined;
    if (data.length >= 2) {
      const senseLength = (data[0] << 8) | data[1];
      if (2 + senseLength > data.length) {
        throw new IscsiProtocolError(`SenseLength ${senseLength} beyond the data segment`);
      }
      if (senseLength) sense = data.subarray(2, 2 + senseLength);
    } else if (data.length === 1) {
      throw new IscsiProtocolError("SCSI Response data segment of 1 byte");
    }
    if (h.response !== RESPONSE_COMPLETED) {
      if (this.#t.finish(t)) {
        t.reject(
          new OperationalError(
            `target failure (iSCSI response 0x${h.response.toString(16)}) for CDB 0x${
              t.cmd.cdb[0].toString(16)
            }`,
          ),
        );
      }
      return;
    }
    this.#complete(t, h.status, h.flags, h.residualCount, sense);
  }

  #onR2T(h: PduHeader): void {
    const t = this.#t.inFlight.get(h.itt);
    if (!t && this.#t.endedByTmf(h.itt)) return this.#late(h, false);
    if (!t) throw new IscsiProtocolError(`R2T for unknown ITT 0x${h.itt.toString(16)}`);
    if (!t.write) throw new IscsiProtocolError("R2T for a command that writes nothing");
    const off = h.bufferOffset;
    const n = h.desiredDataTransferLength;
    if (n === 0 || off + n > t.expectedLength) {
      throw new IscsiProtocolError(`R2T beyond the transfer: ${off}+${n} > ${t.expectedLength}`);
    }
    if (n > this.#params.maxBurstLength) {
      throw new IscsiProtocolError(
        `R2T for ${n} bytes exceeds MaxBurstLength ${this.#params.maxBurstLength}`,
      );
    }
    if (h.r2tSN !== t.nextR2TSN) {
      throw new IscsiProtocolError(`R2TSN ${h.r2tSN}, expected ${t.nextR2TSN}`);
    }
    if (h.ttt === RESERVED_TAG) {
      throw new IscsiProtocolError("R2T with the reserved Target Transfer Tag");
    }
    t.nextR2TSN = (t.nextR2TSN + 1) >>> 0;
    if (t.aborting) return;
    this.#sendDataOut(t, h.ttt, off, off + n);
  }

  /**
   * A PDU for a task that task management ended: the target answered it as
   * the function took effect. Its command was issued again under a new ITT,
   * so this answer belongs to nobody and is dropped; `final` (status came)
   * forgets the ITT.
   */
  #late(h: PduHeader, final: boolean): void {
    this.#log.info(
      `late ${h.name} for ITT 0x${
        h.itt.toString(16)
      }, a task ended by task management and issued again; dropped`,
    );
    if (final) this.#t.forgetEnded(h.itt);
  }

  #onNopIn(h: PduHeader, data: Uint8Array): void {
    if (h.itt === RESERVED_TAG) {
      // A ping from the target (§11.19): answer unless it wants no answer (TTT reserved).
      if (h.ttt === RESERVED_TAG) return;
      const echo = data.subarray(0, Math.min(data.length, this.#params.maxXmitDataSegmentLength));
      encodeNopOut(this.#bhs, {
        itt: RESERVED_TAG,
        ttt: h.ttt,
        cmdSN: this.#cmdSN,
        expStatSN: this.#expStatSN,
        lunBytes: h.lunBytes,
        dataSegmentLength: echo.length,
      });
      this.#send(echo.slice());
      return;
    }
    this.#ackStatus(h);
    this.#answerPending(h, data);
  }

  /** The answer to an immediate request (NOP-Out, task management, logout) ends its wait. */
  #answerPending(h: PduHeader, data: Uint8Array): void {
    this.#pending.answer(h, data);
  }

  #onAsync(h: PduHeader, data: Uint8Array): void {
    switch (h.asyncEvent) {
      case ASYNC_SCSI_EVENT:
        this.#log.info(`target reports a SCSI asynchronous event (${data.length} bytes of sense)`);
        break;
      case ASYNC_LOGOUT_REQUEST: {
        // §11.9.1: no new commands on this connection, a Logout within
        // Parameter3 seconds; the relogin and replay are the usual recovery.
        const within = h.asyncParameter3;
        this.#log.warn(`target requests logout within ${within} s; holding new commands`);
        this.#logoutAndRelogin(
          "target requested logout",
          Math.min(RECOVERY_DEFAULTS.logoutDrainMs, within * 500),
        );
        break;
      }
      case ASYNC_DROP_CONNECTION:
      case ASYNC_DROP_ALL_CONNECTIONS:
        // §11.9.1: Parameter2 is the Time2Wait before reconnecting.
        this.#time2Wait = h.asyncParameter2;
        this.#fail(
          new OperationalError(
            `target is dropping the connection (Time2Wait ${h.asyncParameter2} s, Time2Retain ${h.asyncParameter3} s)`,
          ),
        );
        break;
      case ASYNC_NEGOTIATION_REQUEST:
        // §11.9.1 allows a Text Request or a Logout. Parameters that matter
        // (digests, burst lengths, ImmediateData) can only change at login,
        // so we log out and in again, as open-iscsi does (docs/iscsi.md).
        this.#log.warn("target requests parameter renegotiation; logging out and in again");
        this.#logoutAndRelogin(
          "target requested parameter renegotiation",
          RECOVERY_DEFAULTS.logoutDrainMs,
        );
        break;
      case ASYNC_TASK_TERMINATION:
        this.#log.warn("target reports that it terminated all tasks");
        break;
      default:
        this.#log.debug(`Async Message event ${h.asyncEvent} ignored`);
    }
  }

  #onReject(h: PduHeader, data: Uint8Array): void {
    const reason = REJECT_REASON_NAMES[h.rejectReason] ?? `reason 0x${h.rejectReason.toString(16)}`;
    if (data.length < BHS_LENGTH) {
      throw new IscsiProtocolError("Reject without the rejected header");
    }
    // The data segment is the header of the PDU rejected (one of ours).
    const rejected = new PduHeader(data.subarray(0, BHS_LENGTH));
    const itt = rejected.itt;
    const opcode = rejected.opcode;
    const what = rejected.name;
    const action = REJECT_ACTIONS[h.rejectReason];
    const err = new OperationalError(`target rejected a ${what}: ${reason}`);
    if (action === "recover") {
      // §7.8 / §6.7: at ERL 0 the data cannot be resent on its own; the
      // connection is recovered and the command replayed whole.
      throw new IscsiProtocolError(`${err.message} (ITT 0x${itt.toString(16)})`);
    }
    const t = this.#t.inFlight.get(itt);
    if (t && opcode !== OP_SCSI_CMD) {
      // §11.17.1: a Reject of a PDU of a running task (a Data-Out) does not
      // end the task; the target ends it with a SCSI Response, and the
      // command timeout covers a target that never does.
      this.#log.warn(
        `${err.message} (ITT 0x${itt.toString(16)}); waiting for the command's status`,
      );
      return;
    }
    if (t) {
      this.#onCommandRejected(t, action, h.expCmdSN, err);
      return;
    }
    const p = this.#pending.take(itt);
    if (p) {
      // A ping answered "not now" (too many immediate commands, §11.17.1)
      // still shows the target alive and reading, which is all a ping asks;
      // failing it would drop a working connection.
      if (opcode === OP_NOP_OUT && action === "retry") p.resolve(h, data);
      else p.reject(err);
      return;
    }
    this.#log.warn(`${err.message} (ITT 0x${itt.toString(16)})`);
  }

  /**
   * A SCSI Command PDU was rejected (docs/iscsi.md, "Rejects"): resend it
   * later, hold it for the relogin, or fail it with the reason's name.
   */
  #onCommandRejected(
    t: Task,
    action: "retry" | "relogin" | undefined,
    expCmdSN: number,
    err: OperationalError,
  ): void {
    const cdb = `0x${t.cmd.cdb[0].toString(16)}`;
    const failed = new OperationalError(`SCSI command ${cdb}: ${err.message}`);
    if (action === undefined || !this.#mayRetry(t)) {
      if (this.#t.finish(t)) t.reject(failed);
      return;
    }
    if (action === "relogin") {
      // The target takes nothing new until we log out: hold the command
      // for the replay, and log out if the Async Message was missed.
      this.#t.takeOut(t);
      this.#t.deferred.push(t);
      this.#logoutAndRelogin(
        "target rejects commands while waiting for a logout",
        RECOVERY_DEFAULTS.logoutDrainMs,
      );
      return;
    }
    const delay = Math.min(
      RECOVERY_DEFAULTS.rejectRetryInitialMs * 2 ** t.rejects++,
      RECOVERY_DEFAULTS.rejectRetryMaxMs,
    );
    this.#log.info(`${failed.message}; sending it again in ${delay} ms`);
    const conn = this.#conn;
    if (serialLt(t.cmdSN, expCmdSN)) {
      // The target counted the CmdSN (its ExpCmdSN is past it): issue the
      // command anew, with a fresh ITT and CmdSN.
      this.#t.takeOut(t);
      this.#t.deferred.push(t);
      t.timer = setTimeout(() => {
        t.timer = undefined;
        const i = this.#t.deferred.indexOf(t);
        if (i < 0 || conn !== this.#conn) return;
        this.#t.deferred.splice(i, 1);
        this.#t.queue.unshift(t);
        this.#pump();
      }, delay);
      return;
    }
    // A gap at its CmdSN (§4.2.2.1): the target waits for exactly this
    // CmdSN, so the same PDU (same ITT and CmdSN) goes again.
    if (t.timer !== undefined) clearTimeout(t.timer);
    const sends = t.sends;
    t.timer = setTimeout(() => {
      t.timer = undefined;
      if (!this.#t.isCurrent(t, sends) || conn !== this.#conn || this.#state !== "open") return;
      if (this.#holding === null) {
        this.#sendCommand(t);
        return;
      }
      // A logout is coming: the replay after it sends the command.
      this.#t.takeOut(t);
      this.#t.deferred.push(t);
    }, delay);
  }

  // ---- immediate requests: NOP-Out, task management, logout ----------------

  #request(
    build: (itt: number) => Uint8Array,
    timeoutMs: number,
    what: string,
  ): Promise<{ h: PduHeader; data: Uint8Array }> {
    if (this.#state === "failed" || this.#state === "closed") {
      return Promise.reject(this.#failure ?? new OperationalError("iSCSI session is closed"));
    }
    if (this.#state === "recovering") {
      return Promise.reject(
        new OperationalError(`${what}: the iSCSI connection is being recovered`),
      );
    }
    const itt = this.#allocItt();
    const answer = this.#pending.wait(itt, timeoutMs, what);
    try {
      this.#send(build(itt));
    } catch (e) {
      this.#pending.take(itt)?.reject(e instanceof Error ? e : new Error(String(e)));
    }
    return answer;
  }

  /**
   * NOP-Out ping (§11.18); resolves with the round trip in ms.
   *
   * @example
   * ```ts
   * const ms = await session.ping();
   * ```
   */
  async ping(timeoutMs = 10000): Promise<number> {
    const t0 = performance.now();
    await this.#request(
      (itt) => {
        encodeNopOut(this.#bhs, {
          itt,
          ttt: RESERVED_TAG,
          cmdSN: this.#cmdSN,
          expStatSN: this.#expStatSN,
          dataSegmentLength: 0,
        });
        return EMPTY;
      },
      timeoutMs,
      "NOP-Out",
    );
    return performance.now() - t0;
  }

  /**
   * Send a task management function (§11.5) and return the TMF response
   * code (0 = function complete; see TMF_RESP_NAMES).
   *
   * @example
   * ```ts
   * await session.taskManagement(TMF_LOGICAL_UNIT_RESET, 1);
   * ```
   */
  async taskManagement(
    func: number,
    lun: number,
    ref?: { itt: number; cmdSN: number },
    timeoutMs = 10000,
  ): Promise<number> {
    const { h } = await this.#request(
      (itt) => {
        encodeTaskMgmt(this.#bhs, {
          func,
          lun,
          itt,
          referencedTaskTag: ref?.itt ?? RESERVED_TAG,
          cmdSN: this.#cmdSN,
          expStatSN: this.#expStatSN,
          refCmdSN: ref?.cmdSN ?? 0,
        });
        return EMPTY;
      },
      timeoutMs,
      "task management",
    );
    return h.response;
  }

  /** A command ran past its timeout: queue its escalation behind any running one. */
  #timedOut(t: Task, sends: number): void {
    t.timer = undefined;
    // Never rejects: a failed escalation must not stop the next one, nor end the process.
    const run = () =>
      this.#escalate(t, sends).catch((e) =>
        this.#failConn(this.#conn, e instanceof Error ? e : new Error(String(e)))
      );
    this.#escalation = this.#escalation.then(run);
  }

  /**
   * The escalation of a command that timed out, as open-iscsi's error
   * handler does it: ABORT TASK; if the target neither aborted it nor says
   * it has no such task, or does not answer, LOGICAL UNIT RESET (which ends
   * every task of the LU, §11.5.1); if that fails too, drop the connection
   * and recover. Commands ended by the abort or the reset are issued again,
   * never failed (unless out of retries, see #mayRetry).
   */
  async #escalate(t: Task, sends: number): Promise<void> {
    if (!this.#t.isCurrent(t, sends) || this.#state !== "open") return;
    const conn = this.#conn;
    const ms = t.timeoutMs;
    const tmfMs = Math.min(ms, RECOVERY_DEFAULTS.tmfTimeoutMs);
    const cdb = `0x${t.cmd.cdb[0].toString(16)}`;
    const timedOut = new OperationalError(`SCSI command ${cdb} timed out after ${ms} ms`);
    t.aborting = true;
    this.#log.warn(
      `${timedOut.message} (ITT 0x${t.itt.toString(16)}, CmdSN ${t.cmdSN}); sending ABORT TASK`,
    );
    const abort = await this.#tmf(TMF_ABORT_TASK, t.lun, t, tmfMs);
    if (conn !== this.#conn || this.#state !== "open") return;
    if (abort === TMF_RESP_COMPLETE || abort === TMF_RESP_NO_TASK) {
      if (this.#t.isCurrent(t, sends)) {
        this.#t.rememberEnded([t]);
        this.#reissue([t], timedOut);
      }
      return;
    }
    this.#log.warn(
      `ABORT TASK: ${tmfOutcome(abort, tmfMs)}; sending LOGICAL UNIT RESET to LUN ${t.lun}`,
    );
    // The reset is an immediate command carrying the next CmdSN; it acts on
    // the commands of the session with a lower CmdSN only (§11.5.1). Those
    // issued while it is pending run on and answer for themselves: issuing
    // them again would run them twice and meet their answer as a protocol
    // error.
    const resetCmdSN = this.#cmdSN;
    const reset = await this.#tmf(TMF_LOGICAL_UNIT_RESET, t.lun, undefined, tmfMs);
    if (conn !== this.#conn || this.#state !== "open") return;
    if (reset === TMF_RESP_COMPLETE) {
      // Every task of the LU the reset covered and still without status was ended by it.
      const ended = [...this.#t.inFlight.values()].filter((x) =>
        x.lun === t.lun && serialLt(x.cmdSN, resetCmdSN)
      );
      this.#log.warn(`LOGICAL UNIT RESET done; issuing ${ended.length} command(s) again`);
      this.#t.rememberEnded(ended);
      this.#reissue(
        ended,
        new OperationalError(`${timedOut.message}; ended by LOGICAL UNIT RESET`),
      );
      return;
    }
    this.#failConn(
      conn,
      new OperationalError(
        `${timedOut.message}; LOGICAL UNIT RESET: ${tmfOutcome(reset, tmfMs)}`,
      ),
    );
  }

  /** A task management function's response code, or null when unanswered or not sent. */
  async #tmf(
    func: number,
    lun: number,
    ref: { itt: number; cmdSN: number } | undefined,
    ms: number,
  ): Promise<number | null> {
    try {
      return await this.taskManagement(func, lun, ref, ms);
    } catch (e) {
      this.#log.debug(`task management ${func}: ${e instanceof Error ? e.message : String(e)}`);
      return null;
    }
  }

  async #logout(timeoutMs: number): Promise<void> {
    const { h } = await this.#request(
      (itt) => {
        encodeLogoutRequest(this.#bhs, {
          reason: LOGOUT_CLOSE_SESSION,
          itt,
          cid: 0,
          cmdSN: this.#cmdSN,
          expStatSN: this.#expStatSN,
        });
        return EMPTY;
      },
      timeoutMs,
      "logout",
    );
    if (h.response !== 0) {
      this.#log.warn(`logout response ${h.response} (session not closed cleanly)`);
    }
    // §11.15: Time2Wait before a new login (0 when not given).
    if (h.time2Wait) this.#time2Wait = h.time2Wait;
  }

  /**
   * The target asked for a logout (§11.9.1 event 1), or for a renegotiation
   * (event 4), or rejects commands while it waits for a logout: hold new
   * commands, give those in flight up to `drainMs` to finish, log out, then
   * recover as after any connection loss (relogin after Time2Wait, replay of
   * what did not complete). The commands see no error.
   */
  #logoutAndRelogin(why: string, drainMs: number): void {
    if (this.#holding !== null || this.#state !== "open") return;
    this.#holding = why;
    const conn = this.#conn;
    void (async () => {
      await this.#t.whenIdle(drainMs);
      if (conn !== this.#conn || this.#state !== "open") return;
      try {
        await this.#logout(RECOVERY_DEFAULTS.logoutTimeoutMs);
      } catch (e) {
        this.#log.debug(`logout: ${e instanceof Error ? e.message : String(e)}`);
      }
      this.#failConn(conn, new OperationalError(why));
    })();
  }

  /**
   * Finish the commands in flight, log out (close session, §11.14) and close
   * the connection. Idempotent.
   */
  async close(timeoutMs = 10000): Promise<void> {
    if (this.#state === "recovering") {
      // No connection to log out on: give up the held commands and stop.
      this.#setState("closed");
      clearInterval(this.#progressTimer);
      this.#stopRecovery();
      this.#failAll(new OperationalError("iSCSI session closed during recovery"));
      this.#ended(null);
      return;
    }
    if (this.#state !== "open") return;
    this.#setState("closing");
    if (this.#nopTimer !== undefined) clearInterval(this.#nopTimer);
    if (this.#t.inFlight.size || this.#t.queue.length) {
      // Queued commands still get the window as responses come in.
      const drained = new Promise<void>((r) => (this.#t.drained = r));
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([drained, new Promise((r) => (timer = setTimeout(r, timeoutMs)))]);
      clearTimeout(timer);
    }
    try {
      await this.#logout(Math.min(timeoutMs, 5000));
    } catch (e) {
      this.#log.debug(`logout: ${e instanceof Error ? e.message : String(e)}`);
    }
    // The connection may have failed meanwhile (closing -> failed): that stays.
    if (this.state === "failed") return;
    this.#setState("closed");
    clearInterval(this.#progressTimer);
    this.#conn.close();
    this.#failAll(new OperationalError("iSCSI session closed"));
    this.#ended(null);
  }

  /**
   * The connection is gone or broke the protocol (socket error or EOF, a
   * digest or protocol error, an unanswered NOP-Out, an Async Message asking
   * to drop the connection or log out). Starts recovery, which keeps every
   * command; the session fails for good only when closing, when recovery is
   * off (`recoveryTimeoutMs: 0`) or on repeated authentication failures.
   */
  #fail(e: unknown): void {
    if (this.#state === "failed" || this.#state === "closed" || this.#state === "recovering") {
      return;
    }
    const err = e instanceof IsbootError
      ? e
      : new OperationalError(e instanceof Error ? e.message : String(e));
    if (this.#state === "closing" || this.#cfg.recoveryTimeoutMs === 0) {
      this.#failPermanently(err, `iSCSI connection to ${this.#conn.peer} failed: ${err.message}`);
      return;
    }
    this.#log.warn(`iSCSI connection to ${this.#conn.peer} lost: ${err.message}; recovering`);
    this.#setState("recovering");
    this.#recoveryStarted = performance.now();
    this.#waitingFor = "the reconnect to start";
    this.#recoveryCause = err;
    this.#recoveryExpired = false;
    if (this.#nopTimer !== undefined) clearInterval(this.#nopTimer);
    this.#conn.close(err);
    // Immediate requests (pings, TMFs, logout) belong to the lost connection.
    this.#pending.failAll(err);
    // Unfinished tasks go back to the front of the queue in the order they
    // were issued (Map order = CmdSN order): writes keep their order and a
    // SYNCHRONIZE CACHE stays behind the writes it covered.
    this.#holding = null;
    this.#t.requeueUnfinished();
    if (this.#cfg.failFast) {
      // One path of several: what we held goes on another path now.
      this.#recoveryExpired = true;
      this.#failAll(this.#recoveryError());
    }
    const limit = this.#cfg.recoveryTimeoutMs;
    if (!this.#cfg.failFast && limit !== undefined && Number.isFinite(limit)) {
      this.#recoveryTimer = setTimeout(() => {
        if (this.#state !== "recovering") return;
        this.#recoveryExpired = true;
        const held = this.#t.queue.length;
        this.#log.error(
          `iSCSI recovery not done within ${
            limit / 1000
          } s: failing ${held} command(s); still reconnecting`,
        );
        this.#failAll(this.#recoveryError());
      }, limit);
    }
    void this.#recover(performance.now());
  }

  #recoveryError(): OperationalError {
    const why = this.#recoveryCause?.message ?? "connection lost";
    if (this.#cfg.failFast) {
      return new PathDownError(`iSCSI path ${this.#conn.peer} is down (${why})`);
    }
    return new OperationalError(
      `iSCSI connection not recovered within ${
        (this.#cfg.recoveryTimeoutMs ?? 0) / 1000
      } s (${why})`,
    );
  }

  #failPermanently(err: Error, message: string): void {
    this.#log.error(message);
    this.#setState("failed");
    this.#failure = err;
    clearInterval(this.#progressTimer);
    this.#stopRecovery();
    if (this.#nopTimer !== undefined) clearInterval(this.#nopTimer);
    this.#conn.close(err);
    this.#failAll(err);
    this.#ended(err);
  }

  #stopRecovery(): void {
    if (this.#recoveryTimer !== undefined) clearTimeout(this.#recoveryTimer);
    this.#recoveryTimer = undefined;
    this.#wake?.();
  }

  /** Sleep that close() can cut short. */
  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const wake = () => done();
      this.#wake = wake;
      function done() {
        clearTimeout(timer);
        resolve();
      }
    });
  }

  /**
   * Recovery after a lost connection: the reconnect loop (recovery.ts) over
   * the portals, then the replay of the held tasks (#resume).
   */
  async #recover(started: number): Promise<void> {
    // §6.3.5/§13.15: wait at least DefaultTime2Wait (or the target's Time2Wait) first.
    const time2Wait = Math.min(this.#time2Wait ?? this.#params.defaultTime2Wait, TIME2WAIT_MAX);
    this.#time2Wait = null;
    const out = await reconnect({
      portals: [this.#cfg.portal, ...(this.#cfg.portals ?? [])],
      time2Wait,
      login: (portal) =>
        login(
          {
            ...loginConfigFor(this.#cfg, portal, this.#isid, this.#sentChallenges),
            // A tgt that numbers SHA-1 as 7 (login.ts) still does after a restart.
            chapSha1As7: this.#login.chapAlgorithm?.includes("CHAP_A=7") ?? false,
          },
          this.#crc,
          this.#log,
        ),
      sleep: (ms) => this.#sleep(ms),
      recovering: () => this.#state === "recovering",
      waitingFor: (what) => (this.#waitingFor = what),
      log: this.#log,
    });
    if (out === null) return;
    if ("refused" in out) this.#failPermanently(out.refused, out.message);
    else this.#resume(out.login, performance.now() - started);
  }

  /** A relogin succeeded: take its numbers, start the connection, replay the held tasks. */
  #resume(r: LoginResult, ms: number): void {
    if (this.#recoveryTimer !== undefined) clearTimeout(this.#recoveryTimer);
    this.#recoveryTimer = undefined;
    this.#conn = r.conn;
    this.#t.clearEnded();
    this.#login = r;
    this.#params = r.params;
    this.#cmdSN = r.cmdSN;
    this.#expCmdSN = r.expCmdSN;
    this.#maxCmdSN = r.maxCmdSN;
    this.#expStatSN = r.expStatSN;
    this.#reconnects++;
    this.#recoveryExpired = false;
    this.#recoveryCause = null;
    this.#holding = null;
    this.#setState("open");
    this.#log.warn(
      `iSCSI session recovered on ${formatPortal(r.portal)} after ${
        (ms / 1000).toFixed(2)
      } s (reconnect ${this.#reconnects}, tsih ${r.tsih}); replaying ${this.#t.queue.length} command(s)`,
    );
    this.#start();
    this.#pump();
  }

  #failAll(err: Error): void {
    for (const t of this.#t.takeAll()) t.reject(err);
    this.#pending.failAll(err);
    this.#t.drained?.();
  }
}

/** How a task management function went, for the log. */
function tmfOutcome(code: number | null, ms: number): string {
  return code === null ? `no answer within ${ms} ms` : (TMF_RESP_NAMES[code] ?? `response ${code}`);
}

/**
 * Log in to a target and return the session in full feature phase: the
 * entry point for the SCSI layer, `probe`, `serve` and `boot`.
 *
 * @example
 * ```ts
 * const cfg = await sessionConfigFromUri(uri, values, env); // src/cli/target_options.ts
 * const session = await loginSession(cfg, log);
 * ```
 */
export function loginSession(cfg: SessionConfig, log: Logger): Promise<Session> {
  return Session.open(cfg, log);
}
