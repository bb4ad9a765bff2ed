/** attach/detach/status from the command line on a host without the nbd driver. */
import assert from "node:assert/strict";
import { controlPath, ControlServer } from "../../src/control/control.ts";
import { runCli } from "../helpers/cli.ts";

import { haveNbd } from "../helpers/fs.ts";

Deno.test("cli: attach/detach/status --help and usage errors exit 2 with one line", async () => {
  for (const cmd of ["attach", "detach", "status"]) {
    const h = await runCli([cmd, "--help"]);
    assert.equal(h.code, 0);
    assert.match(h.stdout, new RegExp(`^usage: isboot ${cmd}`));
  }
  for (
    const args of [
      ["attach"],
      ["attach", "memory:1M", "--device", "/dev/sda"],
      ["attach", "memory:1M", "--connections", "0"],
      ["attach", "memory:1M", "--timeout", "-1"],
      ["detach"],
      ["detach", "/dev/loop0"],
      ["status", "extra"],
    ]
  ) {
    const r = await runCli(args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, /^isboot: .+\n$/, args.join(" "));
  }
  // Several kernel sockets cannot hold I/O through a long outage (Linux
  // times each out after 30 s): refused unless I/O errors are accepted.
  const multi = await runCli([
    "attach",
    "iscsi://127.0.0.1:9/iqn.2026-11.test:x/1",
    "--connections",
    "4",
  ]);
  assert.equal(multi.code, 2, multi.stderr);
  assert.match(
    multi.stderr,
    /^isboot: --connections 4 cannot hold I\/O through a target outage.*\n$/,
  );
  const bounded = await runCli([
    "attach",
    "iscsi://127.0.0.1:9/iqn.2026-11.test:x/1",
    "--connections",
    "4",
    "--recovery-timeout",
    "20",
  ]);
  assert.notEqual(bounded.code, 2, `a finite recovery timeout is accepted: ${bounded.stderr}`);
  const bad = await runCli(["attach", "nbd://x"]);
  assert.equal(bad.code, 3);
  assert.match(bad.stderr, /^isboot: target 'nbd:\/\/x': expected/);
});

Deno.test({
  name: "cli: without the nbd driver attach and detach fail with exit 1, status shows nothing",
  ignore: haveNbd,
  async fn() {
    const a = await runCli(["attach", "memory:1M"]);
    assert.equal(a.code, 1, a.stderr);
    assert.equal(a.stdout, "");
    assert.match(a.stderr, /^isboot: modprobe nbd: [^\n]+\n$/);
    const d = await runCli(["detach", "/dev/nbd0"]);
    assert.equal(d.code, 1);
    assert.match(d.stderr, /^isboot: the kernel has no nbd driver/);
    const s = await runCli(["status", "--json"]);
    assert.equal(s.code, 0, s.stderr);
    const doc = JSON.parse(s.stdout);
    assert.deepEqual(doc.devices, []);
    assert.ok(Array.isArray(doc.sessions));
  },
});

Deno.test({
  name:
    "cli: detach asks the serving process first; the boot daemon's refusal stops it, --force does not ask",
  sanitizeResources: false,
  async fn() {
    // A control socket answering like the boot daemon, on a device index no test uses.
    const index = 61;
    const requests: string[] = [];
    const srv = await ControlServer.listen(controlPath(index), (req) => {
      requests.push(req.cmd);
      return req.cmd === "detach"
        ? { reply: { ok: false, error: `/dev/nbd${index} is the root disk; not detaching it` } }
        : { reply: { ok: true } };
    });
    try {
      const d = await runCli(["detach", `/dev/nbd${index}`]);
      assert.equal(d.code, 1, d.stderr);
      assert.equal(
        d.stderr,
        `isboot: /dev/nbd${index}: /dev/nbd${index} is the root disk; not detaching it` +
          ` (isboot detach --force disconnects it anyway)\n`,
      );
      assert.deepEqual(requests, ["detach"]);
      // --force goes to the kernel without asking (here: no nbd driver, or not connected).
      const f = await runCli(["detach", `/dev/nbd${index}`, "--force"]);
      assert.equal(f.code, 1, f.stderr);
      assert.doesNotMatch(f.stderr, /root disk/);
      assert.deepEqual(requests, ["detach"]);
    } finally {
      await srv.close();
    }
  },
});
