/** `isboot boot` as a user runs it: --plan over real iPXE tables, nothing-to-do, bad input. */
import assert from "node:assert/strict";
import { runCli } from "../helpers/cli.ts";

const FIX = new URL("../fixtures/", import.meta.url).pathname;

async function withCmdline<T>(text: string, fn: (path: string) => Promise<T>): Promise<T> {
  const f = await Deno.makeTempFile({ prefix: "isboot-cmdline-" });
  try {
    await Deno.writeTextFile(f, text + "\n");
    return await fn(f);
  } finally {
    await Deno.remove(f);
  }
}

Deno.test("boot --plan: prints the plan in a few lines, no secrets, exit 0", async () => {
  await withCmdline("BOOT_IMAGE=/vmlinuz root=UUID=1 ip=ibft rd.iscsi.firmware", async (c) => {
    const r = await runCli([
      "boot",
      "--plan",
      "--cmdline",
      c,
      "--source",
      `${FIX}ibft/ipxe-bios-mutual-chap.bin`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stderr.trim().split("\n");
    assert.ok(lines.length <= 6, r.stderr);
    assert.match(r.stderr, /isboot: nic 0: 52:54:00:12:34:56, 10\.0\.2\.15\/24/);
    assert.match(r.stderr, /isboot: initiator iqn\.2026-11\.test:client\n/);
    assert.match(
      r.stderr,
      /iBFT target 0: iqn\.2026-11\.test:disk1 LUN 1 at 10\.0\.2\.2:3260, mutual CHAP/,
    );
    assert.doesNotMatch(r.stderr + r.stdout, /initsecret1234|targetsecret987/);
  });
});

Deno.test("boot: nothing asked and no iBFT is a quiet exit 0; isboot=off too", async () => {
  await withCmdline("root=/dev/sda1 quiet", async (c) => {
    const r = await runCli(["boot", "--cmdline", c, "--source", "/nonexistent-ibft"]);
    assert.equal(r.code, 1, "an explicit --source that is missing is an error");
    // This host's firmware has no iBFT (no ACPI table, no sysfs, nothing in low memory).
    const none = await runCli(["boot", "--cmdline", c]);
    assert.equal(none.code, 0, none.stderr);
    assert.match(
      none.stderr,
      /no iBFT and no netroot=iscsi: on the kernel command line: nothing to do/,
    );
    const auto = await runCli([
      "boot",
      "--plan",
      "--cmdline",
      c,
      "--source",
      `${FIX}ibft-sysfs/ipxe-bios-plain`,
    ]);
    assert.equal(auto.code, 0, auto.stderr);
  });
  await withCmdline("isboot=off rd.iscsi.firmware", async (c) => {
    const r = await runCli(["boot", "--cmdline", c]);
    assert.equal(r.code, 0);
    assert.match(r.stderr, /isboot=off on the kernel command line: nothing to do/);
  });
});

Deno.test("boot: a bad kernel command line value is one line, exit 3", async () => {
  await withCmdline("rd.iscsi.firmware isboot.timeout=soon", async (c) => {
    const r = await runCli([
      "boot",
      "--plan",
      "--cmdline",
      c,
      "--source",
      `${FIX}ibft/ipxe-bios-plain.bin`,
    ]);
    assert.equal(r.code, 3);
    assert.equal(
      r.stderr,
      "isboot: kernel command line: isboot.timeout=soon: not a number of seconds\n",
    );
  });
});
