/**
 * Datagram sockets for the DHCP client: a packet socket (AF_PACKET,
 * SOCK_DGRAM) that sends and receives whole IPv4 packets on one interface
 * while it has no address, and a UDP socket bound to one interface for
 * renewing a lease once it has one. Both are served by the reactor, so a
 * wait for an answer costs no wake-ups.
 *
 * @example
 * ```ts
 * const s = DatagramSocket.packet(ifindex, ETH_P_IP);
 * s.sendTo(ipPacket, sockaddrLl(ifindex, ETH_P_IP, BROADCAST_MAC));
 * const reply = await s.receive(4000); // null after 4 s
 * s.close();
 * ```
 * @module
 */
import { check, libc } from "./libc.ts";
import { ERRNO, SysError } from "./errno.ts";
import { type Reactor, reactor } from "./reactor.ts";
import {
  AF_INET,
  type IpAddress,
  openSocket,
  setIntOption,
  SO_REUSEADDR,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SOCK_NONBLOCK,
  sockaddrInet,
  SOL_SOCKET,
} from "./socket.ts";

export const AF_PACKET = 17;
/** The Ethernet protocol number of IPv4 (linux/if_ether.h). */
export const ETH_P_IP = 0x0800;
export const SO_BROADCAST = 6;
export const SO_BINDTODEVICE = 25;
/** The Ethernet broadcast address. */
export const BROADCAST_MAC: Uint8Array = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
const MSG_DONTWAIT = 0x40;
const SOL_PACKET = 263;
const PACKET_AUXDATA = 8;
/**
 * tpacket_auxdata.tp_status: the packet's checksum is not filled in yet (a
 * packet from this host, e.g. over a veth, whose checksum offload happens
 * later or never): a checksum check on it would fail for no fault.
 */
const TP_STATUS_CSUMNOTREADY = 1 << 3;
/** Datagrams kept while nobody reads (more are dropped: the sender retransmits). */
const QUEUE_MAX = 64;
const MAX_DATAGRAM = 65536;
const EPOLLIN = 0x001;

/**
 * struct sockaddr_ll (20 bytes): family, protocol (network order), ifindex,
 * hatype, pkttype, halen, addr[8]. With `mac` it names a destination.
 */
export function sockaddrLl(ifindex: number, protocol: number, mac?: Uint8Array): Uint8Array {
  const sa = new Uint8Array(20);
  const dv = new DataView(sa.buffer);
  dv.setUint16(0, AF_PACKET, true);
  dv.setUint16(2, protocol, false);
  dv.setInt32(4, ifindex, true);
  if (mac) {
    sa[11] = mac.length;
    sa.set(mac.subarray(0, 8), 12);
  }
  return sa;
}

/** One datagram received. */
export interface Datagram {
  readonly data: Uint8Array;
  /**
   * A packet socket's packet whose checksums the kernel had not filled in
   * (TP_STATUS_CSUMNOTREADY): it never crossed a wire, and its transport
   * checksum field means nothing.
   */
  readonly checksumNotReady: boolean;
}

/** A datagram socket on the reactor: `sendTo` now, `receive` with a timeout. */
export class DatagramSocket {
  readonly fd: number;
  readonly #r: Reactor;
  readonly #queue: Datagram[] = [];
  readonly #buf = new Uint8Array(MAX_DATAGRAM);
  /** recvmsg's struct msghdr, iovec and control buffer (packet sockets only). */
  readonly #msg: { hdr: Uint8Array; control: Uint8Array } | null;
  #waiter: ((d: Datagram | null) => void) | null = null;
  #closed = false;

  private constructor(fd: number, r: Reactor, auxdata: boolean) {
    this.fd = fd;
    this.#r = r;
    this.#msg = auxdata ? this.#msghdr() : null;
    r.add(fd, { ready: (events) => this.#ready(events) });
  }

  /** struct msghdr (56 bytes on x86-64) pointing at the receive buffer and a control buffer. */
  #msghdr(): { hdr: Uint8Array; control: Uint8Array } {
    const control = new Uint8Array(128);
    const iov = new Uint8Array(16); // struct iovec { void *base; size_t len; }
    const iv = new DataView(iov.buffer);
    iv.setBigUint64(0, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(this.#buf))), true);
    iv.setBigUint64(8, BigInt(this.#buf.length), true);
    const hdr = new Uint8Array(56);
    const h = new DataView(hdr.buffer);
    // msg_name NULL, msg_namelen 0; msg_iov, msg_iovlen 1; msg_control, msg_controllen.
    h.setBigUint64(16, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(iov))), true);
    h.setBigUint64(24, 1n, true);
    h.setBigUint64(32, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(control))), true);
    h.setBigUint64(40, BigInt(control.length), true);
    // The iovec must live as long as the header that points at it.
    this.#iov = iov;
    return { hdr, control };
  }

  #iov: Uint8Array | null = null;

  /**
   * A packet socket for `protocol` on interface `ifindex`: it receives that
   * protocol's packets (network layer up: the kernel strips the link header)
   * and sends to a link address given by {@link sockaddrLl}.
   */
  static packet(ifindex: number, protocol: number, r: Reactor = reactor()): DatagramSocket {
    const fd = openSocket(AF_PACKET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(protocol));
    try {
      const sa = sockaddrLl(ifindex, protocol);
      check("bind", libc().bind(fd, sa, sa.length));
      setIntOption(fd, SOL_PACKET, PACKET_AUXDATA, 1);
      return new DatagramSocket(fd, r, true);
    } catch (e) {
      libc().close(fd);
      throw e;
    }
  }

  /**
   * A UDP socket on `port` of every address, bound to the interface `device`
   * (SO_BINDTODEVICE), allowed to broadcast and to share the port.
   */
  static udp(port: number, device: string, r: Reactor = reactor()): DatagramSocket {
    const fd = openSocket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    try {
      setIntOption(fd, SOL_SOCKET, SO_REUSEADDR, 1);
      setIntOption(fd, SOL_SOCKET, SO_BROADCAST, 1);
      const name = new TextEncoder().encode(`${device}\0`);
      check("setsockopt", libc().setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, name, name.length));
      const any: IpAddress = { family: 4, bytes: new Uint8Array(4) };
      const sa = sockaddrInet(any, port);
      check("bind", libc().bind(fd, sa, sa.length));
      return new DatagramSocket(fd, r, false);
    } catch (e) {
      libc().close(fd);
      throw e;
    }
  }

  /** Send one datagram to `sockaddr` (a sockaddr_ll or sockaddr_in). */
  sendTo(data: Uint8Array, sockaddr: Uint8Array): void {
    if (this.#closed) throw new SysError("sendto", ERRNO.EBADF);
    check(
      "sendto",
      Number(libc().sendto(this.fd, data, BigInt(data.length), 0, sockaddr, sockaddr.length)),
    );
  }

  /** The next datagram's bytes, or null when `timeoutMs` passes first (or the socket is closed). */
  async receive(timeoutMs: number): Promise<Uint8Array | null> {
    return (await this.receiveDatagram(timeoutMs))?.data ?? null;
  }

  /** The next datagram with what the kernel said of it, or null as {@link receive}. */
  receiveDatagram(timeoutMs: number): Promise<Datagram | null> {
    if (this.#closed) return Promise.resolve(null);
    this.#drain();
    const first = this.#queue.shift();
    if (first) return Promise.resolve(first);
    if (this.#waiter) throw new Error("DatagramSocket: one receive at a time");
    return new Promise((resolve) => {
      const timer = setTimeout(() => finish(null), Math.max(0, timeoutMs));
      const finish = (d: Datagram | null) => {
        clearTimeout(timer);
        this.#waiter = null;
        this.#r.settled();
        resolve(d);
      };
      this.#waiter = finish;
      this.#r.waiting();
    });
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#r.remove(this.fd);
    libc().close(this.fd);
    this.#queue.length = 0;
    this.#waiter?.(null);
  }

  #ready(events: number): void {
    if (events & EPOLLIN) this.#drain();
    const next = this.#waiter && this.#queue.shift();
    if (next) this.#waiter!(next);
  }

  /** Read every datagram waiting (edge-triggered: until EAGAIN). */
  #drain(): void {
    while (!this.#closed) {
      let n: number;
      let checksumNotReady = false;
      if (this.#msg) {
        const h = new DataView(this.#msg.hdr.buffer);
        h.setBigUint64(40, BigInt(this.#msg.control.length), true); // msg_controllen in/out
        n = Number(libc().recvmsg(this.fd, this.#msg.hdr, MSG_DONTWAIT));
        if (n >= 0) {
          checksumNotReady = (auxStatus(this.#msg.control, Number(h.getBigUint64(40, true))) &
            TP_STATUS_CSUMNOTREADY) !== 0;
        }
      } else n = Number(libc().recv(this.fd, this.#buf, BigInt(this.#buf.length), MSG_DONTWAIT));
      if (n < 0) return; // EAGAIN, or an error the next send reports
      if (this.#queue.length < QUEUE_MAX) {
        this.#queue.push({ data: this.#buf.slice(0, n), checksumNotReady });
      }
    }
  }
}

/** tp_status of the PACKET_AUXDATA control message among `len` bytes of `control`; 0 if none. */
function auxStatus(control: Uint8Array, len: number): number {
  const dv = new DataView(control.buffer, control.byteOffset, Math.min(len, control.length));
  // struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; } then data, 8-aligned.
  for (let off = 0; off + 16 <= dv.byteLength;) {
    const clen = Number(dv.getBigUint64(off, true));
    if (clen < 16) return 0;
    if (
      dv.getInt32(off + 8, true) === SOL_PACKET && dv.getInt32(off + 12, true) === PACKET_AUXDATA
    ) {
      return off + 20 <= dv.byteLength ? dv.getUint32(off + 16, true) : 0;
    }
    off += (clen + 7) & ~7;
  }
  return 0;
}

function htons(v: number): number {
  return ((v & 0xff) << 8) | ((v >> 8) & 0xff);
}
