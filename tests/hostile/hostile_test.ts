/**
 * Hostile targets: isboot against a scripted fake target that breaks the
 * protocol after (or during) login. Each case must end the misbehaving
 * connection from isboot's side with a logged protocol error, within a
 * bounded time, with bounded memory, and without a crash (no uncaught
 * exception, no stack trace, every stderr line `isboot: ...`).
 *
 * The cases after login must recover: the fake behaves on the next
 * connection, and the command succeeds (session recovery, docs/iscsi.md).
 * ISBOOT_FAULTS=0 relaxes that to containment only (a clean failure, exit 1
 * or 3, is then accepted too).
 */
import assert from "node:assert/strict";
import { outputWithin, spawnCli } from "../helpers/cli.ts";
import { waitForPath } from "../helpers/fs.ts";
import { FakeTarget, type Scenario } from "../helpers/fake_target/mod.ts";

const RECOVERY = Deno.env.get("ISBOOT_FAULTS") !== "0";
/** A case must be over within this. */
const TIME_LIMIT_MS = 20_000;
/** Bound on isboot's resident memory during a case. */
const RSS_LIMIT = 256 * 1024 * 1024;
/** What a logged protocol error looks like (the words our messages use). */
const PROTOCOL_WORDS =
  /protocol|digest|DataSegmentLength|ITT|opcode|R2T|buffer|offset|continu|CHAP|challenge|text|length|sense|malformed|unexpected/i;

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
  peakRss: number;
  timedOut: boolean;
  ms: number;
}

function readRss(pid: number): number {
  try {
    const m = Deno.readTextFileSync(`/proc/${pid}/status`).match(/^VmRSS:\s+(\d+) kB/m);
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Runs isboot with a time limit, sampling its RSS; kills it at the limit. */
async function runBounded(
  args: string[],
  env: Record<string, string> = {},
  limitMs = TIME_LIMIT_MS,
): Promise<Outcome> {
  const t0 = performance.now();
  const child = spawnCli(args, { env });
  let peakRss = 0;
  const timer = setInterval(() => (peakRss = Math.max(peakRss, readRss(child.pid))), 100);
  const out = await outputWithin(child, limitMs);
  clearInterval(timer);
  const dec = new TextDecoder();
  return {
    code: out.signal ? null : out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
    peakRss,
    timedOut: out.timedOut,
    ms: Math.round(performance.now() - t0),
  };
}

/** The checks every case shares: bounded, no crash, the connection ended by us. */
function assertContained(
  name: string,
  o: Outcome,
  t: FakeTarget,
  logged: RegExp = PROTOCOL_WORDS,
): void {
  const ctx = `${name}: exit ${o.code}, ${o.ms} ms, stderr: ${o.stderr.slice(0, 600)}; ` +
    `target: ${t.events.slice(-6).join(" / ")}`;
  assert.ok(!o.timedOut, `hung: killed after ${TIME_LIMIT_MS} ms; ${ctx}`);
  assert.ok(t.misbehaved >= 1, `the fake never got to misbehave; ${ctx}`);
  assert.ok(!/Uncaught|^\s+at /m.test(o.stderr), `crashed (uncaught exception); ${ctx}`);
  for (const line of o.stderr.split("\n").filter((l) => l.length > 0)) {
    assert.match(line, /^isboot: /, `stderr line not in isboot's format; ${ctx}`);
  }
  assert.ok(o.peakRss < RSS_LIMIT, `RSS peaked at ${o.peakRss >> 20} MiB; ${ctx}`);
  assert.ok(t.closedAfterMs.length >= 1, `isboot never closed the misbehaving connection; ${ctx}`);
  assert.match(o.stderr, logged, `no protocol error was logged; ${ctx}`);
}

function target(t: FakeTarget): string {
  return `iscsi://127.0.0.1:${t.port}/${t.iqn}/${t.lun}`;
}

function chapArgs(t: FakeTarget): { args: string[]; env: Record<string, string> } {
  const c = t.chap;
  return c
    ? { args: ["--chap-user", c.user], env: { ISBOOT_CHAP_SECRET: c.secret } }
    : { args: [], env: {} };
}

/** Cases after login, driven by `isboot probe` (reads: INQUIRY, READ CAPACITY, ...). */
const PROBE_CASES: { scenario: Scenario; digests?: boolean; logged?: RegExp }[] = [
  { scenario: "sense-length-overrun" },
  { scenario: "data-segment-over-declared" },
  { scenario: "huge-data-segment-length" },
  { scenario: "unknown-opcode" },
  { scenario: "unknown-itt" },
  { scenario: "data-in-past-buffer" },
  { scenario: "header-digest-mismatch", digests: true },
  { scenario: "data-digest-mismatch", digests: true },
  { scenario: "async-logout-request", logged: /logout/i },
  { scenario: "async-drop-connection", logged: /dropping the connection|connection closed/i },
];

for (const { scenario, digests, logged } of PROBE_CASES) {
  Deno.test({
    name: `hostile target: ${scenario} ends the connection with a protocol error${
      RECOVERY ? " and recovery" : ""
    } (probe)`,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const t = await FakeTarget.start({ scenario });
      try {
        const args = ["probe", target(t)];
        if (digests) args.push("--header-digest", "crc32c", "--data-digest", "crc32c");
        const o = await runBounded(args);
        assertContained(scenario, o, t, logged);
        if (scenario === "async-logout-request") {
          assert.ok(
            t.events.some((e) => /conn 1: ended \(logout\)/.test(e)),
            `isboot did not log out as asked: ${t.events.join(" / ")}`,
          );
        }
        if (RECOVERY) {
          assert.equal(o.code, 0, `expected recovery on a new connection: ${o.stderr}`);
          assert.ok(t.accepted >= 2, "no new connection after the protocol error");
          assert.match(o.stdout, /HOSTILE TARGET/);
        } else {
          // Containment only: failing cleanly (no recovery) or recovering on a
          // new connection are both right here with ISBOOT_FAULTS=0.
          const recovered = o.code === 0 && t.accepted >= 2 && /HOSTILE TARGET/.test(o.stdout);
          assert.ok(
            recovered || o.code === 1 || o.code === 3,
            `expected recovery (exit 0 after a new connection) or exit 1 or 3, got ${o.code}: ${o.stderr}`,
          );
        }
      } finally {
        await t.close();
      }
    },
  });
}

/** Cases during login: no session exists yet, so the command fails (no recovery to expect). */
const LOGIN_CASES: Scenario[] = [
  "chap-challenge-empty",
  "chap-challenge-1mib",
  "login-continuation-forever",
];

for (const scenario of LOGIN_CASES) {
  Deno.test({
    name: `hostile target: ${scenario} fails the login with one line, bounded (probe)`,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const t = await FakeTarget.start({ scenario, misbehaveOn: "all" });
      try {
        const c = chapArgs(t);
        const o = await runBounded(["probe", target(t), ...c.args], c.env);
        assertContained(scenario, o, t);
        assert.ok(
          o.code === 1 || o.code === 3 || o.code === 4,
          `expected exit 1, 3 or 4, got ${o.code}: ${o.stderr}`,
        );
        assert.equal(o.stderr.trim().split("\n").length, 1, `more than one line: ${o.stderr}`);
        if (t.chap) {
          assert.ok(!o.stderr.includes(t.chap.secret) && !o.stdout.includes(t.chap.secret));
        }
      } finally {
        await t.close();
      }
    },
  });
}

Deno.test({
  name: "hostile target: text-continuation-forever ends discovery with one line, bounded",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const t = await FakeTarget.start({ scenario: "text-continuation-forever", misbehaveOn: "all" });
    try {
      const o = await runBounded(["discover", `127.0.0.1:${t.port}`]);
      assertContained("text-continuation-forever", o, t);
      assert.ok(o.code === 1 || o.code === 3, `expected exit 1 or 3, got ${o.code}: ${o.stderr}`);
      assert.equal(o.stderr.trim().split("\n").length, 1, `more than one line: ${o.stderr}`);
    } finally {
      await t.close();
    }
  },
});

Deno.test({
  name: `hostile target: r2t-beyond-transfer ends the connection, serve keeps running${
    RECOVERY ? ", the write recovers" : ""
  }`,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const t = await FakeTarget.start({ scenario: "r2t-beyond-transfer" });
    const dir = await Deno.makeTempDir({ prefix: "isboot-hostile-" });
    const sock = `${dir}/nbd.sock`;
    const serve = spawnCli(["serve", target(t), "--listen", `unix:${sock}`]);
    let exited: Deno.CommandStatus | undefined;
    serve.status.then((s) => (exited = s));
    const exitedNow = () => exited;
    const errText: string[] = [];
    const errDone = (async () => {
      const dec = new TextDecoder();
      for await (const c of serve.stderr) errText.push(dec.decode(c));
    })();
    const outDone = serve.stdout.cancel();
    try {
      await waitForPath(sock, { ms: TIME_LIMIT_MS, gaveUp: () => exited !== undefined });
      assert.ok(
        !exited,
        `serve exited (code ${exited?.code}) before listening: ${errText.join("")}`,
      );
      // One 64 KiB write through libnbd: the fake answers its R2T with one beyond the transfer.
      const py = `import nbd,sys
h=nbd.NBD(); h.connect_uri(sys.argv[1])
try:
    h.pwrite(b"\\x5a"*65536, 0); h.flush(); print("ok")
except nbd.Error as e:
    print("error", e)
`;
      const client = new Deno.Command("/usr/bin/python3", {
        args: ["-c", py, `nbd+unix:///?socket=${sock}`],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const co = await outputWithin(client, TIME_LIMIT_MS);
      const said = new TextDecoder().decode(co.stdout).trim();
      assert.ok(
        co.signal === null,
        `the client hung on the write (killed); serve: ${errText.join("")}`,
      );
      assert.ok(t.misbehaved >= 1, `the fake never sent its R2T; client: ${said}`);
      const after = exitedNow();
      assert.ok(!after, `serve died: code ${after?.code}; ${errText.join("")}`);
      assert.ok(t.closedAfterMs.length >= 1, "serve never closed the misbehaving connection");
      const stderr = errText.join("");
      assert.ok(!/Uncaught|^\s+at /m.test(stderr), `crashed: ${stderr}`);
      assert.match(stderr, PROTOCOL_WORDS, `no protocol error logged: ${stderr}`);
      if (RECOVERY) assert.equal(said, "ok", `the write did not recover: ${said}`);
    } finally {
      try {
        serve.kill("SIGKILL");
      } catch { /* gone */ }
      await serve.status;
      await errDone.catch(() => {});
      await outDone.catch(() => {});
      await t.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    "hostile target: unknown keys named like Object.prototype members are NotUnderstood, login goes on (probe)",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const t = await FakeTarget.start({ scenario: "login-prototype-keys" });
    try {
      const o = await runBounded(["probe", target(t)]);
      const ctx = `exit ${o.code}: ${o.stderr.slice(0, 400)}; target: ${
        t.events.slice(-4).join(" / ")
      }`;
      assert.ok(!o.timedOut, `hung; ${ctx}`);
      assert.ok(t.misbehaved >= 1, `the fake never sent the keys; ${ctx}`);
      assert.ok(!/Uncaught|internal error|^\s+at /m.test(o.stderr), `crashed; ${ctx}`);
      assert.equal(o.code, 0, ctx);
      assert.match(o.stdout, /HOSTILE TARGET/);
    } finally {
      await t.close();
    }
  },
});

Deno.test({
  name:
    "hostile target: mutual CHAP refuses the target sending our own earlier challenge back (needs relogin)",
  // A reflection can only come on a relogin of the same session, which needs
  // session recovery (skipped with ISBOOT_FAULTS=0).
  ignore: !RECOVERY,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const t = await FakeTarget.start({ scenario: "chap-reflection" });
    try {
      const chap = t.chap!;
      const mutual = t.mutual!;
      const o = await runBounded(
        ["probe", target(t), "--chap-user", chap.user, "--mutual-user", mutual.user],
        { ISBOOT_CHAP_SECRET: chap.secret, ISBOOT_MUTUAL_SECRET: mutual.secret },
      );
      const ctx = `exit ${o.code}: ${o.stderr.slice(0, 400)}; target: ${t.events.join(" / ")}`;
      assert.ok(!o.timedOut, `hung; ${ctx}`);
      assert.ok(t.accepted >= 2 && t.misbehaved >= 1, `no relogin reached the reflection; ${ctx}`);
      assert.ok(
        !t.events.some((e) => /conn [2-9]\d*: CHAP_R received/.test(e)),
        `isboot answered a reflected challenge; ${ctx}`,
      );
      assert.match(o.stderr, /reflect/i, ctx);
      assert.ok(o.code === 4 || o.code === 1, ctx);
      assert.ok(!o.stderr.includes(chap.secret) && !o.stderr.includes(mutual.secret));
    } finally {
      await t.close();
    }
  },
});
