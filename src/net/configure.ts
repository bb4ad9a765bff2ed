/**
 * Bring up the boot NIC the way the firmware had it: find the link by MAC
 * (waiting for a late driver), set it up, make the 802.1Q VLAN link when one
 * is named, wait for carrier, add the address and the default route, and
 * write DNS and the hostname. All through rtnetlink (src/net/rtnetlink.ts).
 *
 * @example
 * ```ts
 * const rt = Rtnetlink.open();
 * const nic = await configureNic(rt, {
 *   mac: "52:54:00:12:34:56", vlan: 0, address: parseIp("10.0.2.15"), prefixLength: 24,
 *   gateway: parseIp("10.0.2.2"), dns: [], hostname: null, origin: "static",
 * }, { linkTimeoutMs: 30_000, log });
 * nic.ifname; // "enp0s3"
 * ```
 */
import { OperationalError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { formatIp, type IpAddress, samePrefix } from "./addr.ts";
import { type Link, Rtnetlink, RTPROT_DHCP, RTPROT_STATIC } from "./rtnetlink.ts";

/** What one boot NIC should look like. */
export interface NicConfig {
  /** Lower-case colon MAC; null to find the link by `ifname` instead. */
  readonly mac: string | null;
  /** Interface name to use when there is no MAC (`ip=...:IFACE:...`). */
  readonly ifname?: string;
  /** 802.1Q VLAN id; 0 for none. */
  readonly vlan: number;
  /** null when the NIC has no address to set (the firmware left it zero). */
  readonly address: IpAddress | null;
  readonly prefixLength: number;
  readonly gateway: IpAddress | null;
  readonly dns: readonly IpAddress[];
  readonly hostname: string | null;
  /** "dhcp" when the firmware's address is a DHCP lease (routes are marked proto dhcp). */
  readonly origin: "dhcp" | "static";
  /** For a lease: the DHCP server that granted it (the iBFT's), so that it can be renewed. */
  readonly dhcpServer?: IpAddress;
  readonly mtu?: number;
  /**
   * Add the default route via `gateway` (default true). False for a NIC that
   * carries a second path only: it gets a host route via `gateway` to each of
   * its `targets` off its subnet instead, and the default route stays the
   * boot NIC's.
   */
  readonly defaultRoute?: boolean;
  /** The portals reached through this NIC (the iBFT's NIC association). */
  readonly targets?: readonly IpAddress[];
  /**
   * A NIC the boot does not depend on (a second path's): no carrier within
   * {@link OPTIONAL_CARRIER_MS} is a warning, and the address and routes are
   * set anyway, so that its path can join once a cable is in.
   */
  readonly optional?: boolean;
}

/** How long an optional NIC's carrier is waited for before it is configured without. */
export const OPTIONAL_CARRIER_MS = 5_000;

/** A NIC after configuration: the link the address is on, and its parent for VLANs. */
export interface ConfiguredNic {
  readonly config: NicConfig;
  /** The link carrying the address (the VLAN link when there is one). */
  readonly ifname: string;
  readonly index: number;
  /** The hardware link (same as ifname without VLAN). */
  readonly parentName: string;
  readonly parentIndex: number;
}

export interface ConfigureOptions {
  /** How long to wait for the link to appear and for carrier, each. */
  readonly linkTimeoutMs: number;
  readonly log: Logger;
  /** Poll interval while waiting (ms). */
  readonly pollMs?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The VLAN link's name: `PARENT.VID`, or `vlanVID` when that exceeds IFNAMSIZ-1 (15). */
export function vlanName(parent: string, vlan: number): string {
  const name = `${parent}.${vlan}`;
  return name.length <= 15 ? name : `vlan${vlan}`;
}

function findHardware(links: Link[], cfg: NicConfig): Link | undefined {
  if (cfg.mac) return links.find((l) => l.mac === cfg.mac && l.kind !== "vlan");
  return links.find((l) => l.name === cfg.ifname);
}

/**
 * Wait until the link with the configured MAC (or name) exists; driver
 * loading and udev renaming can make it late.
 */
export async function waitForLink(
  rt: Rtnetlink,
  cfg: NicConfig,
  opts: ConfigureOptions,
): Promise<Link> {
  const want = cfg.mac ? `MAC ${cfg.mac}` : `interface ${cfg.ifname}`;
  const deadline = Date.now() + opts.linkTimeoutMs;
  let logged = false;
  for (;;) {
    const links = rt.links();
    const l = findHardware(links, cfg);
    if (l) return l;
    if (Date.now() >= deadline) {
      const seen = links.filter((x) => x.name !== "lo").map((x) => `${x.name} ${x.mac ?? "-"}`);
      throw new OperationalError(
        `no network interface with ${want} after ${opts.linkTimeoutMs / 1000} s ` +
          `(present: ${seen.join(", ") || "none"}; is the NIC driver in the initramfs?)`,
      );
    }
    if (!logged) opts.log.info(`waiting for the network interface with ${want}`);
    logged = true;
    await sleep(opts.pollMs ?? 50);
  }
}

/** Wait until `link` has carrier, within `opts.linkTimeoutMs`. */
export async function waitForCarrier(
  rt: Rtnetlink,
  link: Link,
  opts: ConfigureOptions,
): Promise<void> {
  const deadline = Date.now() + opts.linkTimeoutMs;
  let logged = false;
  for (;;) {
    if (rt.link(link.index).carrier) return;
    if (Date.now() >= deadline) {
      throw new OperationalError(
        `no carrier on ${link.name} after ${opts.linkTimeoutMs / 1000} s (cable, switch port?)`,
      );
    }
    if (!logged) opts.log.info(`waiting for carrier on ${link.name}`);
    logged = true;
    await sleep(opts.pollMs ?? 50);
  }
}

/**
 * The NIC `cfg` names as it is now, changing nothing: its hardware link (by
 * MAC, else name) and its VLAN link. For a daemon that takes over from the
 * one that configured it (docs/boot.md "Live upgrade"): by then the root's
 * network stack may own the address, and the guard keeps what is there.
 *
 * @example
 * ```ts
 * const nic = adoptNic(rt, spec.nics[0]); // { ifname: "ens3", index: 2, ... }
 * ```
 */
export function adoptNic(rt: Rtnetlink, cfg: NicConfig): ConfiguredNic {
  const links = rt.links();
  const hw = findHardware(links, cfg);
  if (!hw) {
    throw new OperationalError(
      `no network interface with ${cfg.mac ? `MAC ${cfg.mac}` : `name ${cfg.ifname}`}`,
    );
  }
  let index = hw.index, ifname = hw.name;
  if (cfg.vlan) {
    const v = links.find((l) =>
      l.kind === "vlan" && l.parentIndex === hw.index && l.vlanId === cfg.vlan
    );
    if (!v) throw new OperationalError(`no VLAN ${cfg.vlan} link on ${hw.name}`);
    index = v.index;
    ifname = v.name;
  }
  return { config: cfg, ifname, index, parentName: hw.name, parentIndex: hw.index };
}

/**
 * Configure one NIC as `cfg` says. Idempotent: an existing VLAN link, address
 * or route is reused or replaced, so a retried boot step does not fail.
 */
export async function configureNic(
  rt: Rtnetlink,
  cfg: NicConfig,
  opts: ConfigureOptions,
): Promise<ConfiguredNic> {
  const hw = await waitForLink(rt, cfg, opts);
  rt.setUp(hw.index, cfg.vlan ? undefined : cfg.mtu);
  let index = hw.index, ifname = hw.name;
  if (cfg.vlan) {
    const existing = rt.links().find((l) =>
      l.kind === "vlan" && l.parentIndex === hw.index && l.vlanId === cfg.vlan
    );
    ifname = existing?.name ?? vlanName(hw.name, cfg.vlan);
    index = existing?.index ?? rt.createVlan(hw.index, ifname, cfg.vlan);
    rt.setUp(index, cfg.mtu);
  }
  if (cfg.optional) {
    const shortly = { ...opts, linkTimeoutMs: Math.min(opts.linkTimeoutMs, OPTIONAL_CARRIER_MS) };
    await waitForCarrier(rt, hw, shortly).catch((e) =>
      opts.log.warn(`${e instanceof Error ? e.message : e}; configured without (a second path)`)
    );
  } else await waitForCarrier(rt, hw, opts);
  if (cfg.address) {
    rt.addAddress(index, cfg.address, cfg.prefixLength);
    const address = cfg.address;
    const gateway = cfg.gateway;
    const protocol = cfg.origin === "dhcp" ? RTPROT_DHCP : RTPROT_STATIC;
    const onlink = gateway !== null && !samePrefix(address, gateway, cfg.prefixLength);
    if (gateway && cfg.defaultRoute !== false) {
      rt.addRoute({
        index,
        family: address.family,
        dst: null,
        dstLen: 0,
        gateway,
        protocol,
        onlink,
      });
    } else if (gateway) {
      for (const t of cfg.targets ?? []) {
        if (t.family !== address.family || samePrefix(address, t, cfg.prefixLength)) continue;
        const full = t.family === 4 ? 32 : 128;
        rt.addRoute({ index, family: t.family, dst: t, dstLen: full, gateway, protocol, onlink });
      }
    }
  }
  opts.log.info(
    `${ifname}${cfg.vlan ? ` (VLAN ${cfg.vlan} on ${hw.name})` : ""} ${hw.mac ?? ""}: ` +
      (cfg.address ? `${formatIp(cfg.address)}/${cfg.prefixLength}` : "no address") +
      (cfg.gateway ? ` via ${formatIp(cfg.gateway)}` : ""),
  );
  return { config: cfg, ifname, index, parentName: hw.name, parentIndex: hw.index };
}

/**
 * Write DNS servers to `ETC/resolv.conf` and the hostname to `ETC/hostname`
 * (and, when `kernelHostname` is set, to /proc/sys/kernel/hostname). Nothing is
 * written for absent values, so an existing file stays; a hostname that is not
 * an RFC 1123 name (at most 63 characters) is ignored.
 */
export async function writeResolver(
  etc: string,
  dns: readonly IpAddress[],
  hostname: string | null,
  kernelHostname: boolean,
): Promise<void> {
  await Deno.mkdir(etc, { recursive: true });
  if (dns.length) {
    const lines = [
      "# written by isboot from the iBFT",
      ...dns.map((d) => `nameserver ${formatIp(d)}`),
    ];
    await Deno.writeTextFile(`${etc}/resolv.conf`, lines.join("\n") + "\n");
  }
  // RFC 1123 host names only: the iBFT is firmware input, and this lands in /etc and the kernel.
  if (hostname && /^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,62})$/.test(hostname)) {
    await Deno.writeTextFile(`${etc}/hostname`, hostname + "\n");
    if (kernelHostname) await Deno.writeTextFile("/proc/sys/kernel/hostname", hostname);
  }
}
