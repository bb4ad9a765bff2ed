/**
 * Multipath against a real tgtd (peers/tgtd.ts): two paths to the same LUN,
 * each through its own fault proxy (tests/faults/proxy.ts), opened as
 * `serve` and `attach` open them (openTarget with a multipath policy). 32
 * writers keep 32 commands in flight, each writing its own blocks and
 * reading back what it wrote, while the active path is cut, reset or
 * black-holed and kept down for a while, then let back; then the other path
 * is cut, so the first must carry the I/O again. Checked: no request fails,
 * every read returns what was last written there, the backing file holds
 * every acknowledged write, commands went on the second path while the
 * first was still down (re-sent at once, not after its recovery), and the
 * first path came back. Printed: the longest pause between two completed
 * requests around each fault, and the same workload's pause on one path
 * with today's recovery (session reinstatement) for comparison.
 */
import assert from "node:assert/strict";
import { Logger } from "../../src/log.ts";
import { type OpenedTarget, openTarget } from "../../src/iscsi/open_target.ts";
import { type SessionConfig } from "../../src/iscsi/session_config.ts";
import type { MultipathPolicy } from "../../src/scsi/multipath.ts";
import { FaultProxy } from "../faults/proxy.ts";
import { type Tgtd, withTgtd } from "../../peers/tgtd.ts";
import { pattern } from "../helpers/bytes.ts";
import { runCli } from "../helpers/cli.ts";
import { formatPath } from "../../src/cli/status.ts";
import { startServe } from "../nbd/serve_helper.ts";
import { until } from "../helpers/wait.ts";

const IQN = "iqn.2026-12.test.isboot:multipath";
const MiB = 1 << 20;
const LUN_SIZE = 16 * MiB;
const CHUNK = 64 * 1024;
const WRITERS = 32;
/** The CLI test's LUN: big enough that the copy is still running when a path is cut. */
const CLI_SIZE = 64 * MiB;
/** Each writer owns the blocks w, w + WRITERS, w + 2·WRITERS, ... */
const SLOTS_PER_WRITER = LUN_SIZE / CHUNK / WRITERS;

type Fault = "cut" | "reset" | "black hole";

function config(portA: number, portB: number | null): SessionConfig {
  return {
    portal: { host: "127.0.0.1", port: portA },
    ...(portB === null ? {} : { portals: [{ host: "127.0.0.1", port: portB }] }),
    targetName: IQN,
    lun: 1,
    initiatorName: "iqn.2026-12.test.isboot:multipath-init",
    chapAlgorithms: ["md5"],
    headerDigest: "prefer-none",
    dataDigest: "prefer-none",
    isidPurpose: "multipath test",
    // A single path notices a black hole as fast as a multipath one.
    nopIntervalMs: 1000,
    nopTimeoutMs: 2000,
  };
}

/** The workload: WRITERS loops of write, read back, compare, until stopped. */
class Workload {
  readonly completions: number[] = [];
  readonly failures: string[] = [];
  /** What each block holds now, by block number (acknowledged writes only). */
  readonly last = new Map<number, Uint8Array>();
  #stop = false;
  #loops: Promise<void>[] = [];

  constructor(readonly t: OpenedTarget) {}

  start(): void {
    for (let w = 0; w < WRITERS; w++) this.#loops.push(this.#loop(w));
  }

  async #loop(w: number): Promise<void> {
    let n = 0;
    while (!this.#stop) {
      const block = w + WRITERS * (n % SLOTS_PER_WRITER);
      const data = pattern(CHUNK, w * 100_003 + n);
      try {
        await this.t.device.write(BigInt(block * CHUNK), data, { fua: n % 5 === 0 });
        this.last.set(block, data);
        this.completions.push(performance.now());
        if (n % 4 === 3) {
          const back = await this.t.device.read(BigInt(block * CHUNK), CHUNK);
          if (!back.every((b, i) => b === data[i])) {
            this.failures.push(`block ${block}: read back differs`);
          }
          this.completions.push(performance.now());
        }
      } catch (e) {
        this.failures.push(`block ${block}: ${e instanceof Error ? e.message : String(e)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      n++;
    }
  }

  /** The longest time without a completed request between `from` and `to` (ms). */
  longestPause(from: number, to: number): number {
    const ts = this.completions.filter((t) => t >= from && t <= to).sort((a, b) => a - b);
    let worst = ts.length ? Math.max(ts[0] - from, to - ts[ts.length - 1]) : to - from;
    for (let i = 1; i < ts.length; i++) worst = Math.max(worst, ts[i] - ts[i - 1]);
    return worst;
  }

  async stop(): Promise<void> {
    this.#stop = true;
    await Promise.all(this.#loops);
    await this.t.device.flush();
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function breakPath(p: FaultProxy, fault: Fault): void {
  p.refuse(true); // relogins fail until the path is let back
  if (fault === "cut") p.cut();
  else if (fault === "reset") p.reset();
  else p.blackhole();
}

async function verifyFile(tgtPath: string, last: Map<number, Uint8Array>): Promise<void> {
  const file = await Deno.readFile(tgtPath);
  for (const [block, data] of last) {
    assert.deepEqual(
      file.subarray(block * CHUNK, (block + 1) * CHUNK),
      data,
      `acknowledged write of block ${block} not in the backing file`,
    );
  }
}

/** One path, today's recovery (reinstatement on the same portal): the pause to compare with. */
async function singlePathPause(tgt: Tgtd, tgtPath: string, fault: Fault): Promise<number> {
  const proxy = await FaultProxy.start({ targetPort: tgt.port });
  const log = new Logger({ sink: () => {} });
  const t = await openTarget(config(proxy.port, null), { log });
  try {
    const w = new Workload(t);
    w.start();
    await sleep(800);
    const t0 = performance.now();
    breakPath(proxy, fault);
    await sleep(500);
    proxy.refuse(false);
    await until("single path recovered", () => t.transport.reconnects >= 1, 30_000);
    await sleep(500);
    const t1 = performance.now();
    await w.stop();
    assert.deepEqual(w.failures, []);
    await verifyFile(tgtPath, w.last);
    return w.longestPause(t0 - 200, t1);
  } finally {
    await t.close().catch(() => {});
    await proxy.close();
  }
}

/** A tgtd with LUN 1 of `size` bytes, two proxies to it (path A, path B); all stopped afterwards. */
async function withTwoPaths(
  size: number,
  fn: (r: { tgt: Tgtd; tgtPath: string; a: FaultProxy; b: FaultProxy }) => Promise<void>,
): Promise<void> {
  await withTgtd(async (tgt) => {
    const tid = await tgt.createTarget(IQN);
    const { path: tgtPath } = await tgt.addLun(tid, { lun: 1, size });
    const a = await FaultProxy.start({ targetPort: tgt.port });
    const b = await FaultProxy.start({ targetPort: tgt.port });
    try {
      await fn({ tgt, tgtPath, a, b });
    } finally {
      await a.close();
      await b.close();
    }
  });
}

async function multipathCase(policy: MultipathPolicy, fault: Fault): Promise<void> {
  await withTwoPaths(LUN_SIZE, async ({ tgt, tgtPath, a, b }) => {
    const lines: string[] = [];
    const log = new Logger({ sink: (_l, line) => lines.push(line) });
    let t: OpenedTarget | undefined;
    try {
      t = await openTarget(config(a.port, b.port), { log, multipath: policy });
      const mp = t.multipath;
      assert.ok(mp, "no multipath transport");
      const st = () => mp.paths.map((p) => p.state);
      assert.deepEqual(st(), policy === "failover" ? ["active", "standby"] : ["active", "active"]);
      // Two sessions, one initiator: distinct ISIDs (RFC 7143 §4.4.2).
      assert.equal(a.accepted, 1);
      assert.equal(b.accepted, 1);

      const w = new Workload(t);
      w.start();
      await sleep(1000);
      const bBefore = mp.paths[1].commands;
      if (policy === "failover") assert.equal(bBefore, 0, "the standby path carried commands");

      // Fault 1: path A (active) breaks and stays down for 1.5 s.
      const f1 = performance.now();
      breakPath(a, fault);
      await until("path A seen down", () => mp.paths[0].state === "down", 20_000);
      const bWhileDown = mp.paths[1].commands;
      await sleep(1500);
      assert.equal(mp.paths[0].state, "down", "path A came back while refused");
      assert.ok(
        mp.paths[1].commands > bWhileDown,
        "no command went on path B while path A was down",
      );
      const f1End = performance.now();
      a.refuse(false);
      await until("path A back", () => mp.paths[0].state !== "down", 30_000);
      if (policy === "failover") assert.deepEqual(st(), ["standby", "active"]);
      await sleep(500);

      // Fault 2: path B breaks: A must carry everything again.
      const f2 = performance.now();
      const aBefore = mp.paths[0].commands;
      breakPath(b, fault);
      await until("path B seen down", () => mp.paths[1].state === "down", 20_000);
      await sleep(1000);
      assert.ok(mp.paths[0].commands > aBefore, "path A carried nothing after path B broke");
      const f2End = performance.now();
      b.refuse(false);
      await until("path B back", () => mp.paths[1].state !== "down", 30_000);
      await w.stop();

      assert.deepEqual(w.failures, [], "requests failed or read back wrong");
      assert.ok(w.last.size > WRITERS, "the workload hardly ran");
      await verifyFile(tgtPath, w.last);
      assert.deepEqual(mp.paths.map((p) => p.failures), [1, 1]);
      // What `isboot status` shows of each path.
      const report = t.paths!();
      assert.deepEqual(report.map((p) => p.portal), [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`]);
      assert.notEqual(report[0].isid, report[1].isid, "two paths, one ISID");
      assert.deepEqual(report.map((p) => [p.failures, p.downSince]), [[1, null], [1, null]]);
      assert.ok(report.every((p) => p.reconnects >= 1 && p.commands > 0), JSON.stringify(report));
      assert.deepEqual(report.map((p) => p.local), ["127.0.0.1", "127.0.0.1"]);
      assert.match(
        formatPath(report[0]),
        /^ {2}path 127\.0\.0\.1:\d+ from 127\.0\.0\.1 {2}(active|standby) {2}isid [0-9a-f]{12} tsih \d+ {2}commands \d+ {2}\d+ B {2}failures 1 {2}reconnects \d+\n$/,
      );
      assert.ok(lines.some((l) => /multipath: path 127\.0\.0\.1:\d+ is down/.test(l)));
      assert.ok(lines.some((l) => /multipath: path 127\.0\.0\.1:\d+ is back after/.test(l)));

      const pause1 = w.longestPause(f1 - 200, f1End);
      const pause2 = w.longestPause(f2 - 200, f2End);
      const single = await singlePathPause(tgt, tgtPath, fault);
      console.log(
        `multipath ${policy}, ${fault}: longest pause ${pause1.toFixed(0)} ms (path A), ` +
          `${pause2.toFixed(0)} ms (path B); one path with session recovery: ${
            single.toFixed(0)
          } ms; ${w.completions.length} requests, 0 failed`,
      );
    } catch (e) {
      throw new Error(
        `${e instanceof Error ? e.message : String(e)}\n--- log:\n${lines.slice(-30).join("\n")}`,
        { cause: e },
      );
    } finally {
      await t?.close().catch(() => {});
    }
  });
}

const opts = { sanitizeOps: false, sanitizeResources: false };

const CASES: [MultipathPolicy, Fault, string][] = [
  [
    "failover",
    "cut",
    "multipath failover: the active path cut (FIN) under 32 writers; I/O goes on the other at once, nothing lost, the path rejoins",
  ],
  ["failover", "reset", "multipath failover: the active path reset (RST) under 32 writers"],
  [
    "failover",
    "black hole",
    "multipath failover: the active path black-holed (found by its NOP-Out) under 32 writers",
  ],
  ["round-robin", "cut", "multipath round-robin: one of two busy paths cut under 32 writers"],
];
for (const [policy, fault, name] of CASES) {
  Deno.test({ name, ...opts, fn: () => multipathCase(policy, fault) });
}

Deno.test({
  name:
    "multipath cli: serve --portal P2 --multipath failover; nbdcopy writes through it while the active path is cut; the image is the file",
  ...opts,
  fn: async () => {
    await withTwoPaths(CLI_SIZE, async ({ tgtPath, a, b }) => {
      const dir = await Deno.makeTempDir();
      try {
        const image = `${dir}/image`;
        await Deno.writeFile(image, pattern(CLI_SIZE, 42));
        // SCSI Command PDUs (opcode 0x01) each path carried.
        const commands = [0, 0];
        a.onPdu((_c, p) => p.direction === "to-target" && p.opcode === 1 && commands[0]++);
        b.onPdu((_c, p) => p.direction === "to-target" && p.opcode === 1 && commands[1]++);
        await using served = await startServe(`iscsi://127.0.0.1:${a.port}/${IQN}/1`, [
          "--portal",
          `127.0.0.1:${b.port}`,
          "--multipath",
          "failover",
          "--initiator",
          "iqn.2026-12.test.isboot:multipath-cli",
        ]);
        assert.match(served.stderr(), /multipath \(failover\): 2 of 2 path\(s\) to naa\./);
        const copy = new Deno.Command("nbdcopy", {
          args: ["--requests=32", "--flush", image, served.uri],
          stdout: "piped",
          stderr: "piped",
        }).spawn();
        await until("path A carries the copy", () => commands[0] >= 40, 20_000);
        const before = commands[1];
        a.refuse(true);
        a.cut();
        const out = await copy.output();
        assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
        assert.match(served.stderr(), /multipath: path 127\.0\.0\.1:\d+ is down/);
        assert.ok(commands[1] > before + 10, `path B carried ${commands[1] - before} commands`);
        assert.equal(await served.stop(), 0);
        assert.deepEqual(await Deno.readFile(tgtPath), await Deno.readFile(image));
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    });
  },
});

Deno.test("multipath cli: --multipath without --portal, or an unknown policy, is a usage error (exit 2)", async () => {
  for (
    const [extra, want] of [
      [["--multipath", "failover"], /--multipath failover needs at least one --portal/],
      [
        ["--portal", "127.0.0.2", "--multipath", "both"],
        /--multipath 'both': expected off, failover or round-robin/,
      ],
    ] as const
  ) {
    const r = await runCli([
      "serve",
      `iscsi://127.0.0.1:1/${IQN}/1`,
      "--listen",
      "tcp:0",
      ...extra,
    ]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, want);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  }
});

Deno.test({
  name:
    "multipath: a path that cannot log in at the start is used without it, logs in later in the background, then carries the I/O when the first is cut",
  ...opts,
  fn: async () => {
    await withTwoPaths(LUN_SIZE, async ({ tgtPath, a, b }) => {
      const lines: string[] = [];
      const log = new Logger({ sink: (_l, line) => lines.push(line) });
      let t: OpenedTarget | undefined;
      try {
        b.refuse(true); // path B's cable is not in yet
        t = await openTarget(config(a.port, b.port), { log, multipath: "failover" });
        const mp = t.multipath!;
        assert.deepEqual(mp.paths.map((p) => p.state), ["active", "down"]);
        assert.ok(
          lines.some((l) => /path 127\.0\.0\.1:\d+: login failed: .*in the background/.test(l)),
        );
        assert.deepEqual(t.paths!().map((p) => [p.isid, p.tsih]).at(1), ["", 0]);
        const w = new Workload(t);
        w.start();
        await sleep(500);
        b.refuse(false);
        await until("path B joins", () => mp.paths[1].state === "standby", 20_000);
        assert.ok(
          lines.some((l) =>
            /multipath: path 127\.0\.0\.1:\d+ is up \(it was not at the start\)/.test(l)
          ),
        );
        const bBefore = mp.paths[1].commands;
        a.refuse(true);
        a.cut();
        await until("path A seen down", () => mp.paths[0].state === "down", 20_000);
        await sleep(800);
        assert.ok(mp.paths[1].commands > bBefore, "the late path carried nothing");
        await w.stop();
        assert.deepEqual(w.failures, []);
        await verifyFile(tgtPath, w.last);
      } catch (e) {
        throw new Error(
          `${e instanceof Error ? e.message : String(e)}\n--- log:\n${lines.slice(-20).join("\n")}`,
          { cause: e },
        );
      } finally {
        await t?.close().catch(() => {});
      }
    });
  },
});

Deno.test({
  name:
    "multipath: a path that reaches another logical unit (other VPD 0x83 designators) is refused with a line and never used",
  ...opts,
  fn: async () => {
    await withTgtd(async (tgt) => {
      await withTgtd(async (other) => {
        const tid = await tgt.createTarget(IQN);
        await tgt.addLun(tid, { lun: 1, size: LUN_SIZE });
        // The same target name on another box whose LU has other designators (tgt derives
        // them from the target id: a dummy target takes id 1 there).
        await other.createTarget("iqn.2026-12.test.isboot:dummy");
        const otherTid = await other.createTarget(IQN);
        await other.addLun(otherTid, { lun: 1, size: LUN_SIZE });
        const lines: string[] = [];
        const log = new Logger({ sink: (_l, line) => lines.push(line) });
        const t = await openTarget(config(tgt.port, other.port), { log, multipath: "failover" });
        try {
          assert.deepEqual(t.paths!().map((p) => p.portal), [`127.0.0.1:${tgt.port}`]);
          assert.ok(
            lines.some((l) =>
              new RegExp(
                `multipath: path 127\\.0\\.0\\.1:${other.port} leads to another logical unit \\(naa\\.\\S+, not naa\\.\\S+\\); not used`,
              ).test(l)
            ),
            lines.join("\n"),
          );
          assert.equal(
            (await other.connections(otherTid)).length,
            0,
            "the refused path stayed logged in",
          );
          await t.device.write(0n, new Uint8Array(4096).fill(7));
        } finally {
          await t.close();
        }
      });
    });
  },
});
