/**
 * Process-level steps of the root-storage daemon (docs/boot.md): the
 * IO_FLUSHER mark, re-exec under a new argv[0], the OOM score, and memory
 * locking without mlockall (which crashes V8: its madvise on locked pages
 * fails; deno-notes.md). Each step returns what happened instead of throwing
 * when the kernel refuses it, so a container without CAP_SYS_RESOURCE logs
 * and goes on.
 *
 * @example
 * ```ts
 * const r = setIoFlusher();
 * if (!r.ok) log.warn(`PR_SET_IO_FLUSHER: ${r.error}`);
 * ```
 */
import { ERRNO, SysError } from "./errno.ts";
import { errno, libc } from "./libc.ts";

/** prctl options (include/uapi/linux/prctl.h). */
export const PR_SET_IO_FLUSHER = 57;
export const PR_GET_IO_FLUSHER = 58;

/** sysconf(3) name of the page size (glibc bits/confname.h). */
const _SC_PAGESIZE = 30;

/**
 * The page size of this machine: 4096 on x86-64, 4096 to 65536 on arm64 and
 * ppc64 (a kernel build choice), so it is asked, not assumed.
 *
 * @example
 * ```ts
 * const page = pageSize(); // 4096
 * ```
 */
export function pageSize(): number {
  const n = Number(libc().sysconf(_SC_PAGESIZE));
  if (n <= 0) throw new SysError("sysconf(_SC_PAGESIZE)", errno());
  return n;
}

/** A step that may be refused: ok, or the refusal as text ("EPERM (operation not permitted)"). */
export type StepResult = { ok: true; detail?: string } | { ok: false; error: string };

function refused(call: string, e: number): StepResult {
  return { ok: false, error: new SysError(call, e).message };
}

/**
 * PR_SET_IO_FLUSHER on the calling thread: memory reclaim on its behalf does
 * no I/O (PF_MEMALLOC_NOIO), so serving the root disk cannot deadlock on the
 * root disk. Per thread; inherited by threads created later and kept across
 * execve — hence the re-exec after it.
 */
export function setIoFlusher(): StepResult {
  // prctl(2) fails with EINVAL, EPERM, EFAULT, EACCES or EBUSY. Twice in ~10
  // full test runs errno read ENOENT here, although it is read straight from
  // the thread's slot: the runtime ran something that set it in between (in
  // the first call of a fresh process). The call is idempotent: ask again.
  for (let attempt = 0;; attempt++) {
    const r = libc().prctl(PR_SET_IO_FLUSHER, 1n, 0n, 0n, 0n);
    if (r === 0) return { ok: true };
    const e = errno();
    if (PRCTL_ERRNOS.includes(e) || attempt === 2) return refused("prctl(PR_SET_IO_FLUSHER)", e);
  }
}

/** The errno values prctl(2) documents. */
const PRCTL_ERRNOS: readonly number[] = [
  ERRNO.EINVAL,
  ERRNO.EPERM,
  ERRNO.EFAULT,
  ERRNO.EACCES,
  ERRNO.EBUSY,
];

/** mallopt parameters (glibc malloc.h). */
const M_TRIM_THRESHOLD = -1;
const M_MMAP_THRESHOLD = -3;

/**
 * Keep glibc malloc from holding on to freed I/O buffers. V8's ArrayBuffer
 * stores come from malloc; glibc raises its mmap threshold each time a big
 * mmapped block is freed (up to 32 MiB), after which 256 KiB..1 MiB buffers
 * come from the brk heap and their memory stays in the process after they
 * die (seen: the heap grew by 30 MiB under nbdcopy). A fixed threshold of
 * 128 KiB (which also stops the dynamic adjustment) sends big buffers to
 * mmap, returned to the kernel when freed; the trim threshold is fixed too.
 * Returns false if glibc refused (other libcs: no such symbol, no effect).
 */
export function limitMallocRetention(): boolean {
  try {
    const c = libc();
    return c.mallopt(M_MMAP_THRESHOLD, 128 * 1024) === 1 &&
      c.mallopt(M_TRIM_THRESHOLD, 1024 * 1024) === 1;
  } catch {
    return false;
  }
}

/** Whether the calling thread has IO_FLUSHER set (null if the kernel cannot say). */
export function getIoFlusher(): boolean | null {
  const r = libc().prctl(PR_GET_IO_FLUSHER, 0n, 0n, 0n, 0n);
  return r < 0 ? null : r === 1;
}

/** This process's argv as the kernel has it (/proc/self/cmdline). */
export function selfArgv(): string[] {
  const raw = Deno.readTextFileSync("/proc/self/cmdline");
  const parts = raw.split("\0");
  if (parts.at(-1) === "") parts.pop();
  return parts;
}

/**
 * The arguments that come before a subcommand when this isboot runs itself
 * again through /proc/self/exe: deno's own (`run -A ... isboot.js`) in the
 * bundle and source forms, none for a compiled executable.
 *
 * @example
 * ```ts
 * spawn("/proc/self/exe", [...selfPrefix(), "status", "--json"]);
 * ```
 */
export function selfPrefix(argv: readonly string[] = selfArgv(), main = Deno.mainModule): string[] {
  const script = main.startsWith("file://") ? decodeURIComponent(new URL(main).pathname) : "";
  let at = script ? argv.indexOf(script, 1) : -1;
  // A path that differs only by symlinks: deno run's own script argument.
  if (at < 0 && argv[1] === "run") at = argv.findIndex((a, i) => i > 1 && /\.[jt]s$/.test(a));
  return at < 0 ? [] : argv.slice(1, at + 1);
}

const F_GETFD = 1;
const F_SETFD = 2;
const FD_CLOEXEC = 1;

/**
 * Mark every file descriptor above 2 close-on-exec, so that a daemon this
 * process starts inherits none of them. A package manager's pipes and
 * terminal reach a maintainer script's children as plain inherited
 * descriptors: a daemon that kept one would hold apt waiting for its end
 * for ever. (Deno's own descriptors are close-on-exec already.) Returns
 * how many were marked.
 *
 * @example
 * ```ts
 * closeInheritedOnExec();
 * spawn("/proc/self/exe", args, { detached: true });
 * ```
 */
export function closeInheritedOnExec(): number {
  let marked = 0;
  let fds: number[];
  try {
    fds = [...Deno.readDirSync("/proc/self/fd")].map((e) => Number(e.name)).filter((n) => n > 2);
  } catch {
    return 0; // no /proc: nothing to go by
  }
  for (const fd of fds) {
    const flags = libc().fcntl(fd, F_GETFD, 0);
    if (flags < 0 || (flags & FD_CLOEXEC) !== 0) continue; // gone (the directory's own fd), or set
    if (libc().fcntl(fd, F_SETFD, flags | FD_CLOEXEC) === 0) marked++;
  }
  return marked;
}

/** What {@link startDaemon} saw: the child's first stdout line, or why there was none. */
export interface DaemonStart {
  /** The first line the child printed (without its newline); null if it printed none. */
  line: string | null;
  /** The child could not be spawned at all (null when it was). */
  spawnError: Error | null;
  /** Resolves with the child's exit status once it exits (null: killed by a signal). */
  exited: Promise<number | null>;
}

/**
 * Start this same program again as a daemon: `/proc/self/exe` with `args`
 * (pass {@link selfPrefix} first for the bundle and source forms), in a new
 * session, stdin closed, stderr shared, stdout a pipe, every inherited
 * descriptor above 2 marked close-on-exec first (the daemon keeps nothing
 * of whoever started us: apt, a hook, a shell). Waits for the child's first
 * stdout line, its "I am ready" (or "I failed"); once it has one, the pipe
 * is closed and the child left to run on its own.
 *
 * @example
 * ```ts
 * const s = await startDaemon([...selfPrefix(), "attach", target]);
 * if (s.line === null) console.error(`exited with ${await s.exited}`);
 * ```
 */
export async function startDaemon(
  args: string[],
  opts: { argv0?: string; env?: Record<string, string> } = {},
): Promise<DaemonStart> {
  const { spawn } = await import("node:child_process");
  closeInheritedOnExec();
  const child = spawn("/proc/self/exe", args, {
    ...(opts.argv0 === undefined ? {} : { argv0: opts.argv0 }),
    ...(opts.env === undefined ? {} : { env: opts.env }),
    detached: true,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  let spawnError: Error | null = null;
  const line = await new Promise<string | null>((resolve) => {
    let buf = "";
    const dec = new TextDecoder();
    child.stdout!.on("data", (d: Uint8Array | string) => {
      buf += typeof d === "string" ? d : dec.decode(d, { stream: true });
      const nl = buf.indexOf("\n");
      if (nl >= 0) resolve(buf.slice(0, nl));
    });
    child.stdout!.on("end", () => resolve(null));
    child.on("exit", () => resolve(null));
    child.on("error", (e: Error) => {
      spawnError = e;
      resolve(null);
    });
  });
  child.stdout!.destroy();
  if (line !== null) child.unref();
  return { line, spawnError, exited };
}

const enc = new TextEncoder();

function cString(s: string): Uint8Array {
  const b = enc.encode(s);
  if (b.includes(0)) throw new SysError("execve", ERRNO.EINVAL, "NUL byte in an argument");
  const out = new Uint8Array(b.length + 1);
  out.set(b);
  return out;
}

/** A NULL-terminated char*[] over `strings`; the returned keep-alive list must outlive the call. */
function cArray(strings: string[]): { array: BigUint64Array; keep: Uint8Array[] } {
  const keep = strings.map(cString);
  const array = new BigUint64Array(keep.length + 1);
  keep.forEach((b, i) => {
    array[i] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(b)));
  });
  return { array, keep };
}

/**
 * Replace this process with `/proc/self/exe` (same PID), running `args`
 * under `argv0` and `env`. Returns only on failure (by throwing SysError).
 * In bundle form /proc/self/exe is deno, so `args` carries deno's own
 * arguments: pass `selfArgv().slice(1)` to run the same program again.
 *
 * @example
 * ```ts
 * reexecSelf("@isboot", selfArgv().slice(1), { ...Deno.env.toObject(), ISBOOT_STAGE: "daemon" });
 * ```
 */
export function reexecSelf(argv0: string, args: string[], env: Record<string, string>): never {
  const path = cString("/proc/self/exe");
  const argv = cArray([argv0, ...args]);
  const envp = cArray(Object.entries(env).map(([k, v]) => `${k}=${v}`));
  libc().execve(path, argv.array, envp.array);
  const e = errno();
  // Keep the buffers reachable until after the call.
  void argv.keep.length, envp.keep.length;
  throw new SysError("execve(/proc/self/exe)", e);
}

/**
 * Set /proc/self/oom_score_adj (-1000: the OOM killer never picks us). A
 * negative value needs CAP_SYS_RESOURCE.
 */
export function setOomScoreAdj(value: number): StepResult {
  try {
    Deno.writeTextFileSync("/proc/self/oom_score_adj", String(value));
    return { ok: true };
  } catch (e) {
    return { ok: false, error: `oom_score_adj ${value}: ${e instanceof Error ? e.message : e}` };
  }
}

/** One line of /proc/PID/maps that is backed by a file. */
export interface FileMapping {
  start: bigint;
  end: bigint;
  perms: string;
  path: string;
}

/** The file-backed mappings in /proc/self/maps text (paths starting with '/'). */
export function parseFileMappings(maps: string): FileMapping[] {
  const out: FileMapping[] = [];
  for (const line of maps.split("\n")) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \d+\s+(\/.*)$/.exec(line);
    if (m) {
      out.push({ start: BigInt(`0x${m[1]}`), end: BigInt(`0x${m[2]}`), perms: m[3], path: m[4] });
    }
  }
  return out;
}

/**
 * mlock every file-backed mapping of this process (the executable, libc,
 * ICU data...), so serving the root disk never page-faults on a file that
 * lives on the root disk or on a freed initramfs. Anonymous memory (the V8
 * heap) is left alone: mlockall breaks V8.
 */
export function lockFileMappings(): StepResult {
  let maps: FileMapping[];
  try {
    maps = parseFileMappings(Deno.readTextFileSync("/proc/self/maps"));
  } catch (e) {
    return { ok: false, error: `/proc/self/maps: ${e instanceof Error ? e.message : e}` };
  }
  let bytes = 0n, failures = 0, firstError = 0;
  for (const m of maps) {
    // Guard pages and reserved regions (---p) cannot be locked and need not be.
    if (m.perms.startsWith("---")) continue;
    if (libc().mlock(m.start, m.end - m.start) === 0) bytes += m.end - m.start;
    else {
      failures++;
      firstError ||= errno();
    }
  }
  const detail = `${maps.length - failures} mappings, ${bytes / 1048576n} MiB`;
  if (failures && bytes === 0n) return refused("mlock", firstError);
  return { ok: true, detail: failures ? `${detail}; ${failures} refused` : detail };
}

/** mlock one buffer (an I/O buffer that must not be paged out). */
export function lockBuffer(buf: Uint8Array): StepResult {
  if (buf.byteLength === 0) return { ok: true };
  const p = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf)));
  return libc().mlock(p, BigInt(buf.byteLength)) === 0 ? { ok: true } : refused("mlock", errno());
}

/** madvise(2): the kernel may free these pages whenever it needs memory (Linux 4.5). */
const MADV_FREE = 8;
/** mmap(2) protection and flags (asm-generic/mman-common.h). */
const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_PRIVATE = 0x02;
const MAP_ANONYMOUS = 0x20;
const MAP_FAILED = 0xffffffffffffffffn;

/**
 * Memory held for the kernel to take back: see {@link holdReclaimableSlack}.
 */
export interface ReclaimableSlack {
  /** Bytes held (whole pages). */
  readonly bytes: number;
  /** Bytes the kernel has taken back so far (their pages read as zeroes now). */
  taken(): number;
}

/**
 * Touch `bytes` of anonymous memory, then give it to the kernel with
 * MADV_FREE: it stays charged to this process (and its cgroup) until the
 * kernel needs memory, and then it is the first thing reclaim takes — with
 * no swap, since lazily freed pages are dropped, not written out. Memory
 * this process must still get while capped at what it holds (V8's JIT code
 * and compiler zones, its heap's next page: growth no buffer reserve can
 * cover) then comes out of this instead of ending in an OOM kill. The pages
 * are never written again, so each can be taken once; `taken()` counts them
 * (a page the kernel freed reads as zeroes, and reading it maps the shared
 * zero page, which costs nothing). Refused (kernel before 4.5, or the
 * memory is locked) it returns the error.
 *
 * @example
 * ```ts
 * const s = holdReclaimableSlack(8 << 20);
 * if ("error" in s) log.warn(s.error); else log.info(`${s.slack.taken()} bytes taken so far`);
 * ```
 */
export function holdReclaimableSlack(
  bytes: number,
): { slack: ReclaimableSlack } | { error: string } {
  const page = pageSize();
  const len = Math.ceil(bytes / page) * page;
  // Mapped by hand, not an ArrayBuffer: V8 counts every ArrayBuffer as
  // external memory in its GC heuristics, and this is none of its business.
  const at = libc().mmap(
    0n,
    BigInt(len),
    PROT_READ | PROT_WRITE,
    MAP_PRIVATE | MAP_ANONYMOUS,
    -1,
    0n,
  );
  if (at === MAP_FAILED) return { error: new SysError("mmap", errno()).message };
  libc().memset(at, 1, BigInt(len)); // resident, charged
  if (libc().madvise(at, BigInt(len), MADV_FREE) !== 0) {
    return { error: new SysError("madvise(MADV_FREE)", errno()).message };
  }
  const view = new Deno.UnsafePointerView(Deno.UnsafePointer.create(at)!);
  return {
    slack: {
      bytes: len,
      taken() {
        let n = 0;
        for (let p = 0; p < len; p += page) if (view.getUint8(p) === 0) n += page;
        return n;
      },
    },
  };
}

/** A process's memory as /proc/PID/status counts it, in bytes. */
export interface ProcessMemory {
  /** VmRSS: resident, anonymous + file + shared memory. */
  rssBytes: number;
  /** RssAnon: resident anonymous memory (the heaps, stacks, malloc). */
  anonBytes: number;
  /** RssFile: resident file-backed pages (executable, libraries). */
  fileBytes: number;
  /** VmLck: locked (mlock). */
  lockedBytes: number;
  /** VmSwap: anonymous memory swapped out. */
  swapBytes: number;
}

/**
 * The memory fields of /proc/PID/status text (`VmRSS:  12345 kB` lines);
 * null when one is missing (a kernel older than 4.5 has no RssAnon).
 *
 * @example
 * ```ts
 * parseProcStatusMemory(Deno.readTextFileSync("/proc/self/status"))?.anonBytes; // 26214400
 * ```
 */
export function parseProcStatusMemory(text: string): ProcessMemory | null {
  const kib = (name: string): number | null => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB$`, "m").exec(text);
    return m ? Number(m[1]) * 1024 : null;
  };
  const [rss, anon, file, locked, swap] = ["VmRSS", "RssAnon", "RssFile", "VmLck", "VmSwap"].map(
    kib,
  );
  if (rss === null || anon === null || file === null || locked === null || swap === null) {
    return null;
  }
  return { rssBytes: rss, anonBytes: anon, fileBytes: file, lockedBytes: locked, swapBytes: swap };
}

/** This process's {@link ProcessMemory} (null without /proc). */
export function processMemory(): ProcessMemory | null {
  try {
    return parseProcStatusMemory(Deno.readTextFileSync("/proc/self/status"));
  } catch {
    return null;
  }
}
