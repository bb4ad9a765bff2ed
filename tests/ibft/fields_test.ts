import assert from "node:assert/strict";
import {
  formatAddress,
  formatBdf,
  lunBytes,
  lunFromSysfs,
  lunNumber,
  parseAddress,
  parseBdf,
} from "../../src/ibft/fields.ts";

function v6(text: string): Uint8Array {
  const b = parseAddress(text);
  assert.ok(b, text);
  return b;
}

Deno.test("ibft fields: addresses print as documented (IPv4-mapped dotted, RFC 5952, null)", () => {
  const cases: [string, string | null][] = [
    ["::ffff:10.0.2.15", "10.0.2.15"],
    ["0:0:0:0:0:ffff:0:0", null], // ::ffff:0.0.0.0 means none, as in the kernel
    ["::", null],
    ["2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"],
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"], // a single zero group is not compressed
    ["2001:0:0:1:0:0:0:1", "2001:0:0:1::1"], // the longest run is compressed
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"], // the first of equal runs
    ["FE80::ABCD", "fe80::abcd"],
    ["::1", "::1"],
    ["1::", "1::"],
    ["::ffff:1.2.3.4", "1.2.3.4"],
    ["64:ff9b::192.0.2.33", "64:ff9b::c000:221"],
  ];
  for (const [input, want] of cases) assert.equal(formatAddress(v6(input)), want, input);
});

Deno.test("ibft fields: address text that is not an address is refused", () => {
  for (
    const s of [
      "",
      "1.2.3",
      "1.2.3.256",
      "01.2.3.4x",
      ":::",
      "1::2::3",
      "12345::",
      "1:2:3:4:5:6:7:8:9",
      "g::1",
      "1:2:3:4:5:6:7",
    ]
  ) {
    assert.equal(parseAddress(s), undefined, s);
  }
  assert.deepStrictEqual(parseAddress(null), new Uint8Array(16));
});

Deno.test("ibft fields: PCI bus/device/function", () => {
  assert.equal(formatBdf(0x0018), "00:03.0");
  assert.equal(formatBdf(0xff << 8 | 0x1f << 3 | 7), "ff:1f.7");
  assert.equal(parseBdf("00:03.0"), 0x18);
  assert.equal(parseBdf("0000:3a:1f.7"), 0x3a << 8 | 0x1f << 3 | 7);
  assert.equal(parseBdf("00:20.0"), undefined);
  assert.equal(parseBdf("0001:00:03.0"), undefined);
});

Deno.test("ibft fields: SAM LUN peripheral and flat addressing to a number, others null", () => {
  const b = (...x: number[]) => Uint8Array.from([...x, 0, 0, 0, 0, 0, 0, 0, 0].slice(0, 8));
  assert.equal(lunNumber(b(0, 0)), 0);
  assert.equal(lunNumber(b(0, 1)), 1);
  assert.equal(lunNumber(b(0, 255)), 255);
  assert.equal(lunNumber(b(0x40, 0x00)), 0);
  assert.equal(lunNumber(b(0x41, 0x05)), 261);
  assert.equal(lunNumber(b(0x7f, 0xff)), 16383);
  assert.equal(lunNumber(b(0x04, 0x15)), null); // peripheral, bus 4
  assert.equal(lunNumber(b(0x81, 0x05)), null); // logical unit addressing
  assert.equal(lunNumber(b(0xc1, 0x05)), null); // extended
  assert.equal(lunNumber(b(0, 1, 0, 2)), null); // second level
  assert.deepStrictEqual(lunBytes(1), b(0, 1));
  assert.deepStrictEqual(lunBytes(261), b(0x41, 0x05));
  assert.equal(lunBytes(16384), undefined);
});

Deno.test("ibft fields: sysfs lun text (unpadded %x per byte) back to bytes", () => {
  const hex = (b: Uint8Array | undefined) =>
    b && Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  assert.equal(hex(lunFromSysfs("01000000")), "0001000000000000"); // the fixture's LUN 1
  assert.equal(hex(lunFromSysfs("00000000")), "0000000000000000");
  assert.equal(hex(lunFromSysfs("0ff000000")), "00ff000000000000");
  assert.equal(hex(lunFromSysfs("415000000")), "4105000000000000"); // flat 261 wins over 04 15 / 04 01 50
  assert.equal(hex(lunFromSysfs("ffffffffffffffff")), "ffffffffffffffff"); // 16 digits: one split
  assert.equal(lunFromSysfs("1234567890"), undefined); // many splits, none a plain LUN
  assert.equal(lunFromSysfs("0100000"), undefined); // too short
  assert.equal(lunFromSysfs("01000000x"), undefined);
});
