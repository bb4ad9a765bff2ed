/**
 * The boot NIC guard: from READY until the daemon stops, keep the link, the
 * address and the routes that carry the root disk's iSCSI session in place,
 * whatever the real root's network stack does to them (an `ifdown` at
 * poweroff, a DHCP client's release, a network manager that flushes foreign
 * addresses). docs/boot.md "The boot NIC guard" states the rules.
 *
 * How: one socket listens to the rtnetlink groups for links, IPv4/IPv6
 * addresses and routes (src/sys/netlink.ts NetlinkSubscription); an event
 * that touches a guarded link, or a route to a guarded destination, only
 * schedules a reconcile. The reconcile never trusts the events: it dumps
 * links, addresses and routes, compares them with what the boot configured,
 * and puts back what is missing. So a burst of events costs one pass, an
 * overrun (ENOBUFS: the kernel dropped notifications) is just one more
 * reason to reconcile, and a periodic audit catches anything else.
 *
 * What "in place" means, and no more, so that the guard never fights the
 * root's own stack:
 * - the link (and a VLAN's parent) is administratively up;
 * - the boot address/prefix is present. Who owns it does not matter: another
 *   stack that re-adds it with lifetimes (a DHCP renewal of the same lease)
 *   is left alone; if it is removed (a new lease with another address), it is
 *   added back beside the new one, which makes it a secondary address in the
 *   same subnet, and the session keeps its source address;
 * - the route to each target: the connected prefix route when the target is
 *   on the boot subnet, else a host route to the target via the boot gateway.
 *   The host route is added at start: it keeps the session on the boot NIC
 *   even when the root's stack moves or drops the default route, and the
 *   guard never has to touch the default route, which belongs to that stack.
 *
 * @example
 * ```ts
 * const guard = NicGuard.start(booted.nics, [parseIp("192.0.2.1")!], { log });
 * guard.status(); // [{ nic: "eno1", address: "192.0.2.10/24", restores: 0, ... }]
 * guard.stop();
 * ```
 */
import type { Logger } from "../log.ts";
import { NETLINK_ROUTE, NetlinkSubscription, type NlMessage } from "../sys/netlink.ts";
import { formatIp, type IpAddress, samePrefix } from "./addr.ts";
import type { ConfiguredNic } from "./configure.ts";
import {
  decodeAddress,
  decodeLink,
  decodeRoute,
  type IfAddress,
  INFINITY_LIFE_TIME,
  type RouteEntry,
  RT_SCOPE_LINK,
  RT_SCOPE_UNIVERSE,
  RT_TABLE_MAIN,
  RTM_DELADDR,
  RTM_DELLINK,
  RTM_DELROUTE,
  RTM_NEWADDR,
  RTM_NEWLINK,
  RTM_NEWROUTE,
  Rtnetlink,
  RTNLGRP_IPV4_IFADDR,
  RTNLGRP_IPV4_ROUTE,
  RTNLGRP_IPV6_IFADDR,
  RTNLGRP_IPV6_ROUTE,
  RTNLGRP_LINK,
  RTPROT_KERNEL,
  RTPROT_STATIC,
} from "./rtnetlink.ts";

/** Options of {@link NicGuard.start}. */
export interface GuardOptions {
  readonly log: Logger;
  /** Wait this long after an event before reconciling, so a burst is one pass (ms, default 5). */
  readonly settleMs?: number;
  /** Reconcile this often even without events (ms, default 30 000; 0: never). */
  readonly auditMs?: number;
  /** SO_RCVBUF of the listening socket (tests make it tiny to provoke an overrun). */
  readonly recvBufferBytes?: number;
  /** Where the kernel's per-interface sysctls are (default /proc/sys/net). */
  readonly sysctlDir?: string;
}

/** What `isboot status` shows for one guarded NIC (field names are part of `status --json`). */
export interface GuardStatus {
  /** The link that carries the address (the VLAN link when there is one). */
  nic: string;
  /** The hardware link under a VLAN, else null. */
  parent: string | null;
  /** "ADDRESS/PREFIX", or null when the NIC has no address. */
  address: string | null;
  /** The routes kept in place, as `ip route` would name them. */
  routes: string[];
  /** How many times something was put back. */
  restores: number;
  /** Times the kernel dropped notifications and the state was read again. */
  overruns: number;
  /** The last change another program made to the guarded links, or null. */
  lastEvent: string | null;
  lastEventAt: string | null;
  /** The last log line of a restore, or null. */
  lastRestore: string | null;
}

/** A route the guard keeps. */
interface WantedRoute {
  readonly family: 4 | 6;
  readonly dst: IpAddress;
  readonly dstLen: number;
  readonly gateway: IpAddress | null;
  readonly onlink: boolean;
  readonly scope: number;
  readonly protocol: number;
  readonly prefsrc?: IpAddress;
  readonly priority?: number;
  /** As `ip route` shows it. */
  readonly label: string;
}

/** One guarded NIC: the links to keep up, the address, the routes. */
interface Guarded {
  readonly nic: ConfiguredNic;
  /** Current index of the address link (a VLAN made again gets a new one). */
  index: number;
  readonly routes: WantedRoute[];
  restores: number;
  overruns: number;
  lastEvent: string | null;
  lastEventAt: string | null;
  lastRestore: string | null;
  /** The boot address is now held with lifetimes by another stack (told once). */
  foreignLifetimes: boolean;
}

const ONE_DAY_MS = 86_400_000;
const MAX_RETRY_MS = 5000;

/** The network part of `a/prefix` (host bits cleared). */
export function networkOf(a: IpAddress, prefix: number): IpAddress {
  const bytes = Uint8Array.from(a.bytes);
  for (let bit = prefix; bit < bytes.length * 8; bit++) bytes[bit >> 3] &= ~(0x80 >> (bit & 7));
  return { family: a.family, bytes };
}

function sameIp(a: IpAddress | null, b: IpAddress | null): boolean {
  if (a === null || b === null) return a === b;
  return a.family === b.family && a.bytes.every((x, i) => x === b.bytes[i]);
}

function isZero(a: IpAddress | null): boolean {
  return a === null || a.bytes.every((x) => x === 0);
}

function isLoopback(a: IpAddress): boolean {
  return a.family === 4 ? a.bytes[0] === 127 : a.bytes.every((x, i) => x === (i === 15 ? 1 : 0));
}

function cidr(a: IpAddress, prefix: number): string {
  return `${formatIp(a)}/${prefix}`;
}

/**
 * The routes that carry `targets` over `nic`: the connected prefix route when
 * a target is on the boot subnet, a host route via the gateway for the others
 * (only for targets of the NIC's family; `targets` are those this NIC is for).
 */
export function wantedRoutes(nic: ConfiguredNic, targets: readonly IpAddress[]): WantedRoute[] {
  const c = nic.config;
  const out: WantedRoute[] = [];
  if (!c.address) return out;
  const a = c.address;
  const full = a.family === 4 ? 32 : 128;
  const onSubnet = (t: IpAddress) => samePrefix(a, t, c.prefixLength);
  const needPrefix = c.prefixLength < full &&
    (targets.some(onSubnet) || (c.gateway !== null && onSubnet(c.gateway)));
  if (needPrefix) {
    const net = networkOf(a, c.prefixLength);
    out.push({
      family: a.family,
      dst: net,
      dstLen: c.prefixLength,
      gateway: null,
      onlink: false,
      scope: a.family === 4 ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE,
      protocol: RTPROT_KERNEL,
      // As the kernel adds it with the address: IPv4 names the source, IPv6 uses metric 256.
      ...(a.family === 4 ? { prefsrc: a } : { priority: 256 }),
      label: `${cidr(net, c.prefixLength)} dev ${nic.ifname}`,
    });
  }
  for (const t of targets) {
    if (t.family !== a.family || onSubnet(t) || !c.gateway) continue;
    if (out.some((r) => sameIp(r.dst, t) && r.dstLen === full)) continue;
    out.push({
      family: a.family,
      dst: t,
      dstLen: full,
      gateway: c.gateway,
      onlink: !onSubnet(c.gateway),
      scope: RT_SCOPE_UNIVERSE,
      protocol: RTPROT_STATIC,
      label: `${cidr(t, full)} via ${formatIp(c.gateway)} dev ${nic.ifname}`,
    });
  }
  return out;
}

/**
 * Which NIC each target is reached through: the NIC that names it among its
 * `targets` (the iBFT's association), else the first NIC whose subnet holds
 * it, else the first NIC of its family with a gateway. Targets no NIC can
 * reach are left out (they are not the guard's to route).
 */
export function assignTargets(
  nics: readonly ConfiguredNic[],
  targets: readonly IpAddress[],
): Map<ConfiguredNic, IpAddress[]> {
  const out = new Map<ConfiguredNic, IpAddress[]>(nics.map((n) => [n, []]));
  for (const t of targets) {
    // A target on this host (a test, a local proxy) is reached over lo, never over a NIC.
    if (isLoopback(t)) continue;
    const named = nics.find((n) =>
      n.config.address?.family === t.family && n.config.targets?.some((x) => sameIp(x, t))
    );
    const local = nics.find((n) =>
      n.config.address && samePrefix(n.config.address, t, n.config.prefixLength)
    );
    const via = named ?? local ??
      nics.find((n) => n.config.address?.family === t.family && n.config.gateway !== null);
    if (via && !out.get(via)!.some((x) => sameIp(x, t))) out.get(via)!.push(t);
  }
  return out;
}

function routeMatches(r: RouteEntry, w: WantedRoute, index: number): boolean {
  return r.family === w.family && r.table === RT_TABLE_MAIN && r.index === index &&
    r.dstLen === w.dstLen && sameIp(r.dst, w.dst) &&
    (w.gateway === null ? isZero(r.gateway) : sameIp(r.gateway, w.gateway));
}

/**
 * Keeps the boot NICs configured; see the module comment.
 */
export class NicGuard {
  readonly #rt: Rtnetlink;
  readonly #sub: NetlinkSubscription;
  readonly #log: Logger;
  readonly #nics: Guarded[];
  readonly #settleMs: number;
  #settle: ReturnType<typeof setTimeout> | undefined;
  #retry: ReturnType<typeof setTimeout> | undefined;
  #retryMs = 100;
  #audit: ReturnType<typeof setInterval> | undefined;
  #lastError = "";
  #stopped = false;

  private constructor(rt: Rtnetlink, sub: NetlinkSubscription, nics: Guarded[], o: GuardOptions) {
    this.#rt = rt;
    this.#sub = sub;
    this.#nics = nics;
    this.#log = o.log;
    this.#settleMs = o.settleMs ?? 5;
  }

  /**
   * Start guarding `nics`, keeping a route to each of `targets` (the plan's
   * portals). Adds the host routes it keeps, logs what it guards, and from
   * then on restores what another program removes.
   *
   * @example
   * ```ts
   * const guard = NicGuard.start(nics, [parseIp("203.0.113.5")!], { log });
   * ```
   */
  static start(
    nics: readonly ConfiguredNic[],
    targets: readonly IpAddress[],
    o: GuardOptions,
  ): NicGuard {
    const byNic = assignTargets(nics, targets);
    const guarded: Guarded[] = nics.map((nic) => ({
      nic,
      index: nic.index,
      routes: wantedRoutes(nic, byNic.get(nic) ?? []),
      restores: 0,
      overruns: 0,
      lastEvent: null,
      lastEventAt: null,
      lastRestore: null,
      foreignLifetimes: false,
    }));
    for (const g of guarded) {
      if (g.nic.config.address?.family === 4) {
        promoteSecondaries(g.nic.ifname, o.sysctlDir ?? "/proc/sys/net", o.log);
      }
    }
    const rt = Rtnetlink.open();
    // The subscription exists before the guard that it reports to.
    const to: { guard?: NicGuard } = {};
    let sub: NetlinkSubscription;
    try {
      // Listen before the first pass, so that nothing between the two is missed.
      sub = NetlinkSubscription.open(
        NETLINK_ROUTE,
        [
          RTNLGRP_LINK,
          RTNLGRP_IPV4_IFADDR,
          RTNLGRP_IPV4_ROUTE,
          RTNLGRP_IPV6_IFADDR,
          RTNLGRP_IPV6_ROUTE,
        ],
        {
          messages: (ms) => {
            if (to.guard) to.guard.#onMessages(ms);
          },
          overrun: () => {
            if (to.guard) to.guard.#onOverrun();
          },
        },
        o.recvBufferBytes !== undefined ? { recvBufferBytes: o.recvBufferBytes } : {},
      );
    } catch (e) {
      rt.close();
      throw e;
    }
    const guard = new NicGuard(rt, sub, guarded, o);
    to.guard = guard;
    for (const g of guarded) {
      const what = [
        g.nic.config.address
          ? `address ${cidr(g.nic.config.address, g.nic.config.prefixLength)}`
          : "",
        ...g.routes.map((r) => `route ${r.label}`),
      ].filter(Boolean);
      o.log.info(
        `boot NIC guard: watching ${g.nic.ifname}` +
          (g.nic.parentName !== g.nic.ifname ? ` (VLAN on ${g.nic.parentName})` : "") +
          (what.length ? `: ${what.join(", ")}` : ""),
      );
    }
    guard.#reconcile(true);
    const auditMs = o.auditMs ?? 30_000;
    if (auditMs > 0) guard.#audit = setInterval(() => guard.#reconcile(false), auditMs);
    return guard;
  }

  /** One entry per guarded NIC. */
  status(): GuardStatus[] {
    return this.#nics.map((g) => ({
      nic: g.nic.ifname,
      parent: g.nic.parentName !== g.nic.ifname ? g.nic.parentName : null,
      address: g.nic.config.address ? cidr(g.nic.config.address, g.nic.config.prefixLength) : null,
      routes: g.routes.map((r) => r.label),
      restores: g.restores,
      overruns: g.overruns,
      lastEvent: g.lastEvent,
      lastEventAt: g.lastEventAt,
      lastRestore: g.lastRestore,
    }));
  }

  /** Stop listening and restoring (the daemon is ending). Idempotent. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    clearTimeout(this.#settle);
    clearTimeout(this.#retry);
    clearInterval(this.#audit);
    this.#sub.close();
    this.#rt.close();
  }

  #schedule(): void {
    if (this.#stopped || this.#settle !== undefined) return;
    this.#settle = setTimeout(() => {
      this.#settle = undefined;
      this.#reconcile(false);
    }, this.#settleMs);
  }

  #onOverrun(): void {
    for (const g of this.#nics) g.overruns++;
    this.#log.info(
      "boot NIC guard: netlink notifications were lost (receive queue overrun); reading the state again",
    );
    this.#schedule();
  }

  #onMessages(ms: NlMessage[]): void {
    let relevant = false;
    for (const m of ms) {
      const hit = this.#describe(m);
      if (!hit) continue;
      relevant = true;
      // Our own requests come back stamped with our port id; what the kernel
      // adds or brings up by itself (port id 0: the prefix route of a re-added
      // address, a link coming up) follows from our restores. Neither is news.
      const ours = m.pid !== 0 && m.pid === this.#rt.portId;
      const consequence = m.pid === 0 &&
        (m.type === RTM_NEWADDR || m.type === RTM_NEWROUTE ||
          (m.type === RTM_NEWLINK && hit.text.endsWith(" up")));
      if (!ours && !consequence) {
        hit.g.lastEvent = hit.text;
        hit.g.lastEventAt = new Date().toISOString();
        this.#log.debug(`boot NIC guard: ${hit.text}`);
      }
    }
    if (relevant) this.#schedule();
  }

  /** The guarded NIC a notification is about, and what it says; null when it is about none. */
  #describe(m: NlMessage): { g: Guarded; text: string } | null {
    try {
      if (m.type === RTM_NEWLINK || m.type === RTM_DELLINK) {
        const l = decodeLink(m.payload);
        const g = this.#nics.find((g) => g.index === l.index || g.nic.parentIndex === l.index);
        if (!g) return null;
        if (m.type === RTM_DELLINK) return { g, text: `link ${l.name} deleted` };
        return { g, text: `link ${l.name} ${l.up ? "up" : "down"}` };
      }
      if (m.type === RTM_NEWADDR || m.type === RTM_DELADDR) {
        const a = decodeAddress(m.payload);
        const g = a && this.#nics.find((g) => g.index === a.index);
        if (!a || !g) return null;
        const life = a.validLifetime === INFINITY_LIFE_TIME ? "" : ` (valid ${a.validLifetime} s)`;
        return {
          g,
          text: `address ${cidr(a.address, a.prefixLength)} ${
            m.type === RTM_NEWADDR ? "added to" : "removed from"
          } ${g.nic.ifname}${life}`,
        };
      }
      if (m.type === RTM_NEWROUTE || m.type === RTM_DELROUTE) {
        const r = decodeRoute(m.payload);
        if (!r || r.table !== RT_TABLE_MAIN) return null;
        const g = this.#nics.find((g) =>
          g.index === r.index ||
          g.routes.some((w) => w.dstLen === r.dstLen && sameIp(w.dst, r.dst))
        );
        if (!g) return null;
        const dst = r.dst ? cidr(r.dst, r.dstLen) : "default";
        return {
          g,
          text: `route ${dst}${r.gateway ? ` via ${formatIp(r.gateway)}` : ""} ${
            m.type === RTM_NEWROUTE ? "added" : "removed"
          }`,
        };
      }
    } catch {
      // A message we cannot decode tells us nothing; the reconcile reads the state anyway.
      return this.#nics.length ? { g: this.#nics[0], text: "undecodable notification" } : null;
    }
    return null;
  }

  /** Compare the kernel's state with what the boot configured and put back what is missing. */
  #reconcile(initial: boolean): void {
    if (this.#stopped) return;
    try {
      for (const g of this.#nics) this.#reconcileNic(g, initial);
      this.#retryMs = 100;
      this.#lastError = "";
    } catch (e) {
      // A change racing ours (EEXIST, an interrupted dump, a link half-way down): try again soon.
      const msg = e instanceof Error ? e.message : String(e);
      if (msg !== this.#lastError) this.#log.warn(`boot NIC guard: ${msg}; retrying`);
      this.#lastError = msg;
      clearTimeout(this.#retry);
      this.#retry = setTimeout(() => this.#reconcile(false), this.#retryMs);
      this.#retryMs = Math.min(this.#retryMs * 2, MAX_RETRY_MS);
    }
  }

  #reconcileNic(g: Guarded, initial: boolean): void {
    const rt = this.#rt;
    const c = g.nic.config;
    const fixed: string[] = [];
    const links = rt.links();
    const parent = links.find((l) => l.index === g.nic.parentIndex);
    if (!parent) {
      throw new Error(`${g.nic.parentName} (index ${g.nic.parentIndex}) is gone`);
    }
    if (!parent.up) {
      rt.setUp(parent.index);
      fixed.push(`link ${parent.name} was set down, set it up`);
    }
    if (g.nic.parentIndex !== g.nic.index || c.vlan) {
      const vlan = links.find((l) => l.index === g.index);
      if (!vlan) {
        g.index = rt.createVlan(g.nic.parentIndex, g.nic.ifname, c.vlan);
        rt.setUp(g.index, c.mtu);
        fixed.push(`VLAN link ${g.nic.ifname} was deleted, made it again`);
      } else if (!vlan.up) {
        rt.setUp(vlan.index);
        fixed.push(`link ${vlan.name} was set down, set it up`);
      }
    }
    if (c.address) {
      const a = c.address;
      const mine = rt.addresses(a.family).filter((x) => x.index === g.index);
      const have = mine.find((x) => sameIp(x.address, a) && x.prefixLength === c.prefixLength);
      if (!have) {
        rt.addAddress(g.index, a, c.prefixLength);
        const others = mine.filter((x) => !sameIp(x.address, a)).map((x) =>
          cidr(x.address, x.prefixLength)
        );
        fixed.push(
          `address ${cidr(a, c.prefixLength)} was removed, added it back` +
            (others.length ? ` beside ${others.join(", ")}` : ""),
        );
        g.foreignLifetimes = false;
      } else this.#standAside(g, have);
      const routes = rt.routes(a.family);
      for (const w of g.routes) {
        if (routes.some((r) => routeMatches(r, w, g.index))) continue;
        rt.addRoute({
          index: g.index,
          family: w.family,
          dst: w.dst,
          dstLen: w.dstLen,
          gateway: w.gateway,
          protocol: w.protocol,
          onlink: w.onlink,
          scope: w.scope,
          ...(w.prefsrc ? { prefsrc: w.prefsrc } : {}),
          ...(w.priority !== undefined ? { priority: w.priority } : {}),
        });
        if (initial && w.protocol === RTPROT_STATIC) {
          this.#log.info(`boot NIC guard: added route ${w.label} for the target`);
        } else fixed.push(`route ${w.label} was removed, added it back`);
      }
    }
    if (fixed.length === 0) return;
    g.restores++;
    const line = `boot NIC guard: ${g.nic.ifname}: ${fixed.join("; ")}`;
    g.lastRestore = `${new Date().toISOString()} ${line}`;
    this.#log.info(line);
  }

  /** The boot address is there; if another stack now holds it with lifetimes, say once that it owns it. */
  #standAside(g: Guarded, have: IfAddress): void {
    const finite = have.validLifetime !== INFINITY_LIFE_TIME;
    if (finite && !g.foreignLifetimes) {
      const days = have.validLifetime * 1000 >= ONE_DAY_MS;
      this.#log.info(
        `boot NIC guard: ${g.nic.ifname}: ${
          cidr(have.address, have.prefixLength)
        } is now held by another stack (valid ${
          days ? `${Math.round(have.validLifetime / 86400)} d` : `${have.validLifetime} s`
        }); leaving its lifetimes alone, adding it back only if it goes`,
      );
    }
    g.foreignLifetimes = finite;
  }
}

/**
 * Keep the other addresses of the subnet when the primary goes: without
 * promote_secondaries the kernel deletes every secondary address with the
 * primary, so a stack that swaps leases (new address added, old removed)
 * would take the boot address with it, or the guard's re-added boot address
 * would take the new lease with it. Best effort: logged when refused.
 */
function promoteSecondaries(ifname: string, sysctlDir: string, log: Logger): void {
  const path = `${sysctlDir}/ipv4/conf/${ifname}/promote_secondaries`;
  try {
    Deno.writeTextFileSync(path, "1");
  } catch (e) {
    log.warn(`boot NIC guard: ${path}: ${e instanceof Error ? e.message : e}`);
  }
}
