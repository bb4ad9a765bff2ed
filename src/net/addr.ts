/**
 * IP address text <-> bytes, for the netlink messages and the kernel command
 * line. Parsing is strict (no leading zeros in IPv4 octets, no zone ids) and
 * formatting follows RFC 5952 for IPv6.
 *
 * @example
 * ```ts
 * const a = parseIp("fd00::1");   // { family: 6, bytes: Uint8Array(16) }
 * formatIp(a);                    // "fd00::1"
 * ```
 */
import { InvalidInputError } from "../errors.ts";
import type { IpAddress } from "../sys/socket.ts";

/** An IPv4 (4 bytes) or IPv6 (16 bytes) address (defined beside the sockaddr code in sys/). */
export type { IpAddress };

const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** Parse a dotted-quad IPv4 address, or null. */
export function parseIPv4(text: string): IpAddress | null {
  if (!IPV4_RE.test(text)) return null;
  return { family: 4, bytes: Uint8Array.from(text.split(".").map(Number)) };
}

/** Parse RFC 4291 §2.2 IPv6 text (with optional trailing dotted quad), or null. */
export function parseIPv6(text: string): IpAddress | null {
  if (text.length < 2 || text.length > 45 || !/^[0-9A-Fa-f:.]+$/.test(text)) return null;
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const groups = (s: string): number[] | null => {
    if (s === "") return [];
    const out: number[] = [];
    const parts = s.split(":");
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i];
      if (i === parts.length - 1 && p.includes(".")) {
        const v4 = parseIPv4(p);
        if (!v4) return null;
        out.push((v4.bytes[0] << 8) | v4.bytes[1], (v4.bytes[2] << 8) | v4.bytes[3]);
      } else {
        if (!/^[0-9A-Fa-f]{1,4}$/.test(p)) return null;
        out.push(parseInt(p, 16));
      }
    }
    return out;
  };
  const head = groups(halves[0]);
  const tail = halves.length === 2 ? groups(halves[1]) : [];
  if (!head || !tail) return null;
  const n = head.length + tail.length;
  if (halves.length === 2 ? n > 7 : n !== 8) return null;
  const all = [...head, ...new Array(8 - n).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  all.forEach((g, i) => {
    bytes[2 * i] = g >> 8;
    bytes[2 * i + 1] = g & 0xff;
  });
  return { family: 6, bytes };
}

/** Parse IPv4 or IPv6 text (IPv6 may be in brackets), or null. */
export function parseIp(text: string): IpAddress | null {
  const t = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  return parseIPv4(t) ?? parseIPv6(t);
}

/** Like parseIp, but a bad address is an InvalidInputError naming `what`. */
export function requireIp(text: string, what: string): IpAddress {
  const a = parseIp(text);
  if (!a) throw new InvalidInputError(`${what}: '${text}' is not an IP address`);
  return a;
}

/** RFC 5952 text for an address (dotted quad for IPv4). */
export function formatIp(a: IpAddress): string {
  const b = a.bytes;
  if (a.family === 4) return Array.from(b).join(".");
  const g = Array.from({ length: 8 }, (_, i) => (b[2 * i] << 8) | b[2 * i + 1]);
  // RFC 5952 §4.2: compress the longest run of two or more zero groups, the first on ties.
  let best = -1, bestLen = 1;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(":");
  if (best < 0) return hex(g);
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

/** Prefix length of a contiguous netmask ("255.255.255.0" -> 24), or null. */
export function netmaskToPrefix(mask: IpAddress): number | null {
  let prefix = 0, ended = false;
  for (const byte of mask.bytes) {
    for (let bit = 7; bit >= 0; bit--) {
      const set = (byte >> bit) & 1;
      if (set && ended) return null;
      if (set) prefix++;
      else ended = true;
    }
  }
  return prefix;
}

/** Parse a MAC address in colon or dash form; returns lower-case colon form, or null. */
export function normalizeMac(text: string): string | null {
  const m = /^([0-9A-Fa-f]{2})([:-][0-9A-Fa-f]{2}){5}$/.test(text);
  return m ? text.toLowerCase().replaceAll("-", ":") : null;
}

/** Whether two addresses are in the same prefix. */
export function samePrefix(a: IpAddress, b: IpAddress, prefix: number): boolean {
  if (a.family !== b.family) return false;
  for (let i = 0; i < a.bytes.length && prefix > 0; i++, prefix -= 8) {
    const mask = prefix >= 8 ? 0xff : (0xff << (8 - prefix)) & 0xff;
    if ((a.bytes[i] & mask) !== (b.bytes[i] & mask)) return false;
  }
  return true;
}
