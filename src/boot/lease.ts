/**
 * The boot NIC's DHCP lease in the root-storage daemon: renewed by isboot
 * (RENEW at T1 unicast to the server, REBIND at T2 broadcast; the client's
 * LeaseKeeper, src/net/dhcp/client.ts) for as long as no DHCP client of the
 * real root holds a lease for the interface.
 *
 * How it knows: before each renewal it looks for systemd-networkd's lease
 * file of the interface (/run/systemd/netif/leases/IFINDEX). The networkd
 * hand-off (src/net/handoff.ts) asks networkd to run DHCP on the boot NIC,
 * so once networkd holds a lease, it renews, and isboot stops. The ifupdown
 * and NetworkManager hand-offs leave the NIC unmanaged: isboot renews.
 *
 * A NAK or an expired lease never removes the address: the root disk is
 * behind it. Isboot logs it loudly, keeps the address and keeps asking
 * (docs/dhcp.md, "The lease after switch_root").
 *
 * @example
 * ```ts
 * const keeper = startBootLease(booted.dhcp, nic, { log, root: "/" });
 * keeper.status().state; // "bound"
 * keeper.stop();
 * ```
 * @module
 */
import type { Logger } from "../log.ts";
import { formatIp, type IpAddress } from "../net/addr.ts";
import type { ConfiguredNic } from "../net/configure.ts";
import { type DhcpTransport, LeaseKeeper, leaseTimes } from "../net/dhcp/client.ts";
import { type LeaseEntry, macBytes } from "../net/dhcp/acquire.ts";
import type { Lease } from "../net/dhcp/message.ts";
import { UdpTransport } from "../net/dhcp/socket.ts";

/** Where systemd-networkd keeps the lease of interface IFINDEX (relative to the root). */
export const NETWORKD_LEASES = "/run/systemd/netif/leases";

/**
 * Where `l` stands on the keeper's clock (RFC 2131 §4.4.5's states): bound
 * until T1, renewing until T2, rebinding until its end, then expired.
 */
function phase(l: Lease): string {
  const { renewAt, rebindAt, expiresAt } = leaseTimes(l);
  const now = performance.timeOrigin + performance.now();
  return now < renewAt
    ? "bound"
    : now < rebindAt
    ? "renewing"
    : now < expiresAt
    ? "rebinding"
    : "expired";
}

/** The lease keeper as the daemon holds it. */
export interface BootLease {
  status(): LeaseEntry;
  stop(): void;
}

/**
 * The lease the firmware got for `nic` (an iBFT NIC of origin DHCP that
 * names its DHCP server), for the keeper: its times are not in the table,
 * so it is renewed at once (the keeper's first renewal, 10 s on) and the
 * server's answer gives them. Null for a NIC without such a lease.
 */
export function firmwareLease(nic: ConfiguredNic, nowMs: number): Lease | null {
  const c = nic.config;
  if (c.origin !== "dhcp" || !c.dhcpServer || !c.address || c.address.family !== 4) return null;
  return {
    address: c.address,
    prefixLength: c.prefixLength,
    ...(c.gateway ? { router: c.gateway } : {}),
    dns: [...c.dns],
    serverId: c.dhcpServer,
    leaseSeconds: 3600,
    t1Seconds: 0,
    t2Seconds: 3150,
    obtainedAt: nowMs,
  };
}

/**
 * Keep `first` (a lease of `mac`) on `nic`, the configured NIC it is on.
 * Never throws: a keeper that cannot start is a warning (the address stays).
 */
export function startBootLease(
  first: Lease,
  mac: string,
  nic: ConfiguredNic,
  o: { log: Logger; root: string },
): BootLease {
  const { log } = o;
  let lease: Lease = first;
  let handedOver = false;
  let renewals = 0;
  const leaseFile = `${o.root.replace(/\/$/, "")}${NETWORKD_LEASES}/${nic.index}`;
  const networkdHolds = (): boolean => {
    try {
      return Deno.statSync(leaseFile).isFile;
    } catch {
      return false;
    }
  };
  let keeper: LeaseKeeper | null = null;
  let udp: UdpTransport | null = null;
  const stop = () => {
    keeper?.stop();
    udp?.close();
    keeper = null;
    udp = null;
  };
  try {
    udp = new UdpTransport(nic.ifname);
    const inner: DhcpTransport = udp;
    // Every renewal starts with a send: the moment to see whether the root's
    // own DHCP client holds the lease now.
    const transport: DhcpTransport = {
      send(payload: Uint8Array, to: "broadcast" | IpAddress) {
        if (!handedOver && networkdHolds()) {
          handedOver = true;
          log.info(
            `${nic.ifname}: systemd-networkd holds a DHCP lease for it; it renews from now on`,
          );
          queueMicrotask(stop);
          return Promise.resolve();
        }
        return handedOver ? Promise.resolve() : inner.send(payload, to);
      },
      receive: (ms: number) => (handedOver ? Promise.resolve(null) : inner.receive(ms)),
    };
    keeper = new LeaseKeeper(
      transport,
      first,
      { mac: macBytes(mac), timeoutMs: 60_000 },
      {
        renewed(l) {
          const changed = formatIp(l.address) !== formatIp(lease.address);
          lease = l;
          renewals++;
          if (changed) {
            // The root disk's connections use the old address: keep it; say so.
            log.error(
              `${nic.ifname}: the DHCP server now leases ${formatIp(l.address)}; ` +
                `${formatIp(first.address)} stays (the root disk uses it)`,
            );
          } else log.info(`${nic.ifname}: DHCP lease renewed, ${l.leaseSeconds} s`);
        },
        nak() {
          log.error(
            `${nic.ifname}: the DHCP server refused the lease of ${
              formatIp(lease.address)
            } (NAK); ` +
              `the address stays (the root disk uses it); asking again`,
          );
        },
        expired(l) {
          log.error(
            `${nic.ifname}: the DHCP lease of ${formatIp(l.address)} has expired; ` +
              `the address stays (the root disk uses it); asking again`,
          );
        },
        log: (line) => {
          log.debug(`${nic.ifname}: DHCP: ${line}`);
        },
      },
    );
    keeper.start();
  } catch (e) {
    log.warn(`${nic.ifname}: DHCP lease not kept: ${e instanceof Error ? e.message : e}`);
    stop();
  }
  return {
    status: () => {
      const l = keeper?.lease ?? lease;
      return {
        interface: nic.ifname,
        address: `${formatIp(l.address)}/${l.prefixLength}`,
        server: formatIp(l.serverId),
        obtained: new Date(l.obtainedAt).toISOString(),
        expires: new Date(l.obtainedAt + l.leaseSeconds * 1000).toISOString(),
        renewals,
        state: handedOver ? "handed over" : phase(l),
      };
    },
    stop,
  };
}
