/**
 * The DHCP client (src/net/dhcp/) against a real dnsmasq: two network
 * namespaces joined by a veth pair, dnsmasq serving one end, and
 * dhcp_dnsmasq_helper.ts obtaining and renewing a lease on the other over a
 * plain UDP socket. (The packet-socket transport has its own dnsmasq tests.)
 */
import assert from "node:assert/strict";
import { sh, spawnInNetns, withNetns } from "./netns.ts";

const HELPER = new URL("./dhcp_dnsmasq_helper.ts", import.meta.url).pathname;
const DNSMASQ = "/usr/sbin/dnsmasq";

Deno.test({
  name: "dhcp client vs dnsmasq: DISCOVER/OFFER/REQUEST/ACK, then a RENEWING REQUEST",
  async fn() {
    await withNetns((srv) =>
      withNetns(async (cli) => {
        const mac = "52:54:00:d4:c9:01";
        await sh("ip", [
          "-n",
          cli,
          "link",
          "add",
          "vc",
          "address",
          mac,
          "type",
          "veth",
          "peer",
          "name",
          "vs",
          "netns",
          srv,
        ]);
        await sh("ip", ["-n", srv, "addr", "add", "10.77.0.1/24", "dev", "vs"]);
        await sh("ip", ["-n", srv, "link", "set", "vs", "up"]);
        await sh("ip", ["-n", cli, "addr", "add", "10.77.0.2/24", "dev", "vc"]);
        await sh("ip", ["-n", cli, "link", "set", "vc", "up"]);
        const dir = await Deno.makeTempDir({ prefix: "isboot-dnsmasq-" });
        const dnsmasq = new Deno.Command("ip", {
          args: [
            "netns",
            "exec",
            srv,
            DNSMASQ,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--port=0",
            "--interface=vs",
            "--bind-interfaces",
            "--no-ping",
            "--log-dhcp",
            "--log-facility=-",
            "--user=root",
            `--pid-file=${dir}/pid`,
            `--dhcp-leasefile=${dir}/leases`,
            "--dhcp-range=10.77.0.50,10.77.0.60,255.255.255.0,600",
            "--dhcp-option=option:router,10.77.0.1",
            "--dhcp-option=option:dns-server,10.77.0.1,10.77.0.3",
            "--dhcp-option=option:domain-name,example.test",
            "--dhcp-option=option:root-path,iscsi:10.77.0.1::::iqn.2024-01.test:disk",
            "--dhcp-option=option:mtu,1400",
          ],
          stdout: "piped",
          stderr: "piped",
        }).spawn();
        try {
          const child = spawnInNetns(cli, HELPER, { server: "10.77.0.1", mac, ifname: "vc" });
          const out = await child.output();
          const text = new TextDecoder().decode(out.stdout);
          assert.ok(out.success, new TextDecoder().decode(out.stderr) + text);
          const { lease, renewed, logs } = JSON.parse(text);
          assert.match(lease.address, /^10\.77\.0\.(5\d|60)$/);
          assert.equal(lease.prefixLength, 24);
          assert.equal(lease.router, "10.77.0.1");
          assert.deepEqual(lease.dns, ["10.77.0.1", "10.77.0.3"]);
          assert.equal(lease.domain, "example.test");
          assert.equal(lease.rootPath, "iscsi:10.77.0.1::::iqn.2024-01.test:disk");
          assert.equal(lease.mtu, 1400);
          assert.equal(lease.serverId, "10.77.0.1");
          assert.equal(lease.leaseSeconds, 600);
          // dnsmasq sends T1 and T2 (0.5 and 0.875 of the lease), less a random fuzz on renewals.
          assert.ok(lease.t1Seconds > 240 && lease.t1Seconds <= 300, String(lease.t1Seconds));
          assert.ok(lease.t2Seconds > lease.t1Seconds && lease.t2Seconds <= 525);
          assert.ok(renewed, `no answer to the renewal:\n${logs.join("\n")}`);
          assert.equal(renewed.address, lease.address);
          assert.equal(renewed.leaseSeconds, 600);
          assert.ok(renewed.obtainedAt >= lease.obtainedAt);
          const leases = await Deno.readTextFile(`${dir}/leases`);
          assert.match(
            leases,
            new RegExp(`${mac} ${lease.address.replaceAll(".", "\\.")} dhcp-test`),
          );
        } finally {
          dnsmasq.kill("SIGTERM");
          const d = await dnsmasq.output();
          if (!d.success && d.signal !== "SIGTERM") {
            console.error(new TextDecoder().decode(d.stderr));
          }
          await Deno.remove(dir, { recursive: true });
        }
      })
    );
  },
});
