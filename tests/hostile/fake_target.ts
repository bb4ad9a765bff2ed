/**
 * A scripted fake iSCSI target: the one place in the suite where a fake is
 * right, because no real target misbehaves on demand. It listens on
 * 127.0.0.1 at a random port, completes a normal login (None or MD5/SHA CHAP
 * as configured), serves a small RAM disk well enough for `isboot probe` and
 * `isboot serve`, and on the connections chosen by `misbehaveOn` breaks the
 * protocol in the way its scenario names. Later connections behave, so an
 * initiator with session recovery can finish its work.
 *
 * It reuses the initiator's code where the format is shared: the PDU header
 * view ({@link PduHeader}), text codec, CRC32C and CHAP response function
 * from src/iscsi/. Target-side PDUs are built here (src/iscsi encodes only
 * initiator PDUs).
 *
 * @example
 * ```ts
 * const t = await FakeTarget.start({ scenario: "unknown-itt" });
 * // isboot probe iscsi://127.0.0.1:${t.port}/${t.iqn}/1
 * await t.close();
 * ```
 */
import { concatBytes } from "../../src/bytes.ts";
import {
  chapResponse,
  decodeChapBinary,
  encodeChapBinary,
  equalBytes,
} from "../../src/iscsi/chap.ts";
import {
  BHS_LENGTH,
  OP_DATA_OUT,
  OP_LOGIN_REQ,
  OP_LOGOUT_REQ,
  OP_NOP_OUT,
  OP_SCSI_CMD,
  OP_TASK_MGMT_REQ,
  OP_TEXT_REQ,
} from "../../src/iscsi/constants.ts";
import { type Crc32c, defaultCrc32c } from "../../src/iscsi/digest.ts";
import { PduHeader } from "../../src/iscsi/pdu.ts";
import { decodeText, encodeText, type TextPair } from "../../src/iscsi/text.ts";
import { type SendFaults, TargetWire } from "../helpers/iscsi_target_wire.ts";

/** How the fake breaks the protocol. */
export type Scenario =
  | "normal"
  | "sense-length-overrun"
  | "data-segment-over-declared"
  | "huge-data-segment-length"
  | "unknown-opcode"
  | "unknown-itt"
  | "data-in-past-buffer"
  | "r2t-beyond-transfer"
  | "header-digest-mismatch"
  | "data-digest-mismatch"
  | "chap-challenge-empty"
  | "chap-challenge-1mib"
  | "login-continuation-forever"
  | "text-continuation-forever"
  | "login-prototype-keys"
  | "chap-reflection"
  | "async-logout-request"
  | "async-drop-connection";

export interface FakeTargetOptions {
  scenario: Scenario;
  /** Which connections misbehave (default: only the first). */
  misbehaveOn?: "first" | "all";
  iqn?: string;
  /** Require CHAP with this account (the chap-* scenarios imply CHAP). */
  chap?: { user: string; secret: string };
  /**
   * Mutual CHAP: the account the target proves itself with (chap-reflection
   * implies one).
   */
  mutual?: { user: string; secret: string };
  /** LUN number of the disk (default 1). */
  lun?: number;
  /** Disk size in 512-byte blocks (default 8192 = 4 MiB). */
  blocks?: number;
  /** StatSN of the first response on each connection (default 0x1000). */
  firstStatSN?: number;
  /**
   * ExpCmdSN of the Login Responses, where the session's first command then
   * starts (default: the Login Request's CmdSN, as a real target answers).
   * Near 2^32 it lets a test cross the CmdSN wrap without 2^32 commands.
   */
  firstCmdSN?: number;
}

// Target opcodes (RFC 7143 §11.2.1.2).
const OP_NOP_IN = 0x20;
const OP_SCSI_RESP = 0x21;
const OP_TASK_MGMT_RESP = 0x22;
const OP_LOGIN_RESP = 0x23;
const OP_TEXT_RESP = 0x24;
const OP_DATA_IN = 0x25;
const OP_LOGOUT_RESP = 0x26;
const OP_R2T = 0x31;
const OP_ASYNC_MSG = 0x32;
/** AsyncEvent codes (RFC 7143 §11.9.1). */
const ASYNC_LOGOUT_REQUEST = 1;
const ASYNC_DROP_CONNECTION = 2;
/** An opcode RFC 7143 does not assign to targets. */
const OP_UNASSIGNED = 0x1c;
const RESERVED_TAG = 0xffffffff;
const BLOCK = 512;
/** Largest data segment we declare we accept. */
const OUR_MRDSL = 262144;
const encoder = new TextEncoder();

function u32(b: Uint8Array, off: number, v: number): void {
  new DataView(b.buffer, b.byteOffset).setUint32(off, v >>> 0);
}

function dsl(b: Uint8Array, n: number): void {
  b[5] = (n >>> 16) & 0xff;
  b[6] = (n >>> 8) & 0xff;
  b[7] = n & 0xff;
}

/** One connection's state. */
class Conn extends TargetWire {
  readonly id: number;
  readonly misbehave: boolean;
  /** The initiator's MaxRecvDataSegmentLength (8192 until it declares one, §13.12). */
  peerMrdsl = 8192;
  maxBurst = 262144;
  statSN = 0x1000;
  expCmdSN = 0;
  stage = 0;
  fullFeature = false;
  /** Digests chosen during login, switched on with the Full Feature Phase. */
  wantHeaderDigest = false;
  wantDataDigest = false;
  /** The rest of a long Login Response text, sent one part per empty request. */
  pendingLoginParts: Uint8Array[] = [];
  chapDone = false;
  chapAlgorithm = 5;
  chapChallenge: Uint8Array = new Uint8Array(0);
  loginText: Uint8Array[] = [];
  /** Text (SendTargets) continuation state. */
  textTtt = 0x100;
  misbehaved = false;
  nextTtt = 1;

  constructor(tcp: Deno.Conn, id: number, misbehave: boolean, crc: Crc32c) {
    super(tcp, crc);
    this.id = id;
    this.misbehave = misbehave;
  }

  /** StatSNs used up, in order, and the CmdSNs of non-immediate commands received. */
  readonly statSNs: number[] = [];
  readonly cmdSNs: number[] = [];
  /**
   * Received CmdSNs past the MaxCmdSN the initiator knew when it sent them
   * (outside the window, §4.2.2.1), by {@link knownMaxCmdSN}.
   */
  readonly outOfWindow: number[] = [];
  /** [StatSN, MaxCmdSN] stamped on each PDU sent, oldest first. */
  #windows: [number, number][] = [];

  /** Stamps StatSN / ExpCmdSN / MaxCmdSN into a response BHS. */
  seq(b: Uint8Array, advanceStatSN = true): void {
    const statSN = this.statSN;
    u32(b, 24, statSN);
    if (advanceStatSN) {
      this.statSNs.push(statSN);
      this.statSN = (statSN + 1) >>> 0;
    }
    u32(b, 28, this.expCmdSN);
    const maxCmdSN = (this.expCmdSN + 31) >>> 0;
    u32(b, 32, maxCmdSN);
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
}

/** The fake target. */
export class FakeTarget {
  readonly port: number;
  readonly iqn: string;
  readonly scenario: Scenario;
  /** What happened, in order (for assertions and failure messages). */
  readonly events: string[] = [];
  /** Connections accepted. */
  accepted = 0;
  /** Connections on which the misbehaviour was actually sent. */
  misbehaved = 0;
  /** Per connection accepted: the StatSNs it used up and the CmdSNs it received, in order. */
  readonly sequence: { statSNs: number[]; cmdSNs: number[]; outOfWindow: number[] }[] = [];
  /** Milliseconds from the misbehaviour to the initiator closing that connection. */
  readonly closedAfterMs: number[] = [];
  readonly #listener: Deno.Listener;
  readonly #opts: FakeTargetOptions;
  readonly #crc: Crc32c;
  readonly #disk: Uint8Array;
  readonly #conns = new Set<Deno.Conn>();
  /** CHAP challenges the initiator sent (mutual CHAP), as 0x hex, for chap-reflection. */
  readonly #initiatorChallenges: string[] = [];
  readonly #tasks = new Set<Promise<void>>();
  #accepting: Promise<void>;

  private constructor(listener: Deno.Listener, opts: FakeTargetOptions, crc: Crc32c) {
    this.#listener = listener;
    this.#opts = opts;
    this.#crc = crc;
    this.port = (listener.addr as Deno.NetAddr).port;
    this.iqn = opts.iqn ?? "iqn.2026-11.test:hostile";
    this.scenario = opts.scenario;
    this.#disk = new Uint8Array((opts.blocks ?? 8192) * BLOCK);
    this.#accepting = this.#acceptLoop();
  }

  /** Starts a fake target on 127.0.0.1 at a random port. */
  static async start(opts: FakeTargetOptions): Promise<FakeTarget> {
    const crc = await defaultCrc32c();
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    return new FakeTarget(l, opts, crc);
  }

  /** The CHAP account the fake requires, if any. */
  get chap(): { user: string; secret: string } | undefined {
    if (this.#opts.chap) return this.#opts.chap;
    if (this.scenario.startsWith("chap-")) {
      return { user: "hostile-user", secret: "hostile-secret-1234" };
    }
    return undefined;
  }

  /** The target's own CHAP account for mutual CHAP, if any. */
  get mutual(): { user: string; secret: string } | undefined {
    if (this.#opts.mutual) return this.#opts.mutual;
    if (this.scenario === "chap-reflection") {
      return { user: "hostile-target", secret: "hostile-target-secret-99" };
    }
    return undefined;
  }

  /** The LUN the disk is at. */
  get lun(): number {
    return this.#opts.lun ?? 1;
  }

  #log(m: string): void {
    this.events.push(`${performance.now().toFixed(0)}ms ${m}`);
    if (this.events.length > 500) this.events.splice(0, 100);
  }

  async #acceptLoop(): Promise<void> {
    try {
      for await (const tcp of this.#listener) {
        const id = ++this.accepted;
        const misbehave = (this.#opts.misbehaveOn ?? "first") === "all" || id === 1;
        const c = new Conn(tcp, id, misbehave, this.#crc);
        if (this.#opts.firstStatSN !== undefined) c.statSN = this.#opts.firstStatSN >>> 0;
        this.sequence.push({ statSNs: c.statSNs, cmdSNs: c.cmdSNs, outOfWindow: c.outOfWindow });
        this.#conns.add(tcp);
        const t = this.#serve(c).finally(() => {
          this.#conns.delete(tcp);
          this.#tasks.delete(t);
        });
        this.#tasks.add(t);
      }
    } catch {
      // listener closed
    }
  }

  async #serve(c: Conn): Promise<void> {
    let misbehavedAt = 0;
    const markMisbehaved = (what: string) => {
      c.misbehaved = true;
      misbehavedAt = performance.now();
      this.misbehaved++;
      this.#log(`conn ${c.id}: misbehaved: ${what}`);
    };
    let why = "initiator closed";
    try {
      for (;;) {
        const pdu = await c.readPdu();
        if (!pdu) break;
        const done = await this.#handle(c, pdu.h, pdu.data, markMisbehaved);
        if (done) {
          why = "logout";
          break;
        }
      }
    } catch (e) {
      why = `error ${(e as Error).name}: ${(e as Error).message}`;
    } finally {
      try {
        c.tcp.close();
      } catch { /* closed by close() */ }
    }
    if (c.misbehaved) this.closedAfterMs.push(Math.round(performance.now() - misbehavedAt));
    this.#log(`conn ${c.id}: ended (${why})`);
  }

  /** Handles one PDU; returns true when the connection should end (logout). */
  async #handle(
    c: Conn,
    h: PduHeader,
    data: Uint8Array,
    misbehaved: (what: string) => void,
  ): Promise<boolean> {
    const bad = (s: Scenario) => c.misbehave && !c.misbehaved && this.scenario === s;
    switch (h.opcode) {
      case OP_LOGIN_REQ:
        await this.#login(c, h, data, bad, misbehaved);
        return false;
      case OP_TEXT_REQ:
        await this.#text(c, h, data, bad, misbehaved);
        return false;
      case OP_NOP_OUT: {
        if (h.itt === RESERVED_TAG) return false;
        const b = new Uint8Array(BHS_LENGTH);
        b[0] = OP_NOP_IN;
        b[1] = 0x80;
        b.set(h.lunBytes, 8);
        u32(b, 16, h.itt);
        u32(b, 20, RESERVED_TAG);
        c.seq(b);
        await c.send(b, data.slice());
        return false;
      }
      case OP_TASK_MGMT_REQ: {
        const b = new Uint8Array(BHS_LENGTH);
        b[0] = OP_TASK_MGMT_RESP;
        b[1] = 0x80;
        b[2] = 0; // Function complete
        u32(b, 16, h.itt);
        c.seq(b);
        await c.send(b);
        return false;
      }
      case OP_LOGOUT_REQ: {
        const b = new Uint8Array(BHS_LENGTH);
        b[0] = OP_LOGOUT_RESP;
        b[1] = 0x80;
        u32(b, 16, h.itt);
        c.seq(b);
        await c.send(b);
        return true;
      }
      case OP_SCSI_CMD: {
        const cmdSN = new DataView(h.bytes.buffer, h.bytes.byteOffset).getUint32(24);
        if (!h.immediate) {
          c.cmdSNs.push(cmdSN);
          const expStatSN = new DataView(h.bytes.buffer, h.bytes.byteOffset).getUint32(28);
          const known = c.knownMaxCmdSN(expStatSN);
          // Serial arithmetic (RFC 1982): past MaxCmdSN even across the wrap.
          if (known !== undefined && ((cmdSN - known) | 0) > 0) c.outOfWindow.push(cmdSN);
          c.expCmdSN = (cmdSN + 1) >>> 0;
        }
        if (this.scenario === "chap-reflection" && c.id === 1) {
          // Force a relogin: the next login is where the reflection comes.
          this.#log(`conn ${c.id}: dropping the connection to force a relogin`);
          c.tcp.close();
          return true;
        }
        await this.#scsi(c, h, data, bad, misbehaved);
        return false;
      }
      case OP_DATA_OUT:
        // Unsolicited Data-Out is never negotiated (InitialR2T=Yes); solicited
        // data is read inside #scsi.
        this.#log(`conn ${c.id}: unexpected Data-Out`);
        return false;
      default:
        this.#log(`conn ${c.id}: ignoring opcode 0x${h.opcode.toString(16)}`);
        return false;
    }
  }

  // ---- login (RFC 7143 §6, §11.12, §11.13) ---------------------------------

  async #loginResponse(
    c: Conn,
    req: PduHeader,
    o: { transit: boolean; cont: boolean; csg: number; nsg: number; text: Uint8Array },
    statusClass = 0,
    statusDetail = 0,
  ): Promise<void> {
    const b = new Uint8Array(BHS_LENGTH);
    b[0] = OP_LOGIN_RESP;
    b[1] = (o.transit ? 0x80 : 0) | (o.cont ? 0x40 : 0) | ((o.csg & 3) << 2) | (o.nsg & 3);
    b.set(req.isid, 8);
    const final = o.transit && o.nsg === 3 && statusClass === 0;
    b[14] = 0;
    b[15] = final ? 1 : 0; // TSIH
    u32(b, 16, req.itt);
    c.seq(b);
    b[36] = statusClass;
    b[37] = statusDetail;
    await c.send(b, o.text);
  }

  async #login(
    c: Conn,
    h: PduHeader,
    data: Uint8Array,
    bad: (s: Scenario) => boolean,
    misbehaved: (what: string) => void,
  ): Promise<void> {
    const transit = (h.flags & 0x80) !== 0;
    const cont = (h.flags & 0x40) !== 0;
    const csg = (h.flags >> 2) & 3;
    const nsg = h.flags & 3;
    c.expCmdSN = this.#opts.firstCmdSN ??
      new DataView(h.bytes.buffer, h.bytes.byteOffset).getUint32(24) >>> 0;
    c.stage = csg;
    if (cont) {
      // The initiator continues its text: acknowledge with an empty response (§6.1).
      c.loginText.push(data.slice());
      await this.#loginResponse(c, h, {
        transit: false,
        cont: false,
        csg,
        nsg: csg,
        text: new Uint8Array(0),
      });
      return;
    }
    c.loginText.push(data.slice());
    const all = concatBytes(c.loginText);
    c.loginText = [];
    let pairs: TextPair[] = [];
    try {
      pairs = all.length ? decodeText(all) : [];
    } catch {
      pairs = [];
    }
    const keys = new Map(pairs);
    if (keys.has("TargetName") && keys.get("TargetName") !== this.iqn) {
      await this.#loginResponse(
        c,
        h,
        { transit: false, cont: false, csg, nsg: csg, text: new Uint8Array(0) },
        2,
        3,
      );
      return;
    }
    if (csg === 0) {
      await this.#securityStage(c, h, keys, transit, nsg, bad, misbehaved);
      return;
    }
    // Operational stage.
    if (bad("login-continuation-forever")) {
      misbehaved("Login Response with the C bit set, forever");
    }
    if (c.misbehaved && this.scenario === "login-continuation-forever" && c.misbehave) {
      // Every empty request the initiator sends for the rest gets another 8 KiB part.
      const pad = encoder.encode(`X-test.pad=${"a".repeat(8192 - 13)}\0`);
      await this.#loginResponse(c, h, { transit: false, cont: true, csg, nsg: csg, text: pad });
      return;
    }
    const answer: TextPair[] = [];
    for (const [k, v] of pairs) {
      const a = this.#answerKey(c, k, v);
      if (a !== undefined) answer.push([k, a]);
    }
    if (!c.chapDone && !this.chap) answer.push(["TargetPortalGroupTag", "1"]);
    if (bad("login-prototype-keys")) {
      // Keys an initiator must answer NotUnderstood (§6.2), named like
      // Object.prototype members to catch plain-object lookups. Not final,
      // so the initiator has to send its answers in another Login Request.
      misbehaved("Login Response offering keys valueOf, constructor, toString");
      answer.push(["valueOf", "1"], ["constructor", "Yes"], ["toString", "None"]);
      await this.#loginResponse(c, h, {
        transit: false,
        cont: false,
        csg,
        nsg: csg,
        text: encodeText(answer),
      });
      return;
    }
    const goFull = transit && nsg === 3;
    await this.#loginResponse(c, h, {
      transit: goFull,
      cont: false,
      csg,
      nsg: goFull ? 3 : csg,
      text: encodeText(answer),
    });
    if (goFull) this.#enterFullFeature(c);
  }

  #enterFullFeature(c: Conn): void {
    c.fullFeature = true;
    c.headerDigest = c.wantHeaderDigest;
    c.dataDigest = c.wantDataDigest;
    this.#log(`conn ${c.id}: full feature phase (digests ${c.headerDigest}/${c.dataDigest})`);
  }

  /** Our answer to one operational key (§13), or undefined for declarations. */
  #answerKey(c: Conn, k: string, v: string): string | undefined {
    const wantDigest = this.scenario === "header-digest-mismatch" ||
      this.scenario === "data-digest-mismatch";
    const list = v.split(",");
    switch (k) {
      case "HeaderDigest":
      case "DataDigest": {
        const pick = wantDigest && list.includes("CRC32C")
          ? "CRC32C"
          : list.includes("None")
          ? "None"
          : list[0];
        if (k === "HeaderDigest") c.wantHeaderDigest = pick === "CRC32C";
        else c.wantDataDigest = pick === "CRC32C";
        return pick;
      }
      case "MaxRecvDataSegmentLength":
        c.peerMrdsl = Math.max(512, Math.min(Number(v) || 8192, 16777215));
        return String(OUR_MRDSL);
      case "InitialR2T":
        return "Yes";
      case "ImmediateData":
        return "No";
      case "MaxBurstLength":
        c.maxBurst = Math.min(Number(v) || 262144, 262144);
        return String(c.maxBurst);
      case "FirstBurstLength":
        return String(Math.min(Number(v) || 65536, 65536));
      case "MaxOutstandingR2T":
        return "1";
      case "DataPDUInOrder":
      case "DataSequenceInOrder":
        return "Yes";
      case "ErrorRecoveryLevel":
        return "0";
      case "MaxConnections":
        return "1";
      case "DefaultTime2Wait":
        // A "max" key (§13.15): answering anything below the offer is wrong.
        return String(Math.max(Number(v) || 0, 0));
      case "DefaultTime2Retain":
        return "0";
      case "IFMarker":
      case "OFMarker":
        return "No";
      case "InitiatorName":
      case "InitiatorAlias":
      case "TargetName":
      case "SessionType":
      case "AuthMethod":
        return undefined;
      default:
        return "NotUnderstood";
    }
  }

  async #securityStage(
    c: Conn,
    h: PduHeader,
    keys: Map<string, string>,
    transit: boolean,
    nsg: number,
    bad: (s: Scenario) => boolean,
    misbehaved: (what: string) => void,
  ): Promise<void> {
    const chap = this.chap;
    const none = () =>
      this.#loginResponse(c, h, {
        transit: false,
        cont: false,
        csg: 0,
        nsg: 0,
        text: new Uint8Array(0),
      });
    if (!chap) {
      const answer: TextPair[] = [];
      if (keys.has("AuthMethod")) answer.push(["AuthMethod", "None"]);
      answer.push(["TargetPortalGroupTag", "1"]);
      const next = transit ? nsg : 0;
      await this.#loginResponse(c, h, {
        transit,
        cont: false,
        csg: 0,
        nsg: next,
        text: encodeText(answer),
      });
      if (transit && nsg === 3) this.#enterFullFeature(c);
      return;
    }
    if (keys.has("AuthMethod")) {
      const offered = (keys.get("AuthMethod") ?? "").split(",");
      if (!offered.includes("CHAP")) {
        await this.#loginResponse(
          c,
          h,
          { transit: false, cont: false, csg: 0, nsg: 0, text: new Uint8Array(0) },
          2,
          1,
        );
        return;
      }
      await this.#loginResponse(c, h, {
        transit: false,
        cont: false,
        csg: 0,
        nsg: 0,
        text: encodeText([["AuthMethod", "CHAP"], ["TargetPortalGroupTag", "1"]]),
      });
      return;
    }
    if (keys.has("CHAP_A")) {
      const algs = (keys.get("CHAP_A") ?? "").split(",").map(Number);
      c.chapAlgorithm = algs.includes(5) ? 5 : algs[0];
      let challenge: string;
      if (bad("chap-challenge-empty")) {
        misbehaved("CHAP_C of length 0");
        c.chapChallenge = new Uint8Array(0);
        challenge = "0x";
      } else if (
        this.scenario === "chap-reflection" && c.id >= 2 && this.#initiatorChallenges.length > 0
      ) {
        misbehaved("our CHAP_C is the challenge the initiator sent on an earlier login");
        challenge = this.#initiatorChallenges[0];
        c.chapChallenge = decodeChapBinary("CHAP_C", challenge);
      } else if (bad("chap-challenge-1mib")) {
        misbehaved("CHAP_C of 1 MiB, sent in Login Responses with the C bit");
        c.chapChallenge = new Uint8Array(1 << 20);
        crypto.getRandomValues(c.chapChallenge.subarray(0, 65536));
        challenge = encodeChapBinary(c.chapChallenge);
      } else {
        c.chapChallenge = crypto.getRandomValues(new Uint8Array(16));
        challenge = encodeChapBinary(c.chapChallenge);
      }
      // Built by hand: encodeText is for sane values, and this one may be 2 MiB.
      const text = encoder.encode(
        `CHAP_A=${c.chapAlgorithm}\0CHAP_I=7\0CHAP_C=${challenge}\0`,
      );
      // Split into the initiator's login-phase MaxRecvDataSegmentLength (8192, §13.12).
      const parts: Uint8Array[] = [];
      for (let off = 0; off < text.length; off += 8192) parts.push(text.subarray(off, off + 8192));
      if (parts.length === 0) parts.push(text);
      c.pendingLoginParts = parts.slice(1);
      await this.#loginResponse(c, h, {
        transit: false,
        cont: parts.length > 1,
        csg: 0,
        nsg: 0,
        text: parts[0],
      });
      return;
    }
    if (c.pendingLoginParts.length > 0) {
      // The initiator asks for the rest of our text (an empty request after C=1).
      const part = c.pendingLoginParts.shift()!;
      await this.#loginResponse(c, h, {
        transit: false,
        cont: c.pendingLoginParts.length > 0,
        csg: 0,
        nsg: 0,
        text: part,
      });
      return;
    }
    if (keys.has("CHAP_N") && keys.has("CHAP_R")) {
      this.#log(`conn ${c.id}: CHAP_R received`);
      let ok = keys.get("CHAP_N") === chap.user;
      if (ok) {
        try {
          const got = decodeChapBinary("CHAP_R", keys.get("CHAP_R") ?? "");
          const want = await chapResponse(
            c.chapAlgorithm,
            7,
            encoder.encode(chap.secret),
            c.chapChallenge,
          );
          ok = equalBytes(got, want);
        } catch {
          ok = false;
        }
      }
      if (!ok) {
        this.#log(`conn ${c.id}: CHAP failed`);
        await this.#loginResponse(
          c,
          h,
          { transit: false, cont: false, csg: 0, nsg: 0, text: new Uint8Array(0) },
          2,
          1,
        );
        return;
      }
      c.chapDone = true;
      const next = transit ? nsg : 0;
      let text: Uint8Array = new Uint8Array(0);
      const mutual = this.mutual;
      if (mutual && keys.has("CHAP_I") && keys.has("CHAP_C")) {
        const theirChallenge = keys.get("CHAP_C") ?? "";
        this.#initiatorChallenges.push(theirChallenge);
        const r = await chapResponse(
          c.chapAlgorithm,
          Number(keys.get("CHAP_I")),
          encoder.encode(mutual.secret),
          decodeChapBinary("CHAP_C", theirChallenge),
        );
        text = encodeText([["CHAP_N", mutual.user], ["CHAP_R", encodeChapBinary(r)]]);
      }
      await this.#loginResponse(c, h, {
        transit,
        cont: false,
        csg: 0,
        nsg: next,
        text,
      });
      if (transit && nsg === 3) this.#enterFullFeature(c);
      return;
    }
    await none();
  }

  // ---- Text (SendTargets, §11.10, §11.11) ---------------------------------

  async #text(
    c: Conn,
    h: PduHeader,
    data: Uint8Array,
    bad: (s: Scenario) => boolean,
    misbehaved: (what: string) => void,
  ): Promise<void> {
    c.expCmdSN =
      (new DataView(h.bytes.buffer, h.bytes.byteOffset).getUint32(24) + (h.immediate ? 0 : 1)) >>>
      0;
    const b = new Uint8Array(BHS_LENGTH);
    b[0] = OP_TEXT_RESP;
    u32(b, 16, h.itt);
    if (bad("text-continuation-forever")) misbehaved("Text Response with the C bit set, forever");
    if (c.misbehaved && this.scenario === "text-continuation-forever") {
      b[1] = 0x40; // C, not F
      u32(b, 20, c.textTtt);
      c.seq(b);
      await c.send(b, encoder.encode(`X-test.pad=${"b".repeat(8192 - 13)}\0`));
      return;
    }
    let pairs: TextPair[] = [];
    try {
      pairs = data.length ? decodeText(data) : [];
    } catch {
      pairs = [];
    }
    const answer: TextPair[] = [];
    if (pairs.some(([k]) => k === "SendTargets")) {
      answer.push(["TargetName", this.iqn], ["TargetAddress", `127.0.0.1:${this.port},1`]);
    }
    b[1] = 0x80;
    u32(b, 20, RESERVED_TAG);
    c.seq(b);
    await c.send(b, encodeText(answer));
  }

  // ---- SCSI (a RAM disk) ---------------------------------------------------

  #scsi(
    c: Conn,
    h: PduHeader,
    _immediate: Uint8Array,
    bad: (s: Scenario) => boolean,
    misbehaved: (what: string) => void,
  ): Promise<void> {
    const dv = new DataView(h.bytes.buffer, h.bytes.byteOffset);
    const edtl = dv.getUint32(20);
    const cdb = h.bytes.subarray(32, 48);
    const itt = h.itt;
    const lun = h.lunBytes[1];
    const blocks = this.#disk.length / BLOCK;
    const op = cdb[0];

    const respond = async (status: number, sense?: Uint8Array, residual = 0, under = false) => {
      const b = new Uint8Array(BHS_LENGTH);
      b[0] = OP_SCSI_RESP;
      b[1] = 0x80 | (under ? 0x02 : 0);
      b[3] = status;
      u32(
        b,
        16,
        bad("unknown-itt") ? (misbehaved("SCSI Response for ITT 0x7eadbeef"), 0x7eadbeef) : itt,
      );
      c.seq(b);
      u32(b, 44, residual);
      let seg = new Uint8Array(0);
      if (bad("sense-length-overrun")) {
        misbehaved("SCSI Response whose SenseLength (500) runs past its 20-byte data segment");
        seg = new Uint8Array(20);
        seg[0] = 0x01;
        seg[1] = 0xf4;
        seg[2] = 0x70;
        b[3] = 0x02;
      } else if (sense) {
        seg = new Uint8Array(2 + sense.length);
        seg[0] = sense.length >> 8;
        seg[1] = sense.length & 0xff;
        seg.set(sense, 2);
      }
      await c.send(b, seg, {
        badHeaderDigest: c.headerDigest && bad("header-digest-mismatch") &&
          (misbehaved("bad HeaderDigest on a SCSI Response"), true),
      });
    };
    const checkCondition = (key: number, asc: number, ascq = 0) => {
      const s = new Uint8Array(18);
      s[0] = 0x70;
      s[2] = key;
      s[7] = 10;
      s[12] = asc;
      s[13] = ascq;
      return respond(0x02, s);
    };

    const dataIn = async (payload: Uint8Array) => {
      const n = Math.min(payload.length, edtl);
      const under = payload.length < edtl;
      let off = 0;
      let dataSN = 0;
      do {
        const len = Math.min(c.peerMrdsl, n - off);
        const last = off + len >= n;
        const b = new Uint8Array(BHS_LENGTH);
        b[0] = OP_DATA_IN;
        b[1] = last ? 0x80 | 0x01 | (under ? 0x02 : 0) : 0;
        u32(b, 16, itt);
        u32(b, 20, RESERVED_TAG);
        c.seq(b, last);
        u32(b, 36, dataSN++);
        u32(b, 40, off);
        if (last) u32(b, 44, under ? edtl - n : 0);
        const seg = payload.subarray(off, off + len);
        const opts: SendFaults = {};
        if (bad("data-in-past-buffer")) {
          // In order up to 8 bytes before the end, then 512 bytes from there:
          // only a bounds check on BufferOffset + DataSegmentLength catches it.
          const at = Math.max(0, edtl - 8);
          misbehaved(`Data-In at BufferOffset ${at} with 512 bytes, past the ${edtl}-byte buffer`);
          if (at > 0) {
            const first = new Uint8Array(BHS_LENGTH);
            first.set(b);
            first[1] = 0;
            u32(first, 40, 0);
            await c.send(first, new Uint8Array(at));
            u32(b, 36, dataSN++);
          }
          u32(b, 40, at);
          b[1] = 0x80 | 0x01;
          await c.send(b, new Uint8Array(512));
          return;
        }
        if (bad("data-segment-over-declared")) {
          misbehaved(`Data-In with ${c.peerMrdsl + 512} bytes, over the declared ${c.peerMrdsl}`);
          await c.send(b, new Uint8Array(c.peerMrdsl + 512));
          return;
        }
        if (bad("huge-data-segment-length")) {
          misbehaved(
            "Data-In header declaring DataSegmentLength 0xFFFFFF, then 100 bytes and silence",
          );
          dsl(b, 0xffffff);
          const hd = c.headerDigest ? 4 : 0;
          const out = new Uint8Array(BHS_LENGTH + hd + 100);
          out.set(b);
          if (hd) new DataView(out.buffer).setUint32(BHS_LENGTH, c.crc!.digest(b), true);
          let w = 0;
          while (w < out.length) w += await c.tcp.write(out.subarray(w));
          return;
        }
        if (bad("unknown-opcode")) {
          misbehaved(`PDU with unassigned opcode 0x${OP_UNASSIGNED.toString(16)}`);
          const u = new Uint8Array(BHS_LENGTH);
          u[0] = OP_UNASSIGNED;
          u[1] = 0x80;
          u32(u, 16, itt);
          await c.send(u);
          return;
        }
        if (bad("data-digest-mismatch") && c.dataDigest && seg.length > 0) {
          misbehaved("bad DataDigest on a Data-In");
          opts.badDataDigest = true;
        }
        if (bad("header-digest-mismatch") && c.headerDigest) {
          misbehaved("bad HeaderDigest on a Data-In");
          opts.badHeaderDigest = true;
        }
        if (bad("unknown-itt")) {
          misbehaved("Data-In for ITT 0x7eadbeef");
          u32(b, 16, 0x7eadbeef);
        }
        await c.send(b, seg, opts);
        off += len;
      } while (off < n);
    };

    if (bad("async-logout-request") || bad("async-drop-connection")) {
      const logout = this.scenario === "async-logout-request";
      misbehaved(
        logout
          ? "Async Message: logout requested within 2 s (command left unanswered)"
          : "Async Message: dropping the connection (Time2Wait 0, Time2Retain 0), then closing",
      );
      const b = new Uint8Array(BHS_LENGTH);
      b[0] = OP_ASYNC_MSG;
      b[1] = 0x80;
      u32(b, 16, RESERVED_TAG);
      c.seq(b);
      b[36] = logout ? ASYNC_LOGOUT_REQUEST : ASYNC_DROP_CONNECTION;
      const v = new DataView(b.buffer);
      if (logout) v.setUint16(42, 2); // Parameter3: seconds to log out within
      return c.send(b).then(() => {
        if (!logout) {
          setTimeout(() => {
            try {
              c.tcp.close();
            } catch { /* the initiator closed it first */ }
          }, 100);
        }
      });
    }
    if (lun !== this.lun && op !== 0x12 && op !== 0xa0) {
      return checkCondition(0x05, 0x25); // LOGICAL UNIT NOT SUPPORTED
    }
    switch (op) {
      case 0x00: // TEST UNIT READY
      case 0x35: // SYNCHRONIZE CACHE(10)
      case 0x91: // SYNCHRONIZE CACHE(16)
        return respond(0);
      case 0x12: { // INQUIRY
        const evpd = cdb[1] & 1;
        const alloc = (cdb[3] << 8) | cdb[4];
        let d: Uint8Array;
        if (!evpd) {
          d = new Uint8Array(96);
          d[0] = lun === this.lun ? 0x00 : 0x7f;
          d[2] = 0x06;
          d[3] = 0x02;
          d[4] = 91;
          d.set(encoder.encode("FAKE    HOSTILE TARGET  0001"), 8);
        } else if (cdb[2] === 0x00) {
          d = Uint8Array.from([0, 0x00, 0, 3, 0x00, 0x80, 0x83]);
        } else if (cdb[2] === 0x80) {
          const sn = encoder.encode("hostile0001");
          d = new Uint8Array(4 + sn.length);
          d[1] = 0x80;
          d[3] = sn.length;
          d.set(sn, 4);
        } else if (cdb[2] === 0x83) {
          const id = encoder.encode("FAKE    hostile0001");
          d = new Uint8Array(8 + id.length);
          d[1] = 0x83;
          d[3] = 4 + id.length;
          d[4] = 0x02; // ASCII
          d[5] = 0x01; // T10 vendor ID
          d[7] = id.length;
          d.set(id, 8);
        } else {
          return checkCondition(0x05, 0x24); // INVALID FIELD IN CDB
        }
        return dataIn(d.subarray(0, Math.min(d.length, alloc)));
      }
      case 0x25: { // READ CAPACITY(10)
        const d = new Uint8Array(8);
        u32(d, 0, blocks - 1);
        u32(d, 4, BLOCK);
        return dataIn(d);
      }
      case 0x9e: { // SERVICE ACTION IN(16) / READ CAPACITY(16)
        if ((cdb[1] & 0x1f) !== 0x10) return checkCondition(0x05, 0x20);
        const d = new Uint8Array(32);
        u32(d, 4, blocks - 1);
        u32(d, 8, BLOCK);
        return dataIn(d.subarray(0, Math.min(32, dv.getUint32(32 + 10))));
      }
      case 0x5a: { // MODE SENSE(10): header only, not write-protected
        const d = new Uint8Array(8);
        d[1] = 6;
        return dataIn(d);
      }
      case 0xa0: { // REPORT LUNS
        const d = new Uint8Array(16);
        u32(d, 0, 8);
        d[9] = this.lun;
        return dataIn(d);
      }
      case 0x28:
      case 0x88:
      case 0x2a:
      case 0x8a: {
        const sixteen = op === 0x88 || op === 0x8a;
        const cv = new DataView(cdb.buffer, cdb.byteOffset, 16);
        const lba = sixteen ? cv.getUint32(6) : cv.getUint32(2); // disks here are small
        const count = sixteen ? cv.getUint32(10) : cv.getUint16(7);
        if ((sixteen && cv.getUint32(2) !== 0) || lba + count > blocks) {
          return checkCondition(0x05, 0x21); // LBA OUT OF RANGE
        }
        const bytes = count * BLOCK;
        if (op === 0x28 || op === 0x88) {
          return dataIn(this.#disk.slice(lba * BLOCK, lba * BLOCK + bytes));
        }
        return this.#write(c, itt, lba * BLOCK, Math.min(bytes, edtl), bad, misbehaved, respond);
      }
      default:
        return checkCondition(0x05, 0x20); // INVALID COMMAND OPERATION CODE
    }
  }

  /** A WRITE: R2T for every burst (InitialR2T=Yes, ImmediateData=No), then status. */
  async #write(
    c: Conn,
    itt: number,
    diskOffset: number,
    length: number,
    bad: (s: Scenario) => boolean,
    misbehaved: (what: string) => void,
    respond: (status: number) => Promise<void>,
  ): Promise<void> {
    let off = 0;
    let r2tSN = 0;
    while (off < length) {
      const burst = Math.min(c.maxBurst, length - off);
      const ttt = c.nextTtt++;
      const b = new Uint8Array(BHS_LENGTH);
      b[0] = OP_R2T;
      b[1] = 0x80;
      u32(b, 16, itt);
      u32(b, 20, ttt);
      c.seq(b, false);
      u32(b, 36, r2tSN++);
      u32(b, 40, off);
      u32(b, 44, burst);
      if (bad("r2t-beyond-transfer")) {
        misbehaved(`R2T for ${burst + 65536} bytes at offset ${off} of a ${length}-byte write`);
        u32(b, 44, burst + 65536);
        await c.send(b);
        return; // wait for the initiator to give up on this connection
      }
      await c.send(b);
      let got = 0;
      while (got < burst) {
        const pdu = await c.readPdu();
        if (!pdu) throw new Error("connection closed during Data-Out");
        if (pdu.h.opcode !== OP_DATA_OUT) {
          // A NOP-Out or similar in between: answer it and go on.
          await this.#handle(c, pdu.h, pdu.data, misbehaved);
          continue;
        }
        const at = new DataView(pdu.h.bytes.buffer, pdu.h.bytes.byteOffset).getUint32(40);
        if (at + pdu.data.length <= length) {
          this.#disk.set(pdu.data, diskOffset + at);
        }
        got += pdu.data.length;
      }
      off += burst;
    }
    await respond(0);
  }

  /** Stops listening and closes every connection. */
  async close(): Promise<void> {
    try {
      this.#listener.close();
    } catch { /* closed */ }
    for (const c of this.#conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    await this.#accepting;
    await Promise.allSettled([...this.#tasks]);
  }
}
