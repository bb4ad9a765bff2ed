/**
 * The single `Deno.dlopen` of libc. Every FFI call isboot makes goes through
 * here; the rest of the tree calls the typed wrappers in src/sys/.
 *
 * Rules this module keeps (measured facts about Deno's FFI; docs/kernel.md, "The sys layer"):
 * - Variadic functions (fcntl, ioctl, prctl, open) are declared with fixed
 *   integer/pointer parameters, which is how the x86-64 ABI passes them anyway.
 * - One symbol only is `nonblocking` (it runs on a pool thread, where errno is
 *   lost): `epoll_wait_blocking`, the reactor's (reactor.ts) idle wait, whose
 *   failure (EINTR) it treats as "no events". Every other call that could
 *   block is made on an O_NONBLOCK fd, and errno is read right after the call
 *   from the slot `__errno_location()` named when the library was opened
 *   (calling it after a failure could change errno).
 * - The library is opened on first use, so importing src/sys costs nothing
 *   for commands that never call libc (and needs no --allow-ffi).
 *
 * @example
 * ```ts
 * const fd = check("socket", libc().socket(AF_NETLINK, SOCK_RAW, 0));
 * ```
 */
import { ERRNO, SysError } from "./errno.ts";

const SYMBOLS = {
  __errno_location: { parameters: [], result: "pointer" },
  close: { parameters: ["i32"], result: "i32" },
  dup: { parameters: ["i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  // int fcntl(int fd, int cmd, ... /* int arg */)
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  // int ioctl(int fd, unsigned long request, ... /* void *arg */)
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  // Datagrams (src/sys/datagram.ts): ssize_t sendto(fd, buf, len, flags, addr, addrlen).
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "isize" },
  // ssize_t recvmsg(int fd, struct msghdr *msg, int flags): a packet socket's auxiliary data.
  recvmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  listen: { parameters: ["i32", "i32"], result: "i32" },
  accept4: { parameters: ["i32", "pointer", "pointer", "i32"], result: "i32" },
  // The reactor (reactor.ts): epoll, and an eventfd to wake its idle wait.
  epoll_create1: { parameters: ["i32"], result: "i32" },
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  epoll_wait: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32" },
  epoll_wait_blocking: {
    name: "epoll_wait",
    parameters: ["i32", "buffer", "i32", "i32"],
    result: "i32",
    nonblocking: true,
  },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  getpid: { parameters: [], result: "i32" },
  // Lock files (src/sys/lockfile.ts): int open(const char *, int, mode_t), flock.
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  flock: { parameters: ["i32", "i32"], result: "i32" },
  // Root-storage daemon (src/sys/process.ts): int prctl(int option, unsigned long arg2, ...)
  prctl: { parameters: ["i32", "u64", "u64", "u64", "u64"], result: "i32" },
  execve: { parameters: ["buffer", "buffer", "buffer"], result: "i32" },
  // mlock takes raw addresses: ranges from /proc/self/maps, or a buffer's pointer value.
  mlock: { parameters: ["u64", "usize"], result: "i32" },
  // A lazily freed reserve outside V8's heap accounting (src/sys/process.ts): void *mmap(addr,
  // length, prot, flags, fd, offset), void *memset(s, c, n), int madvise(addr, length, advice).
  mmap: { parameters: ["u64", "usize", "i32", "i32", "i32", "i64"], result: "u64" },
  memset: { parameters: ["u64", "i32", "usize"], result: "u64" },
  madvise: { parameters: ["u64", "usize", "i32"], result: "i32" },
  // int mallopt(int param, int value): malloc tuning (src/sys/process.ts).
  mallopt: { parameters: ["i32", "i32"], result: "i32" },
  // long sysconf(int name): the page size (src/sys/process.ts).
  sysconf: { parameters: ["i32"], result: "i64" },
  // A private cgroup2 mount where the initramfs has none (src/sys/cgroup.ts):
  // int mount(src, target, fstype, unsigned long flags, const void *data), umount2(target, flags).
  mount: { parameters: ["buffer", "buffer", "buffer", "u64", "pointer"], result: "i32" },
  umount2: { parameters: ["buffer", "i32"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The typed symbol table of libc. */
export type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let opened: Deno.DynamicLibrary<typeof SYMBOLS> | undefined;
/** This (the JS) thread's errno, located once when libc is opened. */
let errnoView: Deno.UnsafePointerView | null = null;

/**
 * libc's symbols, opening the library on first use. (These are the only lazily
 * filled module slots in isboot: a handle to a process-wide library and where
 * its errno lives, not state.)
 */
export function libc(): Libc {
  if (!opened) {
    opened = Deno.dlopen("libc.so.6", SYMBOLS);
    // Where this thread's errno lives, found once now: an FFI call made after
    // a failed call, __errno_location() included, gives the runtime a chance
    // to run code of its own that sets errno (seen once in a full test run
    // under load: prctl's EPERM read back as ENOENT). Reading the slot is a
    // plain memory load. JS runs on this one thread only.
    const p = opened.symbols.__errno_location();
    errnoView = p === null ? null : new Deno.UnsafePointerView(p);
  }
  return opened.symbols;
}

/** errno of the calling thread, as left by the last synchronous libc call. */
export function errno(): number {
  libc();
  return errnoView ? errnoView.getInt32(0) : 0;
}

/**
 * Turn a libc return value into a result: -1 (or any negative) throws
 * SysError with errno read immediately; otherwise the value is returned.
 *
 * @example
 * ```ts
 * const n = check("recv", libc().recv(fd, buf, BigInt(buf.length), 0));
 * ```
 */
export function check<T extends number | bigint>(call: string, ret: T): T {
  if (typeof ret === "bigint" ? ret < 0n : ret < 0) throw new SysError(call, errno());
  return ret;
}

/**
 * Call `fn` again while it fails with EINTR (a signal arrived mid-call);
 * other errors throw SysError.
 */
export function retryEintr<T extends number | bigint>(call: string, fn: () => T): T {
  for (;;) {
    const ret = fn();
    if (typeof ret === "bigint" ? ret >= 0n : ret >= 0) return ret;
    const e = errno();
    if (e !== ERRNO.EINTR) throw new SysError(call, e);
  }
}
