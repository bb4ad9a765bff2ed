import assert from "node:assert/strict";
import fc from "fast-check";
import { InvalidInputError } from "../../src/errors.ts";
import { decodeIbft, ibftChecksum } from "../../src/ibft/decode.ts";
import { encodeIbft } from "../../src/ibft/encode.ts";
import {
  formatAddress,
  formatBdf,
  formatMac,
  lunFromSysfs,
  lunNumber,
  lunToHex,
  parseAddress,
} from "../../src/ibft/fields.ts";
import { ibftFromJson, ibftToJson } from "../../src/ibft/json.ts";
import type { IbftNic, IbftTable, IbftTarget, Origin } from "../../src/ibft/model.ts";
import { fuzzOptions } from "../helpers/fuzz.ts";
import { FIXTURES } from "./expected.ts";

const bytes = (n: number) => fc.uint8Array({ minLength: n, maxLength: n });
const ipv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255))
  .filter((q) => q.some((x) => x !== 0))
  .map((q) => q.join("."));
const ipv6 = bytes(16).map(formatAddress);
const address = fc.oneof(fc.constant(null), ipv4, ipv6);
// deno-lint-ignore no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;
const text = fc.option(
  fc.string({ unit: "grapheme", minLength: 1, maxLength: 40 }).filter((s) => !CONTROL.test(s)),
);
const ascii = (max: number) => fc.string({ unit: "grapheme-ascii", maxLength: max });
const origin = fc.constantFrom<Origin>(
  "other",
  "manual",
  "well-known",
  "dhcp",
  "router-advertisement",
);

const nic = (index: number): fc.Arbitrary<IbftNic> =>
  address.chain((ip) =>
    fc.record({
      index: fc.constant(index),
      valid: fc.boolean(),
      bootSelected: fc.boolean(),
      global: fc.boolean(),
      ip: fc.constant(ip),
      prefixLength: fc.nat(ip !== null && !ip.includes(":") ? 32 : 128),
      origin,
      gateway: address,
      primaryDns: address,
      secondaryDns: address,
      dhcpServer: address,
      vlan: fc.nat(4095),
      mac: bytes(6).map(formatMac),
      pciBdf: fc.nat(0xffff).map(formatBdf),
      hostname: text,
    })
  );

const target = (index: number): fc.Arbitrary<IbftTarget> =>
  bytes(8).chain((lun) =>
    fc.record({
      index: fc.constant(index),
      valid: fc.boolean(),
      bootSelected: fc.boolean(),
      radiusChap: fc.boolean(),
      radiusReverseChap: fc.boolean(),
      ip: address,
      port: fc.nat(0xffff),
      lun: fc.constant(lunNumber(lun)),
      lunRaw: fc.constant(lunToHex(lun)),
      chap: fc.constantFrom("none" as const, "chap" as const, "mutual" as const),
      nicIndex: fc.nat(255),
      name: text,
      chapName: text,
      chapSecret: text,
      reverseChapName: text,
      reverseChapSecret: text,
    })
  );

const slots = fc.uniqueArray(fc.nat(7), { maxLength: 4 }).map((a) => a.sort((x, y) => x - y));

/** Any table the model can describe. */
const table: fc.Arbitrary<IbftTable> = fc.record({
  header: fc.record({
    signature: fc.constantFrom("iBFT", "IBFT", "BIFT"),
    length: fc.constant(null),
    revision: fc.constant(1),
    checksumValid: fc.constant(true),
    oemId: ascii(6),
    oemTableId: ascii(8),
  }),
  control: fc.record({ bootFailover: fc.boolean() }),
  initiator: fc.option(fc.record({
    name: text,
    valid: fc.boolean(),
    bootSelected: fc.boolean(),
    isnsServer: address,
    slpServer: address,
    primaryRadius: address,
    secondaryRadius: address,
  })),
  nics: slots.chain((ix) => fc.tuple(...ix.map(nic))),
  targets: slots.chain((ix) => fc.tuple(...ix.map(target))),
});

Deno.test("ibft property: encode -> decode is the identity on every model", () => {
  fc.assert(
    fc.property(table, (m) => {
      const b = encodeIbft(m);
      assert.equal(ibftChecksum(b), 0);
      const back = decodeIbft(b);
      assert.equal(back.header.length, b.length);
      // structuredClone: fast-check's records have a null prototype.
      const want = structuredClone(m);
      want.header.length = b.length;
      assert.deepStrictEqual(back, want);
    }),
    fuzzOptions(2000),
  );
});

Deno.test("ibft property: --json --show-secrets -> encode gives the same table bytes", () => {
  fc.assert(
    fc.property(table, (m) => {
      const doc = ibftToJson({ source: "file:x", table: m, warnings: [] }, { showSecrets: true });
      const again = ibftFromJson(JSON.parse(JSON.stringify(doc)));
      assert.deepStrictEqual(encodeIbft(again), encodeIbft(m));
    }),
    fuzzOptions(1000),
  );
});

const seeds = [
  ...[
    "ipxe-bios-plain.bin",
    "ipxe-bios-chap.bin",
    "ipxe-bios-mutual-chap.bin",
    "ipxe-bios-two-targets.bin",
  ].map((n) => Deno.readFileSync(`${FIXTURES}ibft/${n}`)),
];

/** decode must return a table or throw InvalidInputError; anything else fails the property. */
function decodeOrTypedError(b: Uint8Array, ignoreChecksum: boolean): void {
  try {
    decodeIbft(b, { ignoreChecksum });
  } catch (e) {
    if (!(e instanceof InvalidInputError)) throw e;
    assert.equal(e.message.includes("\n"), false);
  }
}

Deno.test("ibft fuzz: byte mutations of valid tables raise only InvalidInputError", () => {
  const source = fc.oneof(fc.constantFrom(...seeds), table.map(encodeIbft));
  fc.assert(
    fc.property(
      source,
      fc.array(fc.tuple(fc.nat(), fc.nat(255)), { minLength: 1, maxLength: 8 }),
      fc.boolean(),
      fc.boolean(),
      (orig, edits, fixChecksum, ignoreChecksum) => {
        const b = orig.slice();
        for (const [at, v] of edits) b[at % b.length] = v;
        if (fixChecksum) {
          // Reach the structure checks behind the checksum.
          b[9] = 0;
          const len = Math.min(b.length, new DataView(b.buffer).getUint32(4, true));
          b[9] = (0x100 - ibftChecksum(b.subarray(0, len))) & 0xff;
        }
        decodeOrTypedError(b, ignoreChecksum);
      },
    ),
    fuzzOptions(2000),
  );
});

Deno.test("ibft fuzz: truncations and extensions of valid tables raise only InvalidInputError", () => {
  fc.assert(
    fc.property(
      fc.constantFrom(...seeds),
      fc.nat(),
      fc.uint8Array({ maxLength: 64 }),
      fc.boolean(),
      (orig, cut, tail, ignoreChecksum) => {
        const b = new Uint8Array([...orig.subarray(0, cut % (orig.length + 1)), ...tail]);
        if (b.length !== orig.length) {
          assert.throws(() => decodeIbft(b, { ignoreChecksum }), InvalidInputError);
        } else decodeOrTypedError(b, ignoreChecksum);
      },
    ),
    fuzzOptions(2000),
  );
});

Deno.test("ibft fuzz: arbitrary bytes raise only InvalidInputError", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 700 }), fc.boolean(), (b, ignoreChecksum) => {
      if (b.length >= 4) b.set([0x69, 0x42, 0x46, 0x54], 0); // "iBFT", to get past the signature
      decodeOrTypedError(b, ignoreChecksum);
    }),
    fuzzOptions(2000),
  );
});

Deno.test("ibft property: address text round trips through the 16-byte form", () => {
  fc.assert(
    fc.property(bytes(16), (b) => {
      const s = formatAddress(b);
      if (s === null) return;
      assert.deepStrictEqual(parseAddress(s), b);
      assert.deepStrictEqual(parseAddress(s.toUpperCase()), b);
    }),
    fuzzOptions(2000),
  );
});

Deno.test("ibft property: sysfs lun text reads back exactly for every plain LUN, and consistently otherwise", () => {
  fc.assert(
    fc.property(
      fc.oneof(
        bytes(8),
        fc.nat(0x3fff).map((n) =>
          Uint8Array.from([n < 256 ? 0 : 0x40 | (n >> 8), n & 0xff, 0, 0, 0, 0, 0, 0])
        ),
      ),
      (b) => {
        const kernelText = Array.from(b, (x) => x.toString(16)).join(""); // "%x" per byte
        const got = lunFromSysfs(kernelText);
        if (lunNumber(b) !== null) assert.deepStrictEqual(got, b);
        if (got !== undefined) {
          assert.equal(Array.from(got, (x) => x.toString(16)).join(""), kernelText);
        }
      },
    ),
    fuzzOptions(2000),
  );
});
