/**
 * initramfs-hook/modprobe.d/isboot.conf: the install line that keeps
 * iscsi_ibft unloaded while isboot serves the boot target. Run here with the
 * real modprobe in dry-run mode (it parses the file and prints the command it
 * would run) and the command itself through sh, with /run/isboot/boot.json and
 * /sbin/modprobe pointed at a temp dir. The boot with open-iscsi in the root
 * is the VM test of the same line.
 */
import assert from "node:assert/strict";
import { ROOT } from "../helpers/cli.ts";

const CONF = `${ROOT}initramfs-hook/modprobe.d/isboot.conf`;

async function sh(script: string): Promise<{ code: number; stderr: string }> {
  const o = await new Deno.Command("sh", { args: ["-c", script], stderr: "piped", stdout: "null" })
    .output();
  return { code: o.code, stderr: new TextDecoder().decode(o.stderr) };
}

Deno.test("modprobe.d: modprobe takes the isboot install line for iscsi_ibft", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.copyFile(CONF, `${dir}/isboot.conf`);
    const o = await new Deno.Command("modprobe", {
      args: ["-C", dir, "--dry-run", "--show-depends", "iscsi_ibft"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const out = new TextDecoder().decode(o.stdout) + new TextDecoder().decode(o.stderr);
    // With the module in this kernel's tree modprobe prints the install command;
    // without it, the module is unknown. Either way the file must parse.
    assert.doesNotMatch(out, /ignoring bad line|unknown command/i, out);
    if (o.success) assert.match(out, /^install .*\/run\/isboot\/boot\.json/m, out);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("modprobe.d: the install command refuses while boot.json exists, loads otherwise", async () => {
  const line = (await Deno.readTextFile(CONF)).split("\n").find((l) => l.startsWith("install "));
  assert.ok(line, "no install line");
  const cmd = line.replace(/^install iscsi_ibft /, "");
  const dir = await Deno.makeTempDir();
  try {
    // A stand-in modprobe that records its arguments.
    await Deno.writeTextFile(`${dir}/modprobe`, `#!/bin/sh\necho "$*" > ${dir}/called\n`);
    await Deno.chmod(`${dir}/modprobe`, 0o755);
    const script = cmd
      .replaceAll("/run/isboot/boot.json", `${dir}/boot.json`)
      .replaceAll("/sbin/modprobe", `${dir}/modprobe`)
      .replaceAll("$CMDLINE_OPTS", "");
    assert.notEqual(script, cmd);
    // Not served by isboot: the real load runs, bypassing this install line.
    let r = await sh(script);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await Deno.readTextFile(`${dir}/called`)).trim(), "--ignore-install iscsi_ibft");
    await Deno.remove(`${dir}/called`);
    // Served: refused with one line, nothing loaded.
    await Deno.writeTextFile(`${dir}/boot.json`, "{}");
    r = await sh(script);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /^isboot: not loading iscsi_ibft: isboot serves the boot target[^\n]*\n$/,
    );
    await assert.rejects(Deno.stat(`${dir}/called`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
