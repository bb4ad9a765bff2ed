/**
 * The DHCP client's transports (src/net/dhcp/client.ts talks to a
 * `DhcpTransport`) and its ARP probe:
 * - {@link PacketTransport}: while the interface has no address, DHCP goes
 *   over a packet socket. Isboot builds the IPv4 and UDP headers itself
 *   (from 0.0.0.0 to 255.255.255.255) and sends to the Ethernet broadcast;
 *   it reads every IPv4 packet on the link and keeps the UDP ones for port 68.
 * - {@link UdpTransport}: once the lease is applied, renewals are plain UDP
 *   from port 68 of the interface (SO_BINDTODEVICE), unicast to the server
 *   or broadcast when rebinding; the kernel routes and builds the headers.
 * - {@link arpProbe}: RFC 5227 probes (sender address 0.0.0.0) for an
 *   offered address; an answer, or another host's probe for it, means it is
 *   in use and the client declines it.
 *
 * @example
 * ```ts
 * const t = new PacketTransport(link.index);
 * const lease = await obtainLease(t, { mac, timeoutMs: 30_000, addressInUse: (a) => arpProbe(link.index, mac, a) });
 * t.close();
 * ```
 * @module
 */
import {
  BROADCAST_MAC,
  type Datagram,
  DatagramSocket,
  ETH_P_IP,
  sockaddrLl,
} from "../../sys/datagram.ts";
import { sockaddrInet } from "../../sys/socket.ts";
import type { IpAddress } from "../addr.ts";
import type { DhcpTransport } from "./client.ts";
import { decodeIpUdp, DHCP_CLIENT_PORT, DHCP_SERVER_PORT, encodeIpUdp } from "./message.ts";

const ANY: IpAddress = { family: 4, bytes: new Uint8Array(4) };
const LIMITED_BROADCAST: IpAddress = { family: 4, bytes: new Uint8Array([255, 255, 255, 255]) };
/** The Ethernet protocol number of ARP. */
const ETH_P_ARP = 0x0806;

/** Wait for the first datagram that `accept` maps to a value, until `timeoutMs`. */
async function receiveMatching<T>(
  s: DatagramSocket,
  timeoutMs: number,
  accept: (d: Datagram) => T | null,
): Promise<T | null> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const left = deadline - performance.now();
    if (left <= 0) return null;
    const d = await s.receiveDatagram(left);
    if (d === null) return null;
    const v = accept(d);
    if (v !== null) return v;
  }
}

/**
 * A copy of an IPv4/UDP packet with its UDP checksum set to 0 ("none", RFC
 * 768): for packets the kernel marks as not checksummed yet (a server on
 * this host behind a veth), whose checksum field holds only the pseudo-header
 * sum. The IPv4 header checksum is still verified.
 */
function withoutUdpChecksum(packet: Uint8Array): Uint8Array {
  const ihl = (packet[0] & 0x0f) * 4;
  if (packet.length < ihl + 8) return packet;
  const copy = packet.slice();
  copy[ihl + 6] = copy[ihl + 7] = 0;
  return copy;
}

/** DHCP over a packet socket on one interface, for a client without an address. */
export class PacketTransport implements DhcpTransport {
  readonly #ifindex: number;
  readonly #sock: DatagramSocket;

  constructor(ifindex: number) {
    this.#ifindex = ifindex;
    this.#sock = DatagramSocket.packet(ifindex, ETH_P_IP);
  }

  send(payload: Uint8Array, to: "broadcast" | IpAddress): Promise<void> {
    // Without an address there is no unicast: the client broadcasts until bound.
    const dst = to === "broadcast" ? LIMITED_BROADCAST : to;
    const packet = encodeIpUdp({
      src: ANY,
      dst,
      srcPort: DHCP_CLIENT_PORT,
      dstPort: DHCP_SERVER_PORT,
      payload,
    });
    this.#sock.sendTo(packet, sockaddrLl(this.#ifindex, ETH_P_IP, BROADCAST_MAC));
    return Promise.resolve();
  }

  receive(timeoutMs: number): Promise<Uint8Array | null> {
    return receiveMatching(this.#sock, timeoutMs, (d) => {
      const p = decodeIpUdp(d.checksumNotReady ? withoutUdpChecksum(d.data) : d.data);
      return p && p.dstPort === DHCP_CLIENT_PORT && p.srcPort === DHCP_SERVER_PORT
        ? p.payload
        : null;
    });
  }

  close(): void {
    this.#sock.close();
  }
}

/** DHCP over UDP port 68 of one interface, for a client whose address is applied. */
export class UdpTransport implements DhcpTransport {
  readonly #sock: DatagramSocket;

  constructor(ifname: string) {
    this.#sock = DatagramSocket.udp(DHCP_CLIENT_PORT, ifname);
  }

  send(payload: Uint8Array, to: "broadcast" | IpAddress): Promise<void> {
    const dst = to === "broadcast" ? LIMITED_BROADCAST : to;
    this.#sock.sendTo(payload, sockaddrInet(dst, DHCP_SERVER_PORT));
    return Promise.resolve();
  }

  receive(timeoutMs: number): Promise<Uint8Array | null> {
    return this.#sock.receive(timeoutMs);
  }

  close(): void {
    this.#sock.close();
  }
}

/** An ARP packet for IPv4 over Ethernet (RFC 826): 28 bytes. */
function arpPacket(op: 1 | 2, sha: Uint8Array, spa: Uint8Array, tpa: Uint8Array): Uint8Array {
  const b = new Uint8Array(28);
  const dv = new DataView(b.buffer);
  dv.setUint16(0, 1); // hardware type: Ethernet
  dv.setUint16(2, ETH_P_IP);
  b[4] = 6;
  b[5] = 4;
  dv.setUint16(6, op);
  b.set(sha, 8);
  b.set(spa, 14);
  // target hardware address (18..23) stays zero
  b.set(tpa, 24);
  return b;
}

const sameBytes = (a: Uint8Array, b: Uint8Array) =>
  a.length === b.length && a.every((v, i) => v === b[i]);

/**
 * Whether another host uses `address` on the link `ifindex`: `probes` ARP
 * probes (RFC 5227 §2.1.1) `gapMs` apart, listening until `waitMs` after the
 * last. In use when a host answers for the address, or probes for it too.
 * Shorter than RFC 5227's 3 probes over up to 3 s plus 2 s: a boot waits for
 * this, and DHCP servers usually ping an address before they offer it.
 */
export async function arpProbe(
  ifindex: number,
  mac: Uint8Array,
  address: IpAddress,
  o: { probes?: number; gapMs?: number; waitMs?: number } = {},
): Promise<boolean> {
  const s = DatagramSocket.packet(ifindex, ETH_P_ARP);
  try {
    const probe = arpPacket(1, mac, ANY.bytes, address.bytes);
    const to = sockaddrLl(ifindex, ETH_P_ARP, BROADCAST_MAC);
    const conflict = ({ data: d }: Datagram): true | null => {
      if (d.length < 28 || d[4] !== 6 || d[5] !== 4) return null;
      const sha = d.subarray(8, 14), spa = d.subarray(14, 18), tpa = d.subarray(24, 28);
      if (sameBytes(sha, mac)) return null; // our own probe
      // A host that has the address answers (or announces) from it; another
      // client probing for it at the same time is a conflict too (§2.1.1).
      if (sameBytes(spa, address.bytes)) return true;
      if (sameBytes(spa, ANY.bytes) && sameBytes(tpa, address.bytes)) return true;
      return null;
    };
    const probes = o.probes ?? 2;
    for (let i = 0; i < probes; i++) {
      s.sendTo(probe, to);
      const wait = i === probes - 1 ? (o.waitMs ?? 600) : (o.gapMs ?? 200);
      if (await receiveMatching(s, wait, conflict)) return true;
    }
    return false;
  } finally {
    s.close();
  }
}
