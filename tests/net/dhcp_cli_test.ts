/**
 * `isboot dhcp` against a real DHCP server: dnsmasq in a network namespace
 * of its own, on a bridge; each client is a namespace with one end of a veth
 * pair whose other end is a port of that bridge. Nothing leaves the
 * namespaces; they are deleted afterwards.
 */
import assert from "node:assert/strict";
import { isbootCommand, runCommand } from "../helpers/cli.ts";
import { ipj, sh } from "./netns.ts";
import { ROOT_PATH, withSegment } from "./dnsmasq.ts";

// Network namespaces need root; dnsmasq comes from tests/deps/net.apt (make test-deps).
const enabled = Deno.uid?.() === 0;

/** `isboot ARGS` inside namespace `ns`. */
function isbootIn(ns: string, args: string[]) {
  const { cmd, pre } = isbootCommand();
  return runCommand("ip", ["netns", "exec", ns, cmd, ...pre, ...args]);
}

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, ignore: !enabled, sanitizeResources: false, sanitizeOps: false, fn });

test("isboot dhcp: a lease from dnsmasq, applied and printed (option 17 root path, router, DNS, MTU)", async () => {
  await withSegment(async (s) => {
    await s.startDnsmasq("10.9.0.50,10.9.0.59,255.255.255.0,2m");
    const ns = await s.client("52:54:00:d1:00:01");
    const r = await isbootIn(ns, ["dhcp", "c0", "--json", "--timeout", "20"]);
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.match(j.address, /^10\.9\.0\.5\d$/);
    assert.equal(j.prefixLength, 24);
    assert.equal(j.router, "10.9.0.1");
    assert.deepEqual(j.dns, ["10.9.0.53"]);
    assert.equal(j.domain, "san.example");
    assert.equal(j.mtu, 1400);
    assert.equal(j.server, "10.9.0.1");
    assert.equal(j.leaseSeconds, 120);
    assert.equal(j.rootPath, ROOT_PATH);
    assert.equal(j.configured, true);
    // Applied: the address on c0, the default route via the router, the MTU.
    const addrs = await ipj(ns, "addr", "show", "dev", "c0");
    const inet = addrs[0].addr_info.filter((a: { family: string }) => a.family === "inet");
    assert.deepEqual(
      inet.map((a: { local: string; prefixlen: number }) => `${a.local}/${a.prefixlen}`),
      [
        `${j.address}/24`,
      ],
    );
    assert.equal(addrs[0].mtu, 1400);
    const routes = await ipj(ns, "route", "show", "default");
    assert.equal(routes[0]?.gateway, "10.9.0.1");
    assert.equal(routes[0]?.protocol, "dhcp");
    // The server recorded the lease for our MAC.
    const leases = await Deno.readTextFile(`${s.dir}/leases`);
    assert.match(leases, new RegExp(`52:54:00:d1:00:01 ${j.address.replace(/\./g, "\\.")}`));
  });
});

test("isboot dhcp: a second client on the segment gets another address; --no-configure leaves the link bare", async () => {
  await withSegment(async (s) => {
    await s.startDnsmasq("10.9.0.50,10.9.0.59,255.255.255.0,2m");
    const a = await s.client("52:54:00:d1:00:0a");
    const b = await s.client("52:54:00:d1:00:0b");
    const ra = await isbootIn(a, ["dhcp", "c0", "--json"]);
    const rb = await isbootIn(b, ["dhcp", "c0", "--json", "--no-configure"]);
    assert.equal(ra.code, 0, ra.stderr);
    assert.equal(rb.code, 0, rb.stderr);
    const [ja, jb] = [JSON.parse(ra.stdout), JSON.parse(rb.stdout)];
    assert.notEqual(ja.address, jb.address);
    assert.equal(jb.configured, false);
    const addrs = await ipj(b, "addr", "show", "dev", "c0");
    assert.deepEqual(addrs[0].addr_info.filter((x: { family: string }) => x.family === "inet"), []);
    // Text output names the interface, the address and the server.
    const again = await isbootIn(b, ["dhcp", "c0", "--no-configure"]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(
      again.stdout,
      /^c0: 10\.9\.0\.5\d\/24 via 10\.9\.0\.1\n {2}server 10\.9\.0\.1, lease 120 s/,
    );
  });
});

test("isboot dhcp: no server answers: exit 1 with one line, within the timeout", async () => {
  await withSegment(async (s) => {
    const ns = await s.client("52:54:00:d1:00:02");
    const t0 = Date.now();
    const r = await isbootIn(ns, ["dhcp", "c0", "--timeout", "3"]);
    const took = Date.now() - t0;
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^isboot: .*(no DHCP|DHCP).*\n$/);
    assert.ok(took < 10_000, `took ${took} ms`);
    assert.equal(r.stdout, "");
  });
});

test("isboot dhcp: the only address on offer is in use: probed by ARP, declined, exit 1", async () => {
  await withSegment(async (s) => {
    // One address in the pool; another host already has it. dnsmasq's own
    // ping check is off, so it offers it; the client must find out itself.
    await s.startDnsmasq("10.9.0.70,10.9.0.70,255.255.255.0,2m", ["--no-ping"]);
    const squatter = await s.client("52:54:00:d1:00:0f");
    await sh("ip", ["-n", squatter, "addr", "add", "10.9.0.70/24", "dev", "c0"]);
    await sh("ip", ["-n", squatter, "link", "set", "c0", "up"]);
    const ns = await s.client("52:54:00:d1:00:03");
    const r = await isbootIn(ns, ["dhcp", "c0", "--timeout", "8"]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /10\.9\.0\.70 is in use on the link; declined/);
    await s.log!.until(/DHCPDECLINE\S* 10\.9\.0\.70 52:54:00:d1:00:03/, 5_000);
  });
});

test("isboot dhcp: usage errors exit 2", async () => {
  const { cmd, pre } = isbootCommand();
  const r = await runCommand(cmd, [...pre, "dhcp"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^isboot: dhcp takes one IFACE/);
  const t = await runCommand(cmd, [...pre, "dhcp", "c0", "--timeout", "0"]);
  assert.equal(t.code, 2);
});
