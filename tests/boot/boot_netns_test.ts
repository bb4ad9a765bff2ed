/**
 * `isboot boot --foreground` for real, as far as this host's kernel allows:
 * in a network namespace with a veth link (MAC from the iBFT) and its own
 * tgtd, from an iBFT table made with `isboot ibft encode` out of a real iPXE
 * table. The network, the hand-off files and the CHAP login are real; the
 * host kernel has no nbd driver, so the run ends at the attach with a
 * one-line error (the VM tests in tests/e2e do the attach and the rest).
 */
import assert from "node:assert/strict";
import { isbootCommand, runCli } from "../helpers/cli.ts";
import { NetNs } from "../vm/lib.ts";
import type { Tgtd } from "../../peers/tgtd.ts";
import { startTgtd } from "../e2e/lib.ts";

const FIX = new URL("../fixtures/", import.meta.url).pathname;
const dec = new TextDecoder();

async function sh(cmd: string, args: string[]): Promise<string> {
  const o = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!o.success) throw new Error(`${cmd} ${args.join(" ")}: ${dec.decode(o.stderr)}`);
  return dec.decode(o.stdout);
}

async function scenario(secret: string, foreground = true) {
  const dir = await Deno.makeTempDir({ prefix: "isboot-bootns-" });
  const ns = await NetNs.create();
  let tgtd: Tgtd | undefined;
  try {
    // The table: iPXE's CHAP table, pointed at this namespace's link and target.
    const shown = await runCli([
      "ibft",
      "--json",
      "--show-secrets",
      "--source",
      `${FIX}ibft/ipxe-bios-chap.bin`,
    ]);
    assert.equal(shown.code, 0, shown.stderr);
    const model = JSON.parse(shown.stdout);
    Object.assign(model.nics[0], {
      mac: "02:00:5e:20:00:01",
      ip: "192.0.2.10",
      prefixLength: 24,
      gateway: "192.0.2.1",
      primaryDns: "192.0.2.53",
    });
    Object.assign(model.targets[0], {
      ip: "127.0.0.1",
      port: 3260,
      name: "iqn.2026-11.test:bootns",
      chapName: "bootns-user",
      chapSecret: secret,
    });
    await Deno.writeTextFile(`${dir}/ibft.json`, JSON.stringify(model));
    const enc = await runCli(["ibft", "encode", `${dir}/ibft.json`, "--output", `${dir}/ibft.bin`]);
    assert.equal(enc.code, 0, enc.stderr);
    await Deno.writeTextFile(
      `${dir}/cmdline`,
      // isboot.poll_us=0: the boot also works with the reactor never busy-polling
      "root=/dev/nbd0p1 rd.iscsi.firmware ip=ibft isboot.timeout=20 isboot.link_timeout=5 isboot.poll_us=0\n",
    );

    tgtd = await startTgtd(ns);
    const disk = `${dir}/disk.img`;
    const f = await Deno.open(disk, { write: true, create: true });
    await f.truncate(8 << 20);
    f.close();
    const tid = await tgtd.createTarget("iqn.2026-11.test:bootns");
    await tgtd.addLun(tid, { lun: 1, path: disk });
    await tgtd.addChap(tid, { user: "bootns-user", secret: "bootns-secret1" });
    await sh("ip", [
      "-n",
      ns.name,
      "link",
      "add",
      "boot0",
      "address",
      "02:00:5e:20:00:01",
      "type",
      "veth",
      "peer",
      "name",
      "sw0",
    ]);
    await sh("ip", ["-n", ns.name, "link", "set", "sw0", "up"]);

    const { cmd, pre } = isbootCommand();
    const out = await ns.command(cmd, [
      ...pre,
      "boot",
      ...(foreground ? ["--foreground"] : []),
      "--source",
      `${dir}/ibft.bin`,
      "--cmdline",
      `${dir}/cmdline`,
      "--root",
      `${dir}/root`,
    ], { stdout: "piped", stderr: "piped" }).output();
    const addr = await sh("ip", ["-n", ns.name, "-4", "-o", "addr", "show", "boot0"]);
    const route = await sh("ip", ["-n", ns.name, "-4", "route", "show", "default"]);
    return { code: out.code, stderr: dec.decode(out.stderr), addr, route, dir };
  } finally {
    await tgtd?.stop();
    await ns.delete();
    // Keep dir for the caller's file checks; removed there.
  }
}

Deno.test({
  name:
    "boot --foreground in a netns: iBFT NIC configured, hand-off written, CHAP login to tgtd, then attach needs the nbd driver",
  sanitizeResources: false,
  fn: async () => {
    const r = await scenario("bootns-secret1");
    try {
      const why = `\n${r.stderr}`;
      assert.match(
        r.stderr,
        /isboot: iBFT target 0: iqn\.2026-11\.test:bootns LUN 1 at 127\.0\.0\.1:3260, CHAP/,
        why,
      );
      assert.match(
        r.stderr,
        /isboot: boot0 02:00:5e:20:00:01: 192\.0\.2\.10\/24 via 192\.0\.2\.1/,
        why,
      );
      assert.match(
        r.stderr,
        /isboot: logged in to iBFT target 0 \(iqn\.2026-11\.test:bootns at 127\.0\.0\.1:3260\)/,
        why,
      );
      assert.doesNotMatch(r.stderr, /bootns-secret1/, "secret in the log");
      assert.match(r.addr, /inet 192\.0\.2\.10\/24/);
      assert.match(r.route, /default via 192\.0\.2\.1 dev boot0 proto dhcp/);
      assert.match(
        await Deno.readTextFile(`${r.dir}/root/etc/resolv.conf`),
        /^nameserver 192\.0\.2\.53$/m,
      );
      assert.match(await Deno.readTextFile(`${r.dir}/root/run/net-boot0.conf`), /^PROTO=dhcp$/m);
      // This host has no nbd driver: the attach is the step that fails, in one line.
      const nbdMissing = !(await Deno.stat("/sys/module/nbd").then(() => true, () => false));
      if (nbdMissing) {
        assert.equal(r.code, 1, why);
        assert.match(r.stderr.trim().split("\n").at(-1)!, /^isboot: .*nbd/, why);
      }
    } finally {
      await Deno.remove(r.dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "boot --foreground in a netns: a wrong CHAP secret is exit 4, not retried, secret not shown",
  sanitizeResources: false,
  fn: async () => {
    const r = await scenario("wrong-secret-77");
    try {
      assert.equal(r.code, 4, r.stderr);
      assert.match(r.stderr, /not retried: fix the CHAP settings/);
      assert.match(
        r.stderr.trim().split("\n").at(-1)!,
        /^isboot: every target refused authentication/,
      );
      assert.doesNotMatch(r.stderr, /wrong-secret-77/);
    } finally {
      await Deno.remove(r.dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "boot (launcher + @isboot daemon) in a netns: the daemon's FAIL reaches the launcher's exit status",
  sanitizeResources: false,
  ignore: await Deno.stat("/sys/module/nbd").then(() => true, () => false),
  fn: async () => {
    const r = await scenario("bootns-secret1", false);
    try {
      // The daemon (spawned, IO_FLUSHER, maybe re-exec'd) logs in, fails at the attach
      // (no nbd driver here), says FAIL 1; the launcher exits 1.
      assert.match(r.stderr, /isboot: logged in to iBFT target 0/, r.stderr);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /^isboot: .*nbd/m, r.stderr);
      assert.doesNotMatch(r.stderr, /the daemon exited .* before the device was ready/, r.stderr);
    } finally {
      await Deno.remove(r.dir, { recursive: true });
    }
  },
});
