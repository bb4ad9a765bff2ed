/**
 * Runs inside a client namespace (`ip netns exec NS deno run -A
 * lease_keeper_helper.ts JSON`): obtains a lease on the interface the input
 * names (src/net/dhcp/acquire.ts), applies it, then keeps it the way the
 * root-storage daemon does (src/boot/lease.ts) with its root at `root`.
 * Prints one JSON line per change of `isboot status`'s lease entry, and the
 * interface's IPv4 addresses with it; exits after `seconds`.
 */
import { startBootLease } from "../../src/boot/lease.ts";
import { reportError } from "../../src/cli/main.ts";
import { Logger } from "../../src/log.ts";
import { formatIp } from "../../src/net/addr.ts";
import { configureNic } from "../../src/net/configure.ts";
import { leaseOn, nicFromLease } from "../../src/net/dhcp/acquire.ts";
import { Rtnetlink } from "../../src/net/rtnetlink.ts";

const input = JSON.parse(Deno.args[0]) as { ifname: string; root: string; seconds: number };
const log = new Logger({ debug: true });
const rt = Rtnetlink.open();
try {
  const link = rt.links().find((l) => l.name === input.ifname)!;
  const lease = await leaseOn(rt, link, { timeoutMs: 30_000, log });
  const nic = await configureNic(rt, nicFromLease(lease, link), { linkTimeoutMs: 5_000, log });
  const keeper = startBootLease(lease, link.mac!, nic, { log, root: input.root });
  let last = "";
  const end = Date.now() + input.seconds * 1000;
  while (Date.now() < end) {
    const s = keeper.status();
    const addrs = rt.addresses(4).filter((a) => a.index === nic.index).map((a) =>
      formatIp(a.address)
    );
    const line = JSON.stringify({ ...s, addrs });
    if (line !== last) console.log(line);
    last = line;
    await new Promise((r) => setTimeout(r, 200));
  }
  keeper.stop();
} catch (e) {
  Deno.exit(reportError(e, log, false));
} finally {
  rt.close();
}
