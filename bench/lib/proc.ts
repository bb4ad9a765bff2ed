/**
 * Process helpers for the benchmark: spawn with logs, CPU time and memory
 * from /proc, polite-then-firm stopping, free loopback ports.
 */

/** Clock ticks per second for /proc/PID/stat (USER_HZ; 100 on every Linux/x86 build). */
export const CLK_TCK = 100;

/** A child process whose stdout and stderr go to a log file. */
export interface Child {
  readonly name: string;
  readonly pid: number;
  readonly proc: Deno.ChildProcess;
  readonly logPath: string;
  /** Resolves with the exit code once the process has ended. */
  readonly exited: Promise<number>;
}

/**
 * Start `cmd args...` with output appended to `logPath`.
 *
 * @example
 * const c = spawnLogged("tgtd", "tgtd", ["-f"], "/tmp/x/tgtd.log");
 */
export function spawnLogged(
  name: string,
  cmd: string,
  args: string[],
  logPath: string,
  env?: Record<string, string>,
): Child {
  const log = Deno.openSync(logPath, { create: true, append: true });
  const proc = new Deno.Command(cmd, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env,
  }).spawn();
  const pump = async (s: ReadableStream<Uint8Array>) => {
    for await (const chunk of s) log.writeSync(chunk);
  };
  const done = Promise.all([pump(proc.stdout), pump(proc.stderr)]);
  const exited = proc.status.then(async (st) => {
    await done.catch(() => {});
    log.close();
    return st.code;
  });
  return { name, pid: proc.pid, proc, logPath, exited };
}

/** True while the process has not exited (zombies count as gone). */
export function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/**
 * SIGTERM, wait up to `graceMs`, then SIGKILL; resolves when the child is reaped.
 *
 * @example
 * await stop(child, 2000);
 */
export async function stop(child: Child, graceMs = 2000): Promise<void> {
  const sleepMs = (ms: number) => new Promise((r) => setTimeout(r, ms));
  try {
    child.proc.kill("SIGTERM");
  } catch { /* already gone */ }
  const t = await Promise.race([child.exited.then(() => true), sleepMs(graceMs).then(() => false)]);
  if (!t) {
    try {
      child.proc.kill("SIGKILL");
    } catch { /* already gone */ }
    await child.exited;
  }
}

/** utime+stime of a process (all its threads) in seconds, from /proc/PID/stat. */
export function cpuSeconds(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // Fields after the ")" closing comm: state is field 3; utime 14, stime 15 (proc(5)).
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const utime = Number(rest[14 - 3]);
  const stime = Number(rest[15 - 3]);
  return (utime + stime) / CLK_TCK;
}

/**
 * VmRSS, VmHWM and RssAnon in KiB from /proc/PID/status (0 when unreadable).
 * RssAnon leaves out file-backed pages (for isboot, ~30-45 MiB of the deno
 * runtime's own code), i.e. what the process's data costs.
 */
export function memoryKiB(pid: number): { rss: number; hwm: number; anon: number } {
  try {
    const s = Deno.readTextFileSync(`/proc/${pid}/status`);
    const field = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, "m").exec(s)?.[1] ?? 0);
    return { rss: field("VmRSS"), hwm: field("VmHWM"), anon: field("RssAnon") };
  } catch {
    return { rss: 0, hwm: 0, anon: 0 };
  }
}

/** A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, close). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/**
 * Run a command to completion; returns code, stdout, stderr and wall time.
 *
 * @example
 * const r = await run("tgtadm", ["-C", "5", "--mode", "target", "--op", "show"]);
 */
export async function run(
  cmd: string,
  args: string[],
  opts: { env?: Record<string, string>; check?: boolean } = {},
): Promise<{ code: number; stdout: string; stderr: string; ms: number }> {
  const t0 = performance.now();
  const out = await new Deno.Command(cmd, { args, env: opts.env, stdin: "null" }).output();
  const ms = performance.now() - t0;
  const dec = new TextDecoder();
  const r = { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr), ms };
  if (opts.check && r.code !== 0) {
    throw new Error(`${cmd} ${args.join(" ")} exited ${r.code}: ${r.stderr.trim().slice(0, 400)}`);
  }
  return r;
}

/** Sleep for `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Median of a non-empty list (mean of the middle two for even lengths). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
