/**
 * The process layout of `isboot boot` (docs/boot.md):
 *
 * 1. The command the hook runs (stage "launch") decides the plan, prints it,
 *    sets PR_SET_IO_FLUSHER on its main thread, and spawns itself
 *    (/proc/self/exe with its own argv, so the bundle form re-runs deno with
 *    the same arguments) under argv[0] `@isboot`, in a new session, with a
 *    pipe on stdout. It exits when the child says READY (status 0) or FAIL N
 *    (status N): the hook continues only with a device.
 * 2. IO_FLUSHER is per thread and Deno's threads exist before user code; a
 *    process forked from a flagged thread inherits the flag, and every thread
 *    it starts after exec inherits it from its main thread. The child (stage
 *    "daemon") checks its main thread: when the flag did not come along (the
 *    spawn ran on another thread), it sets it and execve()s /proc/self/exe
 *    again (stage "flusher"), keeping argv[0] `@isboot` — systemd's mark for
 *    "root storage daemon: do not kill at switch_root or shutdown".
 * 3. The daemon runs the sequence, moves to its own cgroup kept out of swap
 *    (else at least out of its unit's cgroup), sets oom_score_adj -1000,
 *    chdirs to /, ignores SIGTERM/SIGINT/SIGHUP, opens /dev/kmsg, says
 *    READY, then locks its file mappings (off the boot's critical path) and
 *    serves until the kernel device goes away.
 * A step the kernel refuses (no CAP_SYS_RESOURCE in a container) is logged
 * and skipped.
 *
 * @example
 * ```ts
 * const stage = bootStage(Deno.env.get("ISBOOT_STAGE"));
 * if (stage === "flusher") enterDaemonStage();  // never returns
 * ```
 */
import { OperationalError } from "../errors.ts";
import type { Logger, LogLevel, LogSink } from "../log.ts";
import { enterNoSwapCgroup } from "../sys/cgroup.ts";
import {
  getIoFlusher,
  limitMallocRetention,
  lockFileMappings,
  reexecSelf,
  selfArgv,
  setIoFlusher,
  setOomScoreAdj,
  startDaemon,
  type StepResult,
} from "../sys/process.ts";

export type BootStage = "launch" | "flusher" | "daemon";
export const STAGE_ENV = "ISBOOT_STAGE";
/** Epoch ms at which the launching command started (the boot timeout counts from it). */
export const T0_ENV = "ISBOOT_T0";
/** How the IO_FLUSHER step went, carried across the re-exec for the log. */
export const FLUSHER_ENV = "ISBOOT_IO_FLUSHER";
export const DAEMON_ARGV0 = "@isboot";
/** FLUSHER_ENV value: the launcher set the flag; the child should have inherited it. */
export const FLUSHER_INHERIT = "inherit";

/**
 * Whether the daemon stage must set IO_FLUSHER itself and re-exec: the
 * launcher set it, yet this main thread does not have it.
 */
export function needsFlusherReexec(flusherEnv: string | undefined): boolean {
  return flusherEnv === FLUSHER_INHERIT && getIoFlusher() !== true;
}

/** The stage named by ISBOOT_STAGE. */
export function bootStage(value: string | undefined): BootStage {
  return value === "flusher" || value === "daemon" ? value : "launch";
}

/**
 * Move this process to the root cgroup (cgroup v2). Started from an initrd
 * unit (dracut's initqueue service), the daemon would otherwise be stopped
 * with that unit at switch_root or at shutdown: systemd spares '@' processes
 * only in its final killing spree, not when it stops a unit's cgroup.
 * Returns what happened, for the log; never throws.
 */
export function leaveUnitCgroup(): StepResult {
  try {
    Deno.statSync("/sys/fs/cgroup/cgroup.procs");
  } catch {
    // initramfs-tools: no systemd, no cgroup2 mounted, so no unit to be stopped with.
    return { ok: true, detail: "no cgroup2 mounted: no unit to leave" };
  }
  let current: string;
  try {
    current = Deno.readTextFileSync("/proc/self/cgroup").trim();
  } catch (e) {
    return { ok: false, error: `/proc/self/cgroup: ${e instanceof Error ? e.message : e}` };
  }
  // cgroup v2 only: a single "0::/PATH" line.
  const m = /^0::(\/.*)$/m.exec(current);
  if (!m) return { ok: false, error: "not on a unified (v2) cgroup hierarchy" };
  if (m[1] === "/") return { ok: true, detail: "already in the root cgroup" };
  try {
    Deno.writeTextFileSync("/sys/fs/cgroup/cgroup.procs", `${Deno.pid}\n`);
    return { ok: true, detail: `left ${m[1]}` };
  } catch (e) {
    return { ok: false, error: `leave ${m[1]}: ${e instanceof Error ? e.message : e}` };
  }
}

/** Stage 2: IO_FLUSHER on this thread, then become the daemon by execve. Never returns. */
export function enterDaemonStage(): never {
  const r = setIoFlusher();
  const env = Deno.env.toObject();
  env[STAGE_ENV] = "daemon";
  env[FLUSHER_ENV] = r.ok ? "ok" : r.error;
  reexecSelf(DAEMON_ARGV0, selfArgv().slice(1), env);
}

/**
 * Stage 1: spawn the daemon and wait for its READY/FAIL line. Returns the
 * exit status for the hook, and the device on success.
 */
export async function launchDaemon(
  log: Logger,
  startedAt: number,
): Promise<{ code: number; device?: string }> {
  // Set on this (main) thread so that the child forked from it inherits it.
  const flusher = setIoFlusher();
  // The no-swap cgroup before the spawn: a page stays charged to the cgroup
  // that allocated it when its process moves, so the child must start there.
  const cgroup = enterNoSwapCgroup();
  if (!cgroup.ok) log.debug(`own cgroup for the daemon: ${cgroup.error}`);
  const started = await startDaemon(selfArgv().slice(1), {
    argv0: DAEMON_ARGV0,
    env: {
      ...Deno.env.toObject(),
      [STAGE_ENV]: "daemon",
      [FLUSHER_ENV]: flusher.ok ? FLUSHER_INHERIT : flusher.error,
      [T0_ENV]: String(startedAt),
    },
  });
  if (started.spawnError) log.error(`cannot start the daemon: ${started.spawnError.message}`);
  const ready = /^READY (\/dev\/\S+)/.exec(started.line ?? "");
  if (ready) return { code: 0, device: ready[1] };
  const fail = /^FAIL (\d+)/.exec(started.line ?? "");
  if (fail) return { code: Number(fail[1]) };
  if (started.spawnError) return { code: 1 };
  const code = await started.exited;
  log.error(`the daemon exited (status ${code}) before the device was ready`);
  return { code: code || 1 };
}

/** Say READY (or FAIL) to the launcher and close the pipe. No-op in the foreground. */
export function tellLauncher(line: string): void {
  try {
    Deno.stdout.writeSync(new TextEncoder().encode(line + "\n"));
  } catch { /* launcher gone: nothing to tell */ }
}

const KMSG_PRIORITY: Record<LogLevel, number> = { error: 3, warn: 4, info: 6, debug: 7 };

/**
 * A log sink writing `<PRI>isboot[PID]: LINE` to /dev/kmsg (opened now, so it
 * works after switch_root), also echoing to stderr while `echo` is true.
 * Returns null when /dev/kmsg cannot be opened.
 */
export function kmsgSink(): LogSink | null {
  let f: Deno.FsFile;
  try {
    f = Deno.openSync("/dev/kmsg", { write: true });
  } catch {
    return null;
  }
  const enc = new TextEncoder();
  const pid = Deno.pid;
  return (level, line) => {
    try {
      // kmsg records are at most ~1 KiB; longer lines are cut, never split.
      f.writeSync(enc.encode(`<${KMSG_PRIORITY[level]}>isboot[${pid}]: ${line.slice(0, 900)}\n`));
    } catch { /* a full or closed kmsg must not stop the daemon */ }
  };
}

function report(log: Logger, what: string, r: StepResult): void {
  if (r.ok) log.info(`${what}: done${r.detail ? ` (${r.detail})` : ""}`);
  else log.warn(`${what}: skipped: ${r.error}`);
}

/**
 * Make this process the root-storage daemon: own cgroup, OOM score -1000,
 * chdir /, ignore termination signals. Each refused step is logged. Its file
 * mappings are locked by {@link lockDaemonFiles}, after READY.
 */
export function becomeRootStorageDaemon(log: Logger): void {
  const step = (what: string, r: StepResult) => report(log, what, r);
  const flusher = Deno.env.get(FLUSHER_ENV);
  if (flusher === FLUSHER_INHERIT) {
    step("PR_SET_IO_FLUSHER", { ok: true, detail: "inherited from the launcher's thread" });
  } else if (flusher === "ok") {
    step("PR_SET_IO_FLUSHER", { ok: true, detail: "set, then re-exec" });
  } else if (flusher !== undefined) {
    step("PR_SET_IO_FLUSHER", { ok: false, error: flusher });
  }
  // The daemon's own cgroup, out of swap (src/sys/cgroup.ts); where that is
  // refused, at least out of the unit that started it.
  const noSwap = enterNoSwapCgroup();
  step("own cgroup, never swapped", noSwap);
  if (!noSwap.ok) step("leave the starting unit's cgroup", leaveUnitCgroup());
  step("oom_score_adj -1000", setOomScoreAdj(-1000));
  step(
    "malloc: fixed mmap threshold",
    limitMallocRetention() ? { ok: true } : { ok: false, error: "mallopt refused" },
  );
  try {
    Deno.chdir("/");
  } catch (e) {
    throw new OperationalError(`chdir /: ${e instanceof Error ? e.message : e}`);
  }
  // systemd spares '@' processes; an init script's `kill` must not end us either.
  for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
    Deno.addSignalListener(
      sig,
      () => log.info(`${sig} ignored: this process serves the root disk`),
    );
  }
}

/**
 * Lock every file-backed mapping (deno's text, libc, ICU data: ~94 MiB), so
 * that serving never page-faults on a file. Called right after READY, off
 * the boot's critical path: under qemu TCG it takes about a second, and in
 * the initramfs the files are in RAM until then anyway (docs/boot.md, "Why a
 * launcher, a child, and a re-exec").
 */
export function lockDaemonFiles(log: Logger): void {
  report(log, "mlock file mappings", lockFileMappings());
}
