/**
 * The same relay as relay.ts with its socket I/O done through libc (FFI)
 * instead of Deno's async ops: recv/send are synchronous on non-blocking
 * sockets, and readiness comes from epoll_wait, either on a pool thread
 * (a `nonblocking` FFI symbol, the only way to block without stopping the
 * event loop) or, with SPIN_US > 0, first by polling epoll with a zero
 * timeout for up to SPIN_US microseconds. It measures what a data path on
 * FFI sockets would cost per hop, not something isboot does.
 *
 * Usage: ffirelay.ts SOCKET_PATH TCP_PORT [SPIN_US]
 */
import { libc } from "../../src/sys/libc.ts";

const [path, portText, spinText = "0"] = Deno.args;
const spinUs = Number(spinText);
const L = libc(); // src/sys/libc.ts: the same symbols isboot uses
const AF_UNIX = 1, AF_INET = 2, SOCK_STREAM = 1, SOCK_NONBLOCK = 0x800, O_NONBLOCK = 0x800;
const F_SETFL = 4, IPPROTO_TCP = 6, TCP_NODELAY = 1, EPOLLIN = 1, EPOLL_CTL_ADD = 1;
const MSG_DONTWAIT = 0x40, MSG_NOSIGNAL = 0x4000;

function ok(what: string, r: number): number {
  if (r < 0) throw new Error(`${what} failed`);
  return r;
}

const up = ok("socket", L.socket(AF_INET, SOCK_STREAM, 0));
const sin = new Uint8Array(16);
new DataView(sin.buffer).setUint16(0, AF_INET, true);
new DataView(sin.buffer).setUint16(2, Number(portText), false);
sin.set([127, 0, 0, 1], 4);
ok("connect", L.connect(up, sin, sin.length));
ok(
  "setsockopt",
  L.setsockopt(up, IPPROTO_TCP, TCP_NODELAY, new Uint8Array(Int32Array.of(1).buffer), 4),
);
ok("fcntl", L.fcntl(up, F_SETFL, O_NONBLOCK));
const listener = ok("socket", L.socket(AF_UNIX, SOCK_STREAM, 0));
const sun = new Uint8Array(110);
new DataView(sun.buffer).setUint16(0, AF_UNIX, true);
sun.set(new TextEncoder().encode(path), 2);
ok("bind", L.bind(listener, sun, sun.length));
ok("listen", L.listen(listener, 1));
const client = ok("accept4", L.accept4(listener, null, null, SOCK_NONBLOCK));
const ep = ok("epoll_create1", L.epoll_create1(0));
for (const fd of [client, up]) {
  const ev = new Uint8Array(12); // struct epoll_event is packed on x86-64
  new DataView(ev.buffer).setUint32(0, EPOLLIN, true);
  new DataView(ev.buffer).setUint32(4, fd, true);
  ok("epoll_ctl", L.epoll_ctl(ep, EPOLL_CTL_ADD, fd, ev));
}
const events = new Uint8Array(12 * 8);
const ev = new DataView(events.buffer);
const buf = new Uint8Array(65536);

/** Move everything readable on `from` to `to`; exit at EOF. */
function pump(from: number, to: number): void {
  for (;;) {
    const n = Number(L.recv(from, buf, BigInt(buf.length), MSG_DONTWAIT));
    if (n === 0) Deno.exit(0);
    if (n < 0) return; // EAGAIN: drained
    for (let o = 0; o < n;) {
      const w = Number(L.send(to, buf.subarray(o, n), BigInt(n - o), MSG_NOSIGNAL));
      if (w > 0) o += w;
    }
  }
}

for (;;) {
  let n = 0;
  if (spinUs > 0) {
    const t0 = performance.now();
    while ((n = L.epoll_wait(ep, events, 8, 0)) === 0 && (performance.now() - t0) * 1000 < spinUs);
  }
  if (n <= 0) n = await L.epoll_wait_blocking(ep, events, 8, -1);
  for (let i = 0; i < n; i++) {
    const fd = ev.getUint32(12 * i + 4, true);
    pump(fd, fd === client ? up : client);
  }
}
