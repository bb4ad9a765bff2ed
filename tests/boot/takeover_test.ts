/**
 * The pieces of a live upgrade that need no kernel device: which daemons
 * `isboot takeover` replaces, the arguments an attach daemon hands over, how
 * isboot runs itself again, the boot daemon's iBFT surviving the handover
 * (secrets included), and the command's one-line refusals. The takeover
 * itself is booted in tests/e2e/user_path_test.ts (package upgrade under
 * writes).
 */
import assert from "node:assert/strict";
import { handoverArgs } from "../../src/cli/attach.ts";
import { needsTakeover } from "../../src/cli/takeover.ts";
import { processGone } from "../../src/control/takeover.ts";
import { ibftFromJson, ibftToJson } from "../../src/ibft/json.ts";
import { loadIbft } from "../../src/ibft/sources.ts";
import { resolveBoot } from "../../src/boot/spec.ts";
import { parseBootCmdline } from "../../src/boot/cmdline.ts";
import { selfPrefix } from "../../src/sys/process.ts";
import { VERSION } from "../../src/version.ts";
import { ROOT, runCli } from "../helpers/cli.ts";

Deno.test("takeover: a daemon is replaced when its version differs or its executable was replaced", () => {
  const exe = "/usr/lib/isboot/deno";
  assert.equal(needsTakeover({ version: VERSION, executable: exe }), false);
  assert.equal(needsTakeover({ version: VERSION, executable: `${exe} (deleted)` }), true);
  assert.equal(needsTakeover({ version: "0.0.9", executable: exe }), true);
  // A daemon older than the version field (0.1.0) says neither.
  assert.equal(needsTakeover({}), true);
});

Deno.test("takeover: an attach daemon hands over its arguments without --daemon, --device, --takeover", () => {
  assert.deepEqual(
    handoverArgs([
      "iscsi://h/iqn.2026-11.test:d/1",
      "--device",
      "/dev/nbd3",
      "--daemon",
      "--connections",
      "2",
      "--takeover",
      "--device=/dev/nbd3",
      "--chap-secret-file",
      "/etc/isboot/secret",
    ]),
    [
      "iscsi://h/iqn.2026-11.test:d/1",
      "--connections",
      "2",
      "--chap-secret-file",
      "/etc/isboot/secret",
    ],
  );
  // After "--" everything is a positional and stays.
  assert.deepEqual(handoverArgs(["--daemon", "--", "--device"]), ["--", "--device"]);
});

Deno.test("takeover: isboot runs itself again with deno's own arguments (bundle, source) or none (compiled)", () => {
  const js = "/usr/lib/isboot/isboot.js";
  assert.deepEqual(
    selfPrefix(
      ["/usr/lib/isboot/deno", "run", "-A", "--quiet", "--no-config", js, "takeover"],
      `file://${js}`,
    ),
    ["run", "-A", "--quiet", "--no-config", js],
  );
  // The script named through a symlink: deno run's script argument still.
  assert.deepEqual(
    selfPrefix(["/x/deno", "run", "-A", "/opt/isboot.js", "takeover"], `file://${js}`),
    ["run", "-A", "/opt/isboot.js"],
  );
  assert.deepEqual(
    selfPrefix(["/usr/bin/isboot", "takeover"], "file:///tmp/deno-compile-isboot/main.ts"),
    [],
  );
});

Deno.test("takeover: the boot daemon's iBFT survives the handover, CHAP secrets included, to the same boot plan", async () => {
  for (const name of ["ipxe-bios-mutual-chap", "ipxe-bios-two-targets", "ipxe-uefi-plain"]) {
    const loaded = await loadIbft(`${ROOT}tests/fixtures/ibft/${name}.bin`);
    const doc = JSON.parse(JSON.stringify(ibftToJson(loaded, { showSecrets: true })));
    const table = ibftFromJson(doc);
    // Length and checksum belong to the bytes, which are not handed over.
    const header = { ...loaded.table.header, length: null, checksumValid: null };
    assert.deepEqual(table, { ...loaded.table, header }, name);
    const cmd = parseBootCmdline("root=/dev/nbd0p1 rd.iscsi.firmware");
    const a = resolveBoot(cmd, loaded);
    const b = resolveBoot(cmd, { source: "handover", table, warnings: [] });
    assert.deepEqual(b.targets, a.targets, name);
    assert.deepEqual(b.nics, a.nics, name);
    assert.equal(b.initiator, a.initiator, name);
  }
});

Deno.test("takeover: CLI refusals are one line with their exit codes", async () => {
  const r = await runCli(["takeover", "/dev/nbd15"]);
  assert.equal(r.code, 2, r.stderr);
  assert.equal(r.stderr, "isboot: /dev/nbd15: no isboot serves it (no control socket)\n");
  const b = await runCli(["boot", "--takeover"]);
  assert.equal(b.code, 2, b.stderr);
  assert.equal(b.stderr, "isboot: --takeover needs --device /dev/nbdN (the device to take over)\n");
});

Deno.test("takeover: a daemon that exited counts as gone, a zombie too, a live one not", async () => {
  assert.equal(processGone(Deno.pid), false);
  // The backgrounded sleep outlives nobody: its parent execs a sleep that never reaps it.
  const child = new Deno.Command("sh", {
    args: ["-c", "sleep 0.1 & echo $!; exec sleep 3"],
    stdout: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const zombie = Number((await reader.read()).value?.trim());
  await new Promise((r) => setTimeout(r, 600));
  assert.equal(processGone(zombie), true, "zombie");
  assert.equal(processGone(child.pid), false, "live");
  child.kill("SIGKILL");
  await child.status;
  await reader.cancel();
  assert.equal(processGone(child.pid), true, "reaped");
});
