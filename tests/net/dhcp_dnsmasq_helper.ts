/**
 * Runs obtainLease, then one RENEWING exchange, against a dnsmasq, inside the
 * client network namespace the test made (`ip netns exec NS deno run -A
 * dhcp_dnsmasq_helper.ts JSON`), over a plain UDP socket on port 68, and
 * prints both leases as JSON. A plain socket cannot send to the limited
 * broadcast without SO_BROADCAST, so "broadcast" goes to the server's
 * address: dnsmasq answers a DISCOVER the same way whichever address it was
 * sent to (broadcast, since the BROADCAST flag is set).
 */
import dgram from "node:dgram";
import { formatIp } from "../../src/net/addr.ts";
import { type DhcpTransport, obtainLease, renewLease } from "../../src/net/dhcp/client.ts";

const input = JSON.parse(Deno.args[0]) as { server: string; mac: string; ifname: string };
const sock = dgram.createSocket("udp4");
await new Promise<void>((resolve, reject) => {
  sock.once("error", reject);
  sock.bind(68, "0.0.0.0", () => resolve());
});
const inbox: Uint8Array[] = [];
let wake: (() => void) | null = null;
sock.on("message", (msg: Uint8Array) => {
  inbox.push(Uint8Array.from(msg));
  wake?.();
});
const transport: DhcpTransport = {
  send(payload, to) {
    const host = to === "broadcast" ? input.server : formatIp(to);
    return new Promise((resolve, reject) =>
      sock.send(payload, 67, host, (err) => err ? reject(err) : resolve())
    );
  },
  async receive(timeoutMs) {
    if (inbox.length === 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, timeoutMs);
        function done() {
          clearTimeout(timer);
          wake = null;
          resolve();
        }
        wake = done;
      });
    }
    return inbox.shift() ?? null;
  },
};
const mac = Uint8Array.from(input.mac.split(":").map((x) => parseInt(x, 16)));
const logs: string[] = [];
const opts = { mac, hostname: "dhcp-test", timeoutMs: 20_000, log: (l: string) => logs.push(l) };
const json = (l: object) =>
  JSON.parse(
    JSON.stringify(
      l,
      (_k, v) => v && typeof v === "object" && v.family === 4 ? formatIp(v) : v,
    ),
  );
try {
  const lease = await obtainLease(transport, opts);
  // A client configures its address before renewing: the server unicasts the ACK to ciaddr.
  const add = await new Deno.Command("ip", {
    args: ["addr", "add", `${formatIp(lease.address)}/${lease.prefixLength}`, "dev", input.ifname],
  }).output();
  if (!add.success) throw new Error("ip addr add failed");
  const renewed = await renewLease(transport, lease, opts, "renew", { waitMs: 5_000 });
  console.log(
    JSON.stringify({ lease: json(lease), renewed: renewed && json(renewed as object), logs }),
  );
} finally {
  sock.close();
}
