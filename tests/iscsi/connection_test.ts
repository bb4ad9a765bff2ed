/**
 * Connection and login against peers that go away at the worst moment: a
 * send that meets a reset, a peer that resets every connection as it
 * arrives, and one that accepts and never answers. Each must end in an
 * error, never in a wait without end (a relogin that waits for ever is a
 * root disk that stalls without a word).
 */
import assert from "node:assert/strict";
import * as net from "node:net";
import { OperationalError } from "../../src/errors.ts";
import { Connection } from "../../src/iscsi/connection.ts";
import { defaultCrc32c } from "../../src/iscsi/digest.ts";
import { login, randomIsid } from "../../src/iscsi/login.ts";
import { Logger } from "../../src/log.ts";
import { SysError } from "../../src/sys/errno.ts";
import type { ByteStream } from "../../src/sys/stream.ts";

const quiet = new Logger({ quiet: true, sink: () => {} });
const ECONNRESET = 104;

/** Settles with the outcome of `p`, or "pending" if it has not settled within `ms`. */
function within<T>(p: Promise<T>, ms: number): Promise<{ ok: T } | { err: unknown } | "pending"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p.then((ok) => ({ ok }), (err) => ({ err })),
    new Promise<"pending">((r) => (timer = setTimeout(() => r("pending"), ms))),
  ]).finally(() => clearTimeout(timer));
}

/** A stream whose peer has reset it: every write fails, reads see the end. */
function resetStream(): ByteStream & { writes: number } {
  const s = {
    writes: 0,
    error: new SysError("send", ECONNRESET),
    read: () => Promise.resolve(null),
    write(_data: Uint8Array): Promise<void> {
      s.writes++;
      return Promise.reject(s.error);
    },
    close() {},
  };
  return s;
}

Deno.test("connection: a send whose write meets a reset fails, and so does every send queued with it", async () => {
  const io = resetStream();
  const conn = Connection.over(io, { crc: await defaultCrc32c(), log: quiet, peer: "test:3260" });
  const bhs = new Uint8Array(48);
  // Three PDUs of one turn share one write; a large one goes out on its own.
  const sends = [conn.send(bhs), conn.send(bhs, new Uint8Array(100)), conn.send(bhs)];
  const large = conn.send(bhs, new Uint8Array(64 * 1024));
  for (const p of [...sends, large]) {
    const r = await within(p, 2000);
    if (r === "pending") assert.fail("a send was left waiting after its write failed");
    assert.ok("err" in r, "a send resolved although its write failed");
  }
  assert.ok(io.writes >= 1);
  assert.ok(conn.closed, "the failed write closes the connection");
  await assert.rejects(conn.send(bhs), "a send after the failure fails at once");
});

/** A TCP listener on 127.0.0.1 whose connections get `onConnection`. */
async function listen(
  onConnection: (s: net.Socket) => void,
): Promise<{ port: number; accepted: () => number; close: () => Promise<void> }> {
  let n = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    n++;
    sockets.add(s);
    s.on("error", () => {});
    s.on("close", () => sockets.delete(s));
    onConnection(s);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    accepted: () => n,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

function loginTo(port: number, loginTimeoutMs: number) {
  return (async () =>
    login(
      {
        portal: { host: "127.0.0.1", port },
        initiatorName: "iqn.2026-11.test:conn-initiator",
        targetName: "iqn.2026-11.test:conn",
        sessionType: "Normal",
        chapAlgorithms: ["sha256", "sha1", "md5"],
        headerDigest: "none",
        dataDigest: "none",
        isid: randomIsid(),
        tsih: 0,
        loginTimeoutMs,
        connectTimeoutMs: 2000,
      },
      await defaultCrc32c(),
      quiet,
    ))();
}

Deno.test({
  name: "login: a peer that resets every connection as it arrives fails each login at once",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    // A proxy whose target is down does this: accept, then reset. The reset
    // lands before or after our Login Request, as it happens; 40 rounds see
    // both orders.
    const peer = await listen((s) => s.resetAndDestroy());
    try {
      for (let i = 0; i < 40; i++) {
        const r = await within(loginTo(peer.port, 10_000), 3000);
        if (r === "pending") assert.fail(`login ${i + 1} still waiting 3 s after the reset`);
        assert.ok("err" in r && r.err instanceof OperationalError, `login ${i + 1}: ${r}`);
      }
      assert.equal(peer.accepted(), 40);
    } finally {
      await peer.close();
    }
  },
});

Deno.test({
  name: "login: a peer that accepts and never answers times out at loginTimeoutMs",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const peer = await listen(() => {});
    try {
      const t0 = performance.now();
      const r = await within(loginTo(peer.port, 500), 5000);
      const ms = performance.now() - t0;
      if (r === "pending") assert.fail("login to a silent peer did not time out");
      assert.ok("err" in r && r.err instanceof OperationalError);
      assert.match((r.err as Error).message, /timed out after 500 ms/);
      assert.ok(ms >= 450 && ms < 3000, `timed out after ${ms} ms`);
    } finally {
      await peer.close();
    }
  },
});
