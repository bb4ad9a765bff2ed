/**
 * Socket I/O through libc instead of Deno's async ops: the data path of both
 * the NBD server and the iSCSI connection runs on these streams.
 *
 * How:
 * - Sockets are O_NONBLOCK. `read` and `write` first try `recv`/`send` at
 *   once, synchronously (a plain FFI call); only when the kernel says EAGAIN
 *   does the stream wait, and the reactor wakes it.
 * - The reactor is one epoll set. Each socket is registered once,
 *   edge-triggered for input; output readiness is asked for only while a
 *   write is stuck. While anyone waits, the reactor runs one tick per
 *   event-loop turn (`setImmediate`, so microtasks, timers and Deno's own
 *   ops all run between ticks). A tick polls epoll with a zero timeout and
 *   dispatches what came; when nothing came:
 *   1. busy poll: for `spinUs` (default 200 µs, ISBOOT_POLL_US) after the
 *      last event, and only while few commands are in flight (depth ≤ 2,
 *      from addDepthSource), it polls in a tight loop, 50 µs per turn. This
 *      is what brings 4K QD1 latency under qemu-nbd's, at the price of a
 *      core while a QD1 workload runs; at depth the CPU is better spent on
 *      the work, so it does not spin there;
 *   2. nap: up to 1 ms after the last event it blocks in epoll_wait on this
 *      thread (nothing else runs meanwhile; timers are at most 1 ms late);
 *   3. idle: then it blocks in epoll_wait on a pool thread (the one
 *      `nonblocking` libc symbol; ~25 µs to come back from), so an idle
 *      isboot uses no CPU and the event loop is free.
 * - Writers (NBD replies, iSCSI commands) wait for {@link nextTurn}: the
 *   start of the next tick, after every microtask of this turn has run, so
 *   a turn's output leaves in one write, before the reactor polls again.
 * - An eventfd in the set ends the pool thread's wait when the last waiter
 *   is gone, so nothing keeps the process alive once every stream is closed.
 *
 * Measured (docs/performance.md): with busy polling off, user time per
 * request is what it was on Deno's ops; busy polling takes 4K QD1 latency
 * from ~190 µs to ~125 µs.
 *
 * @example
 * ```ts
 * const [a, b] = socketPair({ nonblocking: true });
 * const x = new FdStream(a), y = new FdStream(b);
 * await x.write(new Uint8Array([1, 2, 3]));
 * const n = await y.read(new Uint8Array(16)); // 3
 * ```
 * @module
 */
import { ERRNO, SysError } from "./errno.ts";
import { check, errno, libc } from "./libc.ts";
import {
  AF_INET,
  AF_INET6,
  AF_UNIX,
  type IpAddress,
  IPPROTO_TCP,
  openSocket,
  setIntOption,
  setNonBlocking,
  setSocketBuffers,
  SHUT_WR,
  SO_REUSEADDR,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  sockaddrInet,
  sockaddrUnix,
  type SocketBuffers,
  SOL_SOCKET,
  TCP_NODELAY,
} from "./socket.ts";
import type { ByteStream } from "./stream.ts";

const EPOLLIN = 0x001;
const EPOLLOUT = 0x004;
const EPOLLERR = 0x008;
const EPOLLHUP = 0x010;
const EPOLLRDHUP = 0x2000;
const EPOLLET = 0x80000000;
const EPOLL_CTL_ADD = 1;
const EPOLL_CTL_DEL = 2;
const EPOLL_CTL_MOD = 3;
const EPOLL_CLOEXEC = 0o2000000;
const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
const { EINTR, EAGAIN, ECONNABORTED, EINPROGRESS } = ERRNO;
/** struct epoll_event is packed on x86-64: u32 events, u64 data. */
const EVENT_SIZE = 12;
const MAX_EVENTS = 64;
/** What a stream listens for all its life (output is added while a write waits). */
const INPUT = EPOLLIN | EPOLLRDHUP | EPOLLET;
const READABLE = EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR;
const WRITABLE = EPOLLOUT | EPOLLHUP | EPOLLERR;
/** `recv`/`send`/`accept` would block. */
const AGAIN = -1;
/** Default busy-poll time after the last event (see docs/performance.md). */
export const DEFAULT_SPIN_US = 200;
const RESOLVED: Promise<void> = Promise.resolve();
/** Busy-poll only while at most this many commands are in flight (see addDepthSource). */
const SPIN_DEPTH = 2;
/** After the busy poll, block on this thread this long before handing off to a pool thread. */
const NAP_MS = 1;
/** Longest tight poll loop within one event-loop turn (timers and ops run between). */
const TIGHT_SPIN_MS = 0.05;

/** Something registered with a reactor: told which events came for its fd. */
interface Watcher {
  ready(events: number): void;
}

/** Options for {@link Reactor}. */
export interface ReactorOptions {
  /** Keep polling this long (µs) after the last event before blocking (0: block at once). */
  spinUs?: number;
}

/**
 * One epoll set and the loop that serves it. Use {@link reactor} for the
 * process-wide one; tests may make their own.
 */
export class Reactor {
  readonly #ep: number;
  readonly #wakeFd: number;
  readonly #watchers = new Map<number, Watcher>();
  readonly #events = new Uint8Array(EVENT_SIZE * MAX_EVENTS);
  readonly #eventsView = new DataView(this.#events.buffer);
  /** The blocking wait has its own array: a poll may run while it is out. */
  readonly #idleEvents = new Uint8Array(EVENT_SIZE * MAX_EVENTS);
  readonly #idleView = new DataView(this.#idleEvents.buffer);
  readonly #ctl = new Uint8Array(EVENT_SIZE);
  readonly #ctlView = new DataView(this.#ctl.buffer);
  readonly #eight = new Uint8Array(8);
  #spinMs: number;
  #waiters = 0;
  readonly #depthSources = new Set<() => number>();
  #deferred: (() => void)[] = [];
  #scheduled = false;
  /** A blocking epoll_wait is out on a pool thread. */
  #idle = false;
  #lastEvent = 0;
  #closed = false;
  /** Ticks that busy-polled, naps on this thread, waits on a pool thread. */
  readonly #counts = { busyPolls: 0, naps: 0, blocks: 0 };

  constructor(o: ReactorOptions = {}) {
    this.#spinMs = 0;
    this.spinUs = o.spinUs ?? DEFAULT_SPIN_US;
    this.#ep = check("epoll_create1", libc().epoll_create1(EPOLL_CLOEXEC));
    try {
      this.#wakeFd = check("eventfd", libc().eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    } catch (e) {
      libc().close(this.#ep);
      throw e;
    }
    // Level-triggered: it is drained each time it fires.
    this.#ctlCall(EPOLL_CTL_ADD, this.#wakeFd, EPOLLIN);
    this.#watchers.set(this.#wakeFd, {
      ready: () => void libc().read(this.#wakeFd, this.#eight, 8n),
    });
  }

  /** The busy-poll window in µs (0: no busy polling); may be changed at any time. */
  get spinUs(): number {
    return this.#spinMs * 1000;
  }

  set spinUs(us: number) {
    if (!(us >= 0 && us <= 1_000_000)) throw new RangeError(`spinUs ${us}`);
    this.#spinMs = us / 1000;
  }

  /** Streams and listeners registered, waits outstanding, and how the reactor waited. */
  get stats(): {
    fds: number;
    waiters: number;
    idle: boolean;
    busyPolls: number;
    naps: number;
    blocks: number;
  } {
    return {
      fds: this.#watchers.size - 1,
      waiters: this.#waiters,
      idle: this.#idle,
      ...this.#counts,
    };
  }

  /** Register `fd` (edge-triggered input, hang-up and errors). */
  add(fd: number, w: Watcher): void {
    if (this.#closed) throw new SysError("epoll_ctl", ERRNO.EBADF);
    this.#ctlCall(EPOLL_CTL_ADD, fd, INPUT);
    this.#watchers.set(fd, w);
  }

  /** Ask for output readiness too (while a write is stuck), or stop asking. */
  wantOutput(fd: number, on: boolean): void {
    if (this.#watchers.has(fd)) this.#ctlCall(EPOLL_CTL_MOD, fd, on ? INPUT | EPOLLOUT : INPUT);
  }

  /** Forget `fd` (before it is closed). */
  remove(fd: number): void {
    if (!this.#watchers.delete(fd)) return;
    libc().epoll_ctl(this.#ep, EPOLL_CTL_DEL, fd, this.#ctl);
  }

  /**
   * Run `fn` at the start of the reactor's next turn, before it polls: after
   * every microtask of this turn has run, so a writer that waits for it sends
   * in one write what the whole turn produced (and before the reactor spins).
   */
  defer(fn: () => void): void {
    this.#deferred.push(fn);
    this.#schedule();
  }

  /**
   * Count `source()` (e.g. an iSCSI session's commands in flight) into the
   * depth that decides whether the reactor busy-polls: it does only while the
   * sum is at most SPIN_DEPTH, where latency, not CPU, is what limits the
   * work. Returns the function that removes the source.
   */
  addDepthSource(source: () => number): () => void {
    this.#depthSources.add(source);
    return () => this.#depthSources.delete(source);
  }

  #shallow(): boolean {
    let d = 0;
    for (const f of this.#depthSources) d += f();
    return d <= SPIN_DEPTH;
  }

  /** One more wait outstanding: make sure the loop runs. */
  waiting(): void {
    this.#waiters++;
    this.#schedule();
  }

  /** A wait ended. When none is left the loop stops (and ends a blocking wait). */
  settled(): void {
    if (--this.#waiters === 0 && this.#idle) this.#schedule();
  }

  /**
   * Close the epoll set once nothing waits (for tests; the process-wide
   * reactor lives as long as the process).
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#idle) this.#wake(); // the wait's return closes the fds
    else this.#closeFds();
  }

  #closeFds(): void {
    libc().close(this.#wakeFd);
    libc().close(this.#ep);
  }

  #ctlCall(op: number, fd: number, events: number): void {
    this.#ctlView.setUint32(0, events >>> 0, true);
    this.#ctlView.setUint32(4, fd, true);
    this.#ctlView.setUint32(8, 0, true);
    check("epoll_ctl", libc().epoll_ctl(this.#ep, op, fd, this.#ctl));
  }

  #schedule(): void {
    if (this.#scheduled || this.#closed) return;
    this.#scheduled = true;
    setImmediate(this.#tick);
  }

  #wake(): void {
    this.#eight.fill(0);
    this.#eight[0] = 1; // eventfd counter += 1 (little-endian u64)
    libc().write(this.#wakeFd, this.#eight, 8n);
  }

  /** One poll, run once per event-loop turn while anyone waits. */
  #tick = (): void => {
    this.#scheduled = false;
    let spin = true;
    if (this.#deferred.length > 0) {
      const due = this.#deferred;
      this.#deferred = [];
      for (const fn of due) fn();
      spin = false; // what they resume sends right after this turn: poll, do not spin
    }
    if (this.#closed) return;
    if (this.#waiters === 0) {
      if (this.#idle) this.#wake(); // nobody needs the blocking wait any more
      return;
    }
    let n = libc().epoll_wait(this.#ep, this.#events, MAX_EVENTS, 0);
    // While the pool thread waits, it gets the events first: neither spin nor
    // nap (a nap could hold its answer back), it schedules the next tick.
    if (n === 0 && this.#idle) return;
    let now = performance.now();
    const busyPoll = n === 0 && spin && now - this.#lastEvent < this.#spinMs && this.#shallow();
    if (busyPoll) {
      this.#counts.busyPolls++;
      // Poll in a tight loop for a while before giving the event loop a turn:
      // a turn costs microseconds, a poll a quarter of one.
      const until = Math.min(now + TIGHT_SPIN_MS, this.#lastEvent + this.#spinMs);
      while ((n = libc().epoll_wait(this.#ep, this.#events, MAX_EVENTS, 0)) === 0) {
        now = performance.now();
        if (now >= until) break;
      }
      if (n > 0) now = performance.now();
    } else if (n === 0 && spin && now - this.#lastEvent < NAP_MS) {
      // Past the spin: block in the kernel on this thread for a while (no
      // hand-off to wake up from; the event loop waits at most NAP_MS).
      this.#counts.naps++;
      n = libc().epoll_wait(
        this.#ep,
        this.#events,
        MAX_EVENTS,
        Math.max(1, Math.ceil(this.#lastEvent + NAP_MS - now)),
      );
      now = performance.now();
    }
    if (n > 0) {
      this.#lastEvent = now;
      this.#dispatch(this.#eventsView, n);
    }
    if (this.#waiters === 0) return; // those woken schedule the loop again if they wait
    if (n > 0 || !spin || busyPoll || now - this.#lastEvent < NAP_MS) this.#schedule();
    else if (!this.#idle) void this.#block();
  };

  /** Wait in the kernel on a pool thread until an event (or the eventfd) comes. */
  async #block(): Promise<void> {
    this.#idle = true;
    this.#counts.blocks++;
    let n = 0;
    try {
      n = await libc().epoll_wait_blocking(this.#ep, this.#idleEvents, MAX_EVENTS, -1);
    } finally {
      this.#idle = false;
    }
    if (this.#closed) {
      this.#closeFds();
      return;
    }
    if (n > 0) {
      this.#lastEvent = performance.now();
      this.#dispatch(this.#idleView, n);
    }
    if (this.#waiters > 0) this.#schedule();
  }

  #dispatch(v: DataView, n: number): void {
    for (let i = 0; i < n; i++) {
      const events = v.getUint32(i * EVENT_SIZE, true);
      const w = this.#watchers.get(v.getInt32(i * EVENT_SIZE + 4, true));
      w?.ready(events);
    }
  }
}

let shared: Reactor | undefined;

/**
 * Resolves at the start of the process-wide reactor's next turn (see
 * {@link Reactor.defer}): where the NBD and iSCSI writers gather a turn's
 * replies and commands into one write.
 */
export function nextTurn(): Promise<void> {
  return new Promise((resolve) => reactor().defer(resolve));
}

/**
 * The process-wide reactor, made on first use. (Like libc's handle in
 * libc.ts, this is per thread by nature: one epoll set for the JS thread.)
 * ISBOOT_POLL_US sets its busy-poll time (µs; 0 turns busy polling off).
 */
export function reactor(): Reactor {
  if (!shared) {
    let spinUs = DEFAULT_SPIN_US;
    try {
      const env = Deno.env.get("ISBOOT_POLL_US");
      if (env !== undefined && /^\d{1,7}$/.test(env)) spinUs = Number(env);
    } catch {
      // no env permission: the default
    }
    shared = new Reactor({ spinUs });
  }
  return shared;
}

/**
 * A connected stream socket (TCP or unix) as a {@link ByteStream}. Takes
 * ownership of the fd (which it makes O_NONBLOCK): `close()` closes it.
 */
export class FdStream implements ByteStream {
  readonly fd: number;
  readonly #r: Reactor;
  #closed = false;
  #into: Uint8Array | null = null;
  #readDone: ((n: number | null) => void) | null = null;
  #out: Uint8Array | null = null;
  #outOff = 0;
  #writeDone: (() => void) | null = null;
  #writeFail: ((e: unknown) => void) | null = null;
  #connectDone: ((e: SysError | null) => void) | null = null;
  /** The error that ended the stream (a reset, say), for messages; null at a clean end. */
  error: SysError | null = null;

  constructor(fd: number, r: Reactor = reactor()) {
    setNonBlocking(fd);
    r.add(fd, this);
    this.fd = fd;
    this.#r = r;
  }

  /** True once closed by `close()`. */
  get closed(): boolean {
    return this.#closed;
  }

  read(into: Uint8Array): Promise<number | null> {
    if (this.#closed) return Promise.resolve(null);
    if (into.length === 0) return Promise.resolve(0);
    const n = this.#recv(into);
    if (n !== AGAIN) return Promise.resolve(n);
    return new Promise((resolve) => {
      this.#into = into;
      this.#readDone = resolve;
      this.#r.waiting();
    });
  }

  write(data: Uint8Array): Promise<void> {
    if (this.#closed) return Promise.reject(this.#gone());
    const off = this.#send(data, 0);
    if (off < 0) return Promise.reject(this.#gone());
    if (off === data.length) return RESOLVED;
    return new Promise<void>((resolve, reject) => {
      this.#out = data;
      this.#outOff = off;
      this.#writeDone = resolve;
      this.#writeFail = reject;
      this.#r.wantOutput(this.fd, true);
      this.#r.waiting();
    });
  }

  /** End a pending read with null (end of stream) without closing anything. */
  cancelRead(): void {
    const done = this.#readDone;
    if (!done) return;
    this.#readDone = null;
    this.#into = null;
    this.#r.settled();
    done(null);
  }

  /** Half-close: no more writes; the peer reads end of stream, we may still read. */
  shutdownWrite(): void {
    if (!this.#closed) libc().shutdown(this.fd, SHUT_WR);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#r.remove(this.fd);
    libc().close(this.fd);
    const read = this.#readDone;
    const fail = this.#writeFail;
    const connect = this.#connectDone;
    this.#readDone =
      this.#writeDone =
      this.#writeFail =
      this.#connectDone =
        null;
    this.#into = this.#out = null;
    if (read) {
      this.#r.settled();
      read(null);
    }
    if (fail) {
      this.#r.settled();
      fail(this.#gone());
    }
    if (connect) {
      this.#r.settled();
      connect(new SysError("connect", ERRNO.ECANCELED));
    }
  }

  /**
   * Wait for a non-blocking connect() to finish: resolves null when
   * connected, or the SysError it failed with (SO_ERROR).
   */
  connected(): Promise<SysError | null> {
    if (this.#closed) return Promise.resolve(new SysError("connect", ERRNO.EBADF));
    return new Promise((resolve) => {
      this.#connectDone = resolve;
      this.#r.wantOutput(this.fd, true);
      this.#r.waiting();
    });
  }

  /** Called by the reactor. */
  ready(events: number): void {
    if (this.#readDone && events & READABLE) {
      const n = this.#recv(this.#into!);
      if (n !== AGAIN) {
        const done = this.#readDone;
        this.#readDone = null;
        this.#into = null;
        this.#r.settled();
        done(n);
      }
    }
    if (!(events & WRITABLE)) return;
    if (this.#connectDone) {
      const done = this.#connectDone;
      this.#connectDone = null;
      this.#r.wantOutput(this.fd, false);
      this.#r.settled();
      done(this.#soError());
      return;
    }
    if (this.#writeDone) {
      const off = this.#send(this.#out!, this.#outOff);
      if (off >= 0 && off < this.#out!.length) {
        this.#outOff = off;
        return;
      }
      const done = this.#writeDone;
      const fail = this.#writeFail!;
      this.#writeDone = this.#writeFail = null;
      this.#out = null;
      this.#r.wantOutput(this.fd, false);
      this.#r.settled();
      if (off < 0) fail(this.#gone());
      else done();
    }
  }

  /** recv once (EINTR retried): bytes, null at end of stream or error, or AGAIN. */
  #recv(into: Uint8Array): number | null {
    for (;;) {
      const n = Number(libc().recv(this.fd, into, BigInt(into.length), MSG_DONTWAIT));
      if (n > 0) return n;
      if (n === 0) return null;
      const e = errno();
      if (e === EINTR) continue;
      if (e === EAGAIN) return AGAIN;
      this.error ??= new SysError("recv", e);
      return null;
    }
  }

  /** send from `off` until done or EAGAIN: the new offset, or -1 on error. */
  #send(data: Uint8Array, off: number): number {
    while (off < data.length) {
      const n = Number(
        libc().send(
          this.fd,
          off === 0 ? data : data.subarray(off),
          BigInt(data.length - off),
          MSG_DONTWAIT | MSG_NOSIGNAL,
        ),
      );
      if (n > 0) {
        off += n;
        continue;
      }
      const e = errno();
      if (e === EINTR) continue;
      if (e === EAGAIN) break;
      this.error ??= new SysError("send", e);
      return -1;
    }
    return off;
  }

  #soError(): SysError | null {
    const v = new Int32Array(1);
    const len = new Uint32Array([4]);
    const r = libc().getsockopt(this.fd, 1, /* SOL_SOCKET */ 4, /* SO_ERROR */ v, len);
    if (r < 0) return new SysError("getsockopt", errno());
    return v[0] === 0 ? null : new SysError("connect", v[0]);
  }

  #gone(): Error {
    return this.error ?? new SysError("send", this.#closed ? ERRNO.EBADF : ERRNO.EPIPE);
  }
}

/**
 * A listening socket whose `accept()` waits through the reactor. Takes
 * ownership of the fd.
 */
export class FdListener {
  readonly fd: number;
  readonly #r: Reactor;
  #closed = false;
  #done: ((fd: number | null) => void) | null = null;
  #fail: ((e: unknown) => void) | null = null;

  constructor(fd: number, r: Reactor = reactor()) {
    setNonBlocking(fd);
    r.add(fd, this);
    this.fd = fd;
    this.#r = r;
  }

  /** The next connection's fd (non-blocking, close-on-exec), or null once closed. */
  accept(): Promise<number | null> {
    if (this.#closed) return Promise.resolve(null);
    try {
      const fd = this.#accept();
      if (fd !== AGAIN) return Promise.resolve(fd);
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      this.#done = resolve;
      this.#fail = reject;
      this.#r.waiting();
    });
  }

  /** Connections as they come, until closed. */
  async *[Symbol.asyncIterator](): AsyncGenerator<number> {
    for (;;) {
      const fd = await this.accept();
      if (fd === null) return;
      yield fd;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#r.remove(this.fd);
    libc().close(this.fd);
    const done = this.#done;
    this.#done = this.#fail = null;
    if (done) {
      this.#r.settled();
      done(null);
    }
  }

  /** Called by the reactor. */
  ready(events: number): void {
    if (!this.#done || !(events & READABLE)) return;
    let fd: number;
    try {
      fd = this.#accept();
      if (fd === AGAIN) return;
    } catch (e) {
      const fail = this.#fail!;
      this.#done = this.#fail = null;
      this.#r.settled();
      fail(e);
      return;
    }
    const done = this.#done;
    this.#done = this.#fail = null;
    this.#r.settled();
    done(fd);
  }

  #accept(): number {
    for (;;) {
      const fd = libc().accept4(this.fd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) return fd;
      const e = errno();
      if (e === EINTR || e === ECONNABORTED) continue;
      if (e === EAGAIN) return AGAIN;
      throw new SysError("accept4", e);
    }
  }
}

/**
 * Connect a TCP socket (TCP_NODELAY on, `buffers` fixed if given: see
 * setSocketBuffers) through the reactor, waiting at most `timeoutMs`.
 * Throws SysError (ECONNREFUSED, ETIMEDOUT, ...).
 *
 * @example
 * ```ts
 * const s = await connectTcp({ family: 4, bytes: Uint8Array.of(127, 0, 0, 1) }, 3260, 10000);
 * ```
 */
export async function connectTcp(
  addr: IpAddress,
  port: number,
  timeoutMs: number,
  r?: Reactor,
  buffers?: SocketBuffers,
): Promise<FdStream> {
  const fd = openSocket(addr.family === 4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_NONBLOCK, 0);
  let stream: FdStream;
  try {
    setIntOption(fd, IPPROTO_TCP, TCP_NODELAY, 1);
    if (buffers) setSocketBuffers(fd, buffers); // before connect(): the window scale follows it
    stream = new FdStream(fd, r);
  } catch (e) {
    libc().close(fd);
    throw e;
  }
  const sa = sockaddrInet(addr, port);
  let failure: SysError | null = null;
  if (libc().connect(fd, sa, sa.length) < 0) {
    const e = errno();
    if (e !== EINPROGRESS) failure = new SysError("connect", e);
    else {
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        stream.close();
      }, timeoutMs);
      try {
        failure = await stream.connected();
      } finally {
        clearTimeout(timer);
      }
      if (timedOut) failure = new SysError("connect", ERRNO.ETIMEDOUT);
    }
  }
  if (failure) {
    stream.close();
    throw failure;
  }
  return stream;
}

/**
 * A listening TCP socket (SO_REUSEADDR) through the reactor. Port 0 picks
 * one: read it back with `localAddress(listener.fd)`.
 */
export function listenTcp(addr: IpAddress, port: number, backlog = 128, r?: Reactor): FdListener {
  const fd = openSocket(addr.family === 4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_NONBLOCK, 0);
  try {
    setIntOption(fd, SOL_SOCKET, SO_REUSEADDR, 1);
    const sa = sockaddrInet(addr, port);
    check("bind", libc().bind(fd, sa, sa.length));
    check("listen", libc().listen(fd, backlog));
    return new FdListener(fd, r);
  } catch (e) {
    libc().close(fd);
    throw e;
  }
}

/** A listening unix socket at `path` (which must not exist) through the reactor. */
export function listenUnix(path: string, backlog = 128, r?: Reactor): FdListener {
  const fd = openSocket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
  try {
    const sa = sockaddrUnix(path);
    check("bind", libc().bind(fd, sa, sa.length));
    check("listen", libc().listen(fd, backlog));
    return new FdListener(fd, r);
  } catch (e) {
    libc().close(fd);
    throw e;
  }
}
