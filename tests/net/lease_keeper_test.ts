/**
 * The root-storage daemon's lease keeper (src/boot/lease.ts) against a real
 * DHCP server: dnsmasq (tests/net/dnsmasq.ts) with T1/T2 of a few seconds,
 * the keeper in a client namespace (tests/net/lease_keeper_helper.ts).
 * Renewals reach the server; a NAK and a changed pool never take the
 * address away; a lease held by systemd-networkd stops isboot's renewals.
 */
import assert from "node:assert/strict";
import { runCommand } from "../helpers/cli.ts";
import { withSegment } from "./dnsmasq.ts";
import { Collected } from "./netns.ts";

const HELPER = new URL("./lease_keeper_helper.ts", import.meta.url).pathname;
// Network namespaces need root; dnsmasq comes from tests/deps/net.apt (make test-deps).
const enabled = Deno.uid?.() === 0;
const SHORT = ["--dhcp-option=option:T1,4", "--dhcp-option=option:T2,7"];

interface Line {
  state: string;
  renewals: number;
  address: string;
  addrs: string[];
}

function keeper(ns: string, root: string, seconds: number) {
  const child = new Deno.Command("ip", {
    args: [
      "netns",
      "exec",
      ns,
      Deno.execPath(),
      "run",
      "-A",
      "--quiet",
      HELPER,
      JSON.stringify({ ifname: "c0", root, seconds }),
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return { child, out: new Collected(child.stdout), err: new Collected(child.stderr) };
}

const lines = (text: string): Line[] =>
  text.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, ignore: !enabled, sanitizeResources: false, sanitizeOps: false, fn });

test("lease keeper: renews at T1 with the server (dnsmasq sees the REQUEST), the address never leaves", async () => {
  await withSegment(async (s) => {
    await s.startDnsmasq("10.9.0.50,10.9.0.59,255.255.255.0,2m", SHORT);
    const ns = await s.client("52:54:00:d1:00:21");
    const root = await Deno.makeTempDir();
    const k = keeper(ns, root, 14);
    const st = await k.child.status;
    await Promise.all([k.out.done, k.err.done]);
    const why = `\n${k.err.text}\n${k.out.text}`;
    assert.equal(st.code, 0, why);
    const ls = lines(k.out.text);
    const addr = ls[0].address.split("/")[0];
    assert.ok(ls.every((l) => l.addrs.includes(addr)), `the address left the interface${why}`);
    assert.ok(ls.at(-1)!.renewals >= 1, `renewals ${ls.at(-1)!.renewals}${why}`);
    // The server saw renewals: REQUESTs from the leased address, acknowledged.
    const acks = s.log!.text.match(
      new RegExp(`DHCPACK\\(br0\\) ${addr.replace(/\./g, "\\.")} 52:54:00:d1:00:21`, "g"),
    );
    assert.ok(acks && acks.length >= 2, `dnsmasq ACKs: ${acks?.length}${why}`);
    await Deno.remove(root, { recursive: true });
  });
});

test("lease keeper: a NAK (the server's pool changed) keeps the address, logs it, takes a new lease", async () => {
  await withSegment(async (s) => {
    await s.startDnsmasq("10.9.0.50,10.9.0.59,255.255.255.0,2m", SHORT);
    const ns = await s.client("52:54:00:d1:00:22");
    const root = await Deno.makeTempDir();
    const k = keeper(ns, root, 16);
    await k.out.until(/"state":"bound"/, 20_000);
    const first = lines(k.out.text)[0].address.split("/")[0];
    // The server restarts with another pool and authority over the subnet: it NAKs the old lease.
    s.dnsmasq!.kill("SIGTERM");
    await s.dnsmasq!.status;
    await Deno.remove(`${s.dir}/leases`).catch(() => {});
    await s.startDnsmasq("10.9.0.80,10.9.0.89,255.255.255.0,2m", [
      ...SHORT,
      "--dhcp-authoritative",
    ]);
    const st = await k.child.status;
    await Promise.all([k.out.done, k.err.done]);
    const why = `\n${k.err.text}\n${k.out.text}\n--- dnsmasq\n${s.log!.text}`;
    assert.equal(st.code, 0, why);
    assert.match(s.log!.text, /DHCPNAK\(br0\) 10\.9\.0\.5\d 52:54:00:d1:00:22/, why);
    assert.match(k.err.text, /refused the lease of 10\.9\.0\.5\d \(NAK\); the address stays/, why);
    assert.match(k.err.text, /the DHCP server now leases 10\.9\.0\.8\d; 10\.9\.0\.5\d stays/, why);
    const ls = lines(k.out.text);
    assert.ok(ls.every((l) => l.addrs.includes(first)), `the first address left${why}`);
    await Deno.remove(root, { recursive: true });
  });
});

test("lease keeper: once systemd-networkd holds a lease for the interface, isboot stops renewing", async () => {
  await withSegment(async (s) => {
    await s.startDnsmasq("10.9.0.50,10.9.0.59,255.255.255.0,2m", SHORT);
    const ns = await s.client("52:54:00:d1:00:23");
    const root = await Deno.makeTempDir();
    const idx =
      JSON.parse((await runCommand("ip", ["-n", ns, "-j", "link", "show", "c0"])).stdout)[0]
        .ifindex;
    await Deno.mkdir(`${root}/run/systemd/netif/leases`, { recursive: true });
    await Deno.writeTextFile(`${root}/run/systemd/netif/leases/${idx}`, "ADDRESS=10.9.0.50\n");
    const k = keeper(ns, root, 10);
    const st = await k.child.status;
    await Promise.all([k.out.done, k.err.done]);
    const why = `\n${k.err.text}\n${k.out.text}`;
    assert.equal(st.code, 0, why);
    const last = lines(k.out.text).at(-1)!;
    assert.equal(last.state, "handed over", why);
    assert.equal(last.renewals, 0, why);
    assert.match(
      k.err.text,
      /systemd-networkd holds a DHCP lease for it; it renews from now on/,
      why,
    );
    // dnsmasq saw the first exchange only: one ACK.
    assert.equal(s.log!.text.match(/DHCPACK/g)?.length, 1, s.log!.text);
    await Deno.remove(root, { recursive: true });
  });
});
