/**
 * A DHCP boot over a VLAN, in Debian's kernel (this host's kernel has no
 * 8021q): a VM (tests/vm/lib.ts) with two virtio NICs on one qemu hub, wired
 * to each other and to nothing else. eth1 plays the switch port and the
 * server: VLAN 7 on it (eth1.7, 10.9.7.1/24) with dnsmasq answering there,
 * and only there. `isboot boot --foreground` with
 * `vlan=eth0.7:eth0 ip=eth0.7:dhcp netroot=dhcp` must make eth0.7, lease an
 * address over it, configure it, and then fail at the login (no target is
 * there) with one line.
 */
import assert from "node:assert/strict";
import { buildInitramfs, ensureKernel, NetNs, runDir, runVm, sharedLibraries } from "../vm/lib.ts";
import { dnsmasqArgs } from "./dnsmasq.ts";

const DNSMASQ = "/usr/sbin/dnsmasq";
const IQN = "iqn.2026-12.test:dhcp-vlan";

Deno.test({
  name:
    "net VM: a DHCP boot over a VLAN: vlan=eth0.7:eth0 ip=eth0.7:dhcp makes eth0.7 and leases on it from dnsmasq on VLAN 7 (Debian kernel)",
  ignore: Deno.env.get("ISBOOT_VM") === "0",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const kernel = await ensureKernel();
    const dir = await runDir("dhcpvlan-");
    const ns = await NetNs.create();
    try {
      const libs = await sharedLibraries(DNSMASQ);
      const dnsmasq = [
        "/usr/sbin/dnsmasq",
        "--user=root",
        "--pid-file=",
        ...dnsmasqArgs({
          iface: "eth1.7",
          leaseFile: "/tmp/leases",
          range: "10.9.7.50,10.9.7.59,255.255.255.0,2m",
          rootPath: `iscsi:10.9.7.1::3260:1:${IQN}`,
          options: ["option:router,10.9.7.1"],
        }),
      ].join(" ");
      const cmdline = "vlan=eth0.7:eth0 ip=eth0.7:dhcp netroot=dhcp " +
        "rd.iscsi.initiator=iqn.2026-12.test:vlan-client isboot.timeout=20 isboot.link_timeout=10";
      const initrd = await buildInitramfs({
        kernel,
        modules: ["virtio_pci", "virtio_net", "8021q"],
        loadModules: ["virtio_pci", "virtio_net", "8021q"],
        isboot: true,
        files: {
          [DNSMASQ]: { from: DNSMASQ, mode: 0o755 },
          ...Object.fromEntries(libs.map((l) => [l, { from: l, mode: 0o755 }])),
          "/cmdline": `${cmdline}\n`,
          // dnsmasq looks its user up even as root.
          "/etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
          "/etc/group": "root:x:0:\n",
        },
        output: `${dir}/initrd.cpio`,
        init: `
ip link set lo up
ip link set eth1 up
ip link add link eth1 name eth1.7 type vlan id 7
ip addr add 10.9.7.1/24 dev eth1.7
ip link set eth1.7 up
mkdir -p /tmp /var/lib/misc
${dnsmasq} > /tmp/dnsmasq.log 2>&1 &
sleep 1
isboot boot --foreground --cmdline /cmdline --root /tmp/root > /tmp/boot.out 2>&1
vm_kv boot_rc "$?"
sed 's/^/ISBOOT-BOOT: /' /tmp/boot.out
sed 's/^/ISBOOT-DNSMASQ: /' /tmp/dnsmasq.log | grep -v 'sent size\|requested options' | head -30
vm_kv vid "$(sed -n 's/.*VID: \\([0-9]*\\).*/\\1/p' /proc/net/vlan/eth0.7 2>/dev/null)"
vm_kv addr "$(ip -4 addr show dev eth0.7 2>/dev/null | sed -n 's/.*inet \\([0-9./]*\\).*/\\1/p')"
vm_kv eth0_addr "$(ip -4 addr show dev eth0 2>/dev/null | sed -n 's/.*inet \\([0-9./]*\\).*/\\1/p')"
vm_kv route "$(ip route show default 2>/dev/null | tr -s ' ')"
vm_pass
`,
      });
      const r = await runVm({
        kernel,
        initrd,
        netns: ns,
        nic: false,
        timeoutMs: 180_000,
        qemuArgs: [
          "-netdev",
          "hubport,id=p0,hubid=0",
          "-device",
          "virtio-net-pci,netdev=p0,mac=52:54:00:12:34:70",
          "-netdev",
          "hubport,id=p1,hubid=0",
          "-device",
          "virtio-net-pci,netdev=p1,mac=52:54:00:12:34:71",
        ],
      });
      const why = `\n${r.tail}`;
      assert.equal(r.result, "PASS", why);
      assert.equal(r.kv.get("vid"), "7", why);
      assert.match(r.kv.get("addr") ?? "", /^10\.9\.7\.5\d\/24$/, why);
      assert.equal(r.kv.get("eth0_addr") ?? "", "", `the lease landed on eth0 itself${why}`);
      assert.match(r.kv.get("route") ?? "", /^default via 10\.9\.7\.1 dev eth0\.7\b/, why);
      assert.match(
        r.serial,
        /ISBOOT-BOOT: isboot: eth0\.7: DHCP lease 10\.9\.7\.5\d\/24 from 10\.9\.7\.1, 120 s/,
        why,
      );
      assert.match(
        r.serial,
        /ISBOOT-BOOT: isboot: eth0\.7 \(VLAN 7 on eth0\) 52:54:00:12:34:70: 10\.9\.7\.5\d\/24/,
        why,
      );
      assert.match(
        r.serial,
        /ISBOOT-DNSMASQ: .*DHCPACK\(eth1\.7\) 10\.9\.7\.5\d 52:54:00:12:34:70/,
        why,
      );
      // No target answers on 10.9.7.1:3260: exit 1, last line says so.
      assert.equal(r.kv.get("boot_rc"), "1", why);
      assert.match(
        r.serial,
        /ISBOOT-BOOT: isboot: no target answered within the boot timeout/,
        why,
      );
    } finally {
      await ns.delete();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
