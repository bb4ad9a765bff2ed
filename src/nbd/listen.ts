/**
 * Listening addresses for the NBD server: `unix:PATH` or
 * `tcp:[HOST:]PORT` (IPv6 hosts in brackets). TCP binds to loopback unless
 * a host is given; a unix socket is created mode 0600 with no moment at
 * which it is wider (the umask is tightened around bind).
 *
 * @example
 * ```ts
 * const addr = parseListenAddress("unix:/run/isboot/disk.sock");
 * const listener = await listenNbd(addr);
 * console.log(describeAddr(listener.addr)); // "unix:/run/isboot/disk.sock"
 * ```
 * @module
 */
import { OperationalError, UsageError } from "../errors.ts";
import { parseIp } from "../net/addr.ts";
import { type FdListener, FdStream, listenTcp, listenUnix } from "../sys/reactor.ts";
import {
  IPPROTO_TCP,
  localAddress,
  setIntOption,
  setSocketBuffers,
  type SocketBuffers,
  TCP_NODELAY,
} from "../sys/socket.ts";
import { type ByteStream, denoConnStream } from "../sys/stream.ts";

export type ListenAddress =
  | { transport: "unix"; path: string }
  | { transport: "tcp"; hostname: string; port: number };

/**
 * Parse `unix:PATH`, `tcp:PORT`, `tcp:HOST:PORT` or `tcp:[IPV6]:PORT`.
 * Throws UsageError (it comes from the command line).
 *
 * @example
 * ```ts
 * parseListenAddress("tcp:10809"); // { transport: "tcp", hostname: "127.0.0.1", port: 10809 }
 * ```
 */
export function parseListenAddress(text: string): ListenAddress {
  if (text.startsWith("unix:")) {
    const path = text.slice(5);
    if (path === "") throw new UsageError("--listen unix: needs a path");
    return { transport: "unix", path };
  }
  if (text.startsWith("tcp:")) {
    const rest = text.slice(4);
    let host = "127.0.0.1";
    let portText = rest;
    const v6 = /^\[([^\]]+)\]:(.*)$/.exec(rest);
    if (v6) {
      host = v6[1];
      portText = v6[2];
    } else if (rest.includes(":")) {
      const i = rest.lastIndexOf(":");
      if (rest.indexOf(":") !== i) {
        throw new UsageError(`--listen ${text}: put an IPv6 address in brackets, tcp:[::1]:PORT`);
      }
      host = rest.slice(0, i) || "127.0.0.1";
      portText = rest.slice(i + 1);
    }
    if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) {
      throw new UsageError(`--listen ${text}: invalid port '${portText}'`);
    }
    return { transport: "tcp", hostname: host, port: Number(portText) };
  }
  throw new UsageError(`--listen '${text}': expected unix:PATH or tcp:[HOST:]PORT`);
}

/**
 * A listening NBD socket: connections come as byte streams. Unix sockets and
 * TCP on an IP literal are libc sockets on the reactor (sys/reactor.ts), so
 * the data path makes no Deno op; a TCP host name goes through Deno.listen.
 */
export interface NbdListener {
  /** Where it listens (a TCP port of 0 is resolved to the one picked). */
  readonly addr: Deno.Addr;
  /** Connections as they come, until `close()`. */
  [Symbol.asyncIterator](): AsyncIterator<ByteStream>;
  close(): void;
}

/**
 * Kernel buffers of every NBD unix socket (setSocketBuffers; the kernel
 * doubles them): a client's accepted connection here, both ends of each
 * socketpair the kernel's nbd device gets (attach.ts). For a unix socket the sender's
 * buffer is all the kernel holds of the stream; 256 KiB is about Linux's
 * default (net.core.wmem_default, 208 KiB), now fixed whatever the sysctl
 * says. Larger measured no faster (2 MiB: 1 MiB reads no better, and 2 MiB
 * of replies waited in the socket; docs/performance.md has the same for
 * nbdcopy).
 */
export const NBD_SOCKET_BUFFERS: SocketBuffers = { send: 128 << 10, receive: 128 << 10 };

/**
 * A client's TCP connection: a window for a real network, as an iSCSI
 * connection has (iscsi/connection.ts SOCKET_BUFFERS, 2 MiB each once
 * doubled). A listener on a host name (Deno.listen) keeps the kernel's.
 */
export const NBD_TCP_SOCKET_BUFFERS: SocketBuffers = { send: 1 << 20, receive: 1 << 20 };

function reactorListener(l: FdListener, addr: Deno.Addr): NbdListener {
  return {
    addr,
    async *[Symbol.asyncIterator]() {
      for await (const fd of l) {
        const tcp = addr.transport === "tcp";
        if (tcp) setIntOption(fd, IPPROTO_TCP, TCP_NODELAY, 1);
        setSocketBuffers(fd, tcp ? NBD_TCP_SOCKET_BUFFERS : NBD_SOCKET_BUFFERS);
        yield new FdStream(fd);
      }
    },
    close: () => l.close(),
  };
}

function denoListener(l: Deno.Listener): NbdListener {
  return {
    addr: l.addr,
    async *[Symbol.asyncIterator]() {
      for await (const conn of l) {
        if (conn.remoteAddr.transport === "tcp") (conn as Deno.TcpConn).setNoDelay(true);
        yield denoConnStream(conn);
      }
    },
    close() {
      try {
        l.close();
      } catch {
        // already closed
      }
    },
  };
}

/**
 * Open the listener. A unix socket path that exists is replaced only when
 * it is a socket nobody answers on (left over by a killed server).
 */
export async function listenNbd(addr: ListenAddress): Promise<NbdListener> {
  if (addr.transport === "tcp") {
    try {
      const ip = parseIp(addr.hostname);
      if (!ip) {
        return denoListener(
          Deno.listen({ transport: "tcp", hostname: addr.hostname, port: addr.port }),
        );
      }
      const l = listenTcp(ip, addr.port);
      const bound = localAddress(l.fd);
      const port = bound.transport === "tcp" ? bound.port : addr.port;
      return reactorListener(l, { transport: "tcp", hostname: addr.hostname, port });
    } catch (e) {
      throw new OperationalError(
        `cannot listen on tcp:${addr.hostname}:${addr.port}: ${(e as Error).message}`,
      );
    }
  }
  await ensureParent(addr.path);
  await removeStaleSocket(addr.path);
  // bind() creates the socket file with mode 0777 & ~umask: with umask 0177
  // it is 0600 from the start, so there is no window to connect through.
  const old = Deno.umask(0o177);
  try {
    return reactorListener(listenUnix(addr.path), { transport: "unix", path: addr.path });
  } catch (e) {
    throw new OperationalError(`cannot listen on unix:${addr.path}: ${(e as Error).message}`);
  } finally {
    Deno.umask(old);
  }
}

/** Create a missing parent directory (e.g. /run/isboot) private to its owner. */
async function ensureParent(path: string): Promise<void> {
  const i = path.lastIndexOf("/");
  if (i <= 0) return;
  const dir = path.slice(0, i);
  try {
    await Deno.stat(dir);
  } catch {
    try {
      await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    } catch (e) {
      throw new OperationalError(`cannot create ${dir}: ${(e as Error).message}`);
    }
  }
}

async function removeStaleSocket(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch {
    return; // does not exist
  }
  if (!info.isSocket) {
    throw new OperationalError(`cannot listen on unix:${path}: exists and is not a socket`);
  }
  try {
    const c = await Deno.connect({ transport: "unix", path });
    c.close();
    throw new OperationalError(`cannot listen on unix:${path}: a server is already listening`);
  } catch (e) {
    if (e instanceof OperationalError) throw e;
    await Deno.remove(path); // nobody answers: stale
  }
}

/**
 * Text form of a listener address, as the first log line prints it.
 *
 * @example
 * ```ts
 * describeAddr({ transport: "tcp", hostname: "127.0.0.1", port: 10809 }); // "tcp:127.0.0.1:10809"
 * ```
 */
export function describeAddr(addr: Deno.Addr): string {
  if (addr.transport === "tcp" || addr.transport === "udp") {
    const h = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
    return `tcp:${h}:${addr.port}`;
  }
  if (addr.transport === "unix" || addr.transport === "unixpacket") return `unix:${addr.path}`;
  return String(addr.transport);
}
