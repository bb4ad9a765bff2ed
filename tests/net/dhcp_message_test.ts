/**
 * The DHCPv4 wire format (src/net/dhcp/message.ts): messages, options
 * (RFC 2132, RFC 3396 long options, option 52 overload), leases from ACKs,
 * and the IPv4 + UDP headers of the packet socket.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { InvalidInputError } from "../../src/errors.ts";
import { formatIp, parseIPv4 } from "../../src/net/addr.ts";
import type { IpAddress } from "../../src/net/addr.ts";
import {
  BOOTREPLY,
  BOOTREQUEST,
  decodeDhcp,
  decodeIpUdp,
  DHCPACK,
  DHCPDISCOVER,
  type DhcpMessage,
  DHCPOFFER,
  encodeDhcp,
  encodeIpUdp,
  FLAG_BROADCAST,
  INFINITE_LEASE,
  IPV4_ANY,
  IPV4_BROADCAST,
  leaseFromAck,
  messageType,
  OPT,
} from "../../src/net/dhcp/message.ts";
import { fuzzOptions } from "../helpers/fuzz.ts";

const hex = (s: string) => Uint8Array.from(s.match(/../g)!.map((x) => parseInt(x, 16)));
const ip = (s: string): IpAddress => parseIPv4(s)!;
const MAC = hex("525400123456");

/**
 * A packet the Linux kernel (6.18) built and checksummed, not our encoder:
 * a UDP socket bound to 10.0.0.1:68 sent a DHCPDISCOVER payload, laid out by
 * hand in a separate script, to 10.0.0.2:67 through a tun device (no
 * checksum offload), and the packet was read from the tun's file descriptor.
 * The kernel set id 0x8626 and DF; header checksum 0x9f7c, UDP checksum 0xbc01.
 * Payload: xid 0x3903f326, BROADCAST flag, chaddr 52:54:00:12:34:56,
 * options 53=1, 61=01:chaddr, 55=[1,3,6,12,15,28,42], END, padded to 300.
 */
const KERNEL_PACKET = hex(
  "450001488626400040119f7c0a0000010a000002004400430134bc01" +
    "01010600" + "3903f326" + "00008000" + "00".repeat(16) + "525400123456" + "00".repeat(10) +
    "00".repeat(64 + 128) + "63825363" +
    "350101" + "3d0701525400123456" + "37070103060c0f1c2a" + "ff" +
    "00".repeat(300 - 240 - 3 - 9 - 9 - 1),
);

Deno.test("dhcp ip/udp: a kernel-built packet decodes, its checksums verify, and our encoder agrees", () => {
  assert.equal(KERNEL_PACKET.length, 328);
  const d = decodeIpUdp(KERNEL_PACKET);
  assert.ok(d, "the kernel's packet must verify");
  assert.equal(formatIp(d.src), "10.0.0.1");
  assert.equal(formatIp(d.dst), "10.0.0.2");
  assert.equal(d.srcPort, 68);
  assert.equal(d.dstPort, 67);
  assert.deepEqual(d.payload, KERNEL_PACKET.subarray(28));

  const m = decodeDhcp(d.payload);
  assert.equal(m.op, BOOTREQUEST);
  assert.equal(m.xid, 0x3903f326);
  assert.equal(m.flags, FLAG_BROADCAST);
  assert.deepEqual(m.chaddr, MAC);
  assert.equal(messageType(m), DHCPDISCOVER);
  assert.deepEqual(m.options.get(OPT.CLIENT_IDENTIFIER), hex("01525400123456"));
  assert.deepEqual(m.options.get(OPT.PARAMETER_REQUEST_LIST), hex("0103060c0f1c2a"));
  assert.deepEqual([...m.options.keys()], [53, 61, 55]);
  // Our encoder lays the hand-made payload out byte for byte.
  assert.deepEqual(encodeDhcp(m), d.payload);

  const ours = encodeIpUdp({
    src: d.src,
    dst: d.dst,
    srcPort: 68,
    dstPort: 67,
    payload: d.payload,
  });
  // The UDP part (header with the kernel's checksum 0xbc01, then the payload) is identical.
  assert.deepEqual(ours.subarray(20), KERNEL_PACKET.subarray(20));
  // Our IP header differs only in id 0 and no DF. RFC 1624 eqn. 3 from the kernel's
  // checksum: HC' = ~(~0x9f7c + ~0x8626 + 0x0000 + ~0x4000 + 0x0000)
  //              = ~(0x6083 + 0x79d9 + 0xbfff) = ~(0x19a5b -> 0x9a5c) = 0x65a3.
  const expected = Uint8Array.from(KERNEL_PACKET.subarray(0, 20));
  expected.set([0, 0, 0, 0], 4);
  expected.set([0x65, 0xa3], 10);
  assert.deepEqual(ours.subarray(0, 20), expected);
});

Deno.test("dhcp ip/udp: every single-byte change of the kernel's packet is refused", () => {
  // One's-complement sums see any change of one byte (RFC 1071); the length
  // and protocol checks see the rest.
  for (let i = 0; i < KERNEL_PACKET.length; i++) {
    for (const delta of [1, 0x80, 0xff]) {
      const b = Uint8Array.from(KERNEL_PACKET);
      b[i] = (b[i] + delta) & 0xff;
      assert.equal(decodeIpUdp(b), null, `byte ${i} + ${delta}`);
    }
  }
});

Deno.test("dhcp ip/udp: what is refused, what is accepted", () => {
  const payload = Uint8Array.of(1, 2, 3);
  const pkt = encodeIpUdp({
    src: IPV4_ANY,
    dst: IPV4_BROADCAST,
    srcPort: 68,
    dstPort: 67,
    payload,
  });
  assert.deepEqual(decodeIpUdp(pkt)?.payload, payload);
  // Ethernet pads short frames: bytes after the IP total length are not the datagram's.
  assert.deepEqual(decodeIpUdp(Uint8Array.from([...pkt, 0, 0, 0, 0]))?.payload, payload);
  // Truncated anywhere.
  for (let n = 0; n < pkt.length; n++) assert.equal(decodeIpUdp(pkt.subarray(0, n)), null);
  // UDP checksum 0 means "none" (RFC 768).
  const noSum = Uint8Array.from(pkt);
  noSum[26] = noSum[27] = 0;
  assert.deepEqual(decodeIpUdp(noSum)?.payload, payload);
  // A fragment (MF set, or an offset): header checksum fixed up so only that is wrong.
  const refix = (b: Uint8Array) => {
    b[10] = b[11] = 0;
    let s = 0;
    for (let i = 0; i < 20; i += 2) s += (b[i] << 8) | b[i + 1];
    while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
    b[10] = (~s >> 8) & 0xff;
    b[11] = ~s & 0xff;
    return b;
  };
  const mf = refix(Uint8Array.from(pkt));
  assert.ok(decodeIpUdp(mf));
  mf[6] = 0x20;
  assert.equal(decodeIpUdp(refix(mf)), null);
  const df = Uint8Array.from(pkt);
  df[6] = 0x40; // DF alone is fine
  assert.ok(decodeIpUdp(refix(df)));
  const tcp = Uint8Array.from(pkt);
  tcp[9] = 6;
  assert.equal(decodeIpUdp(refix(tcp)), null);
  const v6 = Uint8Array.from(pkt);
  v6[0] = 0x65;
  assert.equal(decodeIpUdp(v6), null);
  // IP options (IHL 6) are skipped over: header 24 bytes.
  const withOpt = new Uint8Array(pkt.length + 4);
  withOpt.set(pkt.subarray(0, 20));
  withOpt.set([1, 1, 1, 0], 20); // NOP NOP NOP EOL
  withOpt.set(pkt.subarray(20), 24);
  withOpt[0] = 0x46;
  withOpt[3] += 4;
  assert.deepEqual(decodeIpUdp(refix24(withOpt))?.payload, payload);
  // An odd-length payload checksums with a zero pad byte (RFC 768).
  const odd = encodeIpUdp({
    src: ip("10.1.2.3"),
    dst: ip("10.1.2.4"),
    srcPort: 1,
    dstPort: 2,
    payload,
  });
  assert.equal(odd.length, 31);
  assert.ok(decodeIpUdp(odd));
  assert.throws(
    () =>
      encodeIpUdp({
        src: ip("10.1.2.3"),
        dst: ip("10.1.2.4"),
        srcPort: 70000,
        dstPort: 2,
        payload,
      }),
    InvalidInputError,
  );

  function refix24(b: Uint8Array): Uint8Array {
    b[10] = b[11] = 0;
    let s = 0;
    for (let i = 0; i < 24; i += 2) s += (b[i] << 8) | b[i + 1];
    while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
    b[10] = (~s >> 8) & 0xff;
    b[11] = ~s & 0xff;
    return b;
  }
});

/** A server's reply with the given options (53 first). */
function reply(type: number, options: [number, Uint8Array][], over: Partial<DhcpMessage> = {}) {
  const m: DhcpMessage = {
    op: BOOTREPLY,
    htype: 1,
    hlen: 6,
    hops: 0,
    xid: 0x12345678,
    secs: 0,
    flags: 0,
    ciaddr: IPV4_ANY,
    yiaddr: ip("192.168.7.50"),
    siaddr: ip("192.168.7.1"),
    giaddr: IPV4_ANY,
    chaddr: MAC,
    sname: "",
    file: "",
    options: new Map([[OPT.DHCP_MESSAGE_TYPE, Uint8Array.of(type)], ...options]),
    ...over,
  };
  return m;
}

const be32 = (n: number) => Uint8Array.of(n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
const text = (s: string) => new TextEncoder().encode(s);

Deno.test("dhcp message: a full OFFER round-trips, sname and file included", () => {
  const m = reply(DHCPOFFER, [
    [OPT.SUBNET_MASK, hex("ffffff00")],
    [OPT.ROUTER, hex("c0a80701")],
    [OPT.DOMAIN_NAME_SERVER, hex("c0a80701c0a80702")],
    [OPT.DOMAIN_NAME, text("example.test")],
    [OPT.ROOT_PATH, text("iscsi:192.168.7.1::::iqn.2024-01.test:disk")],
    [OPT.IP_ADDRESS_LEASE_TIME, be32(3600)],
    [OPT.SERVER_IDENTIFIER, hex("c0a80701")],
    [80, new Uint8Array(0)], // RFC 4039 rapid commit: legitimately empty
  ], { sname: "boot-server", file: "pxelinux.0", hops: 2, secs: 7, flags: FLAG_BROADCAST });
  const b = encodeDhcp(m);
  let optionBytes = 0;
  for (const v of m.options.values()) optionBytes += 2 + v.length;
  assert.equal(b.length, 240 + optionBytes + 1, "options, END, and no padding past 300");
  assert.equal(encodeDhcp(reply(DHCPOFFER, [])).length, 300, "padded to BOOTP's 300 bytes");
  assert.deepEqual(b.subarray(236, 243), hex("63825363350102"), "cookie, then option 53 first");
  assert.deepEqual(decodeDhcp(b), m);
});

Deno.test("dhcp message: long options are split into 255-byte instances and joined again (RFC 3396)", () => {
  const long = Uint8Array.from({ length: 600 }, (_, i) => i & 0xff);
  const m = reply(DHCPOFFER, [[43, long], [OPT.SERVER_IDENTIFIER, hex("c0a80701")]]);
  const b = encodeDhcp(m);
  // 53 (3 bytes), then 43 as 255 + 255 + 90.
  assert.deepEqual([b[243], b[244]], [43, 255]);
  assert.deepEqual([b[243 + 257], b[244 + 257]], [43, 255]);
  assert.deepEqual([b[243 + 514], b[244 + 514]], [43, 90]);
  assert.deepEqual(decodeDhcp(b).options.get(43), long);

  // Instances of one option apart from each other are concatenated in order,
  // and the joined value is what the length rules see (two DNS servers of 4).
  const hand = new Uint8Array(300);
  hand.set(hex("020106"), 0);
  hand.set(hex("63825363"), 236);
  hand.set(hex("350105" + "0604c0a80701" + "0304c0a80701" + "0604c0a80702" + "ff"), 240);
  const d = decodeDhcp(hand);
  assert.deepEqual(d.options.get(OPT.DOMAIN_NAME_SERVER), hex("c0a80701c0a80702"));
  assert.deepEqual([...d.options.keys()], [53, 6, 3]);
  // Split unevenly: 2 + 2 bytes of one mask are a valid mask.
  hand.set(hex("350105" + "0102ffff" + "0102ff00" + "ff"), 240);
  assert.deepEqual(decodeDhcp(hand).options.get(OPT.SUBNET_MASK), hex("ffffff00"));
});

Deno.test("dhcp message: option overload (52) reads file then sname, and the encoder overflows into them", () => {
  // By hand: options field 53, 52=3, part of 43, END; file: 54, more of 43, END; sname: 51, END.
  const b = new Uint8Array(300);
  b.set(hex("020106"), 0);
  b.set(text("not a name"), 44); // overwritten below: sname holds options
  b.set(hex("3604c0a80701" + "2b03444546" + "ff"), 108); // file
  b.set(hex("330400000e10" + "ff" + "0000"), 44); // sname
  b.set(hex("63825363"), 236);
  b.set(hex("350102" + "340103" + "2b03414243" + "ff"), 240);
  const d = decodeDhcp(b);
  assert.equal(d.file, "");
  assert.equal(d.sname, "");
  assert.deepEqual(d.options.get(OPT.SERVER_IDENTIFIER), hex("c0a80701"));
  assert.deepEqual(d.options.get(OPT.IP_ADDRESS_LEASE_TIME), be32(3600));
  assert.deepEqual(new TextDecoder().decode(d.options.get(43)), "ABCDEF", "options, then file");
  assert.equal(d.options.has(OPT.OPTION_OVERLOAD), false, "52 is consumed");
  // Overload 1 (file only): sname is a name again.
  b.set(hex("340101"), 243);
  b.set(text("srv\0"), 44);
  const f = decodeDhcp(b);
  assert.equal(f.sname, "srv");
  assert.equal(f.options.has(OPT.IP_ADDRESS_LEASE_TIME), false);
  // Overload 4 does not exist.
  b.set(hex("340104"), 243);
  assert.throws(() => decodeDhcp(b), InvalidInputError);

  // The encoder, held to RFC 2131's 548-byte minimum, spills into file then sname.
  const big = reply(DHCPACK, [
    [OPT.SERVER_IDENTIFIER, hex("c0a80701")],
    [43, new Uint8Array(250).fill(7)],
    [44, new Uint8Array(100).fill(8)],
    [45, new Uint8Array(50).fill(9)],
  ]);
  const e = encodeDhcp(big, { maxSize: 548 });
  assert.ok(e.length <= 548);
  assert.equal(e[108], 44, "option 44 goes to file");
  assert.equal(e[44], 45, "option 45 goes to sname");
  assert.deepEqual(decodeDhcp(e), big);
  // With file in use only sname is free, and that is not enough.
  assert.throws(
    () => encodeDhcp({ ...big, file: "boot.img" }, { maxSize: 548 }),
    InvalidInputError,
  );
  assert.deepEqual(decodeDhcp(encodeDhcp({ ...big, file: "boot.img" })), {
    ...big,
    file: "boot.img",
  });
});

Deno.test("dhcp message: malformed input is an InvalidInputError, whatever is wrong", () => {
  const good = encodeDhcp(reply(DHCPOFFER, [[OPT.SERVER_IDENTIFIER, hex("c0a80701")]]));
  decodeDhcp(good);
  const cases: [string, Uint8Array][] = [];
  const edit = (name: string, f: (b: Uint8Array) => Uint8Array | void) => {
    const b = Uint8Array.from(good);
    cases.push([name, f(b) ?? b]);
  };
  edit("empty", () => new Uint8Array(0));
  edit("truncated header", (b) => b.subarray(0, 200));
  edit("no room for the cookie", (b) => b.subarray(0, 238));
  edit("bad cookie", (b) => void (b[239] = 0x64));
  edit("op 3", (b) => void (b[0] = 3));
  edit("op 0", (b) => void (b[0] = 0));
  edit("hlen 17", (b) => void (b[2] = 17));
  edit("missing END", (b) => {
    b.fill(0, 240);
    b.set(hex("350102"), 240);
  });
  edit("no options at all", (b) => b.subarray(0, 240));
  edit("length byte past the end", (b) => b.subarray(0, 244)); // ...35 01 02 36 |
  edit("option length past the end", (b) => {
    const c = b.subarray(0, 250);
    c.set(hex("350102" + "3c20" + "4142"), 240);
    return c;
  });
  edit("zero-length message type", (b) => b.set(hex("3500" + "ff"), 240));
  edit("zero-length server id", (b) => b.set(hex("350102" + "3600" + "ff"), 240));
  edit("message type of 2 bytes", (b) => b.set(hex("35020202" + "ff"), 240));
  edit("server id of 3 bytes", (b) => b.set(hex("350102" + "3603c0a807" + "ff"), 240));
  edit("router list of 6 bytes", (b) => b.set(hex("350102" + "0306c0a80701c0a8" + "ff"), 240));
  edit("zero-length host name", (b) => b.set(hex("350102" + "0c00" + "ff"), 240));
  edit("client id of one byte", (b) => b.set(hex("350102" + "3d0101" + "ff"), 240));
  edit("overlong message", () => {
    const c = new Uint8Array(65508);
    c.set(good);
    return c;
  });
  edit("overload names file, file overruns", (b) => {
    b.set(hex("350102" + "340101" + "ff"), 240);
    b.set(hex("2bff"), 108);
  });
  for (const [name, b] of cases) {
    assert.throws(() => decodeDhcp(b), InvalidInputError, name);
  }
  // Not malformed: a NUL-less sname fills its field; bytes after END are ignored.
  const full = Uint8Array.from(good);
  full.fill(0x41, 44, 108);
  assert.equal(decodeDhcp(full).sname, "A".repeat(64));
  full.fill(0xee, 250);
  assert.ok(decodeDhcp(full));
});

Deno.test("dhcp message: the encoder refuses what it cannot represent", () => {
  const m = reply(DHCPOFFER, []);
  for (
    const bad of [
      { chaddr: new Uint8Array(5) },
      { hlen: 17, chaddr: new Uint8Array(17) },
      { xid: 2 ** 32 },
      { secs: -1 },
      { yiaddr: { family: 6 as const, bytes: new Uint8Array(16) } },
      { sname: "x".repeat(64) },
      { file: "a\0b" },
      { options: new Map([[0, new Uint8Array(1)]]) },
      { options: new Map([[255, new Uint8Array(1)]]) },
    ]
  ) {
    assert.throws(() => encodeDhcp({ ...m, ...bad }), InvalidInputError, JSON.stringify(bad));
  }
  assert.throws(() => encodeDhcp(m, { maxSize: 299 }), InvalidInputError);
});

const ipv4Arb = fc.uint8Array({ minLength: 4, maxLength: 4 }).map((bytes): IpAddress => ({
  family: 4,
  bytes,
}));

/** Messages with options isboot gives no length rules to (codes 62..254 but not 255). */
const messageArb = fc.record({
  op: fc.constantFrom(1 as const, 2 as const),
  htype: fc.nat(255),
  hops: fc.nat(255),
  xid: fc.nat(0xffffffff),
  secs: fc.nat(0xffff),
  flags: fc.constantFrom(0, FLAG_BROADCAST),
  ciaddr: ipv4Arb,
  yiaddr: ipv4Arb,
  siaddr: ipv4Arb,
  giaddr: ipv4Arb,
  chaddr: fc.uint8Array({ maxLength: 16 }),
  sname: fc.stringMatching(/^[ -~]{0,63}$/),
  file: fc.stringMatching(/^[ -~]{0,127}$/),
  type: fc.integer({ min: 1, max: 8 }),
  options: fc.uniqueArray(
    fc.tuple(fc.integer({ min: 62, max: 254 }), fc.uint8Array({ maxLength: 600 })),
    { selector: ([code]) => code, maxLength: 8 },
  ),
}).map((r): DhcpMessage => ({
  op: r.op,
  htype: r.htype,
  hlen: r.chaddr.length,
  hops: r.hops,
  xid: r.xid,
  secs: r.secs,
  flags: r.flags,
  ciaddr: r.ciaddr,
  yiaddr: r.yiaddr,
  siaddr: r.siaddr,
  giaddr: r.giaddr,
  chaddr: r.chaddr,
  sname: r.sname,
  file: r.file,
  options: new Map([[OPT.DHCP_MESSAGE_TYPE, Uint8Array.of(r.type)], ...r.options]),
}));

Deno.test("dhcp message: property: decode(encode(m)) is m, with or without a size limit", () => {
  fc.assert(
    fc.property(
      messageArb,
      fc.option(fc.integer({ min: 300, max: 1500 }), { nil: undefined }),
      (m, maxSize) => {
        let b: Uint8Array;
        try {
          b = encodeDhcp(m, { maxSize });
        } catch (e) {
          // Only a limit can refuse a valid message, and only when even file
          // and sname (where free) cannot take the options.
          assert.ok(e instanceof InvalidInputError && maxSize !== undefined, String(e));
          let need = 1;
          for (const v of m.options.values()) {
            need += v.length + 2 * Math.max(1, Math.ceil(v.length / 255));
          }
          const room = maxSize - 240 + (m.file === "" ? 128 : 0) + (m.sname === "" ? 64 : 0);
          assert.ok(need > room - 260, `refused ${need} bytes with room for ${room}`);
          return;
        }
        assert.ok(b.length >= 300);
        if (maxSize !== undefined) assert.ok(b.length <= maxSize);
        assert.deepEqual(decodeDhcp(b), m);
      },
    ),
    fuzzOptions(300),
  );
});

function onlyInvalidInput(f: () => unknown): void {
  try {
    f();
  } catch (e) {
    if (!(e instanceof InvalidInputError)) throw e;
  }
}

Deno.test("dhcp message: fuzz: random and mutated bytes throw only InvalidInputError; decodeIpUdp never throws", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 700 }), (b) => {
      onlyInvalidInput(() => decodeDhcp(b));
      const d = decodeIpUdp(b);
      assert.ok(d === null || d.payload.length <= b.length);
    }),
    fuzzOptions(500),
  );
  // Random option areas behind a valid fixed part and cookie; what decodes
  // re-encodes to the same message (when its text fields still fit).
  const fixed = encodeDhcp(reply(DHCPOFFER, [])).subarray(0, 240);
  fc.assert(
    fc.property(
      fc.array(
        fc.oneof(
          fc.uint8Array({ maxLength: 40 }),
          fc.tuple(fc.nat(255), fc.uint8Array({ maxLength: 260 })).map(([code, v]) =>
            Uint8Array.of(code, v.length & 0xff, ...v)
          ),
        ),
        { maxLength: 8 },
      ),
      fc.boolean(),
      (pieces, end) => {
        const b = Uint8Array.from([
          ...fixed,
          ...pieces.flatMap((p) => [...p]),
          ...(end ? [255] : []),
        ]);
        let m: DhcpMessage;
        try {
          m = decodeDhcp(b);
        } catch (e) {
          if (e instanceof InvalidInputError) return;
          throw e;
        }
        assert.deepEqual(decodeDhcp(encodeDhcp(m)), m);
      },
    ),
    fuzzOptions(500),
  );
  // Mutations of valid messages reach deep into the option parser.
  fc.assert(
    fc.property(
      messageArb,
      fc.array(fc.tuple(fc.nat(), fc.nat(255)), { minLength: 1, maxLength: 6 }),
      fc.nat(1200),
      (m, edits, cut) => {
        const b = encodeDhcp(m);
        for (const [at, v] of edits) b[at % b.length] = v;
        onlyInvalidInput(() => decodeDhcp(b));
        onlyInvalidInput(() => decodeDhcp(b.subarray(0, cut)));
        const pkt = encodeIpUdp({
          src: m.ciaddr,
          dst: m.yiaddr,
          srcPort: 68,
          dstPort: 67,
          payload: b,
        });
        assert.ok(decodeIpUdp(pkt));
        for (const [at, v] of edits) pkt[at % pkt.length] = v;
        decodeIpUdp(pkt);
        decodeIpUdp(pkt.subarray(0, cut));
      },
    ),
    fuzzOptions(500),
  );
});

Deno.test("dhcp lease: from a full ACK", () => {
  const ack = reply(DHCPACK, [
    [OPT.SUBNET_MASK, hex("fffffe00")],
    [OPT.ROUTER, hex("00000000c0a80701")], // 0.0.0.0 skipped
    [OPT.DOMAIN_NAME_SERVER, hex("c0a80701c0a80702")],
    [OPT.HOST_NAME, text("node7\0")], // a NUL-terminated name, as some servers send
    [OPT.DOMAIN_NAME, text("example.test")],
    [OPT.ROOT_PATH, text("iscsi:192.168.7.1::::iqn.2024-01.test:disk")],
    [OPT.INTERFACE_MTU, hex("2328")],
    [OPT.BROADCAST_ADDRESS, hex("c0a807ff")],
    [OPT.NTP_SERVERS, hex("c0a80703")],
    [OPT.IP_ADDRESS_LEASE_TIME, be32(3600)],
    [OPT.RENEWAL_TIME_VALUE, be32(1000)],
    [OPT.REBINDING_TIME_VALUE, be32(3000)],
    [OPT.SERVER_IDENTIFIER, hex("c0a80701")],
  ]);
  const l = leaseFromAck(decodeDhcp(encodeDhcp(ack)), 5_000);
  assert.equal(formatIp(l.address), "192.168.7.50");
  assert.equal(l.prefixLength, 23);
  assert.equal(formatIp(l.router!), "192.168.7.1");
  assert.deepEqual(l.dns.map(formatIp), ["192.168.7.1", "192.168.7.2"]);
  assert.equal(l.hostname, "node7");
  assert.equal(l.domain, "example.test");
  assert.equal(l.rootPath, "iscsi:192.168.7.1::::iqn.2024-01.test:disk");
  assert.equal(l.mtu, 9000);
  assert.equal(formatIp(l.broadcast!), "192.168.7.255");
  assert.deepEqual(l.ntp!.map(formatIp), ["192.168.7.3"]);
  assert.deepEqual([l.leaseSeconds, l.t1Seconds, l.t2Seconds], [3600, 1000, 3000]);
  assert.equal(formatIp(l.serverId), "192.168.7.1");
  assert.equal(l.obtainedAt, 5_000);
});

Deno.test("dhcp lease: defaults, clamps and refusals", () => {
  const base: [number, Uint8Array][] = [
    [OPT.IP_ADDRESS_LEASE_TIME, be32(1000)],
    [OPT.SERVER_IDENTIFIER, hex("0a000001")],
  ];
  const lease = (opts: [number, Uint8Array][], over: Partial<DhcpMessage> = {}) =>
    leaseFromAck(reply(DHCPACK, [...base, ...opts], over), 0);
  // T1/T2 default to 0.5 and 0.875 of the lease (RFC 2131 §4.4.5).
  const d = lease([]);
  assert.deepEqual([d.t1Seconds, d.t2Seconds], [500, 875]);
  assert.equal(d.router, undefined);
  assert.deepEqual(d.dns, []);
  assert.equal(d.ntp, undefined);
  // Without option 1: the address's class.
  assert.equal(lease([], { yiaddr: ip("10.1.2.3") }).prefixLength, 8);
  assert.equal(lease([], { yiaddr: ip("172.16.0.9") }).prefixLength, 16);
  assert.equal(lease([], { yiaddr: ip("192.0.2.9") }).prefixLength, 24);
  assert.equal(lease([[OPT.SUBNET_MASK, hex("ffffffff")]]).prefixLength, 32);
  assert.equal(lease([[OPT.SUBNET_MASK, hex("80000000")]]).prefixLength, 1);
  // T2 beyond the lease: its default; T1 beyond T2: its default, kept at most T2.
  const c = lease([[OPT.RENEWAL_TIME_VALUE, be32(900)], [OPT.REBINDING_TIME_VALUE, be32(5000)]]);
  assert.deepEqual([c.t1Seconds, c.t2Seconds], [500, 875]);
  assert.equal(lease([[OPT.REBINDING_TIME_VALUE, be32(1001)]]).t2Seconds, 875);
  assert.equal(lease([[OPT.REBINDING_TIME_VALUE, be32(1000)]]).t2Seconds, 1000);
  const e = lease([[OPT.RENEWAL_TIME_VALUE, be32(700)], [OPT.REBINDING_TIME_VALUE, be32(600)]]);
  assert.deepEqual([e.t1Seconds, e.t2Seconds], [500, 600]);
  const f = lease([[OPT.REBINDING_TIME_VALUE, be32(300)]]);
  assert.deepEqual([f.t1Seconds, f.t2Seconds], [300, 300]);
  // Infinite.
  const inf = leaseFromAck(
    reply(DHCPACK, [[OPT.IP_ADDRESS_LEASE_TIME, be32(INFINITE_LEASE)], base[1]]),
    0,
  );
  assert.deepEqual(
    [inf.leaseSeconds, inf.t1Seconds, inf.t2Seconds],
    [INFINITE_LEASE, INFINITE_LEASE, INFINITE_LEASE],
  );
  // An MTU under 68 is ignored.
  assert.equal(lease([[OPT.INTERFACE_MTU, hex("0040")]]).mtu, undefined);

  const refused: [string, () => unknown][] = [
    ["an OFFER", () => leaseFromAck(reply(DHCPOFFER, base), 0)],
    ["no yiaddr", () => lease([], { yiaddr: IPV4_ANY })],
    ["broadcast yiaddr", () => lease([], { yiaddr: IPV4_BROADCAST })],
    ["loopback yiaddr", () => lease([], { yiaddr: ip("127.0.0.1") })],
    ["multicast yiaddr", () => lease([], { yiaddr: ip("224.0.0.1") })],
    ["no server id", () => leaseFromAck(reply(DHCPACK, [base[0]]), 0)],
    ["no lease time", () => leaseFromAck(reply(DHCPACK, [base[1]]), 0)],
    ["lease time 0", () => leaseFromAck(reply(DHCPACK, [[51, be32(0)], base[1]]), 0)],
    ["gappy mask", () => lease([[OPT.SUBNET_MASK, hex("ff00ff00")]])],
    ["mask 0", () => lease([[OPT.SUBNET_MASK, hex("00000000")]])],
    ["mask 255.255.255.254 with a hole", () => lease([[OPT.SUBNET_MASK, hex("fffffffd")]])],
  ];
  for (const [name, f] of refused) assert.throws(f, InvalidInputError, name);
});
