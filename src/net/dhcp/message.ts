/**
 * The DHCPv4 wire format: BOOTP/DHCP messages (RFC 2131 §2, RFC 2132 options,
 * RFC 3396 long options), the lease an ACK grants, and the IPv4 + UDP headers
 * a packet socket must add and check itself (RFC 791, RFC 768, RFC 1071).
 *
 * Everything here is pure: bytes in, typed values out. Decoders check every
 * bound and throw only `InvalidInputError` (`decodeIpUdp` returns null
 * instead), so a hostile network can make a reply be ignored, never crash us.
 *
 * @example
 * ```ts
 * const bytes = encodeDhcp(msg);          // >= 300 bytes, options ended by END
 * const back = decodeDhcp(bytes);         // the same fields and options
 * messageType(back);                      // DHCPDISCOVER, ...
 * const frame = encodeIpUdp({ src, dst, srcPort: 68, dstPort: 67, payload: bytes });
 * decodeIpUdp(frame)?.payload;            // bytes again, checksums verified
 * ```
 * @module
 */
import { concatBytes } from "../../bytes.ts";
import { InvalidInputError } from "../../errors.ts";
import type { IpAddress } from "../addr.ts";

/** The server's and the client's UDP ports (RFC 2131 §4.1). */
export const DHCP_SERVER_PORT = 67, DHCP_CLIENT_PORT = 68;

/** DHCP message types, option 53 (RFC 2132 §9.6). */
export const DHCPDISCOVER = 1,
  DHCPOFFER = 2,
  DHCPREQUEST = 3,
  DHCPDECLINE = 4,
  DHCPACK = 5,
  DHCPNAK = 6,
  DHCPRELEASE = 7,
  DHCPINFORM = 8;

/** `op` (RFC 951): a client's request, a server's reply. */
export const BOOTREQUEST = 1, BOOTREPLY = 2;
/** `htype` for Ethernet (ARP hardware type 1). */
export const HTYPE_ETHERNET = 1;
/** The BROADCAST bit of `flags` (RFC 2131 §2, figure 2). */
export const FLAG_BROADCAST = 0x8000;
/** RFC 2131 §3: the first four octets of the options field. */
export const MAGIC_COOKIE = Uint8Array.of(99, 130, 83, 99);
/** Option 51's value for a lease that never ends (RFC 2132 §9.2). */
export const INFINITE_LEASE = 0xffffffff;

/** Option codes isboot sends or reads (RFC 2132 unless noted). */
export const OPT = {
  PAD: 0,
  SUBNET_MASK: 1,
  ROUTER: 3,
  DOMAIN_NAME_SERVER: 6,
  HOST_NAME: 12,
  DOMAIN_NAME: 15,
  ROOT_PATH: 17,
  INTERFACE_MTU: 26,
  BROADCAST_ADDRESS: 28,
  NTP_SERVERS: 42,
  REQUESTED_IP_ADDRESS: 50,
  IP_ADDRESS_LEASE_TIME: 51,
  OPTION_OVERLOAD: 52,
  DHCP_MESSAGE_TYPE: 53,
  SERVER_IDENTIFIER: 54,
  PARAMETER_REQUEST_LIST: 55,
  MESSAGE: 56,
  MAXIMUM_DHCP_MESSAGE_SIZE: 57,
  RENEWAL_TIME_VALUE: 58,
  REBINDING_TIME_VALUE: 59,
  VENDOR_CLASS_IDENTIFIER: 60,
  CLIENT_IDENTIFIER: 61,
  END: 255,
} as const;

/** A BOOTP/DHCP message (RFC 2131 §2, figure 1), fields named as there. */
export interface DhcpMessage {
  op: 1 | 2;
  htype: number;
  hlen: number;
  hops: number;
  xid: number;
  secs: number;
  /** FLAG_BROADCAST or 0. */
  flags: number;
  ciaddr: IpAddress;
  yiaddr: IpAddress;
  siaddr: IpAddress;
  giaddr: IpAddress;
  /** The first `hlen` bytes of the 16-byte field. */
  chaddr: Uint8Array;
  /** Up to the first NUL; "" when empty or overloaded with options. */
  sname: string;
  /** Up to the first NUL; "" when empty or overloaded with options. */
  file: string;
  /**
   * code -> value. Instances of one code are concatenated in the order of
   * RFC 3396 §5 (options field, then `file`, then `sname`). Option 52 is
   * consumed by the decoder and ignored by the encoder: it frames, it does
   * not describe.
   */
  options: Map<number, Uint8Array>;
}

const SNAME_OFFSET = 44, SNAME_LEN = 64;
const FILE_OFFSET = 108, FILE_LEN = 128;
const COOKIE_OFFSET = 236;
const OPTIONS_OFFSET = 240;
/** RFC 951 §3: a BOOTP message is at least 300 bytes; relays drop shorter ones. */
const BOOTP_MIN_LENGTH = 300;
/** The largest UDP payload an IPv4 datagram can carry (65535 - 20 - 8). */
const MAX_UDP_PAYLOAD = 65507;
/** OPTION_OVERLOAD bits (RFC 2132 §9.3). */
const OVERLOAD_FILE = 1, OVERLOAD_SNAME = 2;

/**
 * The lengths RFC 2132 allows for the options isboot interprets, checked on
 * the concatenated value. Other codes may have any length (RFC 4039's rapid
 * commit is legitimately empty).
 */
const LENGTH_RULES: ReadonlyMap<number, { min: number; max?: number; multipleOf?: number }> =
  new Map([
    [OPT.SUBNET_MASK, { min: 4, max: 4 }],
    [OPT.ROUTER, { min: 4, multipleOf: 4 }],
    [OPT.DOMAIN_NAME_SERVER, { min: 4, multipleOf: 4 }],
    [OPT.HOST_NAME, { min: 1 }],
    [OPT.DOMAIN_NAME, { min: 1 }],
    [OPT.ROOT_PATH, { min: 1 }],
    [OPT.INTERFACE_MTU, { min: 2, max: 2 }],
    [OPT.BROADCAST_ADDRESS, { min: 4, max: 4 }],
    [OPT.NTP_SERVERS, { min: 4, multipleOf: 4 }],
    [OPT.REQUESTED_IP_ADDRESS, { min: 4, max: 4 }],
    [OPT.IP_ADDRESS_LEASE_TIME, { min: 4, max: 4 }],
    [OPT.OPTION_OVERLOAD, { min: 1, max: 1 }],
    [OPT.DHCP_MESSAGE_TYPE, { min: 1, max: 1 }],
    [OPT.SERVER_IDENTIFIER, { min: 4, max: 4 }],
    [OPT.PARAMETER_REQUEST_LIST, { min: 1 }],
    [OPT.MESSAGE, { min: 1 }],
    [OPT.MAXIMUM_DHCP_MESSAGE_SIZE, { min: 2, max: 2 }],
    [OPT.RENEWAL_TIME_VALUE, { min: 4, max: 4 }],
    [OPT.REBINDING_TIME_VALUE, { min: 4, max: 4 }],
    [OPT.VENDOR_CLASS_IDENTIFIER, { min: 1 }],
    [OPT.CLIENT_IDENTIFIER, { min: 2 }],
  ]);

const utf8 = new TextEncoder();
const utf8Lenient = new TextDecoder("utf-8", { fatal: false });

/** 0.0.0.0 */
export const IPV4_ANY: IpAddress = Object.freeze({ family: 4, bytes: new Uint8Array(4) });
/** 255.255.255.255, the limited broadcast (RFC 919). */
export const IPV4_BROADCAST: IpAddress = Object.freeze({
  family: 4,
  bytes: Uint8Array.of(255, 255, 255, 255),
});

function ipv4(bytes: Uint8Array): IpAddress {
  return { family: 4, bytes: Uint8Array.from(bytes) };
}

function ipv4Text(b: Uint8Array): string {
  return Array.from(b.subarray(0, 4)).join(".");
}

function be16(b: Uint8Array, off: number): number {
  return (b[off] << 8) | b[off + 1];
}

function be32(b: Uint8Array, off: number): number {
  return ((b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3]) >>> 0;
}

function putBe16(b: Uint8Array, off: number, v: number): void {
  b[off] = v >>> 8;
  b[off + 1] = v & 0xff;
}

function putBe32(b: Uint8Array, off: number, v: number): void {
  b[off] = v >>> 24;
  b[off + 1] = (v >>> 16) & 0xff;
  b[off + 2] = (v >>> 8) & 0xff;
  b[off + 3] = v & 0xff;
}

/**
 * Append the options of one field to `into`. `requireEnd`: the options field
 * must end with END (RFC 2131 §4.1); an overloaded `file`/`sname` may also
 * simply be full.
 */
function parseOptionArea(
  area: Uint8Array,
  where: string,
  into: Map<number, Uint8Array[]>,
  requireEnd: boolean,
): void {
  let i = 0;
  while (i < area.length) {
    const code = area[i];
    if (code === OPT.PAD) {
      i++;
      continue;
    }
    if (code === OPT.END) return;
    if (i + 1 >= area.length) {
      throw new InvalidInputError(`DHCP: ${where}: option ${code} has no length octet`);
    }
    const len = area[i + 1];
    if (i + 2 + len > area.length) {
      throw new InvalidInputError(
        `DHCP: ${where}: option ${code} of ${len} bytes runs past the end of the field`,
      );
    }
    const parts = into.get(code);
    const value = area.subarray(i + 2, i + 2 + len);
    if (parts) parts.push(value);
    else into.set(code, [value]);
    i += 2 + len;
  }
  if (requireEnd) throw new InvalidInputError(`DHCP: ${where}: no END option`);
}

/** A NUL-terminated text field (sname, file). */
function cString(b: Uint8Array): string {
  const nul = b.indexOf(0);
  return utf8Lenient.decode(nul < 0 ? b : b.subarray(0, nul));
}

/**
 * Decode a DHCP message (a UDP payload). Checks: the fixed header and magic
 * cookie are there, `op` is 1 or 2, `hlen` <= 16, every option fits its field,
 * the options field ends with END, option 52 (if present) is 1..3, and the
 * options of RFC 2132 that isboot reads have the lengths it allows.
 * Throws InvalidInputError, and nothing else, on anything malformed.
 *
 * @example
 * ```ts
 * const m = decodeDhcp(payload);
 * if (m.op === BOOTREPLY && messageType(m) === DHCPOFFER) console.log(m.yiaddr);
 * ```
 */
export function decodeDhcp(b: Uint8Array): DhcpMessage {
  if (b.length < OPTIONS_OFFSET) {
    throw new InvalidInputError(
      `DHCP: message of ${b.length} bytes, shorter than its ${OPTIONS_OFFSET}-byte fixed part`,
    );
  }
  if (b.length > MAX_UDP_PAYLOAD) {
    throw new InvalidInputError(`DHCP: message of ${b.length} bytes, longer than UDP allows`);
  }
  const op = b[0];
  if (op !== BOOTREQUEST && op !== BOOTREPLY) {
    throw new InvalidInputError(`DHCP: op ${op}, expected 1 (BOOTREQUEST) or 2 (BOOTREPLY)`);
  }
  const hlen = b[2];
  if (hlen > 16) throw new InvalidInputError(`DHCP: hlen ${hlen}, chaddr holds 16 bytes`);
  for (let i = 0; i < 4; i++) {
    if (b[COOKIE_OFFSET + i] !== MAGIC_COOKIE[i]) {
      throw new InvalidInputError("DHCP: no magic cookie 99.130.83.99 (a BOOTP message?)");
    }
  }
  const parts = new Map<number, Uint8Array[]>();
  parseOptionArea(b.subarray(OPTIONS_OFFSET), "options", parts, true);
  // RFC 2131 §4.1 / RFC 3396 §5: option 52 appears in the options field and
  // says which of file and sname carry more options, read in that order.
  let overload = 0;
  const ov = parts.get(OPT.OPTION_OVERLOAD);
  if (ov) {
    const v = concatBytes(ov);
    if (v.length !== 1 || v[0] < 1 || v[0] > 3) {
      throw new InvalidInputError(
        `DHCP: option overload ${Array.from(v).join(",")}, expected 1..3`,
      );
    }
    overload = v[0];
    const fileArea = b.subarray(FILE_OFFSET, FILE_OFFSET + FILE_LEN);
    const snameArea = b.subarray(SNAME_OFFSET, SNAME_OFFSET + SNAME_LEN);
    if (overload & OVERLOAD_FILE) parseOptionArea(fileArea, "file field", parts, false);
    if (overload & OVERLOAD_SNAME) parseOptionArea(snameArea, "sname field", parts, false);
  }
  const options = new Map<number, Uint8Array>();
  for (const [code, ps] of parts) {
    const value = concatBytes(ps);
    const rule = LENGTH_RULES.get(code);
    if (
      rule &&
      (value.length < rule.min || (rule.max !== undefined && value.length > rule.max) ||
        (rule.multipleOf !== undefined && value.length % rule.multipleOf !== 0))
    ) {
      throw new InvalidInputError(`DHCP: option ${code} of ${value.length} bytes`);
    }
    if (code !== OPT.OPTION_OVERLOAD) options.set(code, value);
  }
  return {
    op,
    htype: b[1],
    hlen,
    hops: b[3],
    xid: be32(b, 4),
    secs: be16(b, 8),
    flags: be16(b, 10),
    ciaddr: ipv4(b.subarray(12, 16)),
    yiaddr: ipv4(b.subarray(16, 20)),
    siaddr: ipv4(b.subarray(20, 24)),
    giaddr: ipv4(b.subarray(24, 28)),
    chaddr: Uint8Array.from(b.subarray(28, 28 + hlen)),
    sname: overload & OVERLOAD_SNAME
      ? ""
      : cString(b.subarray(SNAME_OFFSET, SNAME_OFFSET + SNAME_LEN)),
    file: overload & OVERLOAD_FILE ? "" : cString(b.subarray(FILE_OFFSET, FILE_OFFSET + FILE_LEN)),
    options,
  };
}

/** Option instances for one value: RFC 3396 §7 splits values over 255 bytes. */
function instances(code: number, value: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  let off = 0;
  do {
    const n = Math.min(255, value.length - off);
    const inst = new Uint8Array(2 + n);
    inst[0] = code;
    inst[1] = n;
    inst.set(value.subarray(off, off + n), 2);
    out.push(inst);
    off += n;
  } while (off < value.length);
  return out;
}

/** Encoder limits. */
export interface EncodeDhcpOptions {
  /**
   * The largest message (UDP payload) the receiver accepts: RFC 2131 §2's
   * minimum is 548 (576 less IP and UDP headers), or the receiver's option
   * 57 less 28. Options that do not fit overflow into `file` then `sname`
   * (option 52) when those are empty. Default: no limit.
   */
  maxSize?: number;
}

function checkAddress(a: IpAddress, what: string): void {
  if (a.family !== 4 || a.bytes.length !== 4) {
    throw new InvalidInputError(`DHCP: ${what} is not an IPv4 address`);
  }
}

/**
 * Encode a DHCP message: the fixed header, magic cookie, options (53 first,
 * values over 255 bytes split per RFC 3396), END, padded to BOOTP's 300
 * bytes. Throws InvalidInputError when a field cannot be represented or the
 * options do not fit `maxSize`.
 *
 * @example
 * ```ts
 * const payload = encodeDhcp({
 *   op: BOOTREQUEST, htype: 1, hlen: 6, hops: 0, xid: 0x3903f326, secs: 0, flags: FLAG_BROADCAST,
 *   ciaddr: IPV4_ANY, yiaddr: IPV4_ANY, siaddr: IPV4_ANY, giaddr: IPV4_ANY,
 *   chaddr: mac, sname: "", file: "",
 *   options: new Map([[OPT.DHCP_MESSAGE_TYPE, Uint8Array.of(DHCPDISCOVER)]]),
 * });
 * ```
 */
export function encodeDhcp(m: DhcpMessage, opts: EncodeDhcpOptions = {}): Uint8Array {
  for (
    const [name, v, max] of [
      ["htype", m.htype, 0xff],
      ["hlen", m.hlen, 16],
      ["hops", m.hops, 0xff],
      ["xid", m.xid, 0xffffffff],
      ["secs", m.secs, 0xffff],
      ["flags", m.flags, 0xffff],
    ] as const
  ) {
    if (!Number.isInteger(v) || v < 0 || v > max) {
      throw new InvalidInputError(`DHCP: ${name} ${v} out of range 0..${max}`);
    }
  }
  if (m.chaddr.length !== m.hlen) {
    throw new InvalidInputError(`DHCP: chaddr of ${m.chaddr.length} bytes, hlen ${m.hlen}`);
  }
  checkAddress(m.ciaddr, "ciaddr");
  checkAddress(m.yiaddr, "yiaddr");
  checkAddress(m.siaddr, "siaddr");
  checkAddress(m.giaddr, "giaddr");
  const sname = utf8.encode(m.sname), file = utf8.encode(m.file);
  if (sname.length >= SNAME_LEN || sname.includes(0)) {
    throw new InvalidInputError("DHCP: sname does not fit its 64-byte NUL-terminated field");
  }
  if (file.length >= FILE_LEN || file.includes(0)) {
    throw new InvalidInputError("DHCP: file does not fit its 128-byte NUL-terminated field");
  }

  const insts: Uint8Array[] = [];
  const type = m.options.get(OPT.DHCP_MESSAGE_TYPE);
  if (type) insts.push(...instances(OPT.DHCP_MESSAGE_TYPE, type));
  for (const [code, value] of m.options) {
    if (!Number.isInteger(code) || code <= OPT.PAD || code >= OPT.END) {
      throw new InvalidInputError(`DHCP: option code ${code} cannot be sent`);
    }
    if (code === OPT.DHCP_MESSAGE_TYPE || code === OPT.OPTION_OVERLOAD) continue;
    insts.push(...instances(code, value));
  }
  const total = insts.reduce((n, i) => n + i.length, 0);

  // Where each instance goes: all in the options field unless maxSize says
  // otherwise; then in order options field, file, sname (RFC 3396 §5), so a
  // split option's pieces stay in order.
  const regions: Uint8Array[][] = [[], [], []];
  let overload = 0;
  const maxSize = opts.maxSize ?? Infinity;
  if (OPTIONS_OFFSET + total + 1 > maxSize) {
    const room = [
      maxSize - OPTIONS_OFFSET - 3 - 1, // leave room for option 52 and END
      m.file === "" ? FILE_LEN - 1 : 0,
      m.sname === "" ? SNAME_LEN - 1 : 0,
    ];
    let r = 0;
    for (const inst of insts) {
      while (r < 3 && inst.length > room[r]) r++;
      if (r === 3) {
        throw new InvalidInputError(`DHCP: options do not fit a ${maxSize}-byte message`);
      }
      regions[r].push(inst);
      room[r] -= inst.length;
    }
    if (regions[1].length > 0) overload |= OVERLOAD_FILE;
    if (regions[2].length > 0) overload |= OVERLOAD_SNAME;
    if (overload) regions[0].push(Uint8Array.of(OPT.OPTION_OVERLOAD, 1, overload));
  } else {
    regions[0] = insts;
  }
  const optionsField = concatBytes([...regions[0], Uint8Array.of(OPT.END)]);
  const length = Math.max(BOOTP_MIN_LENGTH, OPTIONS_OFFSET + optionsField.length);
  if (length > Math.min(maxSize, MAX_UDP_PAYLOAD)) {
    throw new InvalidInputError(`DHCP: options do not fit a ${maxSize}-byte message`);
  }

  const b = new Uint8Array(length);
  b[0] = m.op;
  b[1] = m.htype;
  b[2] = m.hlen;
  b[3] = m.hops;
  putBe32(b, 4, m.xid);
  putBe16(b, 8, m.secs);
  putBe16(b, 10, m.flags);
  b.set(m.ciaddr.bytes, 12);
  b.set(m.yiaddr.bytes, 16);
  b.set(m.siaddr.bytes, 20);
  b.set(m.giaddr.bytes, 24);
  b.set(m.chaddr, 28);
  if (overload & OVERLOAD_SNAME) {
    b.set(concatBytes([...regions[2], Uint8Array.of(OPT.END)]), SNAME_OFFSET);
  } else b.set(sname, SNAME_OFFSET);
  if (overload & OVERLOAD_FILE) {
    b.set(concatBytes([...regions[1], Uint8Array.of(OPT.END)]), FILE_OFFSET);
  } else b.set(file, FILE_OFFSET);
  b.set(MAGIC_COOKIE, COOKIE_OFFSET);
  b.set(optionsField, OPTIONS_OFFSET);
  return b;
}

/**
 * The DHCP message type (option 53), or null for a plain BOOTP message.
 *
 * @example
 * ```ts
 * if (messageType(decodeDhcp(payload)) === DHCPACK) { ... }
 * ```
 */
export function messageType(m: DhcpMessage): number | null {
  const v = m.options.get(OPT.DHCP_MESSAGE_TYPE);
  return v && v.length === 1 ? v[0] : null;
}

/** What a DHCPACK grants, in the terms the network layer configures. */
export interface Lease {
  address: IpAddress;
  prefixLength: number;
  router?: IpAddress;
  dns: IpAddress[];
  domain?: string;
  hostname?: string;
  mtu?: number;
  /** INFINITE_LEASE (0xffffffff) for a lease that never ends. */
  leaseSeconds: number;
  /** When to start renewing (T1), seconds after `obtainedAt`. */
  t1Seconds: number;
  /** When to start rebinding (T2), seconds after `obtainedAt`. */
  t2Seconds: number;
  serverId: IpAddress;
  rootPath?: string;
  broadcast?: IpAddress;
  ntp?: IpAddress[];
  /** ms, from the client's clock: when the REQUEST that earned the ACK was sent. */
  obtainedAt: number;
}

/** The classful ("natural") prefix of an address: what a host assumes without option 1. */
function classfulPrefix(first: number): number {
  if (first < 128) return 8;
  if (first < 192) return 16;
  return 24;
}

function addressList(v: Uint8Array | undefined): IpAddress[] {
  const out: IpAddress[] = [];
  if (!v) return out;
  for (let i = 0; i + 4 <= v.length; i += 4) {
    const a = v.subarray(i, i + 4);
    if (be32(a, 0) !== 0) out.push(ipv4(a));
  }
  return out;
}

/** A text option; trailing NULs dropped (some servers NUL-terminate, RFC 2132 §2 says not to). */
function textOption(v: Uint8Array | undefined): string | undefined {
  if (!v) return undefined;
  let end = v.length;
  while (end > 0 && v[end - 1] === 0) end--;
  return end === 0 ? undefined : utf8Lenient.decode(v.subarray(0, end));
}

function uint32Option(v: Uint8Array | undefined): number | undefined {
  return v && v.length === 4 ? be32(v, 0) : undefined;
}

/**
 * The lease a DHCPACK grants. Checks: it is a DHCPACK; `yiaddr` is a unicast
 * address (not 0.0.0.0, 127/8, 224/4 or above); options 54 (server
 * identifier) and 51 (lease time, not 0) are present; the subnet mask, if
 * present, is contiguous and not 0.0.0.0. Without option 1 the prefix is the
 * address's class (/8, /16, /24), as hosts have assumed since RFC 950.
 * T1 and T2 (options 58, 59) default to 0.5 and 0.875 of the lease
 * (RFC 2131 §4.4.5); a T2 beyond the lease, or a T1 beyond T2, is replaced by
 * its default (T1's kept at most T2). An infinite lease has T1 = T2 =
 * INFINITE_LEASE. An MTU under 68 (RFC 791's minimum) is ignored. Throws
 * InvalidInputError if the ACK cannot be used.
 *
 * @example
 * ```ts
 * const lease = leaseFromAck(decodeDhcp(payload), requestSentAt);
 * // { address: 10.0.0.5, prefixLength: 24, router: 10.0.0.1, leaseSeconds: 3600, t1Seconds: 1800, ... }
 * ```
 */
export function leaseFromAck(m: DhcpMessage, nowMs: number): Lease {
  const bad = (why: string) => new InvalidInputError(`DHCPACK: ${why}`);
  if (m.op !== BOOTREPLY || messageType(m) !== DHCPACK) throw bad("not a DHCPACK");
  const a = m.yiaddr.bytes;
  if (m.yiaddr.family !== 4 || a.length !== 4) throw bad("yiaddr is not IPv4");
  if (be32(a, 0) === 0) throw bad("no address (yiaddr 0.0.0.0)");
  if (a[0] === 127 || a[0] >= 224) throw bad(`yiaddr ${ipv4Text(a)} is not a unicast address`);
  const sid = m.options.get(OPT.SERVER_IDENTIFIER);
  if (!sid) throw bad("no server identifier (option 54)");
  const leaseSeconds = uint32Option(m.options.get(OPT.IP_ADDRESS_LEASE_TIME));
  if (leaseSeconds === undefined) throw bad("no lease time (option 51)");
  if (leaseSeconds === 0) throw bad("lease time 0");

  let prefixLength = classfulPrefix(a[0]);
  const mask = m.options.get(OPT.SUBNET_MASK);
  if (mask) {
    const v = be32(mask, 0);
    // Contiguous: the inverted mask plus one is a power of two.
    const inv = (~v) >>> 0;
    if (v === 0 || ((inv + 1) & inv) >>> 0 !== 0) {
      throw bad(`subnet mask ${ipv4Text(mask)} is not a usable contiguous mask`);
    }
    prefixLength = 32 - Math.log2(inv + 1);
  }

  let t1Seconds: number, t2Seconds: number;
  if (leaseSeconds === INFINITE_LEASE) {
    t1Seconds = t2Seconds = INFINITE_LEASE;
  } else {
    const t2 = uint32Option(m.options.get(OPT.REBINDING_TIME_VALUE));
    t2Seconds = t2 !== undefined && t2 <= leaseSeconds ? t2 : Math.floor(leaseSeconds * 0.875);
    const t1 = uint32Option(m.options.get(OPT.RENEWAL_TIME_VALUE));
    t1Seconds = t1 !== undefined && t1 <= t2Seconds
      ? t1
      : Math.min(Math.floor(leaseSeconds / 2), t2Seconds);
  }

  const lease: Lease = {
    address: ipv4(a),
    prefixLength,
    dns: addressList(m.options.get(OPT.DOMAIN_NAME_SERVER)),
    leaseSeconds,
    t1Seconds,
    t2Seconds,
    serverId: ipv4(sid),
    obtainedAt: nowMs,
  };
  const router = addressList(m.options.get(OPT.ROUTER))[0];
  if (router) lease.router = router;
  const domain = textOption(m.options.get(OPT.DOMAIN_NAME));
  if (domain !== undefined) lease.domain = domain;
  const hostname = textOption(m.options.get(OPT.HOST_NAME));
  if (hostname !== undefined) lease.hostname = hostname;
  const rootPath = textOption(m.options.get(OPT.ROOT_PATH));
  if (rootPath !== undefined) lease.rootPath = rootPath;
  const mtu = m.options.get(OPT.INTERFACE_MTU);
  if (mtu && be16(mtu, 0) >= 68) lease.mtu = be16(mtu, 0);
  const broadcast = m.options.get(OPT.BROADCAST_ADDRESS);
  if (broadcast) lease.broadcast = ipv4(broadcast);
  if (m.options.has(OPT.NTP_SERVERS)) lease.ntp = addressList(m.options.get(OPT.NTP_SERVERS));
  return lease;
}

/** RFC 1071: the 16-bit one's-complement sum of `b` added to `sum` (not yet folded). */
function onesSum(b: Uint8Array, sum = 0): number {
  const n = b.length & ~1;
  for (let i = 0; i < n; i += 2) sum += (b[i] << 8) | b[i + 1];
  if (b.length & 1) sum += b[b.length - 1] << 8;
  return sum;
}

function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return sum;
}

const IPPROTO_UDP = 17;
const IPV4_HEADER = 20, UDP_HEADER = 8;

/** RFC 768: the UDP checksum's pseudo-header sum (source, destination, protocol, UDP length). */
function pseudoSum(src: Uint8Array, dst: Uint8Array, udpLength: number): number {
  return onesSum(src) + onesSum(dst) + IPPROTO_UDP + udpLength;
}

/**
 * An IPv4 datagram (20-byte header, no options, DF clear, id 0) carrying one
 * UDP datagram, both checksums computed (a UDP checksum that computes to 0 is
 * sent as 0xffff, RFC 768). For a packet socket of type SOCK_DGRAM, which
 * adds the link header.
 *
 * @example
 * ```ts
 * const pkt = encodeIpUdp({ src: IPV4_ANY, dst: IPV4_BROADCAST, srcPort: 68, dstPort: 67, payload });
 * ```
 */
export function encodeIpUdp(
  p: {
    src: IpAddress;
    dst: IpAddress;
    srcPort: number;
    dstPort: number;
    payload: Uint8Array;
    ttl?: number;
  },
): Uint8Array {
  checkAddress(p.src, "IP source");
  checkAddress(p.dst, "IP destination");
  const ttl = p.ttl ?? 64;
  for (
    const [name, v, max] of [
      ["source port", p.srcPort, 0xffff],
      ["destination port", p.dstPort, 0xffff],
      ["ttl", ttl, 0xff],
    ] as const
  ) {
    if (!Number.isInteger(v) || v < 0 || v > max) {
      throw new InvalidInputError(`IPv4/UDP: ${name} ${v} out of range`);
    }
  }
  const udpLength = UDP_HEADER + p.payload.length;
  const total = IPV4_HEADER + udpLength;
  if (total > 0xffff) throw new InvalidInputError(`IPv4/UDP: datagram of ${total} bytes`);
  const b = new Uint8Array(total);
  b[0] = 0x45; // version 4, IHL 5 words
  putBe16(b, 2, total);
  b[8] = ttl;
  b[9] = IPPROTO_UDP;
  b.set(p.src.bytes, 12);
  b.set(p.dst.bytes, 16);
  putBe16(b, 10, (~fold(onesSum(b.subarray(0, IPV4_HEADER)))) & 0xffff);
  const u = IPV4_HEADER;
  putBe16(b, u, p.srcPort);
  putBe16(b, u + 2, p.dstPort);
  putBe16(b, u + 4, udpLength);
  b.set(p.payload, u + UDP_HEADER);
  const sum = (~fold(onesSum(b.subarray(u), pseudoSum(p.src.bytes, p.dst.bytes, udpLength)))) &
    0xffff;
  putBe16(b, u + 6, sum === 0 ? 0xffff : sum);
  return b;
}

/**
 * The UDP datagram inside an IPv4 packet (as a SOCK_DGRAM packet socket
 * returns it, without link header), or null when it is not one we can use:
 * not IPv4, a bad header length or checksum, a fragment, not UDP, a UDP
 * length that does not fit, or a bad UDP checksum (0, "none", is accepted).
 * Bytes after the IP total length (Ethernet padding) are ignored. Never throws.
 *
 * @example
 * ```ts
 * const d = decodeIpUdp(frame);
 * if (d && d.dstPort === DHCP_CLIENT_PORT) handle(d.payload);
 * ```
 */
export function decodeIpUdp(
  b: Uint8Array,
):
  | { src: IpAddress; dst: IpAddress; srcPort: number; dstPort: number; payload: Uint8Array }
  | null {
  if (b.length < IPV4_HEADER || b[0] >> 4 !== 4) return null;
  const ihl = (b[0] & 0x0f) * 4;
  if (ihl < IPV4_HEADER) return null;
  const total = be16(b, 2);
  if (total < ihl + UDP_HEADER || total > b.length) return null;
  if (fold(onesSum(b.subarray(0, ihl))) !== 0xffff) return null;
  if ((be16(b, 6) & 0x3fff) !== 0) return null; // MF set or a fragment offset
  if (b[9] !== IPPROTO_UDP) return null;
  const udp = b.subarray(ihl, total);
  const udpLength = be16(udp, 4);
  if (udpLength < UDP_HEADER || udpLength > udp.length) return null;
  const src = b.subarray(12, 16), dst = b.subarray(16, 20);
  if (be16(udp, 6) !== 0) {
    const sum = fold(onesSum(udp.subarray(0, udpLength), pseudoSum(src, dst, udpLength)));
    if (sum !== 0xffff) return null;
  }
  return {
    src: ipv4(src),
    dst: ipv4(dst),
    srcPort: be16(udp, 0),
    dstPort: be16(udp, 2),
    payload: udp.slice(UDP_HEADER, udpLength),
  };
}
