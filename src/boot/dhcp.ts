/**
 * The boot's network from DHCP (`ip=dhcp`, `ip=IFACE:dhcp`, `netroot=dhcp`):
 * which interfaces to try, in what order, and the target the lease's root
 * path names (docs/dhcp.md, "Booting from DHCP").
 *
 * `ip=dhcp` tries every interface with a hardware address that has
 * carrier, in the kernel's order, as dracut does; the first lease wins. With one interface
 * to try, the client keeps asking for the whole boot timeout; with several,
 * each gets {@link PER_LINK_MS} a round.
 *
 * @example
 * ```ts
 * const got = await dhcpNetwork(rt, spec.dhcp!, { log, deadline });
 * nics.push(await configureNic(rt, got.nic, { linkTimeoutMs: 5_000, log }));
 * ```
 * @module
 */
import { InvalidInputError, IsbootError, OperationalError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { formatIp } from "../net/addr.ts";
import type { NicConfig } from "../net/configure.ts";
import { leaseOn, nicFromLease, redactRootPath } from "../net/dhcp/acquire.ts";
import type { Lease } from "../net/dhcp/message.ts";
import type { Link, Rtnetlink } from "../net/rtnetlink.ts";
import { parseNetRoot } from "../iscsi/root_path.ts";
import type { DhcpSpec, VlanSpec } from "./cmdline.ts";
import type { BootTarget } from "./spec.ts";

/** How long one interface is asked in a round when several are tried. */
export const PER_LINK_MS = 10_000;

/** A lease and where it was obtained. */
export interface DhcpResult {
  readonly lease: Lease;
  readonly link: Link;
  /** The lease applied as a NIC (MTU from `ip=IFACE:dhcp:MTU` over the lease's). */
  readonly nic: NicConfig;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The links `req` may use, in index order: VLAN links only when named
 * (`ip=eth0.5:dhcp`); every other link with a hardware address for `ip=dhcp`.
 */
function candidates(rt: Rtnetlink, req: DhcpSpec): Link[] {
  return rt.links()
    .filter((l) => l.name !== "lo" && l.mac !== null && (l.kind !== "vlan" || l.name === req.iface))
    .filter((l) => (req.iface ? l.name === req.iface : true))
    .filter((l) => (req.mac ? l.mac === req.mac : true))
    .sort((a, b) => a.index - b.index);
}

/**
 * Obtain a lease for the boot: each request of `requests` in turn (an
 * `ip=IFACE:dhcp` waits for its interface to appear), until one gets a lease
 * or `deadline` (ms since the epoch) passes.
 *
 * @throws OperationalError when no server answered in time.
 */
export async function dhcpNetwork(
  rt: Rtnetlink,
  requests: readonly DhcpSpec[],
  o: { log: Logger; deadline: number; hostname?: string; vlans?: readonly VlanSpec[] },
): Promise<DhcpResult> {
  let last = "";
  for (;;) {
    for (const req of requests) {
      const vlan = o.vlans?.find((v) => v.name === req.iface);
      if (vlan) makeVlan(rt, vlan);
      const links = candidates(rt, req);
      for (const l of links) rt.setUp(l.index);
      // One named interface: wait for its carrier inside leaseOn. Any: those with carrier now.
      const tries = req.iface || links.length === 1
        ? links
        : links.filter((l) => rt.link(l.index).carrier);
      for (const l of tries) {
        const left = o.deadline - Date.now();
        if (left <= 0) break;
        try {
          const lease = await leaseOn(rt, l, {
            timeoutMs: tries.length === 1 ? left : Math.min(left, PER_LINK_MS),
            log: o.log,
            ...(o.hostname ? { hostname: o.hostname } : {}),
          });
          o.log.info(
            `${l.name}: DHCP lease ${formatIp(lease.address)}/${lease.prefixLength} from ${
              formatIp(lease.serverId)
            }, ${lease.leaseSeconds} s`,
          );
          let nic = nicFromLease(lease, l);
          if (l.kind === "vlan" && l.parentIndex !== null) {
            // configureNic finds the hardware link by MAC, then its VLAN link.
            const parent = rt.link(l.parentIndex);
            nic = { ...nic, mac: parent.mac, ifname: parent.name, vlan: l.vlanId ?? 0 };
          }
          return { lease, link: l, nic: req.mtu ? { ...nic, mtu: req.mtu } : nic };
        } catch (e) {
          if (!(e instanceof IsbootError)) throw e;
          last = `${l.name}: ${e.message}`;
          o.log.warn(last);
        }
      }
    }
    if (Date.now() >= o.deadline) {
      const asked = requests.map((r) => r.iface ?? "any interface").join(", ");
      throw new OperationalError(
        `no DHCP lease on ${asked} within the boot timeout${last ? `; last: ${last}` : ""}`,
      );
    }
    await sleep(250);
  }
}

/** Make `v` on its parent (once the parent exists), both up; an existing link is kept. */
function makeVlan(rt: Rtnetlink, v: VlanSpec): void {
  const links = rt.links();
  if (links.some((l) => l.name === v.name)) return;
  const parent = links.find((l) => l.name === v.parent);
  if (!parent) return; // not there yet: the next round tries again
  rt.setUp(parent.index);
  rt.setUp(rt.createVlan(parent.index, v.name, v.id));
}

/**
 * The target a lease's root path names (RFC 4173, as `netroot=iscsi:...`).
 * An empty server field means the DHCP server itself (its server identifier).
 *
 * @throws InvalidInputError when the lease has no root path or it is malformed.
 */
export function targetFromLease(lease: Lease): BootTarget {
  const rp = lease.rootPath;
  if (rp === undefined || rp === "") {
    throw new InvalidInputError(
      "netroot=dhcp: the DHCP server sent no root path (option 17: iscsi:SERVER::PORT:LUN:TARGET)",
    );
  }
  let text = rp;
  const at = rp.lastIndexOf("@");
  const head = at >= 0 ? rp.slice(0, at + 1) : "iscsi:";
  const tail = at >= 0 ? rp.slice(at + 1) : rp.slice("iscsi:".length);
  if (rp.startsWith("iscsi:") && tail.startsWith(":")) {
    text = `${head}${formatIp(lease.serverId)}${tail}`;
  }
  try {
    const n = parseNetRoot(text);
    return {
      label: "DHCP root path",
      host: n.server,
      port: n.port,
      lun: n.lun,
      targetName: n.targetName,
      ...(n.chapUser !== undefined ? { chapUser: n.chapUser, chapSecret: n.chapSecret } : {}),
      ...(n.mutualUser !== undefined
        ? { mutualUser: n.mutualUser, mutualSecret: n.mutualSecret }
        : {}),
    };
  } catch (e) {
    if (!(e instanceof InvalidInputError)) throw e;
    throw new InvalidInputError(
      `DHCP root path ${redactRootPath(rp)}: ${e.message.replace(/^netroot: /, "")}`,
    );
  }
}
