/**
 * A DHCP lease on a real interface, and what to do with it: set the link
 * up, wait for carrier, run the client (src/net/dhcp/client.ts) over a
 * packet socket with ARP probes, and turn the lease into the NIC
 * configuration the rest of isboot applies (src/net/configure.ts) and the
 * lines and JSON that `isboot dhcp` and `isboot status` print.
 *
 * The address is applied without a lifetime, as the iBFT's is: a lifetime
 * would have the kernel remove the root disk's address the moment a renewal
 * is late. Isboot renews the lease itself (docs/dhcp.md), or the root's
 * network manager does once it takes the interface.
 *
 * @example
 * ```ts
 * const lease = await leaseOn(rt, link, { timeoutMs: 30_000, log });
 * const nic = await configureNic(rt, nicFromLease(lease, link), { linkTimeoutMs: 1000, log });
 * ```
 * @module
 */
import type { Logger } from "../../log.ts";
import { formatIp, type IpAddress } from "../addr.ts";
import { type NicConfig, waitForCarrier } from "../configure.ts";
import type { Link, Rtnetlink } from "../rtnetlink.ts";
import { type DhcpClientOptions, obtainLease } from "./client.ts";
import type { Lease } from "./message.ts";
import { arpProbe, PacketTransport } from "./socket.ts";

/** The boot NIC's DHCP lease, as `status` shows it. */
export interface LeaseEntry {
  interface: string;
  /** ADDRESS/PREFIX */
  address: string;
  server: string;
  /** ISO times: when the lease now held was obtained (or last renewed), and when it runs out. */
  obtained: string;
  expires: string;
  renewals: number;
  /**
   * "bound", "renewing", "rebinding", "expired" (the address is kept and
   * isboot keeps asking), or "handed over" (a DHCP client of the root, e.g.
   * systemd-networkd, holds a lease for the interface and renews it).
   */
  state: string;
}

/** Options for {@link leaseOn}. */
export interface LeaseOptions {
  /** The whole wait: carrier and the DHCP exchange. */
  readonly timeoutMs: number;
  readonly log: Logger;
  /** Option 12. */
  readonly hostname?: string;
  /** Option 60 (default "isboot"). */
  readonly vendorClass?: string;
  /** Probe the offered address with ARP and decline it when in use (default true). */
  readonly probe?: boolean;
}

/** The MAC's 6 bytes from its colon form. */
export function macBytes(mac: string): Uint8Array {
  return new Uint8Array(mac.split(":").map((h) => parseInt(h, 16)));
}

/**
 * Obtain a lease on `link`: set it up, wait for carrier, then DHCPDISCOVER
 * until a server acknowledges or `timeoutMs` ends (OperationalError). The
 * address is not applied here.
 */
export async function leaseOn(rt: Rtnetlink, link: Link, o: LeaseOptions): Promise<Lease> {
  if (!link.mac) throw new Error(`${link.name} has no hardware address`);
  const started = Date.now();
  rt.setUp(link.index);
  await waitForCarrier(rt, link, { linkTimeoutMs: o.timeoutMs, log: o.log });
  const mac = macBytes(link.mac);
  const t = new PacketTransport(link.index);
  try {
    const client: DhcpClientOptions = {
      mac,
      timeoutMs: Math.max(0, o.timeoutMs - (Date.now() - started)),
      ...(o.hostname ? { hostname: o.hostname } : {}),
      ...(o.vendorClass ? { vendorClass: o.vendorClass } : {}),
      log: (line) => o.log.debug(`${link.name}: DHCP: ${line}`),
      ...(o.probe === false ? {} : {
        addressInUse: async (a: IpAddress) => {
          const used = await arpProbe(link.index, mac, a);
          if (used) o.log.warn(`${link.name}: ${formatIp(a)} is in use on the link; declined`);
          return used;
        },
      }),
    };
    return await obtainLease(t, client);
  } finally {
    t.close();
  }
}

/** The NIC configuration that applies `lease` on `link` (routes marked proto dhcp). */
export function nicFromLease(lease: Lease, link: { name: string; mac: string | null }): NicConfig {
  return {
    mac: link.mac,
    ifname: link.name,
    vlan: 0,
    address: lease.address,
    prefixLength: lease.prefixLength,
    gateway: lease.router ?? null,
    dns: lease.dns,
    hostname: lease.hostname ?? null,
    origin: "dhcp",
    ...(lease.mtu ? { mtu: lease.mtu } : {}),
  };
}

/**
 * A root path with its CHAP credentials (dracut's `USER:PASS[:RUSER:RPASS]@`
 * prefix) replaced by `<redacted>`: secrets are never printed.
 */
export function redactRootPath(rootPath: string): string {
  const at = rootPath.lastIndexOf("@");
  return rootPath.startsWith("iscsi:") && at >= 0
    ? `iscsi:<redacted>${rootPath.slice(at)}`
    : rootPath;
}

/** A lease as JSON (addresses as text; times as ISO dates and seconds; no secrets). */
export function leaseJson(lease: Lease, ifname: string): Record<string, unknown> {
  return {
    interface: ifname,
    address: formatIp(lease.address),
    prefixLength: lease.prefixLength,
    router: lease.router ? formatIp(lease.router) : null,
    dns: lease.dns.map(formatIp),
    domain: lease.domain ?? null,
    hostname: lease.hostname ?? null,
    mtu: lease.mtu ?? null,
    server: formatIp(lease.serverId),
    leaseSeconds: lease.leaseSeconds,
    renewSeconds: lease.t1Seconds,
    rebindSeconds: lease.t2Seconds,
    obtained: new Date(lease.obtainedAt).toISOString(),
    rootPath: lease.rootPath !== undefined ? redactRootPath(lease.rootPath) : null,
  };
}

/** A lease as the lines `isboot dhcp` prints. */
export function leaseLines(lease: Lease, ifname: string): string[] {
  const j = leaseJson(lease, ifname);
  return [
    `${ifname}: ${j.address}/${j.prefixLength}${j.router ? ` via ${j.router}` : ""}`,
    `  server ${j.server}, lease ${lease.leaseSeconds} s (renew at ${lease.t1Seconds} s, rebind at ${lease.t2Seconds} s)`,
    ...(lease.dns.length ? [`  dns ${(j.dns as string[]).join(" ")}`] : []),
    ...(lease.domain ? [`  domain ${lease.domain}`] : []),
    ...(lease.hostname ? [`  hostname ${lease.hostname}`] : []),
    ...(lease.mtu ? [`  mtu ${lease.mtu}`] : []),
    ...(j.rootPath !== null ? [`  root-path ${j.rootPath}`] : []),
  ];
}
