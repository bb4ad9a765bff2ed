/**
 * configureNic for real: each test makes a network namespace (`ip netns add`),
 * creates veth links in it with known MACs, runs the configuration inside it
 * (tests/net/configure_helper.ts under `ip netns exec`), and reads the result
 * back with `ip -j`. Nothing leaves the namespace; it is deleted afterwards.
 */
import { assertEquals } from "../helpers/assert.ts";
import assert from "node:assert/strict";
import { sh, spawnInNetns, veth, withNetns } from "./netns.ts";

const HELPER = new URL("./configure_helper.ts", import.meta.url).pathname;
const dec = new TextDecoder();

/** A fresh namespace (netns.ts) and a temporary directory, both removed afterwards. */
async function withNetnsDir(fn: (ns: string, dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "isboot-net-" });
  try {
    await withNetns((ns) => fn(ns, dir));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function runHelper(ns: string, input: Record<string, unknown>) {
  return spawnInNetns(ns, HELPER, input);
}

/** Read a child's stderr as text: wait for a line, then take the rest. */
function lines(stream: ReadableStream<Uint8Array>) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  return {
    async until(re: RegExp, timeoutMs = 30_000): Promise<void> {
      const deadline = Date.now() + timeoutMs;
      while (!re.test(seen)) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${re} in:\n${seen}`);
        const { value, done } = await reader.read();
        if (done) throw new Error(`stderr ended before ${re}:\n${seen}`);
        seen += value;
      }
    },
    async rest(): Promise<string> {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return seen;
        seen += value;
      }
    },
  };
}

// deno-lint-ignore no-explicit-any
type Json = any;
const ipj = async (ns: string, ...args: string[]): Promise<Json> =>
  JSON.parse(await sh("ip", ["-n", ns, "-j", ...args]));

const base = {
  vlan: 0,
  dns: [] as string[],
  hostname: null,
  origin: "static",
  linkTimeoutMs: 5000,
};

Deno.test("net: link found by MAC after it appears late, carrier awaited, address and default route", async () => {
  await withNetnsDir(async (ns, dir) => {
    const child = runHelper(ns, {
      ...base,
      mac: "02:00:5e:10:00:07",
      address: "192.0.2.10",
      prefixLength: 24,
      gateway: "192.0.2.1",
      dns: ["192.0.2.53", "2001:db8::53"],
      hostname: "diskless1",
      linkTimeoutMs: 30_000,
      outDir: dir,
    });
    // The driver is "late": the link appears only once the helper waits for it,
    // and its peer (the switch port) comes up only once it waits for carrier.
    const err = lines(child.stderr);
    await err.until(/waiting for the network interface with MAC 02:00:5e:10:00:07/);
    await veth(ns, "boot0", "02:00:5e:10:00:07", "sw0");
    await err.until(/waiting for carrier on boot0/);
    await sh("ip", ["-n", ns, "link", "set", "sw0", "up"]);
    const [stdout, status] = await Promise.all([new Response(child.stdout).text(), child.status]);
    const stderr = await err.rest();
    assertEquals(status.code, 0, stderr);
    const res = JSON.parse(stdout);
    assertEquals(res.ifname, "boot0");
    assert.match(stderr, /boot0 02:00:5e:10:00:07: 192\.0\.2\.10\/24 via 192\.0\.2\.1/);

    const [link] = await ipj(ns, "link", "show", "boot0");
    assert.ok(link.flags.includes("UP"), JSON.stringify(link.flags));
    const [addr] = await ipj(ns, "-4", "addr", "show", "boot0");
    assertEquals(addr.addr_info.map((a: Json) => `${a.local}/${a.prefixlen}`), ["192.0.2.10/24"]);
    assertEquals(addr.addr_info[0].broadcast, "192.0.2.255");
    const routes = await ipj(ns, "-4", "route", "show", "default");
    assertEquals(routes.map((r: Json) => [r.gateway, r.dev, r.protocol]), [[
      "192.0.2.1",
      "boot0",
      "static",
    ]]);

    assertEquals(
      await Deno.readTextFile(`${dir}/etc/resolv.conf`),
      "# written by isboot from the iBFT\nnameserver 192.0.2.53\nnameserver 2001:db8::53\n",
    );
    assertEquals(await Deno.readTextFile(`${dir}/etc/hostname`), "diskless1\n");
    const conf = await Deno.readTextFile(`${dir}/run/net-boot0.conf`);
    assert.match(conf, /^DEVICE='boot0'$/m);
    assert.match(conf, /^PROTO=none$/m);
    assert.match(conf, /^IPV4NETMASK=255\.255\.255\.0$/m);
    assert.match(conf, /^IPV4GATEWAY=192\.0\.2\.1$/m);
    const networkd = await Deno.readTextFile(`${dir}/run/systemd/network/0-isboot-boot0.network`);
    assert.match(networkd, /^KeepConfiguration=yes$/m);
    assert.match(networkd, /^Address=192\.0\.2\.10\/24$/m);
    const nm = await Deno.readTextFile(`${dir}/run/NetworkManager/conf.d/10-isboot.conf`);
    assert.match(nm, /^unmanaged-devices\+=interface-name:boot0$/m);
  });
});

Deno.test("net: IPv6 from a DHCP-origin NIC, gateway outside the prefix is on-link", async () => {
  await withNetnsDir(async (ns, dir) => {
    await veth(ns, "boot6", "02:00:5e:10:00:08", "sw6");
    await sh("ip", ["-n", ns, "link", "set", "sw6", "up"]);
    const out = await runHelper(ns, {
      ...base,
      origin: "dhcp",
      mac: "02:00:5e:10:00:08",
      address: "2001:db8:1::10",
      prefixLength: 64,
      gateway: "2001:db8:2::1",
      outDir: dir,
    }).output();
    assertEquals(out.code, 0, dec.decode(out.stderr));
    const [addr] = await ipj(ns, "-6", "addr", "show", "boot6", "scope", "global");
    // ip -j lists lifetime-only fragments as separate entries; keep the addresses.
    addr.addr_info = addr.addr_info.filter((a: Json) => a.local !== undefined);
    assertEquals(addr.addr_info.map((a: Json) => `${a.local}/${a.prefixlen}`), [
      "2001:db8:1::10/64",
    ]);
    // NODAD: usable as a source at once, never "tentative".
    assertEquals(addr.addr_info[0].tentative, undefined);
    const routes = await ipj(ns, "-6", "route", "show", "default");
    assertEquals(routes.map((r: Json) => [r.gateway, r.dev, r.protocol, r.flags]), [[
      "2001:db8:2::1",
      "boot6",
      "dhcp",
      ["onlink"],
    ]]);
    const conf = await Deno.readTextFile(`${dir}/run/net-boot6.conf`);
    assert.match(conf, /^PROTO=dhcp$/m);
    assert.match(conf, /^IPV6ADDR=2001:db8:1::10$/m);
    const networkd = await Deno.readTextFile(`${dir}/run/systemd/network/0-isboot-boot6.network`);
    assert.match(networkd, /^KeepConfiguration=yes$/m);
    assert.match(networkd, /^DHCP=ipv6$/m);
  });
});

Deno.test("net: running twice is idempotent (boot step retried)", async () => {
  await withNetnsDir(async (ns, dir) => {
    await veth(ns, "boot1", "02:00:5e:10:00:09", "sw1");
    await sh("ip", ["-n", ns, "link", "set", "sw1", "up"]);
    const input = {
      ...base,
      mac: "02:00:5e:10:00:09",
      address: "198.51.100.7",
      prefixLength: 25,
      gateway: "198.51.100.1",
      outDir: dir,
    };
    for (let i = 0; i < 2; i++) {
      const out = await runHelper(ns, input).output();
      assertEquals(out.code, 0, dec.decode(out.stderr));
    }
    const [addr] = await ipj(ns, "-4", "addr", "show", "boot1");
    assertEquals(addr.addr_info.length, 1);
    assertEquals((await ipj(ns, "-4", "route", "show", "default")).length, 1);
  });
});

Deno.test("net: a second path's NIC: no default route, a host route via its gateway to each target off its subnet", async () => {
  await withNetnsDir(async (ns, dir) => {
    await veth(ns, "path1", "02:00:5e:10:00:0a", "sw2");
    await sh("ip", ["-n", ns, "link", "set", "sw2", "up"]);
    const out = await runHelper(ns, {
      ...base,
      mac: "02:00:5e:10:00:0a",
      address: "198.51.100.7",
      prefixLength: 25,
      gateway: "198.51.100.1",
      defaultRoute: false,
      // One target behind the gateway, one on the NIC's own subnet.
      targets: ["203.0.113.9", "198.51.100.20"],
      outDir: dir,
    }).output();
    assertEquals(out.code, 0, dec.decode(out.stderr));
    assertEquals((await ipj(ns, "-4", "route", "show", "default")).length, 0);
    const routes = await ipj(ns, "-4", "route", "show", "dev", "path1");
    assertEquals(
      routes.map((r: { dst: string; gateway?: string }) => [r.dst, r.gateway ?? null]).sort(),
      [["198.51.100.0/25", null], ["203.0.113.9", "198.51.100.1"]],
    );
  });
});

Deno.test("net: an optional NIC (a second path's) without carrier is configured anyway, with a warning", async () => {
  await withNetnsDir(async (ns, dir) => {
    await veth(ns, "path2", "02:00:5e:10:00:0b", "sw3"); // sw3 stays down: no carrier
    const out = await runHelper(ns, {
      ...base,
      mac: "02:00:5e:10:00:0b",
      address: "198.51.100.70",
      prefixLength: 25,
      gateway: null,
      optional: true,
      linkTimeoutMs: 1000,
      outDir: dir,
    }).output();
    const err = dec.decode(out.stderr);
    assertEquals(out.code, 0, err);
    assert.match(err, /no carrier on path2 after 1 s .*; configured without \(a second path\)/);
    const [addr] = await ipj(ns, "-4", "addr", "show", "path2");
    assertEquals(addr.addr_info.map((a: { local: string }) => a.local), ["198.51.100.70"]);
  });
});

Deno.test("net: adoptNic finds a configured NIC by MAC and changes nothing; a VLAN link that is not there fails in one line", async () => {
  await withNetnsDir(async (ns, dir) => {
    await veth(ns, "boot2", "02:00:5e:10:00:0a", "sw2");
    await sh("ip", ["-n", ns, "link", "set", "sw2", "up"]);
    const input = {
      ...base,
      mac: "02:00:5e:10:00:0a",
      address: "203.0.113.9",
      prefixLength: 24,
      gateway: "203.0.113.1",
      outDir: dir,
    };
    const first = await runHelper(ns, input).output();
    assertEquals(first.code, 0, dec.decode(first.stderr));
    // The root's network stack moved the address meanwhile: adopting keeps that.
    // (No VLAN here: this host's kernel has no 8021q; tests/net/vlan_vm_test.ts.)
    await sh("ip", ["-n", ns, "addr", "del", "203.0.113.9/24", "dev", "boot2"]);
    await sh("ip", ["-n", ns, "addr", "add", "203.0.113.77/24", "dev", "boot2"]);
    const adoptDir = `${dir}/adopt`;
    const out = await runHelper(ns, { ...input, adopt: true, outDir: adoptDir }).output();
    assertEquals(out.code, 0, dec.decode(out.stderr));
    const res = JSON.parse(dec.decode(out.stdout));
    assertEquals([res.ifname, res.parentName], ["boot2", "boot2"]);
    const [addr] = await ipj(ns, "-4", "addr", "show", "boot2");
    assertEquals(addr.addr_info.map((a: Json) => a.local), ["203.0.113.77"]);
    assert.equal(await Deno.stat(adoptDir).then(() => true, () => false), false, "wrote nothing");

    const missing = await runHelper(ns, { ...input, vlan: 43, adopt: true }).output();
    assertEquals(missing.code, 1);
    assertEquals(dec.decode(missing.stderr), "isboot: no VLAN 43 link on boot2\n");
  });
});

Deno.test("net: a MAC that never appears, or a link without carrier, fails in one line within the timeout", async () => {
  await withNetnsDir(async (ns, dir) => {
    await veth(ns, "boot2", "02:00:5e:10:00:0a", "sw2");
    const t0 = Date.now();
    let out = await runHelper(ns, {
      ...base,
      mac: "02:00:5e:99:99:99",
      address: null,
      prefixLength: 0,
      gateway: null,
      linkTimeoutMs: 300,
      outDir: dir,
    }).output();
    assertEquals(out.code, 1);
    const err = dec.decode(out.stderr).trim().split("\n").at(-1)!;
    assert.match(
      err,
      /^isboot: no network interface with MAC 02:00:5e:99:99:99 after 0\.3 s \(present: .*boot2 02:00:5e:10:00:0a/,
    );
    // sw2 stays down: boot2 never gets carrier.
    out = await runHelper(ns, {
      ...base,
      mac: "02:00:5e:10:00:0a",
      address: null,
      prefixLength: 0,
      gateway: null,
      linkTimeoutMs: 300,
      outDir: dir,
    }).output();
    assertEquals(out.code, 1);
    assert.match(dec.decode(out.stderr), /isboot: no carrier on boot2 after 0\.3 s/);
    assert.ok(Date.now() - t0 < 30_000, "bounded by the link timeout, not hanging");
  });
});

const vlanSupported = await (async () => {
  const ns = `isboot-vlanprobe-${crypto.randomUUID().slice(0, 8)}`;
  try {
    await sh("ip", ["netns", "add", ns]);
    await sh("ip", ["-n", ns, "link", "add", "p0", "type", "veth", "peer", "name", "p1"]);
    await sh("ip", [
      "-n",
      ns,
      "link",
      "add",
      "link",
      "p0",
      "name",
      "p0.5",
      "type",
      "vlan",
      "id",
      "5",
    ]);
    return true;
  } catch {
    return false;
  } finally {
    await sh("ip", ["netns", "del", ns]).catch(() => {});
  }
})();

// This host's kernel may lack 8021q; the e2e VM boots exercise VLANs on Debian's kernel then.
Deno.test({
  name: "net: VLAN from the iBFT becomes PARENT.VID with the address on it",
  ignore: !vlanSupported,
  fn: async () => {
    await withNetnsDir(async (ns, dir) => {
      await veth(ns, "boot3", "02:00:5e:10:00:0b", "sw3");
      await sh("ip", ["-n", ns, "link", "set", "sw3", "up"]);
      const out = await runHelper(ns, {
        ...base,
        vlan: 100,
        mac: "02:00:5e:10:00:0b",
        address: "192.0.2.20",
        prefixLength: 24,
        gateway: "192.0.2.1",
        outDir: dir,
      }).output();
      assertEquals(out.code, 0, dec.decode(out.stderr));
      const [link] = await ipj(ns, "-d", "link", "show", "boot3.100");
      assertEquals(link.linkinfo.info_kind, "vlan");
      assertEquals(link.linkinfo.info_data.id, 100);
      const [addr] = await ipj(ns, "-4", "addr", "show", "boot3.100");
      assertEquals(addr.addr_info[0].local, "192.0.2.20");
      assert.ok(await Deno.stat(`${dir}/run/systemd/network/0-isboot-boot3.network`));
    });
  },
});
