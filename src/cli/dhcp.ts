/**
 * `isboot dhcp IFACE`: obtain a DHCPv4 lease on an interface from a rescue
 * shell, apply it (address, default route, MTU) unless `--no-configure`,
 * and print it (docs/dhcp.md).
 */
import { OperationalError, UsageError } from "../errors.ts";
import { configureNic } from "../net/configure.ts";
import { leaseJson, leaseLines, leaseOn, nicFromLease } from "../net/dhcp/acquire.ts";
import { Rtnetlink } from "../net/rtnetlink.ts";
import { intOption, parseCommand, printJson } from "./args.ts";
import type { Command } from "./context.ts";

const USAGE = `usage: isboot dhcp IFACE [--no-configure] [--timeout SECONDS] [--json]

Obtain a DHCPv4 lease on IFACE (DISCOVER, OFFER, REQUEST, ACK over a packet
socket; the offered address is probed with ARP and declined when in use),
apply it and print it. Exit 1 when no server answers within the timeout.

options:
  --no-configure             print the lease only; leave the interface as it is
  --timeout SECONDS          how long to wait for carrier and a server (default 30)
  --hostname NAME            send NAME as our host name (option 12)
  --vendor-class TEXT        vendor class identifier (option 60; default isboot)
  --json                     one JSON document: { interface, address, prefixLength, router,
                             dns, domain, hostname, mtu, server, leaseSeconds, renewSeconds,
                             rebindSeconds, obtained, rootPath, configured }
  --debug                    log the DHCP exchange`;

const OPTIONS = {
  "no-configure": { type: "boolean" },
  timeout: { type: "string" },
  hostname: { type: "string" },
  "vendor-class": { type: "string" },
} as const;

/** The `dhcp` subcommand. */
export const dhcpCommand: Command = {
  summary: "obtain and apply a DHCPv4 lease on an interface",
  options: OPTIONS,
  async run(args, ctx) {
    const p = parseCommand(args, OPTIONS, USAGE, ctx);
    if (!p) return 0;
    if (p.positionals.length !== 1) throw new UsageError("dhcp takes one IFACE (see --help)");
    const ifname = p.positionals[0];
    const timeoutMs = (intOption("timeout", p.values.timeout, 1, 3600) ?? 30) * 1000;
    const rt = Rtnetlink.open();
    try {
      const link = rt.links().find((l) => l.name === ifname);
      if (!link) throw new OperationalError(`no network interface ${ifname}`);
      if (!link.mac) throw new OperationalError(`${ifname} has no hardware address (not Ethernet)`);
      const lease = await leaseOn(rt, link, {
        timeoutMs,
        log: ctx.log,
        ...(p.values.hostname ? { hostname: p.values.hostname } : {}),
        ...(p.values["vendor-class"] ? { vendorClass: p.values["vendor-class"] } : {}),
      });
      const configure = !p.values["no-configure"];
      if (configure) {
        await configureNic(rt, nicFromLease(lease, link), {
          linkTimeoutMs: timeoutMs,
          log: ctx.log,
        });
      }
      if (p.values.json) printJson(ctx, { ...leaseJson(lease, ifname), configured: configure });
      else ctx.out(leaseLines(lease, ifname).join("\n") + "\n");
      return 0;
    } finally {
      rt.close();
    }
  },
};
