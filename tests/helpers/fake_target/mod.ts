/**
 * The suite's fake iSCSI target, for what a real target (tgtd, which every
 * test that can uses) will not do on demand: redirect a login, split text
 * over continuation PDUs, run CHAP wrongly (an empty, huge or reflected
 * challenge, a wrong mutual response), send malformed full-feature PDUs,
 * ask for a logout or a renegotiation, reject, hold or drop commands, or
 * cross the 2^32 sequence-number wrap. It listens on 127.0.0.1 at a free
 * port; `close()` ends the listener and every connection.
 *
 * Two ways to drive it, same classes underneath:
 *
 * - **Scripted**: `new FakeTarget(script)` runs `script(c, index)` on each
 *   accepted connection; the script reads the initiator's PDUs and answers
 *   with {@link FakeConn}'s helpers ({@link FakeConn.acceptLogin} for a plain
 *   login, {@link FakeConn.loginResponse}, {@link FakeConn.reject}, ...), or
 *   hands the connection to a {@link FakeDisk} whose hook sees each PDU
 *   first. Errors a script throws land in {@link FakeTarget.errors}.
 * - **Scenario**: `await FakeTarget.start({ scenario })` plays a whole target
 *   (login with None or CHAP, a RAM disk for `isboot probe` and `serve`)
 *   that breaks the protocol in one named way ({@link Scenario}) on the
 *   first connection (or all), and records what happened ({@link events},
 *   {@link misbehaved}, {@link closedAfterMs}, {@link sequence}).
 *
 * Files: conn.ts (the wire, sequence numbers, target PDUs), login.ts (login
 * and CHAP, operational keys), disk.ts (the RAM disk answering SCSI
 * commands), scenarios.ts (the named misbehaviours).
 *
 * @example
 * ```ts
 * // Scripted: a Reject for the first command, the RAM disk for the rest.
 * const disk = new FakeDisk(64);
 * const fake = new FakeTarget(async (c) => {
 *   let first = true;
 *   await disk.serve(c, await c.acceptLogin(), async (pdu, d) => {
 *     if (pdu.opcode !== 0x01 || !first) return false;
 *     first = false;
 *     await d.reject(pdu, 0x05);
 *     return true;
 *   });
 * });
 * // Scenario: isboot probe iscsi://127.0.0.1:${t.port}/${t.iqn}/${t.lun}
 * const t = await FakeTarget.start({ scenario: "unknown-itt" });
 * await t.close();
 * await fake.close();
 * ```
 */
import { defaultCrc32c } from "../../../src/iscsi/digest.ts";
import type { SessionConfig } from "../../../src/iscsi/session_config.ts";
import { FakeConn } from "./conn.ts";
import type { Account } from "./login.ts";
import { FakeDisk } from "./disk.ts";
import {
  type Scenario,
  scenarioDisk,
  type ScenarioOptions,
  scenarioScript,
  type ScenarioTarget,
  scenarioTarget,
} from "./scenarios.ts";

export {
  type ConnOptions,
  FakeConn,
  type FakePdu,
  type LoginReply,
  type SendFaults,
} from "./conn.ts";
export { type DiskHook, type DiskReply, FakeDisk, type Tamper } from "./disk.ts";
export {
  type Account,
  answerOffers,
  echoOffers,
  type LoginHooks,
  type LoginOptions,
  serveLogin,
} from "./login.ts";
export type { Scenario, ScenarioOptions } from "./scenarios.ts";

/**
 * The session configuration the scripted tests log in with: a fake target at
 * 127.0.0.1:`port`, LUN 1, CHAP MD5 allowed, no digests, no NOP-Outs; `extra`
 * overrides.
 *
 * @example
 * ```ts
 * const s = await Session.open(fakeSessionConfig(fake.port, { recoveryTimeoutMs: 0 }), log);
 * ```
 */
export function fakeSessionConfig(port: number, extra: Partial<SessionConfig> = {}): SessionConfig {
  return {
    portal: { host: "127.0.0.1", port },
    targetName: "iqn.2026-11.test.isboot:fake",
    lun: 1,
    initiatorName: "iqn.2026-11.test.isboot:init",
    chapAlgorithms: ["md5"],
    headerDigest: "prefer-none",
    dataDigest: "prefer-none",
    nopIntervalMs: 0,
    ...extra,
  };
}

/** What a script does with one accepted connection (`index`: 0 for the first). */
export type Script = (c: FakeConn, index: number) => Promise<void>;

/** Where each connection's sequence numbers start, and (for a scenario) what the target is. */
export interface FakeTargetOptions extends Partial<ScenarioTarget> {
  /** StatSN of the first response on each connection (default 0). */
  firstStatSN?: number;
  /** ExpCmdSN of the Login Responses (default: the Login Request's CmdSN). */
  firstCmdSN?: number;
  /** The RAM disk a scenario target serves. */
  disk?: FakeDisk;
}

/** A record of one accepted connection: StatSNs used up, CmdSNs received, those past the window. */
export interface ConnSequence {
  statSNs: number[];
  cmdSNs: number[];
  outOfWindow: number[];
}

/** A listening fake target; see the module comment. */
export class FakeTarget {
  readonly port: number;
  /** Errors thrown by scripts (a test can assert there were none). */
  readonly errors: unknown[] = [];
  /** What happened, in order (for assertions and failure messages). */
  readonly events: string[] = [];
  /** Connections accepted. */
  accepted = 0;
  /** Connections on which a misbehaviour was actually sent. */
  misbehaved = 0;
  /** Per connection accepted, in order. */
  readonly sequence: ConnSequence[] = [];
  /** Milliseconds from a misbehaviour to the end of that connection. */
  readonly closedAfterMs: number[] = [];
  /** A scenario target's scenario, name, LUN, CHAP accounts ("normal", "", 1 for a scripted one). */
  readonly scenario: Scenario;
  readonly iqn: string;
  readonly lun: number;
  readonly chap?: Account;
  readonly mutual?: Account;
  /**
   * A scenario target's RAM disk: `t.disk.resize(blocks)` grows (or
   * shrinks) the LU and raises UNIT ATTENTION 2A/09 on each connection.
   */
  readonly disk?: FakeDisk;
  readonly #listener: Deno.TcpListener;
  readonly #conns = new Set<FakeConn>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #accepting: Promise<void>;

  constructor(script: Script, o: FakeTargetOptions = {}) {
    this.scenario = o.scenario ?? "normal";
    this.iqn = o.iqn ?? "";
    this.lun = o.lun ?? 1;
    this.chap = o.chap;
    this.mutual = o.mutual;
    this.disk = o.disk;
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#listener = listener;
    this.port = (listener.addr as Deno.NetAddr).port;
    this.#accepting = (async () => {
      for await (const tcp of listener) {
        const index = this.accepted++;
        const c = new FakeConn(tcp, {
          id: index + 1,
          firstStatSN: o.firstStatSN,
          firstCmdSN: o.firstCmdSN,
          log: (m) => this.#log(m),
          onMisbehave: () => this.misbehaved++,
        });
        this.sequence.push({ statSNs: c.statSNs, cmdSNs: c.cmdSNs, outOfWindow: c.outOfWindow });
        this.#conns.add(c);
        const t = this.#run(script, c, index).finally(() => this.#tasks.delete(t));
        this.#tasks.add(t);
      }
    })().catch(() => {}); // listener closed
  }

  /** A scenario target (see {@link Scenario}) on 127.0.0.1 at a free port. */
  static async start(o: ScenarioOptions): Promise<FakeTarget> {
    const disk = scenarioDisk(o);
    const script = scenarioScript(o, await defaultCrc32c(), disk);
    return new FakeTarget(script, {
      ...scenarioTarget(o),
      disk,
      firstStatSN: o.firstStatSN ?? 0x1000,
      firstCmdSN: o.firstCmdSN,
    });
  }

  #log(m: string): void {
    this.events.push(`${performance.now().toFixed(0)}ms ${m}`);
    if (this.events.length > 500) this.events.splice(0, 100);
  }

  async #run(script: Script, c: FakeConn, index: number): Promise<void> {
    let why: string;
    try {
      await script(c, index);
      why = c.loggedOut ? "logout" : c.eof ? "initiator closed" : "script done";
    } catch (e) {
      this.errors.push(e);
      why = `error ${(e as Error).name}: ${(e as Error).message}`;
    } finally {
      c.close();
      this.#conns.delete(c);
    }
    if (c.misbehavedAt !== null) {
      this.closedAfterMs.push(Math.round(performance.now() - c.misbehavedAt));
    }
    c.log(`ended (${why})`);
  }

  /** Stops listening, closes every connection and waits for the scripts to end. */
  async close(): Promise<void> {
    try {
      this.#listener.close();
    } catch {
      // closed
    }
    for (const c of this.#conns) c.close();
    await this.#accepting;
    await Promise.allSettled([...this.#tasks]);
  }
}
