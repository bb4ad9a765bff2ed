/**
 * Session recovery against a real tgtd (peers/tgtd.ts) behind the
 * fault proxy (tests/faults/proxy.ts): with writes in flight the connection
 * is cut, reset, black-holed, stalled past the NOP-Out timeout, deleted by
 * the target, or tgtd is killed with SIGKILL and restarted on the same
 * backing file. Each case checks that no request failed, every acknowledged
 * write is in the backing file, the session counted a reconnect and is
 * usable afterwards. Then: a recovery timeout fails held requests with
 * OperationalError (and recovery still finishes later), and failover to a
 * second portal and back.
 *
 * The recovery time printed per case is from the fault to the reinstated
 * session (it includes the detection time: 0.5 s + 1 s NOP for black hole
 * and stall, and the time tgtd is down).
 */
import assert from "node:assert/strict";
import { OperationalError } from "../../src/errors.ts";
import { Logger } from "../../src/log.ts";
import { loginSession, type Session } from "../../src/iscsi/session.ts";
import { type SessionConfig } from "../../src/iscsi/session_config.ts";
import { Lun } from "../../src/scsi/lun.ts";
import { failoverPortals, loginTarget } from "../../src/boot/login.ts";
import { FaultProxy } from "../faults/proxy.ts";
import { type Tgtd, withTgtd } from "../../peers/tgtd.ts";

const IQN = "iqn.2026-11.test.isboot:recovery";
const MiB = 1 << 20;
const LUN_SIZE = 16 * MiB;
const CHUNK = 64 * 1024;
/** Writes in flight when the fault hits, and again while recovering. */
const DEPTH = 32;

interface Rig {
  tgt: Tgtd;
  tid: number;
  path: string;
  proxy: FaultProxy;
  session: Session;
  lun: Lun;
  lines: string[];
}

function config(port: number, extra: Partial<SessionConfig> = {}): SessionConfig {
  return {
    portal: { host: "127.0.0.1", port },
    targetName: IQN,
    lun: 1,
    initiatorName: "iqn.2026-11.test.isboot:recovery-init",
    chapAlgorithms: ["md5"],
    headerDigest: "prefer-none",
    dataDigest: "prefer-none",
    isidPurpose: "recovery test",
    nopIntervalMs: 500,
    nopTimeoutMs: 1000,
    ...extra,
  };
}

async function withRig(
  fn: (r: Rig) => Promise<void>,
  extra: Partial<SessionConfig> = {},
): Promise<void> {
  await withTgtd(async (tgt) => {
    const tid = await tgt.createTarget(IQN);
    const { path } = await tgt.addLun(tid, { lun: 1, size: LUN_SIZE });
    if (extra.dataDigest === "crc32c") await tgt.setDigests(tid, "CRC32C", "CRC32C");
    const proxy = await FaultProxy.start({ targetPort: tgt.port });
    const lines: string[] = [];
    const log = new Logger({ debug: true, sink: (_l, line) => lines.push(line) });
    let session: Session | undefined;
    try {
      session = await loginSession(config(proxy.port, extra), log);
      const lun = await Lun.open(session, 1, { log });
      await fn({ tgt, tid, path, proxy, session, lun, lines });
    } catch (e) {
      const ctx = `\n--- log:\n${lines.slice(-30).join("\n")}\n--- proxy:\n${
        proxy.events.slice(-15).join("\n")
      }`;
      throw new Error(`${e instanceof Error ? e.message : String(e)}${ctx}`, { cause: e });
    } finally {
      await session?.close(2000).catch(() => {});
      await proxy.close();
    }
  });
}

function pattern(seed: number): Uint8Array {
  const b = new Uint8Array(CHUNK);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < b.length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x;
    b[i + 1] = x >>> 8;
    b[i + 2] = x >>> 16;
    b[i + 3] = x >>> 24;
  }
  return b;
}

/** Resolves when the session has reinstated `n` times; the ms it took. */
async function reconnected(s: Session, n: number, t0: number, limitMs = 30_000): Promise<number> {
  while (s.reconnects < n) {
    if (performance.now() - t0 > limitMs) throw new Error(`no reconnect within ${limitMs} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
  return performance.now() - t0;
}

/**
 * DEPTH writes in flight, the fault, DEPTH more writes issued while the
 * session recovers; all must succeed and be in the backing file.
 */
async function survives(
  name: string,
  fault: (r: Rig) => Promise<void> | void,
  extra: Partial<SessionConfig> = {},
): Promise<void> {
  await withRig(async (r) => {
    const acked = new Map<number, Uint8Array>();
    const write = (i: number) => {
      const data = pattern(i + 1);
      return r.lun.write(BigInt(i * CHUNK), data, { fua: i % 3 === 0 }).then(() => {
        acked.set(i, data);
      });
    };
    const first = Array.from({ length: DEPTH }, (_, i) => write(i));
    // Let some of them reach the wire, then break it with the rest in flight.
    await Promise.race(first);
    assert.ok(
      r.session.outstanding.inFlight + r.session.outstanding.queued > 0,
      "nothing in flight",
    );
    const t0 = performance.now();
    await fault(r);
    const second = Array.from({ length: DEPTH }, (_, i) => write(DEPTH + i));
    second.push(r.lun.flush());
    const results = await Promise.allSettled([...first, ...second]);
    const failed = results.filter((x) => x.status === "rejected");
    assert.equal(failed.length, 0, `failed: ${failed.map((f) => String(f.reason)).join("; ")}`);
    const ms = await reconnected(r.session, 1, t0);
    assert.equal(acked.size, 2 * DEPTH);
    const file = await Deno.readFile(r.path);
    for (const [i, data] of acked) {
      assert.deepEqual(
        file.subarray(i * CHUNK, (i + 1) * CHUNK),
        data,
        `acknowledged write ${i} not in the backing file`,
      );
    }
    // Usable afterwards: a read of what was written and a fresh write.
    assert.deepEqual(await r.lun.read(BigInt(5 * CHUNK), CHUNK), pattern(6));
    await r.lun.write(BigInt(100 * CHUNK), pattern(1000));
    assert.deepEqual(await r.lun.read(BigInt(100 * CHUNK), CHUNK), pattern(1000));
    assert.equal(r.session.state, "open");
    assert.ok(r.lines.some((l) => /lost: .*recovering/.test(l)), "loss not logged");
    assert.ok(r.lines.some((l) => /recovered on /.test(l)), "recovery not logged");
    console.log(
      `recovery (${name}): ${(ms / 1000).toFixed(2)} s, ${r.session.reconnects} reconnect(s)`,
    );
  }, extra);
}

const opts = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name: "recovery: connection cut (FIN) with 32 writes in flight: none lost, none failed",
  ...opts,
  fn: () => survives("cut", (r) => r.proxy.cut()),
});

Deno.test({
  name: "recovery: connection reset (RST) with 32 writes in flight",
  ...opts,
  fn: () => survives("reset", (r) => r.proxy.reset()),
});

Deno.test({
  name: "recovery: black hole found by an unanswered NOP-Out",
  ...opts,
  fn: () => survives("black hole", (r) => r.proxy.blackhole()),
});

Deno.test({
  name: "recovery: stall longer than the NOP-Out timeout",
  ...opts,
  fn: () => survives("stall 3 s", (r) => r.proxy.stall(3000)),
});

Deno.test({
  name: "recovery: tgtd killed with SIGKILL and restarted on the same backing file",
  ...opts,
  fn: () => survives("tgtd SIGKILL + restart", (r) => r.tgt.restart()),
});

Deno.test({
  name: "recovery: connection deleted on the target (tgtadm --op delete --mode conn)",
  ...opts,
  fn: () =>
    survives("tgtadm delete conn", async (r) => {
      assert.equal(await r.tgt.deleteConnections(r.tid), 1);
    }),
});

Deno.test({
  name: "recovery: with header and data digests, a corrupted Data-Out byte is caught and replayed",
  ...opts,
  fn: () =>
    survives("corrupt data byte to target", (r) => {
      // Armed, not awaited: the next Data-Out or immediate data (the writes
      // issued after the fault) gets the flipped byte.
      void r.proxy.corrupt({ direction: "to-target", part: "data", byte: 100, mask: 0x10 });
    }, { headerDigest: "crc32c", dataDigest: "crc32c" }),
});

Deno.test({
  name:
    "recovery: the recovery timeout fails held requests with OperationalError; recovery goes on",
  ...opts,
  fn: () =>
    withRig(async (r) => {
      r.proxy.refuse(true);
      r.proxy.cut();
      const t0 = performance.now();
      const held = Array.from({ length: 8 }, (_, i) => r.lun.write(BigInt(i * CHUNK), pattern(i)));
      const results = await Promise.allSettled(held);
      const waited = performance.now() - t0;
      for (const x of results) {
        assert.equal(x.status, "rejected");
        assert.ok(x.reason instanceof OperationalError, String(x.reason));
        assert.match(String(x.reason.message), /not recovered within 1 s/);
      }
      assert.ok(waited >= 900 && waited < 5000, `failed after ${waited} ms`);
      // New requests fail at once while the target stays away...
      await assert.rejects(r.lun.write(0n, pattern(1)), OperationalError);
      assert.equal(r.session.state, "recovering");
      // ...and the session comes back by itself when it returns.
      r.proxy.refuse(false);
      await reconnected(r.session, 1, performance.now());
      await r.lun.write(0n, pattern(7));
      assert.deepEqual(await r.lun.read(0n, CHUNK), pattern(7));
    }, { recoveryTimeoutMs: 1000 }),
});

Deno.test({
  name:
    "recovery: while every relogin is reset, the session says what it waits for at the progress interval, then recovers",
  ...opts,
  fn: () =>
    withRig(async (r) => {
      // A proxy in front of a dead target: each new connection is reset as it
      // arrives, before or after the Login Request went out.
      r.proxy.refuse(true);
      r.proxy.cut();
      const held = Array.from({ length: 8 }, (_, i) => r.lun.write(BigInt(i * CHUNK), pattern(i)));
      const settled = Promise.allSettled(held); // (a failed check below must not leave them unhandled)
      const from = r.lines.length;
      const progress = () =>
        r.lines.slice(from).filter((l) =>
          /^warning: iSCSI recovery: [\d.]+ s since the connection was lost; waiting for .+; \d+ command\(s\) held$/
            .test(l)
        );
      const t0 = performance.now();
      const relogins = () =>
        progress().filter((l) => /waiting for (relogin \d+ to|\d+ ms of backoff)/.test(l));
      // Time2Wait first (tgtd asks for 2 s), then relogins and backoff.
      while (relogins().length < 2) {
        if (performance.now() - t0 > 10_000) {
          assert.fail(`in 10 s:\n${progress().join("\n")}`);
        }
        await new Promise((res) => setTimeout(res, 20));
      }
      assert.ok(progress().some((l) => /waiting for Time2Wait \(2 s\)/.test(l)));
      // About one line per interval (200 ms), never a flood.
      const perSecond = progress().length / ((performance.now() - t0) / 1000);
      assert.ok(perSecond > 2 && perSecond < 8, `${perSecond.toFixed(1)} progress lines a second`);
      // Every attempt that failed said so.
      assert.ok(r.lines.some((l) => /^iSCSI relogin \d+ to .* failed: /.test(l)));
      assert.equal(r.session.state, "recovering");
      r.proxy.refuse(false);
      const results = await settled;
      assert.deepEqual(results.map((x) => x.status), Array(8).fill("fulfilled"));
      const file = await Deno.readFile(r.path);
      for (let i = 0; i < 8; i++) {
        assert.deepEqual(file.subarray(i * CHUNK, (i + 1) * CHUNK), pattern(i));
      }
      // Once open with nothing waiting, the progress lines stop.
      const n = progress().length;
      await new Promise((res) => setTimeout(res, 700));
      assert.equal(progress().length, n);
    }, { progressIntervalMs: 200 }),
});

Deno.test({
  name:
    "failover: the second portal when the first is unreachable, the first again on the next recovery",
  ...opts,
  fn: () =>
    withTgtd(async (tgt) => {
      const tid = await tgt.createTarget(IQN);
      const { path } = await tgt.addLun(tid, { lun: 1, size: LUN_SIZE });
      const a = await FaultProxy.start({ targetPort: tgt.port });
      const b = await FaultProxy.start({ targetPort: tgt.port });
      const lines: string[] = [];
      const log = new Logger({ debug: true, sink: (_l, line) => lines.push(line) });
      const s = await loginSession(
        config(a.port, { portals: [{ host: "127.0.0.1", port: b.port }] }),
        log,
      );
      try {
        const lun = await Lun.open(s, 1, { log });
        assert.equal(s.info.portal, `127.0.0.1:${a.port}`);
        a.refuse(true);
        const w = Array.from({ length: DEPTH }, (_, i) => lun.write(BigInt(i * CHUNK), pattern(i)));
        a.cut();
        await Promise.all(w);
        assert.equal(s.info.portal, `127.0.0.1:${b.port}`);
        assert.equal(s.reconnects, 1);
        a.refuse(false);
        const w2 = Array.from(
          { length: DEPTH },
          (_, i) => lun.write(BigInt((DEPTH + i) * CHUNK), pattern(DEPTH + i)),
        );
        b.cut();
        await Promise.all(w2);
        assert.equal(s.info.portal, `127.0.0.1:${a.port}`, "did not come back to the first portal");
        assert.equal(s.reconnects, 2);
        const file = await Deno.readFile(path);
        for (let i = 0; i < 2 * DEPTH; i++) {
          assert.deepEqual(file.subarray(i * CHUNK, (i + 1) * CHUNK), pattern(i), `write ${i}`);
        }
      } catch (e) {
        throw new Error(`${String(e)}\n${lines.slice(-20).join("\n")}`, { cause: e });
      } finally {
        await s.close(2000);
        await a.close();
        await b.close();
      }
    }),
});

Deno.test("failover: the boot plan's other targets with the same IQN and LUN are the failover portals", () => {
  const t = (label: string, host: string, port: number, targetName = IQN, lun = 1) => ({
    label,
    host,
    port,
    lun,
    targetName,
  });
  const a = t("iBFT target 0", "192.0.2.1", 3260);
  const plan = [
    a,
    t("iBFT target 1", "192.0.2.2", 3260),
    t("netroot 1", "192.0.2.1", 3260), // the same portal again
    t("netroot 2", "192.0.2.3", 3260, "iqn.2026-11.test.isboot:other"),
    t("netroot 3", "192.0.2.4", 3260, IQN, 2),
    t("netroot 4", "2001:db8::5", 3261),
  ];
  assert.deepEqual(failoverPortals(a, plan), [
    { host: "192.0.2.2", port: 3260 },
    { host: "2001:db8::5", port: 3261 },
  ]);
  assert.deepEqual(failoverPortals(a, [a]), []);
});

Deno.test({
  name:
    "failover: a booted root disk (loginTarget) moves to iBFT's second target when the first is cut off",
  ...opts,
  fn: () =>
    withTgtd(async (tgt) => {
      const tid = await tgt.createTarget(IQN);
      const { path } = await tgt.addLun(tid, { lun: 1, size: LUN_SIZE });
      const a = await FaultProxy.start({ targetPort: tgt.port });
      const b = await FaultProxy.start({ targetPort: tgt.port });
      const log = new Logger({ quiet: true, sink: () => {} });
      const t0 = {
        label: "iBFT target 0",
        host: "127.0.0.1",
        port: a.port,
        lun: 1,
        targetName: IQN,
      };
      const t1 = { ...t0, label: "iBFT target 1", port: b.port };
      const dev = await loginTarget(t0, {
        initiator: "iqn.2026-11.test.isboot:boot-init",
        recoveryTimeoutMs: 30_000,
        targets: [t0, t1],
        log,
      });
      try {
        assert.equal(b.accepted, 0);
        a.refuse(true);
        a.cut();
        await Promise.all(
          Array.from({ length: 8 }, (_, i) => dev.write(BigInt(i * CHUNK), pattern(i))),
        );
        assert.ok(b.accepted >= 1, "second portal not used");
        const file = await Deno.readFile(path);
        for (let i = 0; i < 8; i++) {
          assert.deepEqual(file.subarray(i * CHUNK, (i + 1) * CHUNK), pattern(i), `write ${i}`);
        }
      } finally {
        await dev.close();
        await a.close();
        await b.close();
      }
    }),
});
