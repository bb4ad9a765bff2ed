/**
 * The booted system's side of the hand-off, without a VM: the ifupdown
 * pre-down hook's decisions (run under dash, as ifupdown runs it), the
 * systemd drop-ins that keep shutdown's ifdown off the boot links, and the
 * systemd-networkd and NetworkManager files' contents and the order networkd
 * sees them in next to the catch-alls distributions and cloud images ship.
 */
import assert from "node:assert/strict";
import { parseIp } from "../../src/net/addr.ts";
import type { ConfiguredNic } from "../../src/net/configure.ts";
import {
  ifupdownDropIns,
  networkdFileName,
  networkdFiles,
  nmConf,
  nmUdevRules,
} from "../../src/net/handoff.ts";

const HOOK = new URL("../../initramfs-hook/ifupdown/if-down.d/isboot", import.meta.url).pathname;
const dec = new TextDecoder();

async function preDown(env: Record<string, string>): Promise<{ code: number; stderr: string }> {
  const o = await new Deno.Command("dash", {
    args: [HOOK],
    env: { PATH: "/usr/bin:/bin", MODE: "stop", PHASE: "pre-down", ...env },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: o.code, stderr: dec.decode(o.stderr) };
}

Deno.test("ifupdown pre-down: one line for a link listed in boot-nics, nothing for others; never fails ifdown", async () => {
  const dir = await Deno.makeTempDir({ prefix: "isboot-hook-" });
  try {
    const list = `${dir}/boot-nics`;
    await Deno.writeTextFile(list, "ens3.100\nens3\n");
    for (const iface of ["ens3", "ens3.100"]) {
      const r = await preDown({ IFACE: iface, ISBOOT_BOOT_NICS: list });
      assert.equal(r.code, 0, iface);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.match(
        r.stderr,
        new RegExp(`^isboot: ifdown ${iface.replace(".", "\\.")}: it carries the root disk`),
      );
    }
    for (const iface of ["ens4", "ens3.1", "ens", "lo", "--all"]) {
      const r = await preDown({ IFACE: iface, ISBOOT_BOOT_NICS: list });
      assert.equal(r.code, 0, `${iface}: ${r.stderr}`);
      assert.equal(r.stderr, "");
    }
    // No daemon serving a disk, no list: nothing to say.
    await Deno.remove(list);
    const r = await preDown({ IFACE: "ens3", ISBOOT_BOOT_NICS: list });
    assert.equal(r.code, 0);
    assert.equal(r.stderr, "");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const nic = (origin: "dhcp" | "static", family: 4 | 6 = 4): ConfiguredNic => ({
  config: {
    mac: "52:54:00:12:34:56",
    vlan: 0,
    address: parseIp(family === 4 ? "192.0.2.10" : "2001:db8::10"),
    prefixLength: family === 4 ? 24 : 64,
    gateway: parseIp(family === 4 ? "192.0.2.1" : "2001:db8::1"),
    dns: [],
    hostname: null,
    origin,
  },
  ifname: "ens3",
  index: 2,
  parentName: "ens3",
  parentIndex: 2,
});

Deno.test("networkd: the hand-off file sorts before every catch-all networkd could also match", () => {
  // networkd takes the first matching file in strcmp order of the names, whatever the directory.
  const catchAlls = [
    "00-default.network",
    "00-a.network",
    "01-dhcp.network",
    "05-wired.network",
    "10-cloud-init-ens3.network",
    "10-netplan-ens3.network",
    "10-netplan-all-en.network",
    "20-wired.network",
    "50-cloud-init.network",
    "80-dhcp.network",
    "89-ethernet.network",
    "99-default.network",
    "zz-default.network",
  ];
  const ours = networkdFileName("ens3");
  assert.equal(ours, "0-isboot-ens3.network");
  const order = [...catchAlls, ours].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  assert.equal(order[0], ours, order.join(" "));
  // The name the hand-off had before lost to all of these.
  const old = [...catchAlls, "10-isboot-ens3.network"].sort();
  assert.ok(old.indexOf("10-isboot-ens3.network") > 0);
});

/** The key=value lines of each [Section] of a systemd unit-style file. */
function sectionsOf(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let cur = "";
  for (const l of text.split("\n")) {
    const m = /^\[(\w+)\]$/.exec(l);
    if (m) out.set(cur = m[1], []);
    else if (cur && l && !l.startsWith("#")) out.get(cur)!.push(l);
  }
  return out;
}

Deno.test("networkd: keeps foreign addresses and routes for static and DHCP-origin NICs alike (KeepConfiguration=yes)", () => {
  for (const [origin, family] of [["static", 4], ["dhcp", 4], ["dhcp", 6]] as const) {
    const files = networkdFiles(nic(origin, family));
    assert.deepEqual([...files.keys()], ["0-isboot-ens3.network"]);
    const f = files.get("0-isboot-ens3.network")!;
    // "dhcp" would drop the boot address at start: it is foreign and has no lifetime.
    assert.match(f, /^KeepConfiguration=yes$/m, `${origin}/${family}`);
    assert.doesNotMatch(f, /^KeepConfiguration=(dhcp|static|no)/m);
    // Each key in the section networkd reads it from (a key in the wrong one is ignored).
    const sections = sectionsOf(f);
    assert.deepEqual(sections.get("Link"), ["ActivationPolicy=always-up"]);
    assert.ok(sections.get("Network")!.includes("IgnoreCarrierLoss=yes"));
    assert.ok(sections.get("Network")!.includes("KeepConfiguration=yes"));
    assert.ok(!sections.get("Network")!.some((l) => l.startsWith("ActivationPolicy=")));
    assert.match(f, /^\[Match\]\nName=ens3$/m);
    if (origin === "dhcp") {
      assert.match(f, new RegExp(`^DHCP=ipv${family}$`, "m"));
      assert.match(f, /^SendRelease=no$/m);
      assert.doesNotMatch(f, /^Address=/m);
    } else {
      assert.match(f, /^Address=192\.0\.2\.10\/24$/m);
      assert.match(f, /^Gateway=192\.0\.2\.1$/m);
    }
  }
});

Deno.test("NetworkManager: the hand-off appends to unmanaged-devices and marks the links NM_UNMANAGED in udev", () => {
  const vlan: ConfiguredNic = { ...nic("static"), ifname: "ens3.100", index: 5 };
  const conf = nmConf([vlan]);
  // `+=`: the lists packages ship in /usr/lib/NetworkManager/conf.d stay in force.
  assert.match(
    conf,
    /^\[keyfile\]\nunmanaged-devices\+=interface-name:ens3\.100;interface-name:ens3$/m,
  );
  const rules = nmUdevRules([vlan]).split("\n").filter((l) => l && !l.startsWith("#"));
  assert.deepEqual(rules, [
    'ACTION!="remove", SUBSYSTEM=="net", KERNEL=="ens3.100", ENV{NM_UNMANAGED}="1"',
    'ACTION!="remove", SUBSYSTEM=="net", KERNEL=="ens3", ENV{NM_UNMANAGED}="1"',
  ]);
});

Deno.test("ifupdown: shutdown runs no ifdown for the boot links (ifup@ ExecStop emptied, excluded from ifdown -a)", () => {
  const vlan: ConfiguredNic = { ...nic("static"), ifname: "ens3.100", index: 5 };
  const files = ifupdownDropIns([vlan]);
  assert.deepEqual([...files.keys()].sort(), [
    "ifup@ens3.100.service.d/isboot.conf",
    "ifup@ens3.service.d/isboot.conf",
    "networking.service.d/isboot.conf",
  ]);
  for (const n of ["ens3", "ens3.100"]) {
    const t = files.get(`ifup@${n}.service.d/isboot.conf`)!;
    // An empty ExecStop= resets the list: systemd then runs nothing on stop.
    assert.match(t, /^\[Service\]\nExecStop=\n$/m);
    assert.doesNotMatch(t, /ExecStop=\S/);
  }
  const net = files.get("networking.service.d/isboot.conf")!;
  const stops = net.split("\n").filter((l) => l.startsWith("ExecStop="));
  assert.deepEqual(stops, [
    "ExecStop=",
    "ExecStop=/sbin/ifdown -a --read-environment --exclude=lo --exclude=ens3.100 --exclude=ens3",
  ]);
  assert.equal(ifupdownDropIns([]).size, 0);
});
