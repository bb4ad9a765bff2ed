/**
 * Linux errno numbers (x86-64/generic, include/uapi/asm-generic/errno-base.h
 * and errno.h) and their names, and the typed error every failed libc call
 * becomes. Names are what users search for; messages are ours, one line.
 */
import { OperationalError } from "../errors.ts";

/** errno values by name (the subset isboot meets; others print as "errno N"). */
export const ERRNO = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  EPIPE: 32,
  ERANGE: 34,
  EDEADLK: 35,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ENODATA: 61,
  ETIME: 62,
  EPROTO: 71,
  EBADMSG: 74,
  EOVERFLOW: 75,
  ENOTSOCK: 88,
  EDESTADDRREQ: 89,
  EMSGSIZE: 90,
  EPROTOTYPE: 91,
  ENOPROTOOPT: 92,
  EPROTONOSUPPORT: 93,
  ESOCKTNOSUPPORT: 94,
  EOPNOTSUPP: 95,
  EPFNOSUPPORT: 96,
  EAFNOSUPPORT: 97,
  EADDRINUSE: 98,
  EADDRNOTAVAIL: 99,
  ENETDOWN: 100,
  ENETUNREACH: 101,
  ENETRESET: 102,
  ECONNABORTED: 103,
  ECONNRESET: 104,
  ENOBUFS: 105,
  EISCONN: 106,
  ENOTCONN: 107,
  ESHUTDOWN: 108,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
  EHOSTDOWN: 112,
  EHOSTUNREACH: 113,
  EALREADY: 114,
  EINPROGRESS: 115,
  ECANCELED: 125,
} as const;

export type ErrnoName = keyof typeof ERRNO;

const NAMES: ReadonlyMap<number, ErrnoName> = new Map(
  (Object.entries(ERRNO) as [ErrnoName, number][]).map(([n, v]) => [v, n]),
);

const TEXT: Partial<Record<ErrnoName, string>> = {
  EPERM: "operation not permitted",
  ENOENT: "no such file or directory",
  EIO: "input/output error",
  EAGAIN: "resource temporarily unavailable",
  ENOMEM: "out of memory",
  EACCES: "permission denied",
  EBUSY: "device or resource busy",
  EEXIST: "already exists",
  ENODEV: "no such device",
  EINVAL: "invalid argument",
  ENOSPC: "no space left on device",
  EPIPE: "broken pipe",
  ENOSYS: "function not implemented",
  EOPNOTSUPP: "operation not supported",
  EAFNOSUPPORT: "address family not supported",
  EPROTONOSUPPORT: "protocol not supported",
  ENOBUFS: "no buffer space available",
  ETIMEDOUT: "timed out",
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset",
  ENOTCONN: "not connected",
};

/** The symbolic name of an errno value, e.g. `errnoName(2) === "ENOENT"`. */
export function errnoName(errno: number): string {
  return NAMES.get(errno) ?? `errno ${errno}`;
}

/**
 * A failed system call (or a netlink request the kernel refused with a
 * negative error). `errno` is the positive value; `code` its name; `call`
 * names what failed ("socket", "bind", "genl nbd CONNECT").
 *
 * @example
 * ```ts
 * try { resolveFamily(sock, "nbd"); }
 * catch (e) { if (e instanceof SysError && e.code === "ENOENT") loadModule("nbd"); }
 * ```
 */
export class SysError extends OperationalError {
  readonly errno: number;
  readonly call: string;
  constructor(call: string, errno: number, detail?: string) {
    const name = errnoName(errno);
    const text = TEXT[name as ErrnoName];
    super(
      `${call}: ${name}${text ? ` (${text})` : ""}${detail ? `: ${detail}` : ""}`,
    );
    this.errno = errno;
    this.call = call;
  }
  /** Symbolic errno name ("ENOENT"), or "errno N" for ones we do not name. */
  get code(): string {
    return errnoName(this.errno);
  }
  /** True when this error is the given errno name. */
  is(name: ErrnoName): boolean {
    return this.errno === ERRNO[name];
  }
}
