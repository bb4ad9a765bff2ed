/**
 * The fake target's named misbehaviours ({@link Scenario}), for tests that
 * run isboot itself against it (tests/hostile): each connection logs in
 * ({@link serveLogin}: None or CHAP as configured), serves a RAM disk
 * ({@link FakeDisk}) well enough for `isboot probe` and `isboot serve`, and
 * on the connections chosen by `misbehaveOn` breaks the protocol in the way
 * the scenario names, once. Later connections behave, so an initiator with
 * session recovery can finish its work.
 *
 * @example
 * ```ts
 * const t = await FakeTarget.start({ scenario: "unknown-itt" });
 * // isboot probe iscsi://127.0.0.1:${t.port}/${t.iqn}/${t.lun}
 * await t.close();
 * ```
 */
import { decodeChapBinary } from "../../../src/iscsi/chap.ts";
import {
  BHS_LENGTH,
  OP_DATA_IN,
  OP_R2T,
  OP_SCSI_CMD,
  OP_SCSI_RESP,
  OP_TEXT_REQ,
  OP_TEXT_RESP,
} from "../../../src/iscsi/constants.ts";
import type { Crc32c } from "../../../src/iscsi/digest.ts";
import type { TextPair } from "../../../src/iscsi/text.ts";
import { type FakeConn, type FakePdu, getU32, setU32 } from "./conn.ts";
import { FakeDisk, type Tamper } from "./disk.ts";
import { type Account, type OwnAnswers, serveLogin } from "./login.ts";

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

export interface ScenarioOptions {
  scenario: Scenario;
  /** Which connections misbehave (default: only the first). */
  misbehaveOn?: "first" | "all";
  iqn?: string;
  /** Require CHAP with this account (the chap-* scenarios imply CHAP). */
  chap?: Account;
  /**
   * Mutual CHAP: the account the target proves itself with (chap-reflection
   * implies one).
   */
  mutual?: Account;
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

/** A scenario target as the tests see it: its name, LU and accounts, defaults filled in. */
export interface ScenarioTarget {
  scenario: Scenario;
  iqn: string;
  lun: number;
  chap?: Account;
  mutual?: Account;
}

/** The defaults of a scenario's options. */
export function scenarioTarget(o: ScenarioOptions): ScenarioTarget {
  const chap = o.chap ??
    (o.scenario.startsWith("chap-")
      ? { user: "hostile-user", secret: "hostile-secret-1234" }
      : undefined);
  const mutual = o.mutual ??
    (o.scenario === "chap-reflection"
      ? { user: "hostile-target", secret: "hostile-target-secret-99" }
      : undefined);
  return {
    scenario: o.scenario,
    iqn: o.iqn ?? "iqn.2026-11.test:hostile",
    lun: o.lun ?? 1,
    ...(chap ? { chap } : {}),
    ...(mutual ? { mutual } : {}),
  };
}

/**
 * The scenario target's choices in the operational stage: no unsolicited
 * data (so writes take the R2T path), bounded bursts, one R2T at a time.
 */
const OWN: OwnAnswers = {
  InitialR2T: () => "Yes",
  ImmediateData: () => "No",
  MaxBurstLength: (v) => String(Math.min(Number(v) || 262144, 262144)),
  FirstBurstLength: (v) => String(Math.min(Number(v) || 65536, 65536)),
  MaxOutstandingR2T: () => "1",
  DataPDUInOrder: () => "Yes",
  DataSequenceInOrder: () => "Yes",
  ErrorRecoveryLevel: () => "0",
  MaxConnections: () => "1",
  // A "max" key (§13.15): answering anything below the offer is wrong.
  DefaultTime2Wait: (v) => String(Math.max(Number(v) || 0, 0)),
  DefaultTime2Retain: () => "0",
  IFMarker: () => "No",
  OFMarker: () => "No",
};
/** AsyncEvent codes (RFC 7143 §11.9.1). */
const ASYNC_LOGOUT_REQUEST = 1;
const ASYNC_DROP_CONNECTION = 2;
/** An opcode RFC 7143 does not assign to targets. */
const OP_UNASSIGNED = 0x1c;
/** An ITT the initiator never used. */
const BOGUS_ITT = 0x7eadbeef;
const encoder = new TextEncoder();

/** 8 KiB of a text key nobody asked for, `fill` repeated: one continuation part. */
function padText(fill: string): Uint8Array {
  return encoder.encode(`X-test.pad=${fill.repeat(8192 - 13)}\0`);
}

/** The RAM disk a scenario target serves (its size and LU from `o`). */
export function scenarioDisk(o: ScenarioOptions): FakeDisk {
  const t = scenarioTarget(o);
  return new FakeDisk(o.blocks ?? 8192, { lun: t.lun, iqn: t.iqn });
}

/**
 * The per-connection script of a scenario target (for
 * {@link FakeTarget.start}). `crc` serves the digest scenarios; `disk` is
 * the RAM disk every connection reaches (a test may resize it).
 */
export function scenarioScript(
  o: ScenarioOptions,
  crc: Crc32c,
  disk: FakeDisk = scenarioDisk(o),
): (c: FakeConn, index: number) => Promise<void> {
  const t = scenarioTarget(o);
  const scenario = o.scenario;
  /** CHAP challenges the initiator sent (mutual CHAP), as it sent them, for chap-reflection. */
  const initiatorChallenges: string[] = [];
  const digests = scenario === "header-digest-mismatch" || scenario === "data-digest-mismatch";

  return async (c, index) => {
    const chosen = (o.misbehaveOn ?? "first") === "all" || index === 0;
    /** Whether this connection is to misbehave now in the way `s` names. */
    const bad = (s: Scenario) => chosen && c.misbehavedAt === null && scenario === s;
    const first = await serveLogin(c, {
      iqn: t.iqn,
      chap: t.chap,
      mutual: t.mutual,
      crc: digests ? crc : undefined,
      own: OWN,
      hooks: {
        challenge: () => {
          if (bad("chap-challenge-empty")) {
            c.misbehave("CHAP_C of length 0");
            return new Uint8Array(0);
          }
          if (scenario === "chap-reflection" && index >= 1 && initiatorChallenges.length > 0) {
            c.misbehave("our CHAP_C is the challenge the initiator sent on an earlier login");
            return decodeChapBinary("CHAP_C", initiatorChallenges[0]);
          }
          if (bad("chap-challenge-1mib")) {
            c.misbehave("CHAP_C of 1 MiB, sent in Login Responses with the C bit");
            const b = new Uint8Array(1 << 20);
            crypto.getRandomValues(b.subarray(0, 65536));
            return b;
          }
          return undefined;
        },
        initiatorChallenge: (text) => void initiatorChallenges.push(text),
        operational: (req, answer) => badLogin(c, req, answer, bad, chosen, scenario),
      },
    });
    if (first === null) return;
    await disk.serve(
      c,
      undefined,
      (pdu) => badRequest(c, pdu, bad, index, scenario),
      badReply(bad),
    );
  };
}

/** The operational stage of a login, broken: endless continuation, or keys named like Object.prototype members. */
async function badLogin(
  c: FakeConn,
  req: FakePdu,
  answer: TextPair[],
  bad: (s: Scenario) => boolean,
  chosen: boolean,
  scenario: Scenario,
): Promise<boolean> {
  if (bad("login-continuation-forever")) {
    c.misbehave("Login Response with the C bit set, forever");
  }
  if (scenario === "login-continuation-forever" && chosen && c.misbehavedAt !== null) {
    // Every empty request the initiator sends for the rest gets another 8 KiB part.
    await c.loginResponse(req, { cont: true, raw: padText("a") });
    return true;
  }
  if (bad("login-prototype-keys")) {
    // Keys an initiator must answer NotUnderstood (§6.2), named like
    // Object.prototype members to catch plain-object lookups. Not final,
    // so the initiator has to send its answers in another Login Request.
    c.misbehave("Login Response offering keys valueOf, constructor, toString");
    answer.push(["valueOf", "1"], ["constructor", "Yes"], ["toString", "None"]);
    await c.loginResponse(req, { pairs: answer });
    return true;
  }
  return false;
}

/** Requests answered wrongly on purpose: endless SendTargets text, Async Messages, a dropped connection. */
async function badRequest(
  c: FakeConn,
  pdu: FakePdu,
  bad: (s: Scenario) => boolean,
  index: number,
  scenario: Scenario,
): Promise<boolean> {
  if (pdu.opcode === OP_TEXT_REQ) {
    if (bad("text-continuation-forever")) {
      c.misbehave("Text Response with the C bit set, forever");
    }
    if (scenario !== "text-continuation-forever" || c.misbehavedAt === null) return false;
    c.take(pdu);
    const b = c.bhs(OP_TEXT_RESP, pdu.itt);
    b[1] = 0x40; // C, not F
    setU32(b, 20, 0x100); // TTT: there is more
    await c.send(b, padText("b"));
    return true;
  }
  if (pdu.opcode !== OP_SCSI_CMD) return false;
  c.take(pdu);
  if (scenario === "chap-reflection" && index === 0) {
    // Force a relogin: the next login is where the reflection comes.
    c.log("dropping the connection to force a relogin");
    c.close();
    return true;
  }
  if (bad("async-logout-request") || bad("async-drop-connection")) {
    const logout = scenario === "async-logout-request";
    c.misbehave(
      logout
        ? "Async Message: logout requested within 2 s (command left unanswered)"
        : "Async Message: dropping the connection (Time2Wait 0, Time2Retain 0), then closing",
    );
    // Parameter3 of a logout request: the seconds to log out within.
    await c.asyncMessage(logout ? ASYNC_LOGOUT_REQUEST : ASYNC_DROP_CONNECTION, {
      p3: logout ? 2 : 0,
    });
    if (!logout) setTimeout(() => c.close(), 100);
    return true;
  }
  return false;
}

/** Data-In, SCSI Responses and R2Ts broken on purpose. */
function badReply(bad: (s: Scenario) => boolean): Tamper {
  return async (r, c) => {
    const op = r.bhs[0];
    const what = op === OP_DATA_IN ? "Data-In" : "SCSI Response";
    if (op === OP_R2T) {
      if (!bad("r2t-beyond-transfer")) return "send";
      const offset = getU32(r.bhs, 40);
      const burst = getU32(r.bhs, 44);
      c.misbehave(`R2T for ${burst + 65536} bytes at offset ${offset} of a ${r.edtl}-byte write`);
      setU32(r.bhs, 44, burst + 65536);
      await c.send(r.bhs);
      return "stop"; // wait for the initiator to give up on this connection
    }
    if (bad("unknown-itt")) {
      c.misbehave(`${what} for ITT 0x${BOGUS_ITT.toString(16)}`);
      setU32(r.bhs, 16, BOGUS_ITT);
    }
    if (bad("header-digest-mismatch") && c.headerDigest) {
      c.misbehave(`bad HeaderDigest on a ${what}`);
      r.faults.badHeaderDigest = true;
    }
    if (op === OP_SCSI_RESP) {
      if (bad("sense-length-overrun")) {
        c.misbehave("SCSI Response whose SenseLength (500) runs past its 20-byte data segment");
        r.data = new Uint8Array(20);
        r.data.set([0x01, 0xf4, 0x70]);
        r.bhs[3] = 0x02;
      }
      return "send";
    }
    if (bad("data-digest-mismatch") && c.dataDigest && r.data.length > 0) {
      c.misbehave("bad DataDigest on a Data-In");
      r.faults.badDataDigest = true;
    }
    if (bad("data-in-past-buffer")) {
      // In order up to 8 bytes before the end, then 512 bytes from there:
      // only a bounds check on BufferOffset + DataSegmentLength catches it.
      const at = Math.max(0, r.edtl - 8);
      c.misbehave(`Data-In at BufferOffset ${at} with 512 bytes, past the ${r.edtl}-byte buffer`);
      if (at > 0) {
        const head = r.bhs.slice();
        head[1] = 0;
        setU32(head, 40, 0);
        await c.send(head, new Uint8Array(at));
        setU32(r.bhs, 36, getU32(r.bhs, 36) + 1);
      }
      setU32(r.bhs, 40, at);
      r.bhs[1] = 0x80 | 0x01;
      await c.send(r.bhs, new Uint8Array(512));
      return "stop";
    }
    if (bad("data-segment-over-declared")) {
      const n = c.params.peerMrdsl;
      c.misbehave(`Data-In with ${n + 512} bytes, over the declared ${n}`);
      await c.send(r.bhs, new Uint8Array(n + 512));
      return "stop";
    }
    if (bad("huge-data-segment-length")) {
      c.misbehave(
        "Data-In header declaring DataSegmentLength 0xFFFFFF, then 100 bytes and silence",
      );
      await c.send(r.bhs, new Uint8Array(100), { dslOverride: 0xffffff });
      return "stop";
    }
    if (bad("unknown-opcode")) {
      c.misbehave(`PDU with unassigned opcode 0x${OP_UNASSIGNED.toString(16)}`);
      const u = new Uint8Array(BHS_LENGTH);
      u[0] = OP_UNASSIGNED;
      u[1] = 0x80;
      setU32(u, 16, r.cmd.itt);
      await c.send(u);
      return "stop";
    }
    return "send";
  };
}
