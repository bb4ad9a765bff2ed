/**
 * The reactor (src/sys/reactor.ts): libc sockets behind the ByteStream
 * contract. Real sockets only: socketpairs, loopback TCP, a unix listener.
 * Each test makes its own Reactor and closes it, so the blocking epoll_wait
 * is seen to end (the op sanitizer fails a test that leaves it out).
 */
import assert from "node:assert/strict";
import { connectTcp, FdStream, listenTcp, listenUnix, Reactor } from "../../src/sys/reactor.ts";
import { closeFd, localAddress, socketPair } from "../../src/sys/socket.ts";
import { pattern } from "../helpers/bytes.ts";
import { SysError } from "../../src/sys/errno.ts";

const LOOPBACK = { family: 4 as const, bytes: Uint8Array.of(127, 0, 0, 1) };

async function readFully(s: FdStream, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let off = 0;
  while (off < n) {
    const got = await s.read(out.subarray(off));
    if (got === null) throw new Error(`end of stream after ${off} of ${n} bytes`);
    off += got;
  }
  return out;
}

/** Run `body` with a fresh reactor (spinning or not) that is closed afterwards. */
async function withReactor(spinUs: number, body: (r: Reactor) => Promise<void>): Promise<void> {
  const r = new Reactor({ spinUs });
  let waiters = 0;
  try {
    await body(r);
    waiters = r.stats.waiters;
  } finally {
    r.close();
    // let the blocking wait (if any) come back before the op sanitizer looks
    for (let i = 0; i < 50 && r.stats.idle; i++) await new Promise((res) => setTimeout(res, 2));
  }
  // Checked only after a body that passed, so that its own failure is the one reported.
  assert.equal(waiters, 0, "no wait left outstanding");
}

for (const spinUs of [0, 50]) {
  Deno.test(`reactor (spin ${spinUs} µs): 8 MiB each way through a socketpair, both directions at once`, () =>
    withReactor(spinUs, async (r) => {
      const [a, b] = socketPair({ nonblocking: true });
      const x = new FdStream(a, r);
      const y = new FdStream(b, r);
      const ab = pattern(8 << 20, 1);
      const ba = pattern(8 << 20, 2);
      // Writes larger than the socket buffer must wait for the reader (EAGAIN path).
      const [, , gotB, gotA] = await Promise.all([
        x.write(ab),
        y.write(ba),
        readFully(y, ab.length),
        readFully(x, ba.length),
      ]);
      assert.deepEqual(gotB, ab);
      assert.deepEqual(gotA, ba);
      x.close();
      assert.equal(await y.read(new Uint8Array(4)), null, "peer's close is end of stream");
      y.close();
      assert.equal(r.stats.fds, 0);
    }));
}

Deno.test("reactor: close() ends a pending read with null and fails a stuck write", () =>
  withReactor(50, async (r) => {
    const [a, b] = socketPair({ nonblocking: true });
    const [c, d] = socketPair({ nonblocking: true });
    const x = new FdStream(a, r); // nothing is written to b
    const y = new FdStream(c, r); // nothing reads d
    const pendingRead = x.read(new Uint8Array(16));
    const stuck = y.write(new Uint8Array(16 << 20)); // it cannot finish
    await new Promise((res) => setTimeout(res, 20));
    assert.equal(r.stats.waiters, 2);
    x.close();
    y.close();
    assert.equal(await pendingRead, null);
    await assert.rejects(stuck, SysError);
    await assert.rejects(y.write(new Uint8Array(1)), SysError, "writing after close fails");
    assert.equal(await y.read(new Uint8Array(1)), null);
    closeFd(b);
    closeFd(d);
  }));

Deno.test("reactor: a reset is end of stream and is kept in .error", () =>
  withReactor(0, async (r) => {
    const l = listenTcp(LOOPBACK, 0, 8, r);
    const { port } = localAddress(l.fd) as { port: number };
    const c = await connectTcp(LOOPBACK, port, 2000, r);
    const fd = await l.accept();
    assert.ok(fd !== null);
    const s = new FdStream(fd, r);
    // SO_LINGER 0 makes close() send RST instead of FIN.
    const { libc } = await import("../../src/sys/libc.ts");
    libc().setsockopt(s.fd, 1, 13, /* SO_LINGER */ new Int32Array([1, 0]), 8);
    await c.write(new Uint8Array(10)); // unread data on s also forces RST
    await new Promise((res) => setTimeout(res, 10));
    s.close();
    assert.equal(await c.read(new Uint8Array(4)), null);
    assert.ok(c.error instanceof SysError, "the reset is recorded");
    assert.equal(c.error.errno, 104 /* ECONNRESET */);
    c.close();
    l.close();
  }));

Deno.test("reactor: TCP connect to a closed port is ECONNREFUSED; unix listener accepts in turn", () =>
  withReactor(50, async (r) => {
    const l = listenTcp(LOOPBACK, 0, 8, r);
    const { port } = localAddress(l.fd) as { port: number };
    l.close();
    await assert.rejects(connectTcp(LOOPBACK, port, 2000, r), (e: unknown) => {
      assert.ok(e instanceof SysError);
      assert.equal(e.errno, 111);
      return true;
    });
    const dir = await Deno.makeTempDir({ prefix: "isboot-reactor-" });
    try {
      const path = `${dir}/s.sock`;
      const ul = listenUnix(path, 8, r);
      assert.deepEqual(localAddress(ul.fd), { transport: "unix", path });
      const accepted: number[] = [];
      const acceptor = (async () => {
        for await (const fd of ul) {
          accepted.push(fd);
          const s = new FdStream(fd, r);
          await s.write(Uint8Array.of(accepted.length));
          s.close();
        }
      })();
      for (let i = 1; i <= 3; i++) {
        const c = await Deno.connect({ transport: "unix", path });
        const got = new Uint8Array(1);
        assert.equal(await c.read(got), 1);
        assert.equal(got[0], i);
        c.close();
      }
      ul.close();
      await acceptor;
      assert.equal(accepted.length, 3);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }));

Deno.test("reactor: an idle wait lets timers run, and comes back when data arrives", () =>
  withReactor(0, async (r) => {
    const [a, b] = socketPair({ nonblocking: true });
    const x = new FdStream(a, r);
    const y = new FdStream(b, r);
    const got = new Uint8Array(8);
    const pending = x.read(got);
    let ticks = 0;
    const t = setInterval(() => ticks++, 5);
    await new Promise((res) => setTimeout(res, 60));
    clearInterval(t);
    assert.ok(ticks >= 5, `timers ran while the reactor waited (${ticks})`);
    assert.equal(r.stats.idle, true, "blocked in epoll_wait, not polling");
    await y.write(Uint8Array.of(7, 8, 9));
    assert.equal(await pending, 3);
    assert.deepEqual(got.subarray(0, 3), Uint8Array.of(7, 8, 9));
    x.close();
    y.close();
  }));

Deno.test("reactor: busy-polls after an event only while the depth is at most 2, then blocks", () =>
  withReactor(20_000, async (r) => {
    let depth = 0;
    const remove = r.addDepthSource(() => depth);
    const [a, b] = socketPair({ nonblocking: true });
    const x = new FdStream(a, r);
    const y = new FdStream(b, r);
    const got = new Uint8Array(8);
    const waitFor = async (ms: number) => await new Promise((res) => setTimeout(res, ms));
    for (const [d, spins] of [[0, true], [3, false], [2, true]] as const) {
      depth = d;
      const before = r.stats.busyPolls;
      const pending = x.read(got); // waits: nothing was written
      await y.write(Uint8Array.of(d));
      assert.equal(await pending, 1); // an event: the poll window (20 ms) starts
      const next = x.read(got);
      await waitFor(10);
      const polled = r.stats.busyPolls - before;
      assert.equal(polled > 0, spins, `depth ${d}: ${polled} busy-poll ticks`);
      if (!spins) assert.equal(polled, 0);
      // Past the window and the nap: blocked on the pool thread. On a loaded
      // machine the loop may run late, so wait for it (a spinning loop never gets there).
      for (let i = 0; i < 200 && !r.stats.idle; i++) await waitFor(10);
      assert.equal(r.stats.idle, true, `depth ${d}: idle after the window`);
      const polledAfter = r.stats.busyPolls;
      await waitFor(10);
      assert.equal(r.stats.busyPolls, polledAfter, "no polling once idle");
      await y.write(Uint8Array.of(9));
      assert.equal(await next, 1);
    }
    remove();
    x.close();
    y.close();
  }));

Deno.test("reactor: spinUs = 0 (isboot.poll_us=0, ISBOOT_POLL_US=0) turns busy polling off", () =>
  withReactor(20_000, async (r) => {
    assert.throws(() => (r.spinUs = -1), RangeError);
    r.spinUs = 0;
    assert.equal(r.spinUs, 0);
    const [a, b] = socketPair({ nonblocking: true });
    const x = new FdStream(a, r);
    const y = new FdStream(b, r);
    const got = new Uint8Array(8);
    const first = x.read(got);
    await y.write(Uint8Array.of(1));
    assert.equal(await first, 1);
    const next = x.read(got);
    await new Promise((res) => setTimeout(res, 10));
    assert.equal(r.stats.busyPolls, 0);
    await y.write(Uint8Array.of(2));
    assert.equal(await next, 1);
    x.close();
    y.close();
  }));
