/**
 * Secrets never leak: every command that can see a CHAP secret is run with
 * known secrets (from files, the environment, the iBFT, and, discouraged, the
 * URI), plain, with --json and with --debug, succeeding and failing (wrong
 * secret, wrong mutual secret, bad URI), and ALL its output (stdout and
 * stderr) is searched for each secret as text, hex (either case, with or
 * without 0x) and base64. Any hit fails.
 *
 * Positive controls keep the search honest: `ibft --show-secrets` must show
 * the fixture's secrets, and the search must find them there.
 *
 * Also checked here: `serve`'s unix socket is mode 0600, and `serve` over TCP
 * binds loopback by default and says so in its first log line.
 */
import assert from "node:assert/strict";
import { ROOT, runCli, spawnCli } from "../helpers/cli.ts";
import { waitForPath } from "../helpers/fs.ts";
import { startTgtd } from "../helpers/tgtd.ts";

const INIT_USER = "isb-sec-user1";
const INIT_SECRET = "isb-Init-Secret-7Qz93x";
const MUTUAL_USER = "isb-sec-user2";
const MUTUAL_INIT_SECRET = "isb-Init2-Secret-Lr55aa";
const TARGET_USER = "isb-sec-target";
const TARGET_SECRET = "isb-Target-Secret-K2m8";
const WRONG_SECRET = "isb-Wrong-Secret-P0w4";
const URI_SECRET = "isb-Uri-Password-H5j1";
/** The secrets inside tests/fixtures/ibft/ipxe-bios-mutual-chap.bin (README there). */
const FIXTURE_SECRETS = ["initsecret1234", "targetsecret987"];
const ALL_SECRETS = [
  INIT_SECRET,
  MUTUAL_INIT_SECRET,
  TARGET_SECRET,
  WRONG_SECRET,
  URI_SECRET,
  ...FIXTURE_SECRETS,
];
const FIXTURE = `${ROOT}tests/fixtures/ibft/ipxe-bios-mutual-chap.bin`;
const IQN1 = "iqn.2026-11.test:secrets-oneway";
const IQN2 = "iqn.2026-11.test:secrets-mutual";

/** Every form a secret could take in output. */
export function secretForms(secret: string): string[] {
  const bytes = new TextEncoder().encode(secret);
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  const b64 = btoa(String.fromCharCode(...bytes));
  return [secret, hex, hex.toUpperCase(), b64, b64.replace(/=+$/, "")];
}

/** Returns a description of every secret form found in `text`. */
export function findSecrets(text: string, secrets = ALL_SECRETS): string[] {
  const hits: string[] = [];
  for (const s of secrets) {
    for (const f of secretForms(s)) {
      if (text.includes(f)) hits.push(`${s} (as "${f}")`);
    }
  }
  return hits;
}

interface Run {
  what: string;
  code: number;
  out: string;
}

function assertClean(r: Run): void {
  const hits = findSecrets(r.out);
  assert.deepEqual(hits, [], `${r.what}: secret in output: ${hits.join(", ")}\n${r.out}`);
}

async function cli(
  what: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<Run> {
  const r = await runCli(args, { env });
  return { what, code: r.code, out: `${r.stdout}\n${r.stderr}` };
}

Deno.test("secrets: the search finds every encoding of a secret (the control)", () => {
  const s = "abc-Secret-123";
  for (const f of secretForms(s)) assert.deepEqual(findSecrets(`x ${f} y`, [s]).length >= 1, true);
  assert.deepEqual(findSecrets("nothing here", [s]), []);
});

Deno.test("secrets: ibft never prints the fixture's CHAP secrets without --show-secrets", async () => {
  const control = await cli("ibft --show-secrets", ["ibft", "--source", FIXTURE, "--show-secrets"]);
  assert.equal(control.code, 0, control.out);
  for (const s of FIXTURE_SECRETS) {
    assert.ok(findSecrets(control.out, [s]).length > 0, `control: ${s} not shown: ${control.out}`);
  }
  const runs = [
    await cli("ibft", ["ibft", "--source", FIXTURE]),
    await cli("ibft --json", ["ibft", "--source", FIXTURE, "--json"]),
    await cli("--debug ibft", ["--debug", "ibft", "--source", FIXTURE]),
    await cli("--debug ibft --json", ["--debug", "ibft", "--source", FIXTURE, "--json"]),
  ];
  for (const r of runs) {
    assert.equal(r.code, 0, `${r.what}: ${r.out}`);
    assert.match(r.out, /redacted/, `${r.what}: no redaction marker`);
    assertClean(r);
  }
  // A corrupted copy: the error path must not print secrets either.
  const bytes = await Deno.readFile(FIXTURE);
  const dir = await Deno.makeTempDir({ prefix: "isboot-secrets-" });
  try {
    const bad = bytes.slice();
    bad[9] ^= 0xff; // checksum
    await Deno.writeFile(`${dir}/bad.bin`, bad);
    const truncated = bytes.slice(0, bytes.length - 20);
    await Deno.writeFile(`${dir}/short.bin`, truncated);
    for (const f of ["bad.bin", "short.bin"]) {
      for (const pre of [[], ["--debug"]]) {
        const r = await cli(`${pre.join(" ")} ibft ${f}`, [
          ...pre,
          "ibft",
          "--source",
          `${dir}/${f}`,
        ]);
        assertClean(r);
        const j = await cli(`${pre.join(" ")} ibft ${f} --json`, [
          ...pre,
          "ibft",
          "--source",
          `${dir}/${f}`,
          "--json",
        ]);
        assertClean(j);
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "secrets: discover, probe, serve, attach with secrets from file/env/URI, right and wrong",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async (t) => {
    const tgt = await startTgtd();
    const dir = await Deno.makeTempDir({ prefix: "isboot-secrets-" });
    try {
      const tid1 = await tgt.createTarget(IQN1);
      await tgt.addLun(tid1, { lun: 1, size: 8 << 20 });
      await tgt.addChap(tid1, { user: INIT_USER, secret: INIT_SECRET });
      const tid2 = await tgt.createTarget(IQN2);
      await tgt.addLun(tid2, { lun: 1, size: 8 << 20 });
      await tgt.addChap(tid2, { user: MUTUAL_USER, secret: MUTUAL_INIT_SECRET }, {
        user: TARGET_USER,
        secret: TARGET_SECRET,
      });
      // tgt 1.0.85 has no CHAP for discovery sessions (binding an account to
      // tid 0 fails: "can't find the target"): discover still gets the
      // secrets, must not print them, and succeeds whatever the secret.
      const file = async (name: string, s: string) => {
        const p = `${dir}/${name}`;
        await Deno.writeTextFile(p, `${s}\n`, { mode: 0o600 });
        return p;
      };
      const initFile = await file("init.secret", INIT_SECRET);
      const wrongFile = await file("wrong.secret", WRONG_SECRET);
      const targetFile = await file("target.secret", TARGET_SECRET);
      const portal = tgt.portal;
      const uri1 = `iscsi://${portal}/${IQN1}/1`;
      const uri2 = `iscsi://${portal}/${IQN2}/1`;
      const oneWayFile = ["--chap-user", INIT_USER, "--chap-secret-file", initFile];
      const envInit = { ISBOOT_CHAP_SECRET: INIT_SECRET };
      const mutualEnv = {
        ISBOOT_CHAP_SECRET: MUTUAL_INIT_SECRET,
        ISBOOT_MUTUAL_SECRET: TARGET_SECRET,
      };
      const mutualArgs = ["--chap-user", MUTUAL_USER, "--mutual-user", TARGET_USER];

      // [name, args, env, expected exit codes]
      const cases: [string, string[], Record<string, string>, number[]][] = [
        ["discover, secret file", ["discover", portal, ...oneWayFile], {}, [0]],
        [
          "discover --json, env",
          ["discover", portal, "--json", "--chap-user", INIT_USER],
          envInit,
          [0],
        ],
        [
          "--debug discover, env",
          ["--debug", "discover", portal, "--chap-user", INIT_USER],
          envInit,
          [0],
        ],
        [
          "discover, wrong secret",
          ["discover", portal, "--chap-user", INIT_USER, "--chap-secret-file", wrongFile],
          {},
          [0],
        ],
        [
          "--debug discover --json, wrong secret",
          ["--debug", "discover", portal, "--json", "--chap-user", INIT_USER],
          { ISBOOT_CHAP_SECRET: WRONG_SECRET },
          [0],
        ],
        ["probe, secret file", ["probe", uri1, ...oneWayFile], {}, [0]],
        ["probe --json, env", ["probe", uri1, "--json", "--chap-user", INIT_USER], envInit, [0]],
        [
          "--debug probe --json, env",
          ["--debug", "probe", uri1, "--json", "--chap-user", INIT_USER],
          envInit,
          [0],
        ],
        ["probe, wrong secret", ["probe", uri1, "--chap-user", INIT_USER], {
          ISBOOT_CHAP_SECRET: WRONG_SECRET,
        }, [4]],
        [
          "--debug probe, wrong secret file",
          ["--debug", "probe", uri1, "--chap-user", INIT_USER, "--chap-secret-file", wrongFile],
          {},
          [4],
        ],
        ["probe, mutual, env", ["probe", uri2, ...mutualArgs], mutualEnv, [0]],
        [
          "--debug probe --json, mutual, secret file",
          ["--debug", "probe", uri2, "--json", ...mutualArgs, "--mutual-secret-file", targetFile],
          { ISBOOT_CHAP_SECRET: MUTUAL_INIT_SECRET },
          [0],
        ],
        [
          "--debug probe, mutual, wrong target secret",
          ["--debug", "probe", uri2, ...mutualArgs],
          { ISBOOT_CHAP_SECRET: MUTUAL_INIT_SECRET, ISBOOT_MUTUAL_SECRET: WRONG_SECRET },
          [4],
        ],
        [
          "probe, password in the URI (discouraged), wrong",
          ["probe", `iscsi://${INIT_USER}%${URI_SECRET}@${portal}/${IQN1}/1`],
          {},
          [4],
        ],
        [
          "--debug probe, password in the URI, bad URI",
          ["--debug", "probe", `iscsi://${INIT_USER}%${URI_SECRET}@[::1/${IQN1}/1`],
          {},
          [3],
        ],
        [
          "--debug attach, env (no kernel nbd here: fails after login or before)",
          ["--debug", "attach", uri1, "--chap-user", INIT_USER],
          envInit,
          [0, 1, 2, 3],
        ],
        [
          "--debug attach, wrong secret",
          ["--debug", "attach", uri1, "--chap-user", INIT_USER],
          { ISBOOT_CHAP_SECRET: WRONG_SECRET },
          [1, 2, 3, 4],
        ],
        ["status --json", ["status", "--json"], envInit, [0, 1]],
        ["--debug status", ["--debug", "status"], envInit, [0, 1]],
      ];
      for (const [name, args, env, codes] of cases) {
        await t.step(name, async () => {
          const r = await cli(name, args, env);
          assertClean(r);
          assert.ok(codes.includes(r.code), `${name}: exit ${r.code}, expected ${codes}: ${r.out}`);
        });
      }

      await t.step("serve --debug, env secret, a client, SIGTERM", async () => {
        const sock = `${dir}/serve.sock`;
        const r = await serveUntil(
          ["--debug", "serve", uri1, "--listen", `unix:${sock}`, "--chap-user", INIT_USER],
          envInit,
          sock,
          async () => {
            const info = await new Deno.Command("nbdinfo", {
              args: ["--json", `nbd+unix:///?socket=${sock}`],
              stdout: "piped",
              stderr: "piped",
            }).output();
            assert.equal(info.code, 0, new TextDecoder().decode(info.stderr));
            // status while a session with secrets is live (whatever it lists).
            for (const args of [["status", "--json"], ["--debug", "status"]]) {
              assertClean(await cli(`${args.join(" ")} during serve`, args));
            }
          },
        );
        assertClean({ what: "serve", code: r.code, out: r.out });
        assert.ok(r.listened, `serve never listened: ${r.out}`);
      });

      await t.step("serve, wrong secret file", async () => {
        const sock = `${dir}/serve-wrong.sock`;
        const r = await serveUntil(
          [
            "--debug",
            "serve",
            uri1,
            "--listen",
            `unix:${sock}`,
            "--chap-user",
            INIT_USER,
            "--chap-secret-file",
            wrongFile,
          ],
          {},
          sock,
          () => Promise.resolve(),
        );
        assertClean({ what: "serve wrong", code: r.code, out: r.out });
        assert.equal(r.code, 4, `serve with a wrong secret: exit ${r.code}: ${r.out}`);
      });
    } finally {
      await tgt.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

/**
 * Runs serve until its socket appears (then `during`, then SIGTERM) or it
 * exits by itself; returns all output.
 */
async function serveUntil(
  args: string[],
  env: Record<string, string>,
  sock: string,
  during: () => Promise<void>,
): Promise<{ code: number; out: string; listened: boolean; firstLine: string }> {
  const child = spawnCli(args, { env });
  let exited = false;
  child.status.then(() => (exited = true));
  const output = child.output();
  let listened = false;
  try {
    listened = await waitForPath(sock, { gaveUp: () => exited });
    if (listened) await during();
  } finally {
    if (!exited) {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      const t = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }, 5000);
      await child.status;
      clearTimeout(t);
    }
  }
  const o = await output;
  const dec = new TextDecoder();
  const stderr = dec.decode(o.stderr);
  return {
    code: o.code,
    out: `${dec.decode(o.stdout)}\n${stderr}`,
    listened,
    firstLine: stderr.split("\n")[0] ?? "",
  };
}

Deno.test({
  name: "secrets: serve's unix socket is mode 0600",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "isboot-secrets-" });
    try {
      const sock = `${dir}/nbd.sock`;
      let mode = -1;
      const r = await serveUntil(
        ["serve", "memory:8M", "--listen", `unix:${sock}`],
        {},
        sock,
        async () => {
          mode = (await Deno.stat(sock)).mode! & 0o777;
        },
      );
      assert.ok(r.listened, r.out);
      assert.equal(mode.toString(8), "600");
    } finally {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name: "secrets: serve over TCP binds loopback by default and says so in its listening line",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (l.addr as Deno.NetAddr).port;
    l.close();
    const child = spawnCli(["serve", "memory:8M", "--listen", `tcp:${port}`], { stdout: "null" });
    const reader = child.stderr.getReader();
    try {
      let text = "";
      const deadline = Date.now() + 20_000;
      // The line that says where it listens (the buffer reserve's may come first).
      const listenLine = () => text.split("\n").slice(0, -1).find((l) => /listening/.test(l));
      while (listenLine() === undefined && Date.now() < deadline) {
        const { value, done } = await reader.read();
        if (done) break;
        text += new TextDecoder().decode(value);
      }
      const line = listenLine() ?? "";
      assert.match(line, /127\.0\.0\.1|loopback/, `log: ${text}`);
      // The kernel's view: the listening socket's local address is 127.0.0.1.
      const tcp = await Deno.readTextFile("/proc/net/tcp");
      const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
      const listening = tcp.split("\n").filter((line) => {
        const f = line.trim().split(/\s+/);
        return f[1]?.endsWith(`:${hexPort}`) && f[3] === "0A";
      }).map((line) => line.trim().split(/\s+/)[1]);
      assert.deepEqual(listening, [`0100007F:${hexPort}`], `listening sockets on ${port}`);
      const tcp6 = await Deno.readTextFile("/proc/net/tcp6").catch(() => "");
      assert.ok(
        !tcp6.split("\n").some((line) => {
          const f = line.trim().split(/\s+/);
          return f[1]?.endsWith(`:${hexPort}`) && f[3] === "0A";
        }),
        "also listening on IPv6",
      );
    } finally {
      reader.releaseLock();
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.stderr.cancel().catch(() => {});
      await child.status;
    }
  },
});
