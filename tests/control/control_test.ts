/** The control socket: permissions, request/reply, bad requests, stale and live sockets. */
import assert from "node:assert/strict";
import {
  controlPath,
  controlRequest,
  ControlServer,
  listControlSockets,
  parseControlRequest,
  type SessionStatus,
  sessionStatus,
} from "../../src/control/control.ts";
import { VERSION } from "../../src/version.ts";
import { OperationalError } from "../../src/errors.ts";

const STATUS: SessionStatus = {
  pid: 1,
  device: "/dev/nbd4",
  target: "memory:1M",
  backend: "memory:1M:1",
  startedAt: new Date(0).toISOString(),
  uptimeSec: 0,
  sizeBytes: "1048576",
  blockSize: 512,
  readOnly: false,
  connections: 1,
  requests: 5,
  bytesRead: 10,
  bytesWritten: 20,
  errors: 0,
  reconnects: 0,
};

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const base = await Deno.makeTempDir({ prefix: "isboot-ctl-" });
  try {
    await fn(`${base}/run`);
  } finally {
    await Deno.remove(base, { recursive: true });
  }
}

Deno.test("control: socket 0600 in a 0700 dir; status round trip; after() runs after the reply", async () => {
  await withDir(async (dir) => {
    const path = controlPath(4, dir);
    let detached = 0;
    const srv = await ControlServer.listen(path, (req) => {
      if (req.cmd === "status") return { reply: { ok: true, status: STATUS } };
      return { reply: { ok: true }, after: () => detached++ };
    });
    try {
      assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
      assert.equal((await Deno.stat(dir)).mode! & 0o777, 0o700);
      assert.deepEqual(await controlRequest(path, { cmd: "status" }), { ok: true, status: STATUS });
      assert.deepEqual(await controlRequest(path, { cmd: "detach" }), { ok: true });
      await new Promise((r) => setTimeout(r, 20));
      assert.equal(detached, 1);
      assert.deepEqual(await listControlSockets(dir), [{ index: 4, path }]);
      // A second daemon for the same device is refused while the first answers.
      await assert.rejects(
        () => ControlServer.listen(path, () => ({ reply: { ok: true } })),
        /in use/,
      );
      // Garbage gets an error reply, not a crash.
      const c = await Deno.connect({ transport: "unix", path });
      await c.write(new TextEncoder().encode("{nope\n"));
      const buf = new Uint8Array(200);
      const n = await c.read(buf);
      c.close();
      assert.deepEqual(JSON.parse(new TextDecoder().decode(buf.subarray(0, n!))), {
        ok: false,
        error: "control: request is not JSON",
      });
    } finally {
      await srv.close();
    }
    await assert.rejects(() => Deno.stat(path), Deno.errors.NotFound);
    assert.deepEqual(await listControlSockets(dir), []);
  });
});

Deno.test("control: a stale socket file is replaced; nobody listening is an OperationalError", async () => {
  await withDir(async (dir) => {
    const path = controlPath(0, dir);
    await Deno.mkdir(dir, { recursive: true });
    const l = Deno.listen({ transport: "unix", path });
    l.close(); // leaves the file: a crashed daemon's socket
    await assert.rejects(() => controlRequest(path, { cmd: "status" }), OperationalError);
    const srv = await ControlServer.listen(path, () => ({ reply: { ok: true } }));
    try {
      assert.deepEqual(await controlRequest(path, { cmd: "release" }), { ok: true });
    } finally {
      await srv.close();
    }
  });
});

Deno.test("control: parseControlRequest accepts the four commands only", () => {
  assert.deepEqual(parseControlRequest('{"cmd":"status"}'), { cmd: "status" });
  assert.deepEqual(parseControlRequest('{"cmd":"handover"}'), { cmd: "handover" });
  assert.deepEqual(parseControlRequest('{"cmd":"release","x":1}'), { cmd: "release" });
  for (const bad of ['{"cmd":"rm -rf"}', "[]", "null", '"status"', "{}"]) {
    assert.throws(() => parseControlRequest(bad), OperationalError, bad);
  }
});

Deno.test("control: a handover carries the boot inputs, secrets included, to root's socket only", async () => {
  const dir = await Deno.makeTempDir();
  const path = controlPath(6, `${dir}/run`);
  const srv = await ControlServer.listen(path, (req) =>
    req.cmd === "handover"
      ? {
        reply: {
          ok: true,
          handover: {
            kind: "attach",
            args: ["iscsi://h/iqn.x/1"],
            env: { ISBOOT_CHAP_SECRET: "s3cret" },
          },
        },
      }
      : { reply: { ok: false, error: "no" } });
  try {
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    const r = await controlRequest(path, { cmd: "handover" });
    assert.deepEqual(r, {
      ok: true,
      handover: {
        kind: "attach",
        args: ["iscsi://h/iqn.x/1"],
        env: { ISBOOT_CHAP_SECRET: "s3cret" },
      },
    });
  } finally {
    await srv.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("control: sessionStatus reports the parts, this process's pid, uptime, version and executable", () => {
  const s = sessionStatus({
    device: "/dev/nbd2",
    target: "iscsi://192.0.2.1/iqn.x/1",
    backend: "iqn.x/1",
    started: new Date(Date.now() - 61_000),
    size: 1n << 40n,
    blockSize: 4096,
    readOnly: true,
    counters: { activeConnections: 2, requests: 9, bytesRead: 3, bytesWritten: 4, errors: 1 },
    reconnects: 5,
    guard: [],
  });
  assert.equal(s.pid, Deno.pid);
  assert.equal(s.uptimeSec, 61);
  assert.equal(s.sizeBytes, "1099511627776");
  assert.deepEqual(
    [s.connections, s.requests, s.bytesRead, s.bytesWritten, s.errors, s.reconnects],
    [2, 9, 3, 4, 1, 5],
  );
  assert.equal(s.version, VERSION);
  assert.equal(s.executable, Deno.readLinkSync("/proc/self/exe"));
  assert.deepEqual(s.guard, []);
  assert.equal("session" in s, false);
});
