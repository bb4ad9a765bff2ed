/**
 * The kernel command line's `ip=` argument in dracut's forms: `ip=ibft`, or
 * the static `CLIENT:[PEER]:GATEWAY:NETMASK:HOSTNAME:IFACE:none[:MTU[:MAC]]`.
 * @module
 */
import { boundedInt } from "../decimal.ts";
import { InvalidInputError } from "../errors.ts";
import { type IpAddress, netmaskToPrefix, normalizeMac, parseIp, requireIp } from "./addr.ts";

/** A static `ip=` network (dracut form), or `ip=ibft`. */
export interface IpSpec {
  readonly address: IpAddress;
  readonly prefixLength: number;
  readonly peer?: IpAddress;
  readonly gateway?: IpAddress;
  readonly hostname?: string;
  readonly iface?: string;
  readonly mtu?: number;
  readonly mac?: string;
}

/**
 * Parse dracut's `ip=` forms. Returns "ibft" for `ip=ibft`, an IpSpec for the
 * static form. The DHCP forms (`ip=dhcp`, `ip=IFACE:dhcp`) are parsed by the
 * boot's command line (src/boot/cmdline.ts) before this is called; a static
 * form whose autoconf field asks for DHCP is refused with the form to use.
 */
export function parseIpArg(value: string): IpSpec | "ibft" {
  if (value === "ibft") return "ibft";
  const bad = (why: string) => new InvalidInputError(`ip=${value}: ${why}`);
  // Fields are ':'-separated; IPv6 addresses are in brackets.
  const fields: string[] = [];
  let cur = "";
  let depth = 0;
  for (const ch of value) {
    if (ch === "[") depth++;
    if (ch === "]") depth--;
    if (ch === ":" && depth === 0) {
      fields.push(cur);
      cur = "";
    } else cur += ch;
  }
  fields.push(cur);
  if (fields.length < 7) {
    throw bad(
      "isboot takes ip=ibft, ip=dhcp, ip=IFACE:dhcp or the static form CLIENT:[PEER]:GW:NETMASK:HOST:IFACE:none",
    );
  }
  const [client, peer, gw, mask, host, iface, autoconf, mtuText, ...macParts] = fields;
  if (!["none", "off", "static"].includes(autoconf)) {
    throw bad(
      `autoconf '${autoconf}' with a static address: use ip=IFACE:dhcp for DHCP, or 'none' for the static address`,
    );
  }
  let address: IpAddress;
  let prefixLength: number;
  const slash = client.replace(/^\[|\]$/g, "").split("/");
  address = requireIp(slash[0], "ip= client address");
  if (slash.length === 2) {
    const p = boundedInt(slash[1], 0, address.family === 4 ? 32 : 128);
    if (p === null) throw bad(`bad prefix '${slash[1]}'`);
    prefixLength = p;
  } else if (mask !== "") {
    const m = parseIp(mask);
    const fromMask = m && m.family === address.family ? netmaskToPrefix(m) : null;
    const fromNum = boundedInt(mask, 0, address.family === 4 ? 32 : 128);
    if (fromMask === null && fromNum === null) throw bad(`bad netmask '${mask}'`);
    prefixLength = (fromMask ?? fromNum)!;
  } else prefixLength = address.family === 4 ? 24 : 64;
  address = { ...address };
  const mac = macParts.length ? normalizeMac(macParts.join(":")) : undefined;
  if (mac === null) throw bad(`bad MAC '${macParts.join(":")}'`);
  const mtu = mtuText ? boundedInt(mtuText, 68, 65535) : undefined;
  if (mtu === null) throw bad(`bad MTU '${mtuText}'`);
  return {
    address,
    prefixLength,
    ...(peer ? { peer: requireIp(peer, "ip= peer") } : {}),
    ...(gw ? { gateway: requireIp(gw, "ip= gateway") } : {}),
    ...(host ? { hostname: host } : {}),
    ...(iface ? { iface } : {}),
    ...(mtu !== undefined ? { mtu } : {}),
    ...(mac ? { mac } : {}),
  };
}
