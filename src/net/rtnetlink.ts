/**
 * rtnetlink (include/uapi/linux/rtnetlink.h, if_link.h, if_addr.h): the few
 * requests a boot NIC needs — list links, set a link up, create a VLAN, add an
 * address and a route, list addresses and routes — over the NETLINK_ROUTE
 * socket of src/sys/netlink.ts, and the multicast groups that announce
 * changes to them (the boot NIC guard, src/net/guard.ts, listens to those).
 * Replaces `ip link/addr/route`; nothing here spawns a program.
 *
 * @example
 * ```ts
 * const rt = Rtnetlink.open();
 * try {
 *   const eth = rt.links().find((l) => l.mac === "52:54:00:12:34:56");
 *   if (eth) rt.setUp(eth.index);
 * } finally { rt.close(); }
 * ```
 */
import { concatBytes } from "../bytes.ts";
import {
  Attrs,
  AttrWriter,
  NETLINK_ROUTE,
  NetlinkSocket,
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLM_F_REPLACE,
} from "../sys/netlink.ts";
import { AF_INET, AF_INET6 } from "../sys/socket.ts";
import type { IpAddress } from "./addr.ts";

/** Message types (rtnetlink.h). */
export const RTM_NEWLINK = 16;
export const RTM_DELLINK = 17;
export const RTM_GETLINK = 18;
export const RTM_NEWADDR = 20;
export const RTM_DELADDR = 21;
export const RTM_GETADDR = 22;
export const RTM_NEWROUTE = 24;
export const RTM_DELROUTE = 25;
export const RTM_GETROUTE = 26;

/** Multicast groups (enum rtnetlink_groups): group numbers for NETLINK_ADD_MEMBERSHIP. */
export const RTNLGRP_LINK = 1;
export const RTNLGRP_IPV4_IFADDR = 5;
export const RTNLGRP_IPV4_ROUTE = 7;
export const RTNLGRP_IPV6_IFADDR = 9;
export const RTNLGRP_IPV6_ROUTE = 11;

/** Link attributes (if_link.h). */
export const IFLA_ADDRESS = 1;
export const IFLA_IFNAME = 3;
export const IFLA_MTU = 4;
export const IFLA_LINK = 5;
export const IFLA_OPERSTATE = 16;
export const IFLA_LINKINFO = 18;
export const IFLA_CARRIER = 33;
export const IFLA_INFO_KIND = 1;
export const IFLA_INFO_DATA = 2;
export const IFLA_VLAN_ID = 1;

/** Address attributes and flags (if_addr.h). */
export const IFA_ADDRESS = 1;
export const IFA_LOCAL = 2;
export const IFA_BROADCAST = 4;
export const IFA_CACHEINFO = 6;
export const IFA_FLAGS = 8;
export const IFA_F_SECONDARY = 0x01;
export const IFA_F_NODAD = 0x02;
export const IFA_F_PERMANENT = 0x80;
/** ifa_cacheinfo lifetime meaning "forever". */
export const INFINITY_LIFE_TIME = 0xffffffff;

/** Route attributes and values (rtnetlink.h). */
export const RTA_DST = 1;
export const RTA_OIF = 4;
export const RTA_GATEWAY = 5;
export const RTA_PRIORITY = 6;
export const RTA_PREFSRC = 7;
export const RTA_TABLE = 15;
export const RT_TABLE_MAIN = 254;
export const RT_SCOPE_UNIVERSE = 0;
export const RT_SCOPE_LINK = 253;
export const RTN_UNICAST = 1;
export const RTNH_F_ONLINK = 4;
/** Route origins: `ip route` shows them as proto static / dhcp; network managers key on them. */
export const RTPROT_KERNEL = 2;
export const RTPROT_STATIC = 4;
export const RTPROT_DHCP = 16;

/** Interface flags (if.h). */
export const IFF_UP = 0x1;
export const IFF_LOWER_UP = 0x10000;

/** IF_OPER_* (RFC 2863 operstates). */
export const IF_OPER_UP = 6;

const IFINFOMSG_LEN = 16;
const IFADDRMSG_LEN = 8;
const RTMSG_LEN = 12;

/** One network interface as the kernel reports it. */
export interface Link {
  readonly index: number;
  readonly name: string;
  /** Lower-case colon form; null for links without a hardware address (lo has zeros). */
  readonly mac: string | null;
  readonly flags: number;
  readonly up: boolean;
  /** Carrier present (IFLA_CARRIER, else IFF_LOWER_UP). */
  readonly carrier: boolean;
  readonly mtu: number;
  /** Link kind from IFLA_LINKINFO ("vlan", "dummy", ...), or null for hardware. */
  readonly kind: string | null;
  /** For stacked links (VLAN): the parent's index. */
  readonly parentIndex: number | null;
  readonly vlanId: number | null;
}

function ifinfomsg(index: number, flags = 0, change = 0): Uint8Array {
  const b = new Uint8Array(IFINFOMSG_LEN);
  const dv = new DataView(b.buffer);
  dv.setUint8(0, 0); // AF_UNSPEC
  dv.setInt32(4, index, true);
  dv.setUint32(8, flags, true);
  dv.setUint32(12, change, true);
  return b;
}

function macText(d: Uint8Array | undefined): string | null {
  if (!d || d.length !== 6 || d.every((x) => x === 0)) return null;
  return Array.from(d, (x) => x.toString(16).padStart(2, "0")).join(":");
}

/** Decode one RTM_NEWLINK message payload. */
export function decodeLink(payload: Uint8Array): Link {
  if (payload.length < IFINFOMSG_LEN) throw new RangeError("ifinfomsg too short");
  const dv = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const index = dv.getInt32(4, true);
  const flags = dv.getUint32(8, true);
  const a = Attrs.parse(payload.subarray(IFINFOMSG_LEN));
  const info = a.nested(IFLA_LINKINFO);
  const kind = info?.str(IFLA_INFO_KIND) ?? null;
  const vlanId = kind === "vlan" ? info?.nested(IFLA_INFO_DATA)?.u16(IFLA_VLAN_ID) ?? null : null;
  const carrierAttr = a.u8(IFLA_CARRIER);
  return {
    index,
    name: a.str(IFLA_IFNAME) ?? `if${index}`,
    mac: macText(a.get(IFLA_ADDRESS)),
    flags,
    up: (flags & IFF_UP) !== 0,
    carrier: carrierAttr !== undefined ? carrierAttr === 1 : (flags & IFF_LOWER_UP) !== 0,
    mtu: a.u32(IFLA_MTU) ?? 0,
    kind,
    parentIndex: a.u32(IFLA_LINK) ?? null,
    vlanId,
  };
}

/** One address as RTM_NEWADDR/RTM_DELADDR describe it. */
export interface IfAddress {
  readonly index: number;
  readonly address: IpAddress;
  readonly prefixLength: number;
  /** IFA_F_* (the 32-bit IFA_FLAGS when present). */
  readonly flags: number;
  /** Seconds; INFINITY_LIFE_TIME for a permanent address. */
  readonly validLifetime: number;
  readonly preferredLifetime: number;
}

function ipOf(family: number, d: Uint8Array | undefined): IpAddress | null {
  if (family === AF_INET && d?.length === 4) return { family: 4, bytes: d.slice() };
  if (family === AF_INET6 && d?.length === 16) return { family: 6, bytes: d.slice() };
  return null;
}

/** Decode one address message payload (struct ifaddrmsg + attributes); null for other families. */
export function decodeAddress(payload: Uint8Array): IfAddress | null {
  if (payload.length < IFADDRMSG_LEN) throw new RangeError("ifaddrmsg too short");
  const dv = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const family = payload[0];
  const a = Attrs.parse(payload.subarray(IFADDRMSG_LEN));
  // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point links.
  const address = ipOf(family, a.get(IFA_LOCAL) ?? a.get(IFA_ADDRESS));
  if (!address) return null;
  const ci = a.get(IFA_CACHEINFO);
  const ciView = ci && ci.length >= 8 ? new DataView(ci.buffer, ci.byteOffset, 8) : null;
  return {
    index: dv.getUint32(4, true),
    address,
    prefixLength: payload[1],
    flags: a.u32(IFA_FLAGS) ?? payload[2],
    preferredLifetime: ciView?.getUint32(0, true) ?? INFINITY_LIFE_TIME,
    validLifetime: ciView?.getUint32(4, true) ?? INFINITY_LIFE_TIME,
  };
}

/** One route as RTM_NEWROUTE/RTM_DELROUTE describe it. */
export interface RouteEntry {
  readonly family: 4 | 6;
  /** null: the default route. */
  readonly dst: IpAddress | null;
  readonly dstLen: number;
  readonly gateway: IpAddress | null;
  /** Output interface; null for multipath or blackhole routes. */
  readonly index: number | null;
  readonly table: number;
  readonly protocol: number;
  readonly scope: number;
  readonly type: number;
  readonly priority: number;
}

/** Decode one route message payload (struct rtmsg + attributes); null for other families. */
export function decodeRoute(payload: Uint8Array): RouteEntry | null {
  if (payload.length < RTMSG_LEN) throw new RangeError("rtmsg too short");
  const family = payload[0];
  if (family !== AF_INET && family !== AF_INET6) return null;
  const a = Attrs.parse(payload.subarray(RTMSG_LEN));
  return {
    family: family === AF_INET ? 4 : 6,
    dst: ipOf(family, a.get(RTA_DST)),
    dstLen: payload[1],
    gateway: ipOf(family, a.get(RTA_GATEWAY)),
    index: a.u32(RTA_OIF) ?? null,
    table: a.u32(RTA_TABLE) ?? payload[4],
    protocol: payload[5],
    scope: payload[6],
    type: payload[7],
    priority: a.u32(RTA_PRIORITY) ?? 0,
  };
}

/** The rtnetlink requests isboot makes. Synchronous: each is two syscalls. */
export class Rtnetlink {
  #nl: NetlinkSocket;

  private constructor(nl: NetlinkSocket) {
    this.#nl = nl;
  }

  /**
   * The socket's netlink port id: the kernel stamps it on the notifications
   * of changes this socket requested, so a listener can tell its own apart.
   */
  get portId(): number {
    return this.#nl.portId;
  }

  /** Open a NETLINK_ROUTE socket (in the caller's network namespace). */
  static open(): Rtnetlink {
    return new Rtnetlink(NetlinkSocket.open(NETLINK_ROUTE));
  }

  /** Every link (RTM_GETLINK dump). */
  links(): Link[] {
    return this.#nl.dump(RTM_GETLINK, ifinfomsg(0), "RTM_GETLINK").filter((m) =>
      m.type === RTM_NEWLINK
    ).map((m) => decodeLink(m.payload));
  }

  /** One link by index. */
  link(index: number): Link {
    const [m] = this.#nl.request(RTM_GETLINK, 0, ifinfomsg(index), `RTM_GETLINK ${index}`);
    return decodeLink(m.payload);
  }

  /** Every address of `family` (RTM_GETADDR dump). */
  addresses(family: 4 | 6): IfAddress[] {
    const ifa = new Uint8Array(IFADDRMSG_LEN);
    ifa[0] = family === 4 ? AF_INET : AF_INET6;
    return this.#nl.dump(RTM_GETADDR, ifa, "RTM_GETADDR").filter((m) => m.type === RTM_NEWADDR)
      .map((m) => decodeAddress(m.payload)).filter((a): a is IfAddress => a !== null);
  }

  /** Every route of `family` in every table (RTM_GETROUTE dump). */
  routes(family: 4 | 6): RouteEntry[] {
    const rtm = new Uint8Array(RTMSG_LEN);
    rtm[0] = family === 4 ? AF_INET : AF_INET6;
    return this.#nl.dump(RTM_GETROUTE, rtm, "RTM_GETROUTE").filter((m) => m.type === RTM_NEWROUTE)
      .map((m) => decodeRoute(m.payload)).filter((r): r is RouteEntry => r !== null);
  }

  /** Set a link administratively up (and its MTU, when given). */
  setUp(index: number, mtu?: number): void {
    const attrs = new AttrWriter();
    if (mtu !== undefined) attrs.u32(IFLA_MTU, mtu);
    this.#nl.request(
      RTM_NEWLINK,
      0,
      concatBytes([ifinfomsg(index, IFF_UP, IFF_UP), attrs.bytes()]),
      `RTM_NEWLINK ${index} up`,
    );
  }

  /** Create an 802.1Q VLAN link `name` with `vlanId` on `parentIndex`; returns its index. */
  createVlan(parentIndex: number, name: string, vlanId: number): number {
    const attrs = new AttrWriter()
      .u32(IFLA_LINK, parentIndex)
      .str(IFLA_IFNAME, name)
      .nested(
        IFLA_LINKINFO,
        (li) =>
          li.str(IFLA_INFO_KIND, "vlan").nested(IFLA_INFO_DATA, (d) => d.u16(IFLA_VLAN_ID, vlanId)),
      )
      .bytes();
    this.#nl.request(
      RTM_NEWLINK,
      NLM_F_CREATE | NLM_F_EXCL,
      concatBytes([ifinfomsg(0), attrs]),
      `RTM_NEWLINK vlan ${name}`,
    );
    const made = this.links().find((l) => l.name === name);
    if (!made) throw new RangeError(`VLAN ${name} was created but is not listed`);
    return made.index;
  }

  /**
   * Add (or replace) `address/prefixLength` on a link. IPv6 addresses skip
   * duplicate address detection: the firmware already used this address, and a
   * tentative address cannot be a source for the login.
   */
  addAddress(index: number, address: IpAddress, prefixLength: number): void {
    const b = new Uint8Array(IFADDRMSG_LEN);
    b[0] = address.family === 4 ? AF_INET : AF_INET6;
    b[1] = prefixLength;
    b[2] = address.family === 6 ? IFA_F_NODAD : 0;
    b[3] = RT_SCOPE_UNIVERSE;
    new DataView(b.buffer).setUint32(4, index, true);
    const attrs = new AttrWriter().raw(IFA_LOCAL, address.bytes).raw(IFA_ADDRESS, address.bytes);
    if (address.family === 4 && prefixLength < 31) {
      const bcast = Uint8Array.from(address.bytes);
      for (let bit = prefixLength; bit < 32; bit++) bcast[bit >> 3] |= 0x80 >> (bit & 7);
      attrs.raw(IFA_BROADCAST, bcast);
    }
    this.#nl.request(
      RTM_NEWADDR,
      NLM_F_CREATE | NLM_F_REPLACE,
      concatBytes([b, attrs.bytes()]),
      "RTM_NEWADDR",
    );
  }

  /**
   * Add (or replace) a route to `dst/dstLen` (default route: dst null, 0) via
   * `gateway` out of link `index`. `onlink` lets a gateway outside the
   * link's prefix be used, as some firmware hands out.
   */
  addRoute(r: {
    index: number;
    family: 4 | 6;
    dst: IpAddress | null;
    dstLen: number;
    gateway: IpAddress | null;
    protocol: number;
    onlink?: boolean;
    /** RT_SCOPE_UNIVERSE unless told (a prefix route is RT_SCOPE_LINK). */
    scope?: number;
    /** Preferred source address (RTA_PREFSRC). */
    prefsrc?: IpAddress;
    /** Metric (RTA_PRIORITY); the kernel's default when absent. */
    priority?: number;
  }): void {
    const b = new Uint8Array(RTMSG_LEN);
    b[0] = r.family === 4 ? AF_INET : AF_INET6;
    b[1] = r.dstLen;
    b[4] = RT_TABLE_MAIN;
    b[5] = r.protocol;
    b[6] = r.scope ?? RT_SCOPE_UNIVERSE;
    b[7] = RTN_UNICAST;
    new DataView(b.buffer).setUint32(8, r.onlink ? RTNH_F_ONLINK : 0, true);
    const attrs = new AttrWriter().u32(RTA_TABLE, RT_TABLE_MAIN).u32(RTA_OIF, r.index);
    if (r.dst) attrs.raw(RTA_DST, r.dst.bytes);
    if (r.gateway) attrs.raw(RTA_GATEWAY, r.gateway.bytes);
    if (r.prefsrc) attrs.raw(RTA_PREFSRC, r.prefsrc.bytes);
    if (r.priority !== undefined) attrs.u32(RTA_PRIORITY, r.priority);
    this.#nl.request(
      RTM_NEWROUTE,
      NLM_F_CREATE | NLM_F_REPLACE,
      concatBytes([b, attrs.bytes()]),
      "RTM_NEWROUTE",
    );
  }

  close(): void {
    this.#nl.close();
  }
}
