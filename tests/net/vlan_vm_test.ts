/**
 * The VLAN path for real, in Debian's kernel (this host's kernel has no
 * 8021q): a VM (tests/vm/lib.ts) runs configureNic from a bundle of
 * tests/net/configure_helper.ts on its virtio NIC (found by MAC) with VLAN
 * 100, and checks with the kernel's own views (/proc/net/vlan, ip) that
 * eth0.100 exists with the address and the default route.
 */
import assert from "node:assert/strict";
import { buildInitramfs, ensureKernel, NetNs, runDir, runVm } from "../vm/lib.ts";

const HELPER = new URL("./configure_helper.ts", import.meta.url).pathname;

Deno.test({
  name: "net VM: VLAN from the iBFT becomes eth0.100 with address and route (Debian kernel)",
  ignore: Deno.env.get("ISBOOT_VM") === "0",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const kernel = await ensureKernel();
    const dir = await runDir("netvlan-");
    const ns = await NetNs.create();
    try {
      const bundle = `${dir}/helper.js`;
      const b = await new Deno.Command(Deno.execPath(), {
        args: ["bundle", "--quiet", "--platform", "deno", "--output", bundle, HELPER],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(b.code, 0, new TextDecoder().decode(b.stderr));
      const input = JSON.stringify({
        mac: "52:54:00:12:34:56",
        vlan: 100,
        address: "192.0.2.20",
        prefixLength: 24,
        gateway: "192.0.2.1",
        dns: ["192.0.2.53"],
        hostname: "vlanhost",
        origin: "static",
        linkTimeoutMs: 10000,
        outDir: "/tmp/out",
      });
      const initrd = await buildInitramfs({
        kernel,
        modules: ["virtio_pci", "virtio_net", "8021q"],
        loadModules: ["virtio_pci", "virtio_net", "8021q"],
        isboot: true,
        files: { "/helper.js": { from: bundle }, "/input.json": input },
        output: `${dir}/initrd.cpio`,
        init: `
export DENO_DIR=/tmp/deno DENO_NO_UPDATE_CHECK=1
if /usr/lib/isboot/deno run -A --quiet --no-config /helper.js "$(cat /input.json)"; then vm_kv helper ok; else vm_kv helper "exit $?"; fi
vm_kv vid "$(sed -n 's/.*VID: \\([0-9]*\\).*/\\1/p' /proc/net/vlan/eth0.100 2>/dev/null)"
vm_kv addr "$(ip -4 addr show dev eth0.100 2>/dev/null | sed -n 's/.*inet \\([0-9./]*\\).*/\\1/p')"
vm_kv route "$(ip route show default 2>/dev/null | tr -s ' ')"
vm_kv netdev "$(sed -n 's/^Name=//p' /tmp/out/run/systemd/network/0-isboot-eth0.network | tr '\\n' ' ')"
vm_kv parent_vlan "$(sed -n 's/^VLAN=//p' /tmp/out/run/systemd/network/0-isboot-eth0.network)"
vm_pass
vm_end
`,
      });
      const r = await runVm({ kernel, initrd, netns: ns, timeoutMs: 150_000 });
      const why = `\n${r.tail}`;
      assert.equal(r.result, "PASS", why);
      assert.equal(r.kv.get("helper"), "ok", why);
      assert.equal(r.kv.get("vid"), "100", why);
      assert.equal(r.kv.get("addr"), "192.0.2.20/24", why);
      assert.match(r.kv.get("route") ?? "", /^default via 192\.0\.2\.1 dev eth0\.100/, why);
      assert.equal(r.kv.get("parent_vlan"), "eth0.100", why);
    } finally {
      await ns.delete();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
