/**
 * One logical unit over several paths (docs/iscsi.md, "Multipath"): a
 * {@link ScsiTransport} that sends each command on one of its paths (each a
 * transport of its own, an iSCSI session to one portal) and, when a path
 * goes down, sends the commands that were on it again on another path at
 * once, in the order they were first issued, without waiting for the dead
 * path's recovery. The dead path reconnects in the background and rejoins
 * when it is back. With every path down, commands wait (for ever, or up to
 * `holdTimeoutMs`) for the first path to come back.
 *
 * Policies: "failover" sends everything on one active path and keeps the
 * others logged in and idle (their NOP-Outs keep them checked); a path that
 * comes back stays standby until the active one fails (no fail-back, so a
 * flapping path cannot bounce the I/O). "round-robin" spreads commands over
 * every path that is up.
 *
 * Re-sending a command on another path is safe because a block command is
 * idempotent and the kernel never has two overlapping writes in flight: a
 * write that was on the dead path is complete on the new one before anything
 * that depends on it is sent. The dead path's session ended its connection
 * first, so the target ends the tasks it still held for it (RFC 7143 §6.3.5
 * at ErrorRecoveryLevel 0).
 *
 * @example
 * ```ts
 * const mp = new MultipathTransport([{ name: "10.0.0.1:3260", transport: a }, { name: "10.0.1.1:3260", transport: b }], { policy: "failover", log });
 * const lun = await Lun.open(mp, 1, { log, closeTransport: true });
 * ```
 */
import { OperationalError } from "../errors.ts";
import type { Logger } from "../log.ts";
import {
  PathDownError,
  type ScsiCommand,
  type ScsiResponse,
  type ScsiTransport,
} from "./transport.ts";

/** How commands are spread over the paths. */
export type MultipathPolicy = "failover" | "round-robin";

/** One path as the multipath layer needs it: a transport that says whether it is up. */
export interface PathTransport extends ScsiTransport {
  /** Whether the path takes commands now. */
  readonly up: boolean;
  /** Calls `listener` whenever {@link up} may have changed. */
  onChange(listener: () => void): void;
}

/** A path and the name it is shown under (its portal). */
export interface Path {
  name: string;
  transport: PathTransport;
}

/** What `status` shows of one path. */
export interface PathStatus {
  name: string;
  /** "active": carries commands; "standby": up and idle (failover); "down": reconnecting. */
  state: "active" | "standby" | "down";
  /** Epoch ms since which the path has been down; null while up. */
  downSince: number | null;
  /** How many times the path went down. */
  failures: number;
  /** Commands sent on this path, and the bytes they moved. */
  commands: number;
  bytes: number;
}

export interface MultipathOptions {
  policy: MultipathPolicy;
  log: Logger;
  /**
   * With every path down, how long a command waits for one to come back
   * before it fails with OperationalError. Undefined or Infinity: for ever
   * (the root disk).
   */
  holdTimeoutMs?: number;
}

interface Job {
  cmd: ScsiCommand;
  resolve: (r: ScsiResponse) => void;
  reject: (e: Error) => void;
  /** When the job started waiting for a path (performance.now()), 0 when not waiting. */
  heldSince: number;
}

interface PathState extends Path {
  wasUp: boolean;
  downSince: number | null;
  failures: number;
  commands: number;
  bytes: number;
}

/** {@link ScsiTransport} over several paths to one logical unit. */
export class MultipathTransport implements ScsiTransport {
  readonly #paths: PathState[];
  readonly #policy: MultipathPolicy;
  readonly #log: Logger;
  readonly #holdTimeoutMs: number;
  /** Failover: the path that carries the commands. Round-robin: the last one used. */
  #active = 0;
  /** Commands waiting for any path to come back, oldest first. */
  #held: Job[] = [];
  #holdTimer?: ReturnType<typeof setTimeout>;
  #closed = false;

  constructor(paths: Path[], opts: MultipathOptions) {
    if (paths.length === 0) throw new RangeError("multipath: no path");
    this.#policy = opts.policy;
    this.#log = opts.log;
    this.#holdTimeoutMs = opts.holdTimeoutMs ?? Infinity;
    this.#paths = paths.map((p) => ({
      ...p,
      wasUp: p.transport.up,
      downSince: p.transport.up ? null : Date.now(),
      failures: 0,
      commands: 0,
      bytes: 0,
    }));
    for (const p of this.#paths) p.transport.onChange(() => this.#changed(p));
    const first = this.#paths.findIndex((p) => p.transport.up);
    this.#active = first < 0 ? 0 : first;
  }

  get maxTransferHint(): number {
    const hints = this.#paths.map((p) => p.transport.maxTransferHint).filter((h) => h > 0);
    return hints.length ? Math.min(...hints) : 0;
  }

  /** Each path's state and counters, in the order the paths were given. */
  get paths(): PathStatus[] {
    return this.#paths.map((p, i) => ({
      name: p.name,
      state: !p.transport.up
        ? "down"
        : this.#policy === "round-robin" || i === this.#active
        ? "active"
        : "standby",
      downSince: p.downSince,
      failures: p.failures,
      commands: p.commands,
      bytes: p.bytes,
    }));
  }

  execute(cmd: ScsiCommand): Promise<ScsiResponse> {
    if (this.#closed) return Promise.reject(new OperationalError("multipath device is closed"));
    return new Promise((resolve, reject) => this.#run({ cmd, resolve, reject, heldSince: 0 }));
  }

  /** The path for the next command, or null when every path is down. */
  #pick(): PathState | null {
    const n = this.#paths.length;
    if (this.#policy === "round-robin") {
      for (let k = 1; k <= n; k++) {
        const i = (this.#active + k) % n;
        if (this.#paths[i].transport.up) {
          this.#active = i;
          return this.#paths[i];
        }
      }
      return null;
    }
    if (this.#paths[this.#active].transport.up) return this.#paths[this.#active];
    for (let k = 1; k < n; k++) {
      const i = (this.#active + k) % n;
      if (this.#paths[i].transport.up) {
        this.#log.warn(
          `multipath: ${this.#paths[i].name} is the active path now (${
            this.#paths[this.#active].name
          } is down)`,
        );
        this.#active = i;
        return this.#paths[i];
      }
    }
    return null;
  }

  #run(job: Job): void {
    const path = this.#pick();
    if (path === null) {
      this.#hold(job);
      return;
    }
    path.commands++;
    path.transport.execute(job.cmd).then(
      (r) => {
        path.bytes += r.data.length + (job.cmd.dataOut?.length ?? 0);
        job.resolve(r);
      },
      (e) => {
        if (!(e instanceof PathDownError) || this.#closed) {
          job.reject(e);
          return;
        }
        this.#changed(path);
        this.#run(job);
      },
    );
  }

  #hold(job: Job): void {
    if (job.heldSince === 0) job.heldSince = performance.now();
    this.#held.push(job);
    if (this.#held.length === 1) {
      this.#log.error(
        `multipath: every path is down (${this.#paths.map((p) => p.name).join(", ")}); ` +
          "commands wait for one to come back",
      );
    }
    if (Number.isFinite(this.#holdTimeoutMs) && this.#holdTimer === undefined) {
      this.#holdTimer = setTimeout(() => this.#expireHeld(), this.#holdTimeoutMs);
    }
  }

  /** Fail the held commands that have waited longer than the hold timeout. */
  #expireHeld(): void {
    this.#holdTimer = undefined;
    const now = performance.now();
    const keep: Job[] = [];
    for (const job of this.#held) {
      if (now - job.heldSince >= this.#holdTimeoutMs) {
        job.reject(
          new OperationalError(
            `no path to the logical unit came back within ${this.#holdTimeoutMs / 1000} s`,
          ),
        );
      } else keep.push(job);
    }
    this.#held = keep;
    if (keep.length) {
      const next = this.#holdTimeoutMs - (now - keep[0].heldSince);
      this.#holdTimer = setTimeout(() => this.#expireHeld(), Math.max(0, next));
    }
  }

  /** A path's state may have changed: log it, count it, and send what waited. */
  #changed(p: PathState): void {
    const up = p.transport.up;
    if (up === p.wasUp) return;
    p.wasUp = up;
    if (!up) {
      p.failures++;
      p.downSince = Date.now();
      const live = this.#paths.filter((q) => q.transport.up).map((q) => q.name);
      this.#log.warn(
        `multipath: path ${p.name} is down; ${
          live.length ? `commands go on ${live.join(", ")}` : "no path left"
        }`,
      );
      return;
    }
    const was = p.downSince === null ? 0 : (Date.now() - p.downSince) / 1000;
    p.downSince = null;
    if (p.failures === 0) {
      this.#log.warn(`multipath: path ${p.name} is up (it was not at the start)`);
    } else this.#log.warn(`multipath: path ${p.name} is back after ${was.toFixed(1)} s`);
    if (this.#held.length) {
      const held = this.#held;
      this.#held = [];
      if (this.#holdTimer !== undefined) clearTimeout(this.#holdTimer);
      this.#holdTimer = undefined;
      for (const job of held) this.#run(job);
    }
  }

  /** Close every path; commands still waiting for a path fail. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#holdTimer !== undefined) clearTimeout(this.#holdTimer);
    const held = this.#held;
    this.#held = [];
    for (const job of held) job.reject(new OperationalError("multipath device closed"));
    await Promise.all(this.#paths.map((p) => p.transport.close().catch(() => {})));
  }
}
