/**
 * `isboot boot --foreground` from DHCP, as far as this host's kernel allows:
 * no iBFT, `ip=dhcp netroot=dhcp` on the command line; dnsmasq (in a
 * namespace of its own, tests/net/dnsmasq.ts) leases the address and hands
 * out the root path (option 17, with CHAP credentials in it); the target is
 * a tgtd in the client's namespace. The lease, the network, the hand-off
 * files and the CHAP login are real; the host kernel has no nbd driver, so
 * the run ends at the attach with a one-line error (a VM boot does the rest).
 */
import assert from "node:assert/strict";
import { isbootCommand, runCommand } from "../helpers/cli.ts";
import { NetNs } from "../vm/lib.ts";
import type { Tgtd } from "../../peers/tgtd.ts";
import { startTgtd } from "../e2e/lib.ts";
import { withSegment } from "../net/dnsmasq.ts";

const dec = new TextDecoder();
// Network namespaces need root; dnsmasq comes from tests/deps/net.apt (make test-deps).
const enabled = Deno.uid?.() === 0;
const IQN = "iqn.2026-12.test:dhcp-boot";
const SECRET = "dhcp-boot-secret9";

Deno.test({
  name:
    "boot --foreground from DHCP in a netns: lease from dnsmasq, target and CHAP from option 17, login to tgtd, then attach needs the nbd driver",
  ignore: !enabled,
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "isboot-bootdhcp-" });
    const ns = await NetNs.create();
    let tgtd: Tgtd | undefined;
    try {
      tgtd = await startTgtd(ns);
      const disk = `${dir}/disk.img`;
      await Deno.writeFile(disk, new Uint8Array(0));
      await Deno.truncate(disk, 8 << 20);
      const tid = await tgtd.createTarget(IQN);
      await tgtd.addLun(tid, { lun: 1, path: disk });
      await tgtd.addChap(tid, { user: "dhcp-user", secret: SECRET });
      await Deno.writeTextFile(
        `${dir}/cmdline`,
        `root=/dev/nbd0p1 ip=dhcp netroot=dhcp rd.iscsi.initiator=iqn.2026-12.test:dhcp-client ` +
          `isboot.timeout=30 isboot.link_timeout=5\n`,
      );
      await withSegment(async (s) => {
        await s.client("02:00:5e:20:00:09", ns.name, "boot0");
        await s.startDnsmasq(
          "10.9.0.50,10.9.0.59,255.255.255.0,2m",
          [],
          `iscsi:dhcp-user:${SECRET}@127.0.0.1::${tgtd!.portal.split(":").pop()}:1:${IQN}`,
        );
        const { cmd, pre } = isbootCommand();
        const out = await ns.command(cmd, [
          ...pre,
          "boot",
          "--foreground",
          "--cmdline",
          `${dir}/cmdline`,
          "--root",
          `${dir}/root`,
        ], { stdout: "piped", stderr: "piped" }).output();
        const stderr = dec.decode(out.stderr);
        const why = `\n${stderr}`;
        assert.match(
          stderr,
          /network from DHCP on any interface with carrier; target from its root path/,
          why,
        );
        const m = /isboot: boot0: DHCP lease (10\.9\.0\.5\d)\/24 from 10\.9\.0\.1, 120 s/.exec(
          stderr,
        );
        assert.ok(m, `no lease line${why}`);
        assert.match(
          stderr,
          new RegExp(`isboot: logged in to DHCP root path \\(${IQN} at 127\\.0\\.0\\.1:\\d+\\)`),
          why,
        );
        assert.doesNotMatch(stderr, new RegExp(SECRET), "secret in the log");
        const addr = await runCommand("ip", ["-n", ns.name, "-4", "-o", "addr", "show", "boot0"]);
        assert.match(addr.stdout, new RegExp(`inet ${m![1].replace(/\./g, "\\.")}/24`));
        const route = await runCommand("ip", ["-n", ns.name, "-4", "route", "show", "default"]);
        assert.match(route.stdout, /default via 10\.9\.0\.1 dev boot0 proto dhcp/);
        assert.match(
          await Deno.readTextFile(`${dir}/root/etc/resolv.conf`),
          /^nameserver 10\.9\.0\.53$/m,
        );
        assert.match(await Deno.readTextFile(`${dir}/root/run/net-boot0.conf`), /^PROTO=dhcp$/m);
        // The server has the lease for the NIC's MAC.
        assert.match(await Deno.readTextFile(`${s.dir}/leases`), /02:00:5e:20:00:09 10\.9\.0\.5\d/);
        const nbdMissing = !(await Deno.stat("/sys/module/nbd").then(() => true, () => false));
        if (nbdMissing) {
          assert.equal(out.code, 1, why);
          assert.match(stderr.trim().split("\n").at(-1)!, /^isboot: .*nbd/, why);
        }
      });
    } finally {
      await tgtd?.stop();
      await ns.delete();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
