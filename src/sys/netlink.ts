/**
 * Netlink (RFC 3549; include/uapi/linux/netlink.h): message and attribute
 * encoding with bounds-checked decoding, and a synchronous request/ack/dump
 * socket over any netlink protocol (NETLINK_ROUTE for rtnetlink,
 * NETLINK_GENERIC for generic netlink families such as `nbd`).
 *
 * Why synchronous: the kernel queues a netlink reply before sendmsg()
 * returns (dumps fill one buffer per recv), so a request costs two
 * syscalls on the JS thread. The socket is O_NONBLOCK and a short poll()
 * covers the rare reply that is not queued yet; errno stays readable
 * because nothing runs on a pool thread (docs/kernel.md).
 *
 * @example
 * ```ts
 * const nl = NetlinkSocket.open(NETLINK_ROUTE);
 * try {
 *   const ifi = new Uint8Array(16);          // struct ifinfomsg, AF_UNSPEC
 *   for (const m of nl.dump(RTM_GETLINK, ifi)) console.log(m.type, m.payload.length);
 * } finally { nl.close(); }
 * ```
 */
import { InvalidInputError } from "../errors.ts";
import { ERRNO, SysError } from "./errno.ts";
import { check, errno, libc } from "./libc.ts";
import { type Reactor, reactor } from "./reactor.ts";
import {
  AF_NETLINK,
  closeFd,
  openSocket,
  pollFd,
  POLLIN,
  SOCK_NONBLOCK,
  SOCK_RAW,
  SOL_SOCKET,
} from "./socket.ts";

/** Netlink protocols (the third argument of socket(AF_NETLINK, ...)). */
export const NETLINK_ROUTE = 0;
export const NETLINK_GENERIC = 16;

/** nlmsghdr flags. */
export const NLM_F_REQUEST = 0x01;
export const NLM_F_MULTI = 0x02;
export const NLM_F_ACK = 0x04;
export const NLM_F_ECHO = 0x08;
export const NLM_F_DUMP_INTR = 0x10;
/** GET requests. */
export const NLM_F_ROOT = 0x100;
export const NLM_F_MATCH = 0x200;
export const NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH;
/** NEW requests. */
export const NLM_F_REPLACE = 0x100;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;
export const NLM_F_APPEND = 0x800;
/** NLMSG_ERROR flags. */
export const NLM_F_CAPPED = 0x100;
export const NLM_F_ACK_TLVS = 0x200;

/** Control message types. */
export const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLMSG_OVERRUN = 4;
/** Types below this are control messages. */
export const NLMSG_MIN_TYPE = 0x10;

/** nlattr type flags. */
export const NLA_F_NESTED = 0x8000;
export const NLA_F_NET_BYTEORDER = 0x4000;
export const NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xffff;

/** Socket options (SOL_NETLINK). */
export const SOL_NETLINK = 270;
export const NETLINK_ADD_MEMBERSHIP = 1;
export const NETLINK_CAP_ACK = 10;
export const NETLINK_EXT_ACK = 11;
/** Extended ack TLVs (enum nlmsgerr_attrs). */
export const NLMSGERR_ATTR_MSG = 1;
export const NLMSGERR_ATTR_OFFS = 2;

const MSG_TRUNC = 0x20;
const SO_RCVBUF = 8;
export const NLMSG_HDRLEN = 16;
export const NLA_HDRLEN = 4;

/** Round up to the 4-byte netlink alignment (NLMSG_ALIGN / NLA_ALIGN). */
export function nlAlign(n: number): number {
  return (n + 3) & ~3;
}

/** A decoded netlink message. `payload` is the bytes after the 16-byte header. */
export interface NlMessage {
  type: number;
  flags: number;
  seq: number;
  pid: number;
  payload: Uint8Array;
}

/** Malformed netlink data (from the kernel or a test): typed, never a crash. */
export class NetlinkParseError extends InvalidInputError {}

/**
 * A netlink request the kernel answered with an error. `errno`/`code` as in
 * SysError; `extack` is the kernel's extended-ack message when it sent one.
 */
export class NetlinkError extends SysError {
  readonly extack?: string;
  constructor(call: string, errnoValue: number, extack?: string) {
    super(call, errnoValue, extack);
    this.extack = extack;
  }
}

/**
 * Encode one netlink message (header + payload, padded).
 *
 * @example
 * ```ts
 * const bytes = encodeMessage({ type: 18, flags: NLM_F_REQUEST | NLM_F_DUMP, seq: 1, payload });
 * ```
 */
export function encodeMessage(m: {
  type: number;
  flags: number;
  seq: number;
  pid?: number;
  payload?: Uint8Array;
}): Uint8Array {
  const payload = m.payload ?? new Uint8Array(0);
  const len = NLMSG_HDRLEN + payload.length;
  const out = new Uint8Array(nlAlign(len));
  const dv = new DataView(out.buffer);
  dv.setUint32(0, len, true);
  dv.setUint16(4, m.type, true);
  dv.setUint16(6, m.flags, true);
  dv.setUint32(8, m.seq >>> 0, true);
  dv.setUint32(12, (m.pid ?? 0) >>> 0, true);
  out.set(payload, NLMSG_HDRLEN);
  return out;
}

/**
 * Split a datagram into messages, checking every length against the buffer.
 *
 * @example
 * ```ts
 * for (const m of parseMessages(buf.subarray(0, n))) ...
 * ```
 */
export function parseMessages(buf: Uint8Array): NlMessage[] {
  const out: NlMessage[] = [];
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let off = 0;
  while (off < buf.length) {
    if (buf.length - off < NLMSG_HDRLEN) {
      throw new NetlinkParseError(
        `netlink: ${buf.length - off} trailing bytes, shorter than a header`,
      );
    }
    const len = dv.getUint32(off, true);
    if (len < NLMSG_HDRLEN || len > buf.length - off) {
      throw new NetlinkParseError(
        `netlink: message length ${len} at offset ${off} outside ${buf.length}-byte datagram`,
      );
    }
    out.push({
      type: dv.getUint16(off + 4, true),
      flags: dv.getUint16(off + 6, true),
      seq: dv.getUint32(off + 8, true),
      pid: dv.getUint32(off + 12, true),
      payload: buf.subarray(off + NLMSG_HDRLEN, off + len),
    });
    off += Math.min(nlAlign(len), buf.length - off);
  }
  return out;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: false });

/**
 * Builds a sequence of netlink attributes (struct nlattr TLVs), nested ones
 * included. Integers are host (little-endian) order unless `be` is given.
 *
 * @example
 * ```ts
 * const a = new AttrWriter()
 *   .u32(NBD_ATTR_INDEX, 0)
 *   .u64(NBD_ATTR_SIZE_BYTES, 1n << 26n)
 *   .nested(NBD_ATTR_SOCKETS, (s) => s.nested(NBD_SOCK_ITEM, (i) => i.u32(NBD_SOCK_FD, fd)))
 *   .bytes();
 * ```
 */
export class AttrWriter {
  #parts: Uint8Array[] = [];
  #len = 0;

  /** Raw attribute payload. */
  raw(type: number, data: Uint8Array): this {
    const len = NLA_HDRLEN + data.length;
    if (len > 0xffff) {
      throw new RangeError(`netlink attribute ${type}: ${data.length} bytes is too long`);
    }
    const out = new Uint8Array(nlAlign(len));
    const dv = new DataView(out.buffer);
    dv.setUint16(0, len, true);
    dv.setUint16(2, type, true);
    out.set(data, NLA_HDRLEN);
    this.#parts.push(out);
    this.#len += out.length;
    return this;
  }
  flag(type: number): this {
    return this.raw(type, new Uint8Array(0));
  }
  u8(type: number, v: number): this {
    return this.raw(type, Uint8Array.of(v & 0xff));
  }
  u16(type: number, v: number, be = false): this {
    const b = new Uint8Array(2);
    new DataView(b.buffer).setUint16(0, v, !be);
    return this.raw(be ? type | NLA_F_NET_BYTEORDER : type, b);
  }
  u32(type: number, v: number, be = false): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v >>> 0, !be);
    return this.raw(be ? type | NLA_F_NET_BYTEORDER : type, b);
  }
  s32(type: number, v: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setInt32(0, v, true);
    return this.raw(type, b);
  }
  u64(type: number, v: bigint): this {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, v), true);
    return this.raw(type, b);
  }
  /** NUL-terminated string (NLA_STRING / NLA_NUL_STRING accept it). */
  str(type: number, s: string): this {
    const e = encoder.encode(s);
    const b = new Uint8Array(e.length + 1);
    b.set(e);
    return this.raw(type, b);
  }
  /** A nested attribute (NLA_F_NESTED set), filled by `fill`. */
  nested(type: number, fill: (w: AttrWriter) => void): this {
    const inner = new AttrWriter();
    fill(inner);
    return this.raw(type | NLA_F_NESTED, inner.bytes());
  }
  /** The encoded attributes. */
  bytes(): Uint8Array {
    const out = new Uint8Array(this.#len);
    let off = 0;
    for (const p of this.#parts) {
      out.set(p, off);
      off += p.length;
    }
    return out;
  }
}

/** One decoded attribute; `type` has the NESTED/BYTEORDER flags masked off. */
export interface NlAttr {
  type: number;
  nested: boolean;
  netByteOrder: boolean;
  data: Uint8Array;
}

/**
 * Decoded attributes with typed, length-checked getters. Repeated types are
 * kept in order (`all`); `get` returns the last, as the kernel's nla_parse does.
 *
 * @example
 * ```ts
 * const a = Attrs.parse(payload.subarray(4));
 * const id = a.u16(CTRL_ATTR_FAMILY_ID);
 * ```
 */
export class Attrs {
  readonly list: readonly NlAttr[];
  constructor(list: NlAttr[]) {
    this.list = list;
  }

  /** Parse a run of attributes, checking each length against the buffer. */
  static parse(buf: Uint8Array): Attrs {
    const list: NlAttr[] = [];
    const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    let off = 0;
    while (buf.length - off >= NLA_HDRLEN) {
      const len = dv.getUint16(off, true);
      const rawType = dv.getUint16(off + 2, true);
      if (len < NLA_HDRLEN || len > buf.length - off) {
        throw new NetlinkParseError(
          `netlink: attribute ${
            rawType & NLA_TYPE_MASK
          } length ${len} at offset ${off} outside ${buf.length} bytes`,
        );
      }
      list.push({
        type: rawType & NLA_TYPE_MASK,
        nested: (rawType & NLA_F_NESTED) !== 0,
        netByteOrder: (rawType & NLA_F_NET_BYTEORDER) !== 0,
        data: buf.subarray(off + NLA_HDRLEN, off + len),
      });
      off += nlAlign(len);
    }
    return new Attrs(list);
  }

  has(type: number): boolean {
    return this.list.some((a) => a.type === type);
  }
  get(type: number): Uint8Array | undefined {
    for (let i = this.list.length - 1; i >= 0; i--) {
      if (this.list[i].type === type) return this.list[i].data;
    }
    return undefined;
  }
  all(type: number): Uint8Array[] {
    return this.list.filter((a) => a.type === type).map((a) => a.data);
  }
  #sized(type: number, size: number): DataView | undefined {
    const d = this.get(type);
    if (d === undefined) return undefined;
    if (d.length < size) {
      throw new NetlinkParseError(
        `netlink: attribute ${type} has ${d.length} bytes, expected ${size}`,
      );
    }
    return new DataView(d.buffer, d.byteOffset, size);
  }
  u8(type: number): number | undefined {
    return this.#sized(type, 1)?.getUint8(0);
  }
  u16(type: number): number | undefined {
    const a = this.list.findLast((x) => x.type === type);
    return this.#sized(type, 2)?.getUint16(0, !a?.netByteOrder);
  }
  u32(type: number): number | undefined {
    const a = this.list.findLast((x) => x.type === type);
    return this.#sized(type, 4)?.getUint32(0, !a?.netByteOrder);
  }
  s32(type: number): number | undefined {
    return this.#sized(type, 4)?.getInt32(0, true);
  }
  u64(type: number): bigint | undefined {
    return this.#sized(type, 8)?.getBigUint64(0, true);
  }
  /** String attribute, up to its first NUL. */
  str(type: number): string | undefined {
    const d = this.get(type);
    if (d === undefined) return undefined;
    const nul = d.indexOf(0);
    return decoder.decode(nul >= 0 ? d.subarray(0, nul) : d);
  }
  nested(type: number): Attrs | undefined {
    const d = this.get(type);
    return d === undefined ? undefined : Attrs.parse(d);
  }
  /** Every nested attribute of `type`, parsed. */
  nestedAll(type: number): Attrs[] {
    return this.all(type).map((d) => Attrs.parse(d));
  }
}

/**
 * Decode an NLMSG_ERROR payload: the (negative) error, and the extended-ack
 * message if present. Error 0 is an ACK.
 */
export function parseError(m: NlMessage): { error: number; extack?: string } {
  const p = m.payload;
  if (p.length < 4) throw new NetlinkParseError(`netlink: NLMSG_ERROR of ${p.length} bytes`);
  const dv = new DataView(p.buffer, p.byteOffset, p.byteLength);
  const error = dv.getInt32(0, true);
  let extack: string | undefined;
  if (m.flags & NLM_F_ACK_TLVS && p.length >= 4 + NLMSG_HDRLEN) {
    // The original header follows, then its payload unless the ack is capped.
    const origLen = dv.getUint32(4, true);
    const skip = 4 + (m.flags & NLM_F_CAPPED ? NLMSG_HDRLEN : nlAlign(origLen));
    if (skip <= p.length) extack = Attrs.parse(p.subarray(skip)).str(NLMSGERR_ATTR_MSG);
  }
  return { error, extack };
}

/** Options of NetlinkSocket.open. */
export interface NetlinkOpenOptions {
  /** Receive buffer for one datagram (default 64 KiB; dumps fit 32 KiB). */
  recvBufferSize?: number;
  /** How long a request waits for its reply, ms (default 5000). */
  timeoutMs?: number;
}

/**
 * A netlink socket for request/response with the kernel: O_NONBLOCK,
 * close-on-exec, extended acks on, acks capped. Requests are synchronous;
 * replies are matched by sequence number and port id, anything else
 * (multicast notifications) is skipped.
 */
export class NetlinkSocket {
  readonly fd: number;
  readonly protocol: number;
  /** The port id the kernel assigned at bind. */
  readonly portId: number;
  #seq: number;
  #buf: Uint8Array;
  #timeoutMs: number;
  #closed = false;

  private constructor(fd: number, protocol: number, portId: number, opts: NetlinkOpenOptions) {
    this.fd = fd;
    this.protocol = protocol;
    this.portId = portId;
    this.#seq = Math.floor(Date.now() / 1000) >>> 0;
    this.#buf = new Uint8Array(opts.recvBufferSize ?? 65536);
    this.#timeoutMs = opts.timeoutMs ?? 5000;
  }

  /**
   * Open and bind a netlink socket of `protocol`.
   *
   * @example
   * ```ts
   * const nl = NetlinkSocket.open(NETLINK_GENERIC);
   * ```
   */
  static open(protocol: number, opts: NetlinkOpenOptions = {}): NetlinkSocket {
    const fd = openSocket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK, protocol);
    try {
      const one = Int32Array.of(1);
      // Best effort: older kernels lack these; replies are then just longer.
      libc().setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, one, 4);
      libc().setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, one, 4);
      const sa = new Uint8Array(12); // struct sockaddr_nl { family, pad, pid, groups }
      new DataView(sa.buffer).setUint16(0, AF_NETLINK, true);
      check("bind(netlink)", libc().bind(fd, sa, sa.length));
      const len = Uint32Array.of(sa.length);
      check("getsockname(netlink)", libc().getsockname(fd, sa, len));
      const portId = new DataView(sa.buffer).getUint32(4, true);
      return new NetlinkSocket(fd, protocol, portId, opts);
    } catch (e) {
      closeFd(fd);
      throw e;
    }
  }

  /** Join a multicast group (e.g. a generic netlink family's group id). */
  joinGroup(group: number): void {
    check(
      "setsockopt(NETLINK_ADD_MEMBERSHIP)",
      libc().setsockopt(this.fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, Int32Array.of(group), 4),
    );
  }

  #nextSeq(): number {
    this.#seq = (this.#seq + 1) >>> 0;
    return this.#seq;
  }

  #send(call: string, msg: Uint8Array): void {
    for (;;) {
      const n = libc().send(this.fd, msg, BigInt(msg.length), 0);
      if (n >= 0n) {
        if (Number(n) !== msg.length) {
          throw new SysError(call, ERRNO.EMSGSIZE, `sent ${n} of ${msg.length} bytes`);
        }
        return;
      }
      const e = errno();
      if (e === ERRNO.EINTR) continue;
      if (e === ERRNO.EAGAIN) {
        pollFd(this.fd, 0x004, /* POLLOUT */ this.#timeoutMs);
        continue;
      }
      throw new SysError(call, e);
    }
  }

  /** Receive one datagram, waiting until the deadline. */
  #recv(call: string, deadline: number): NlMessage[] {
    for (;;) {
      const n = libc().recv(this.fd, this.#buf, BigInt(this.#buf.length), MSG_TRUNC);
      if (n >= 0n) {
        if (Number(n) > this.#buf.length) {
          throw new SysError(
            call,
            ERRNO.EMSGSIZE,
            `reply of ${n} bytes exceeds the ${this.#buf.length}-byte buffer`,
          );
        }
        return parseMessages(this.#buf.slice(0, Number(n)));
      }
      const e = errno();
      if (e === ERRNO.EINTR) continue;
      if (e !== ERRNO.EAGAIN) throw new SysError(call, e);
      const left = deadline - Date.now();
      if (left <= 0) throw new SysError(call, ERRNO.ETIMEDOUT, "no reply from the kernel");
      pollFd(this.fd, POLLIN, Math.min(left, 1000));
    }
  }

  /**
   * Send one request with NLM_F_ACK and collect its replies until the ACK
   * (or, for a dump, NLMSG_DONE). A negative error throws NetlinkError.
   * `call` names the request in errors ("RTM_NEWADDR", "genl nbd CONNECT").
   *
   * @example
   * ```ts
   * const replies = nl.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, payload, "RTM_NEWLINK vlan");
   * ```
   */
  request(
    type: number,
    flags: number,
    payload: Uint8Array,
    call = `netlink type ${type}`,
  ): NlMessage[] {
    if (this.#closed) throw new SysError(call, ERRNO.EBADF, "netlink socket closed");
    const seq = this.#nextSeq();
    const dump = (flags & NLM_F_DUMP) === NLM_F_DUMP && (flags & NLM_F_CREATE) === 0;
    this.#send(
      call,
      encodeMessage({ type, flags: flags | NLM_F_REQUEST | NLM_F_ACK, seq, payload }),
    );
    const deadline = Date.now() + this.#timeoutMs;
    const out: NlMessage[] = [];
    for (;;) {
      for (const m of this.#recv(call, deadline)) {
        if (m.seq !== seq || (m.pid !== this.portId && m.pid !== 0)) continue;
        if (m.type === NLMSG_ERROR) {
          const { error, extack } = parseError(m);
          if (error !== 0) throw new NetlinkError(call, -error, extack);
          if (!dump) return out;
          continue;
        }
        if (m.type === NLMSG_DONE) {
          if (m.flags & NLM_F_DUMP_INTR) {
            throw new SysError(call, ERRNO.EINTR, "dump interrupted by a concurrent change; retry");
          }
          // A dump's DONE may carry an error (int) too.
          if (m.payload.length >= 4) {
            const err = new DataView(m.payload.buffer, m.payload.byteOffset, 4).getInt32(0, true);
            if (err < 0) throw new NetlinkError(call, -err);
          }
          return out;
        }
        if (m.type === NLMSG_NOOP) continue;
        if (m.type === NLMSG_OVERRUN) throw new SysError(call, ERRNO.ENOBUFS, "netlink overrun");
        // A plain reply is followed by the ACK, in this datagram or the next.
        out.push(m);
      }
    }
  }

  /**
   * A dump request (NLM_F_DUMP): every reply message until NLMSG_DONE.
   *
   * @example
   * ```ts
   * const links = nl.dump(RTM_GETLINK, new Uint8Array(16), "RTM_GETLINK");
   * ```
   */
  dump(type: number, payload: Uint8Array, call = `netlink dump type ${type}`): NlMessage[] {
    return this.request(type, NLM_F_DUMP, payload, call);
  }

  /**
   * Receive whatever is queued (notifications of joined groups) without
   * waiting; returns [] when nothing is there.
   */
  drain(): NlMessage[] {
    const out: NlMessage[] = [];
    for (;;) {
      const n = libc().recv(this.fd, this.#buf, BigInt(this.#buf.length), MSG_TRUNC);
      if (n < 0n) {
        const e = errno();
        if (e === ERRNO.EAGAIN) return out;
        if (e === ERRNO.EINTR) continue;
        throw new SysError("recv(netlink)", e);
      }
      out.push(...parseMessages(this.#buf.slice(0, Math.min(Number(n), this.#buf.length))));
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeFd(this.fd);
  }
}

/** What a {@link NetlinkSubscription} tells its owner. */
export interface NetlinkEvents {
  /** Notifications of the joined groups, in the order the kernel queued them. */
  messages(m: NlMessage[]): void;
  /**
   * The kernel dropped notifications (ENOBUFS: the receive queue was full).
   * Whatever state the owner derived from events is stale: dump and compare.
   */
  overrun(): void;
}

/** Options of {@link NetlinkSubscription.open}. */
export interface NetlinkSubscriptionOptions {
  /**
   * SO_RCVBUF in bytes (the kernel doubles it and caps it at rmem_max). The
   * default leaves the kernel's; tests make it tiny to provoke an overrun.
   */
  recvBufferBytes?: number;
  /** The reactor to wait on (default: the process-wide one). */
  reactor?: Reactor;
}

/**
 * A netlink socket that only listens: it joins multicast groups (for
 * rtnetlink RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, ...) and hands every queued
 * notification to `events` as it arrives, without blocking the JS thread.
 * It waits on the reactor (edge-triggered, so each wake-up drains the queue
 * to EAGAIN) and keeps the reactor's loop alive until closed.
 *
 * @example
 * ```ts
 * const sub = NetlinkSubscription.open(NETLINK_ROUTE, [1, 5, 7], {
 *   messages: (ms) => console.log(ms.length, "notifications"),
 *   overrun: () => console.log("dropped some: dump again"),
 * });
 * // ... later
 * sub.close();
 * ```
 */
export class NetlinkSubscription {
  readonly fd: number;
  readonly #events: NetlinkEvents;
  readonly #r: Reactor;
  readonly #buf = new Uint8Array(65536);
  #closed = false;

  private constructor(fd: number, events: NetlinkEvents, r: Reactor) {
    this.fd = fd;
    this.#events = events;
    this.#r = r;
  }

  /** Open a socket of `protocol`, join `groups` (group numbers, not bit masks) and start listening. */
  static open(
    protocol: number,
    groups: readonly number[],
    events: NetlinkEvents,
    opts: NetlinkSubscriptionOptions = {},
  ): NetlinkSubscription {
    const fd = openSocket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK, protocol);
    const r = opts.reactor ?? reactor();
    try {
      if (opts.recvBufferBytes !== undefined) {
        check(
          "setsockopt(SO_RCVBUF)",
          libc().setsockopt(fd, SOL_SOCKET, SO_RCVBUF, Int32Array.of(opts.recvBufferBytes), 4),
        );
      }
      const sa = new Uint8Array(12);
      new DataView(sa.buffer).setUint16(0, AF_NETLINK, true);
      check("bind(netlink)", libc().bind(fd, sa, sa.length));
      for (const g of groups) {
        check(
          "setsockopt(NETLINK_ADD_MEMBERSHIP)",
          libc().setsockopt(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, Int32Array.of(g), 4),
        );
      }
    } catch (e) {
      closeFd(fd);
      throw e;
    }
    const sub = new NetlinkSubscription(fd, events, r);
    r.add(fd, { ready: () => sub.#drain() });
    r.waiting();
    return sub;
  }

  /** Read until the queue is empty; an overrun is reported once per drain, after what was read. */
  #drain(): void {
    if (this.#closed) return;
    let overrun = false;
    const got: NlMessage[] = [];
    for (;;) {
      const n = libc().recv(this.fd, this.#buf, BigInt(this.#buf.length), MSG_TRUNC);
      if (n < 0n) {
        const e = errno();
        if (e === ERRNO.EINTR) continue;
        // ENOBUFS is reported once, then the queue reads on: keep reading.
        if (e === ERRNO.ENOBUFS) {
          overrun = true;
          continue;
        }
        if (e === ERRNO.EAGAIN) break;
        throw new SysError("recv(netlink)", e);
      }
      try {
        got.push(...parseMessages(this.#buf.slice(0, Math.min(Number(n), this.#buf.length))));
      } catch (e) {
        // A datagram we cannot split is as good as lost: treat it like a drop.
        if (!(e instanceof NetlinkParseError)) throw e;
        overrun = true;
      }
      if (Number(n) > this.#buf.length) overrun = true; // truncated: part of it is lost
    }
    if (got.length) this.#events.messages(got);
    if (overrun) this.#events.overrun();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#r.remove(this.fd);
    this.#r.settled();
    closeFd(this.fd);
  }
}
