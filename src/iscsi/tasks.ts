/**
 * The task table of an iSCSI session: every SCSI command from the moment
 * the SCSI layer hands it over until it is answered or fails. A task is
 * queued (waiting for the CmdSN window, or held while the connection is
 * recovered), in flight (issued under an ITT and a CmdSN), or deferred (the
 * target rejected it as "not now": out of the in-flight map, to be issued
 * again). The session (session.ts) decides what happens to a task; this
 * table keeps where it is, hands out ITTs, and remembers the ITTs of tasks
 * that task management ended (docs/iscsi.md, "Late answers after task
 * management").
 */
import { RESERVED_TAG } from "./constants.ts";
import type { ScsiCommand, ScsiResponse } from "../scsi/transport.ts";

/** One SCSI command and its transfer state. */
export interface Task {
  itt: number;
  cmdSN: number;
  lun: number;
  cmd: ScsiCommand;
  read: boolean;
  write: boolean;
  expectedLength: number;
  dataIn: Uint8Array | null;
  received: number;
  nextDataSN: number;
  nextR2TSN: number;
  resolve: (r: ScsiResponse) => void;
  reject: (e: Error) => void;
  /** The command timeout, or the delay before a rejected command is resent. */
  timer?: ReturnType<typeof setTimeout>;
  aborting: boolean;
  /** Times the command PDU was sent: tells a stale timer from the current one. */
  sends: number;
  /** Current command timeout (grows on re-issue after an abort); 0 = none. */
  timeoutMs: number;
  /** Resends after a "not now" Reject, for the backoff. */
  rejects: number;
  /** When the command first failed in a way that is retried (ms, performance.now()); 0: never. */
  firstRetryAt: number;
}

/**
 * A task for `cmd`, not yet issued.
 *
 * @example
 * ```ts
 * const t = newTask(cmd, 30_000, resolve, reject);
 * ```
 */
export function newTask(
  cmd: ScsiCommand,
  timeoutMs: number,
  resolve: (r: ScsiResponse) => void,
  reject: (e: Error) => void,
): Task {
  const inLen = cmd.dataInLength ?? 0;
  const outLen = cmd.dataOut?.length ?? 0;
  return {
    itt: 0,
    cmdSN: 0,
    lun: cmd.lun,
    cmd,
    read: inLen > 0,
    write: outLen > 0,
    expectedLength: inLen || outLen,
    dataIn: inLen ? (cmd.dataInBuffer ?? new Uint8Array(inLen)) : null,
    received: 0,
    nextDataSN: 0,
    nextR2TSN: 0,
    resolve,
    reject,
    aborting: false,
    sends: 0,
    timeoutMs,
    rejects: 0,
    firstRetryAt: 0,
  };
}

/** Serial (RFC 1982) CmdSN order, for replaying tasks in the order they were issued. */
export function byCmdSN(a: Task, b: Task): number {
  return (a.cmdSN - b.cmdSN) | 0;
}

/**
 * How long the ITT of a task that task management ended is remembered, so a
 * late answer for it is dropped rather than taken for a protocol error.
 */
export const ENDED_ITT_MEMORY_MS = 120_000;

/**
 * Where each unfinished task of a session is.
 *
 * @example
 * ```ts
 * const tasks = new TaskTable();
 * const t = newTask(cmd, 0, resolve, reject);
 * tasks.queue.push(t);
 * t.itt = tasks.allocItt(() => false);
 * tasks.inFlight.set(t.itt, t);
 * tasks.finish(t); // answered
 * ```
 */
export class TaskTable {
  /** Issued and not answered, by ITT; Map order is issue (CmdSN) order. */
  readonly inFlight = new Map<number, Task>();
  /** Waiting to be issued, in order. */
  queue: Task[] = [];
  /** Rejected as "not now": out of the in-flight map, to be issued again (after a delay or the relogin). */
  deferred: Task[] = [];
  /**
   * Called once nothing is in flight or queued (close() waits for it);
   * null when nobody waits.
   */
  drained: (() => void) | null = null;
  /**
   * ITTs of tasks a task management function ended on this connection (and
   * that were issued again under new ITTs), with when: a target may still
   * answer one of them as the function takes effect (tgtd does). The ITT is
   * not reused while it is here.
   */
  readonly #ended = new Map<number, number>();
  /** Called when no command is in flight (the drain before a logout). */
  #idleWaiters: (() => void)[] = [];
  #nextItt = 1;

  /** The next free ITT: not the reserved tag, not in flight, not remembered as ended, not `taken` (immediate requests). */
  allocItt(taken: (itt: number) => boolean): number {
    for (;;) {
      const itt = this.#nextItt;
      this.#nextItt = (this.#nextItt + 1) >>> 0;
      if (this.#nextItt === RESERVED_TAG) this.#nextItt = 1;
      if (!this.inFlight.has(itt) && !this.#ended.has(itt) && !taken(itt)) return itt;
    }
  }

  /** The task is in flight and was last sent as `sends` (a timer or a reply is not stale). */
  isCurrent(t: Task, sends: number): boolean {
    return this.inFlight.get(t.itt) === t && t.sends === sends;
  }

  /** Remove a task from the in-flight map (finished, or to be issued again); false if it was not there. */
  takeOut(t: Task): boolean {
    if (this.inFlight.get(t.itt) !== t) return false;
    this.inFlight.delete(t.itt);
    if (t.timer !== undefined) clearTimeout(t.timer);
    t.timer = undefined;
    if (this.inFlight.size === 0) this.wakeIdle();
    return true;
  }

  /** The task is answered: out of the table; false if it was not in flight (a stale answer). */
  finish(t: Task): boolean {
    if (!this.takeOut(t)) return false;
    this.checkDrained();
    return true;
  }

  /** Tell a close() that waits when nothing is left in flight or queued. */
  checkDrained(): void {
    if (this.drained && this.inFlight.size === 0 && this.queue.length === 0) this.drained();
  }

  /** Resolves when no command is in flight, or after `ms`. */
  whenIdle(ms: number): Promise<void> {
    if (this.inFlight.size === 0 || ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      this.#idleWaiters.push(done);
      function done() {
        clearTimeout(timer);
        resolve();
      }
    });
  }

  /** Wake everyone waiting in {@link whenIdle}. */
  wakeIdle(): void {
    const w = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const f of w) f();
  }

  /** Remember the ITTs of those of `tasks` still in flight: task management ended them. */
  rememberEnded(tasks: Task[]): void {
    const now = performance.now();
    for (const [itt, at] of this.#ended) {
      if (now - at > ENDED_ITT_MEMORY_MS) this.#ended.delete(itt);
    }
    for (const t of tasks) if (this.inFlight.get(t.itt) === t) this.#ended.set(t.itt, now);
  }

  /** The ITT is one of a task that task management ended (its late answers are dropped). */
  endedByTmf(itt: number): boolean {
    return this.#ended.has(itt);
  }

  /** The last answer for an ended ITT came: the ITT may be reused. */
  forgetEnded(itt: number): void {
    this.#ended.delete(itt);
  }

  /** A new connection carries no answer for the old one's tasks. */
  clearEnded(): void {
    this.#ended.clear();
  }

  /**
   * The connection is lost: every task in flight or deferred goes back to
   * the front of the queue in the order it was issued (writes keep their
   * order and a SYNCHRONIZE CACHE stays behind the writes it covered), its
   * timer stopped.
   */
  requeueUnfinished(): void {
    const unfinished = [...this.inFlight.values(), ...this.deferred].sort(byCmdSN);
    this.inFlight.clear();
    this.deferred = [];
    this.wakeIdle();
    for (const t of unfinished) {
      if (t.timer !== undefined) clearTimeout(t.timer);
      t.timer = undefined;
      t.aborting = false;
    }
    this.queue = [...unfinished, ...this.queue];
  }

  /** Empty the table: every task (in flight, deferred, queued), timers stopped, for failing them. */
  takeAll(): Task[] {
    const tasks = [...this.inFlight.values(), ...this.deferred, ...this.queue];
    this.inFlight.clear();
    this.deferred = [];
    this.queue = [];
    this.wakeIdle();
    for (const t of tasks) {
      if (t.timer !== undefined) clearTimeout(t.timer);
      t.timer = undefined;
    }
    return tasks;
  }
}
