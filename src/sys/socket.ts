/**
 * Sockets made through libc: the kind Deno cannot make (socketpair, netlink)
 * or must not make (a socket whose end the kernel will own; closing a
 * Deno.Conn shuts its write side down). An fd from here becomes an async
 * stream as an `FdStream` (reactor.ts).
 *
 * @example
 * ```ts
 * const [mine, kernels] = socketPair();
 * const stream = new FdStream(mine);   // async I/O on the reactor (reactor.ts)
 * // hand `kernels` to the kernel, then closeFd(kernels)
 * ```
 */
import { check, libc, retryEintr } from "./libc.ts";
import { ERRNO, SysError } from "./errno.ts";

/** Address families and socket types (include/linux/socket.h, net.h). */
export const AF_UNIX = 1;
export const AF_INET = 2;
export const AF_INET6 = 10;
export const AF_NETLINK = 16;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_RAW = 3;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;

/** fcntl commands and flags (include/uapi/asm-generic/fcntl.h). */
export const F_GETFD = 1;
export const F_SETFD = 2;
export const F_GETFL = 3;
export const F_SETFL = 4;
export const FD_CLOEXEC = 1;
export const O_NONBLOCK = 0o4000;

/** shutdown(2) directions. */
export const SHUT_RD = 0;
export const SHUT_WR = 1;
export const SHUT_RDWR = 2;

/** poll(2) events. */
export const POLLIN = 0x001;
export const POLLOUT = 0x004;
export const POLLERR = 0x008;
export const POLLHUP = 0x010;

/**
 * socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC): two connected fds. Pass
 * `nonblocking` to make both O_NONBLOCK.
 *
 * @example
 * ```ts
 * const [a, b] = socketPair();
 * ```
 */
export function socketPair(opts: { nonblocking?: boolean } = {}): [number, number] {
  const fds = new Int32Array(2);
  const type = SOCK_STREAM | SOCK_CLOEXEC | (opts.nonblocking ? SOCK_NONBLOCK : 0);
  check("socketpair", libc().socketpair(AF_UNIX, type, 0, fds));
  return [fds[0], fds[1]];
}

/** socket(2), always close-on-exec. */
export function openSocket(family: number, type: number, protocol: number): number {
  return check("socket", libc().socket(family, type | SOCK_CLOEXEC, protocol));
}

/** close(2). EINTR is not retried (Linux has closed the fd already). */
export function closeFd(fd: number): void {
  check("close", libc().close(fd));
}

/** shutdown(2): SHUT_RD, SHUT_WR or SHUT_RDWR. */
export function shutdownFd(fd: number, how: number = SHUT_RDWR): void {
  check("shutdown", libc().shutdown(fd, how));
}

/** Set or clear O_NONBLOCK on an fd. */
export function setNonBlocking(fd: number, on = true): void {
  const flags = check("fcntl(F_GETFL)", libc().fcntl(fd, F_GETFL, 0));
  const next = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK;
  if (next !== flags) check("fcntl(F_SETFL)", libc().fcntl(fd, F_SETFL, next));
}

/** True when O_NONBLOCK is set on the fd. */
export function isNonBlocking(fd: number): boolean {
  return (check("fcntl(F_GETFL)", libc().fcntl(fd, F_GETFL, 0)) & O_NONBLOCK) !== 0;
}

/** Set or clear FD_CLOEXEC (clear it on an fd a re-exec'd isboot must keep). */
export function setCloexec(fd: number, on = true): void {
  const flags = check("fcntl(F_GETFD)", libc().fcntl(fd, F_GETFD, 0));
  const next = on ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC;
  if (next !== flags) check("fcntl(F_SETFD)", libc().fcntl(fd, F_SETFD, next));
}

/**
 * poll(2) one fd for `events`, waiting at most `timeoutMs` (blocks the JS
 * thread: use only for short kernel round trips such as netlink replies).
 * Returns the revents (0 on timeout).
 */
export function pollFd(fd: number, events: number, timeoutMs: number): number {
  const pfd = new Uint8Array(8); // struct pollfd { int fd; short events; short revents; }
  const dv = new DataView(pfd.buffer);
  dv.setInt32(0, fd, true);
  dv.setInt16(4, events, true);
  const n = retryEintr("poll", () => libc().poll(pfd, 1n, timeoutMs));
  return n === 0 ? 0 : dv.getUint16(6, true);
}

/**
 * An IPv4 or IPv6 address as its network-order bytes (4 or 16). The one
 * address type of isboot: net/addr.ts parses and prints it (and re-exports
 * it for the layers above).
 */
export interface IpAddress {
  readonly family: 4 | 6;
  readonly bytes: Uint8Array;
}

/** struct sockaddr_in / sockaddr_in6 for `addr` and `port`. */
export function sockaddrInet(addr: IpAddress, port: number): Uint8Array {
  const v4 = addr.family === 4;
  const sa = new Uint8Array(v4 ? 16 : 28);
  const dv = new DataView(sa.buffer);
  dv.setUint16(0, v4 ? AF_INET : AF_INET6, true);
  dv.setUint16(2, port, false);
  sa.set(addr.bytes.subarray(0, v4 ? 4 : 16), v4 ? 4 : 8); // sin_addr; sin6_addr after flowinfo
  return sa;
}

/** struct sockaddr_un for a path (at most 107 bytes). */
export function sockaddrUnix(path: string): Uint8Array {
  const bytes = new TextEncoder().encode(path);
  if (bytes.length === 0 || bytes.length > 107 || bytes.includes(0)) {
    throw new SysError("sockaddr_un", ERRNO.ENAMETOOLONG);
  }
  const sa = new Uint8Array(110);
  new DataView(sa.buffer).setUint16(0, AF_UNIX, true);
  sa.set(bytes, 2);
  return sa;
}

/** The address a socket is bound to: `{ hostname, port }` for TCP, `{ path }` for unix. */
export function localAddress(
  fd: number,
): { transport: "tcp"; hostname: string; port: number } | { transport: "unix"; path: string } {
  const sa = new Uint8Array(128);
  const len = new Uint32Array([sa.length]);
  check("getsockname", libc().getsockname(fd, sa, len));
  const dv = new DataView(sa.buffer);
  const family = dv.getUint16(0, true);
  if (family === AF_UNIX) {
    const end = sa.indexOf(0, 2);
    const path = new TextDecoder().decode(sa.subarray(2, end < 0 ? len[0] : Math.min(end, len[0])));
    return { transport: "unix", path };
  }
  const port = dv.getUint16(2, false);
  if (family === AF_INET) return { transport: "tcp", hostname: sa.subarray(4, 8).join("."), port };
  const groups: string[] = [];
  for (let i = 0; i < 8; i++) groups.push(dv.getUint16(8 + 2 * i, false).toString(16));
  return { transport: "tcp", hostname: groups.join(":").replace(/(^|:)0(:0)+(:|$)/, "::"), port };
}

export const SOL_SOCKET = 1;
export const SO_REUSEADDR = 2;
/** setsockopt level and option for Nagle's algorithm off (PDUs are latency-bound). */
export const IPPROTO_TCP = 6;
export const TCP_NODELAY = 1;

/** setsockopt(2) with an int value. */
export function setIntOption(fd: number, level: number, name: number, value: number): void {
  check("setsockopt", libc().setsockopt(fd, level, name, new Int32Array([value]), 4));
}

/** getsockopt(2) of an int value. */
export function getIntOption(fd: number, level: number, name: number): number {
  const v = new Int32Array(1);
  check("getsockopt", libc().getsockopt(fd, level, name, v, new Uint32Array([4])));
  return v[0];
}

/** Socket buffer options (asm-generic/socket.h); the FORCE forms ignore net.core.[rw]mem_max. */
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_SNDBUFFORCE = 32;
export const SO_RCVBUFFORCE = 33;

/** Sizes for {@link setSocketBuffers}, in bytes as asked (the kernel doubles them). */
export interface SocketBuffers {
  /** SO_SNDBUF: what may wait in the kernel to be sent (unix: to be read by the peer). */
  send?: number;
  /** SO_RCVBUF (TCP): what the kernel takes in before the peer must wait; the window. */
  receive?: number;
}

/**
 * Fix a socket's buffer sizes, which also turns the kernel's autotuning of
 * that buffer off (tcp(7)): kernel memory per socket is then bounded by what
 * isboot chose, not by net.ipv4.tcp_rmem / tcp_wmem (up to 32 MiB of receive
 * buffer seen on one iSCSI connection under 1 MiB reads). Asks with the FORCE
 * options first (CAP_NET_ADMIN: past net.core.rmem_max / wmem_max), then the
 * plain ones (capped there). Set before connect() for TCP, so the window
 * scale is chosen for the size. Returns the sizes in force, as the kernel
 * reports them (twice what was asked: it counts its bookkeeping too).
 *
 * @example
 * ```ts
 * setSocketBuffers(fd, { send: 1 << 20, receive: 1 << 20 }); // { send: 2097152, receive: 2097152 }
 * ```
 */
export function setSocketBuffers(fd: number, b: SocketBuffers): { send: number; receive: number } {
  const set = (force: number, plain: number, v: number | undefined) => {
    if (v === undefined) return;
    const value = new Int32Array([v]);
    if (libc().setsockopt(fd, SOL_SOCKET, force, value, 4) === 0) return;
    check("setsockopt", libc().setsockopt(fd, SOL_SOCKET, plain, value, 4));
  };
  set(SO_SNDBUFFORCE, SO_SNDBUF, b.send);
  set(SO_RCVBUFFORCE, SO_RCVBUF, b.receive);
  return {
    send: getIntOption(fd, SOL_SOCKET, SO_SNDBUF),
    receive: getIntOption(fd, SOL_SOCKET, SO_RCVBUF),
  };
}
