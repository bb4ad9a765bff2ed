/**
 * A boot with no iBFT at all: qemu loads the kernel and initramfs itself
 * (no iPXE, so no firmware table), the kernel command line says
 * `ip=dhcp netroot=dhcp`, and dnsmasq answers on the guest's network with
 * the address and the root path (option 17, CHAP credentials in it).
 * qemu's user network cannot send option 17, so the guest's NIC is a tap
 * on a bridge inside the private network namespace, where dnsmasq, tgtd
 * (behind a relay on the bridge address) and nothing else live.
 *
 * The lease is short (T1 15 s): a unit in the root waits until `isboot
 * status` shows the daemon's first renewal. Before it, the hostile workload
 * of the network cases (tests/e2e/workload.ts): fsync'd writes while a unit
 * flushes the boot NIC's address and routes and sets it down, three times.
 * Then the usual check unit (marker, a forced reconnect, poweroff) and
 * e2fsck on the host.
 */
import assert from "node:assert/strict";
import { ensureKernel, isbootBuildDir, NetNs, runVm } from "../vm/lib.ts";
import type { Tgtd } from "../../peers/tgtd.ts";
import { Collected } from "../net/netns.ts";
import { dnsmasqArgs } from "../net/dnsmasq.ts";
import { runCommand } from "../helpers/cli.ts";
import {
  buildInitrd,
  cutRelay,
  E2E_DIR,
  ensureBaseImage,
  INITIATOR_IQN,
  PART_OFFSET,
  ROOT_UUID,
  type RootVariant,
  startTgtd,
  TARGET_IQN,
} from "./lib.ts";
import { HOSTILE_ACTION, IFUPDOWN, variant } from "./workload.ts";

const enabled = Deno.env.get("ISBOOT_E2E") !== "0";
const CHAP_USER = "dhcp-boot-user";
const CHAP_SECRET = "dhcp-e2e-secret42";
const RELAY_PORT = 3261;
const ADDRESS = "10.0.2.15";

/** Waits (up to 120 s) for the daemon's first renewal, then reports the lease. */
const LEASE_SCRIPT = `#!/bin/sh
say() { echo "ISBOOT-VM: $*" > /dev/ttyS0; }
i=0
until [ "$(isboot status --json | sed -n 's/.*"renewals": *\\([0-9]*\\).*/\\1/p' | head -1)" -ge 1 ] 2>/dev/null || [ $i -ge 120 ]; do
  sleep 1; i=$((i + 1))
done
isboot status > /run/isboot-e2e-status 2>&1
sed 's/^/ISBOOT-STATUS: /' /run/isboot-e2e-status > /dev/ttyS0
say lease_state=$(isboot status --json | sed -n 's/.*"state": *"\\([^"]*\\)".*/\\1/p' | head -1)
say lease_renewals=$(isboot status --json | sed -n 's/.*"renewals": *\\([0-9]*\\).*/\\1/p' | head -1)
say lease_addr=$(ip -4 -o addr show 2>/dev/null | grep -o 'inet [0-9.]*' | grep -v 127.0.0.1 | head -1 | cut -d' ' -f2)
`;

/**
 * The network cases' ifupdown root (no stanza for the NIC: nothing in it
 * renews the lease but isboot), with the hostile workload (the guard puts
 * the lease's address back) and the unit that waits for a renewal.
 */
const ROOT: RootVariant = variant(
  "net-dhcp",
  IFUPDOWN,
  HOSTILE_ACTION,
  {
    "/usr/local/sbin/isboot-e2e-lease": { text: LEASE_SCRIPT, mode: 0o755 },
    "/etc/systemd/system/isboot-e2e-lease.service":
      "[Unit]\nDescription=isboot e2e: wait for a DHCP renewal\nAfter=isboot-e2e-work.service\nBefore=isboot-e2e.service\n[Service]\nType=oneshot\nExecStart=/usr/local/sbin/isboot-e2e-lease\n[Install]\nWantedBy=multi-user.target\n",
  },
  {
    "/etc/systemd/system/multi-user.target.wants/isboot-e2e-lease.service":
      "/etc/systemd/system/isboot-e2e-lease.service",
  },
);

async function sh(ns: NetNs, cmd: string, args: string[]): Promise<void> {
  const o = await ns.command(cmd, args, { stdout: "piped", stderr: "piped" }).output();
  if (!o.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(o.stderr)}`);
  }
}

Deno.test({
  name:
    "e2e DHCP boot, harness image: no iBFT, ip=dhcp netroot=dhcp from dnsmasq (root path with CHAP), lease renewed by the daemon, hostile flushes undone by the guard",
  ignore: !enabled,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const kernel = await ensureKernel();
    const isboot = await isbootBuildDir();
    await Deno.mkdir(E2E_DIR, { recursive: true });
    const dir = await Deno.makeTempDir({ dir: E2E_DIR, prefix: "run-dhcp-" });
    const ns = await NetNs.create();
    let tgtd: Tgtd | undefined;
    const children: Deno.ChildProcess[] = [];
    try {
      const base = await ensureBaseImage(ROOT, isboot.dir);
      const initrd = await buildInitrd("initramfs-tools", kernel, isboot.dir);
      const disk = `${dir}/disk.img`;
      const cp = await runCommand("cp", ["--sparse=always", base, disk]);
      assert.equal(cp.code, 0, cp.stderr);

      tgtd = await startTgtd(ns);
      const tid = await tgtd.createTarget(TARGET_IQN);
      await tgtd.addLun(tid, { lun: 1, path: disk });
      await tgtd.addChap(tid, { user: CHAP_USER, secret: CHAP_SECRET });
      // The guest's segment: tap0 (qemu's NIC) on br0, 10.0.2.2 the server.
      await sh(ns, "ip", ["tuntap", "add", "tap0", "mode", "tap"]);
      await sh(ns, "ip", ["link", "add", "br0", "type", "bridge"]);
      await sh(ns, "ip", ["link", "set", "tap0", "master", "br0", "up"]);
      await sh(ns, "ip", ["addr", "add", "10.0.2.2/24", "dev", "br0"]);
      await sh(ns, "ip", ["link", "set", "br0", "up"]);
      // tgtd listens on the namespace's loopback; a relay on the bridge reaches it.
      children.push(
        ns.command("busybox", [
          "nc",
          "-ll",
          "-p",
          String(RELAY_PORT),
          "-e",
          "/bin/busybox",
          "nc",
          "127.0.0.1",
          String(tgtd.port),
        ], { stdin: "null", stdout: "null", stderr: "null" }).spawn(),
      );
      const dnsmasq = ns.command(
        "dnsmasq",
        dnsmasqArgs({
          iface: "br0",
          leaseFile: `${dir}/leases`,
          range: `${ADDRESS},${ADDRESS},255.255.255.0,2m`,
          rootPath: `iscsi:${CHAP_USER}:${CHAP_SECRET}@10.0.2.2::${RELAY_PORT}:1:${TARGET_IQN}`,
          options: ["option:router,10.0.2.2", "option:T1,15", "option:T2,40"],
        }),
        { stdin: "null", stdout: "null", stderr: "piped" },
      ).spawn();
      children.push(dnsmasq);
      const dlog = new Collected(dnsmasq.stderr);
      await dlog.until(/DHCP, IP range/, 10_000);

      const cuts: Promise<number>[] = [];
      const vm = await runVm({
        kernel,
        initrd,
        netns: ns,
        nic: false,
        memoryMiB: 2048,
        timeoutMs: 480_000,
        serialLog: `${dir}/serial.log`,
        append: [
          `root=UUID=${ROOT_UUID}`,
          "rw",
          "ip=dhcp",
          "netroot=dhcp",
          `rd.iscsi.initiator=${INITIATOR_IQN}`,
          "isboot.timeout=120",
          "systemd.show_status=1",
        ].join(" "),
        onLine: (l) => {
          // The check unit's forced reconnect: end the relayed connection.
          if (l.includes("ISBOOT-VM: reconnect=now") && tgtd) cuts.push(cutRelay(tgtd.port));
        },
        qemuArgs: [
          "-netdev",
          "tap,id=n0,ifname=tap0,script=no,downscript=no",
          "-device",
          "virtio-net-pci,netdev=n0",
        ],
      });
      await Promise.all(cuts);
      await tgtd.stop();
      tgtd = undefined;
      const why = `\n--- serial tail ---\n${vm.tail}\n--- dnsmasq ---\n${dlog.text.slice(-3000)}`;
      assert.equal(vm.timedOut, false, `VM timed out${why}`);
      assert.equal(vm.result, "PASS", `guest: ${vm.reason}${why}`);
      assert.equal(vm.kv.get("root"), "/dev/nbd0p1", why);
      assert.match(
        vm.serial,
        /network from DHCP on any interface with carrier; target from its root path/,
        why,
      );
      assert.match(
        vm.serial,
        new RegExp(`DHCP lease ${ADDRESS.replace(/\./g, "\\.")}/24 from 10\\.0\\.2\\.2, 120 s`),
        why,
      );
      assert.match(vm.serial, /logged in to DHCP root path/, why);
      assert.doesNotMatch(
        vm.serial,
        new RegExp(CHAP_SECRET),
        "the CHAP secret reached the console",
      );
      assert.equal(vm.kv.get("lease_addr"), ADDRESS, why);
      assert.ok(
        Number(vm.kv.get("lease_renewals")) >= 1,
        `renewals ${vm.kv.get("lease_renewals")}${why}`,
      );
      assert.equal(vm.kv.get("lease_state"), "bound", why);
      // dnsmasq acknowledged the boot's lease and at least one renewal.
      const acks = dlog.text.match(
        new RegExp(`DHCPACK\\(br0\\) ${ADDRESS.replace(/\./g, "\\.")}`, "g"),
      );
      assert.ok(acks && acks.length >= 2, `dnsmasq ACKs: ${acks?.length ?? 0}${why}`);
      assert.ok(Number(vm.kv.get("journal_recovered")) >= 1, `no recovery after the cut${why}`);
      // The hostile unit flushed the lease's address three times under the
      // writes; the guard put it back each time, and no write failed.
      assert.equal(vm.kv.get("hostile_round"), "3", why);
      assert.match(vm.serial, /boot NIC guard: ens3: .*(added it back|set it up)/, why);
      assert.ok(Number(vm.kv.get("restores")) > 0, `isboot status: restores${why}`);
      assert.equal(vm.kv.get("write_failed"), undefined, `a write failed${why}`);
      assert.ok(Number(vm.kv.get("writes")) > 0, why);
      assert.equal(vm.kv.get("addr_after"), `${ADDRESS}/24`, why);
      for (const bad of [/NOP-Out: no answer/, /ENETUNREACH/, /blocked for more than/]) {
        assert.doesNotMatch(vm.serial, bad, why);
      }
      assert.match(vm.serial, /reboot: Power down/, `poweroff did not complete${why}`);
      const img = `${disk}?offset=${PART_OFFSET}`;
      const marker = await runCommand("debugfs", ["-R", "cat /isboot-e2e.marker", img]);
      assert.match(marker.stdout, /isboot e2e marker/, why);
      const fsck = await runCommand("e2fsck", ["-fn", img]);
      assert.equal(fsck.code, 0, `e2fsck -fn: ${fsck.stdout}${fsck.stderr}`);
    } finally {
      for (const c of children) {
        try {
          c.kill("SIGTERM");
        } catch { /* gone */ }
        await c.status;
      }
      await tgtd?.stop();
      await ns.delete();
      await isboot.cleanup();
      if (Deno.env.get("ISBOOT_E2E_KEEP") !== "1") {
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      }
    }
  },
});
