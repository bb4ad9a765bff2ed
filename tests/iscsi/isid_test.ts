/**
 * ISIDs: unique per concurrent session of this host, stable for the session
 * that replaces a dead one (RFC 7143 §4.2.7, §6.3.5).
 */
import assert from "node:assert/strict";
import { claimIsid } from "../../src/iscsi/isid.ts";
import { stableIsid } from "../../src/iscsi/login.ts";
import { spawnCli } from "../helpers/cli.ts";
import { withTgtd } from "../../peers/tgtd.ts";

const IQN = "iqn.2026-11.test:isid-initiator";

Deno.test("isid: a second live claim for one purpose gets another ISID; a released one is reused", async () => {
  const runDir = await Deno.makeTempDir({ prefix: "isboot-isid-" });
  try {
    const a = claimIsid(IQN, "serve tcp:0", { runDir });
    const b = claimIsid(IQN, "serve tcp:0", { runDir });
    assert.equal(a.slot, 0);
    assert.deepEqual(a.isid, stableIsid(IQN, "serve tcp:0"));
    assert.equal(b.slot, 1);
    assert.notDeepEqual(b.isid, a.isid);
    // Another purpose has slot 0 of its own.
    const c = claimIsid(IQN, "serve tcp:127.0.0.1:3000", { runDir });
    assert.equal(c.slot, 0);
    // A restart after the holder ended takes the same ISID again (and so
    // reinstates the stale session it replaces).
    a.release();
    a.release(); // idempotent
    const again = claimIsid(IQN, "serve tcp:0", { runDir });
    assert.equal(again.slot, 0);
    assert.deepEqual(again.isid, a.isid);
    for (const x of [b, c, again]) x.release();
  } finally {
    await Deno.remove(runDir, { recursive: true });
  }
});

Deno.test("isid: a slot held by another process is skipped, and free again once it exits", async () => {
  const runDir = await Deno.makeTempDir({ prefix: "isboot-isid-" });
  try {
    const probe = claimIsid(IQN, "attach auto", { runDir });
    const path = `${runDir}/isid/${
      Array.from(probe.isid, (x) => x.toString(16).padStart(2, "0")).join("")
    }.lock`;
    probe.release();
    // A child process takes the same lock with util-linux flock(1) on its
    // fd 9, then becomes `sleep` holding it: killing the child drops it.
    const holder = new Deno.Command("sh", {
      args: ["-c", 'exec 9>"$1"; flock --exclusive 9; echo held; exec sleep 30', "sh", path],
      stdout: "piped",
    }).spawn();
    const reader = holder.stdout.getReader();
    const first = await reader.read();
    assert.match(new TextDecoder().decode(first.value), /held/);
    const other = claimIsid(IQN, "attach auto", { runDir });
    assert.equal(other.slot, 1);
    other.release();
    holder.kill("SIGKILL");
    await holder.status;
    reader.releaseLock();
    await holder.stdout.cancel().catch(() => {});
    const back = claimIsid(IQN, "attach auto", { runDir });
    assert.equal(back.slot, 0);
    back.release();
  } finally {
    await Deno.remove(runDir, { recursive: true });
  }
});

/** `isboot serve ... --listen tcp:127.0.0.1:0`; resolves with the port it listens on. */
async function serve(
  uri: string,
): Promise<{ child: Deno.ChildProcess; port: number; log: string[] }> {
  const child = spawnCli(["serve", uri, "--listen", "tcp:127.0.0.1:0", "--initiator", IQN], {
    stdout: "null",
  });
  const log: string[] = [];
  const lines = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    const { value, done } = await lines.read();
    if (done) break;
    buf += value;
    const m = buf.match(/listening on tcp:127\.0\.0\.1:(\d+)/);
    if (m) {
      log.push(...buf.split("\n"));
      // Keep collecting what it says afterwards.
      (async () => {
        for (;;) {
          const r = await lines.read().catch(() => ({ done: true, value: "" }));
          if (r.done) return;
          log.push(...(r.value ?? "").split("\n"));
        }
      })();
      return { child, port: Number(m[1]), log };
    }
  }
  child.kill("SIGKILL");
  throw new Error(`serve did not listen: ${buf}`);
}

Deno.test({
  name:
    "isid: two `serve --listen tcp:0` on two LUNs of one target are two sessions that never knock each other out",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: () =>
    withTgtd(async (tgt) => {
      const tid = await tgt.createTarget("iqn.2026-11.test:isid");
      const luns = [
        await tgt.addLun(tid, { lun: 1, size: 32 << 20 }),
        await tgt.addLun(tid, { lun: 2, size: 32 << 20 }),
      ];
      const servers = [];
      try {
        for (const n of [1, 2]) {
          servers.push(await serve(`iscsi://${tgt.portal}/iqn.2026-11.test:isid/${n}`));
        }
        // Both copy 32 MiB at once, so each keeps logging in and working
        // while the other does.
        const src = await Deno.makeTempFile();
        const data = new Uint8Array(32 << 20);
        for (let i = 0; i < data.length; i += 65536) {
          crypto.getRandomValues(data.subarray(i, i + 65536));
        }
        await Deno.writeFile(src, data);
        const copies = servers.map((s) =>
          new Deno.Command("nbdcopy", {
            args: [src, `nbd://127.0.0.1:${s.port}`],
            stdout: "piped",
            stderr: "piped",
          }).output()
        );
        for (const o of await Promise.all(copies)) {
          assert.ok(o.success, new TextDecoder().decode(o.stderr));
        }
        await Deno.remove(src);
        const conns = await tgt.connections(tid);
        assert.equal(
          new Set(conns.map((c) => c.sid)).size,
          2,
          `target sessions: ${JSON.stringify(conns)}`,
        );
        for (const s of servers) {
          const lost = s.log.filter((l) => /lost|recover/.test(l));
          assert.deepEqual(lost, [], "a session was knocked out");
        }
        for (const l of luns) {
          assert.deepEqual(await Deno.readFile(l.path), data);
        }
      } finally {
        for (const s of servers) {
          s.child.kill("SIGTERM");
          await s.child.status;
        }
      }
    }),
});
