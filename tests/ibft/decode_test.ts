import assert from "node:assert/strict";
import { InvalidInputError } from "../../src/errors.ts";
import { decodeIbft, ibftChecksum } from "../../src/ibft/decode.ts";
import { encodeIbft } from "../../src/ibft/encode.ts";
import { readSysfsIbft } from "../../src/ibft/sysfs.ts";
import { asSysfsSees, EXPECTED, FIXTURES, SYSFS_OF } from "./expected.ts";

const fixture = (name: string) => Deno.readFileSync(`${FIXTURES}ibft/${name}`);

for (const [name, want] of Object.entries(EXPECTED)) {
  Deno.test(`ibft decode: ${name} decodes to its pinned model, every field`, () => {
    assert.deepStrictEqual(decodeIbft(fixture(name)), want);
  });
}

Deno.test("ibft decode: the UEFI table is byte-identical to the BIOS one (README says so)", () => {
  assert.deepStrictEqual(fixture("ipxe-uefi-plain.bin"), fixture("ipxe-bios-plain.bin"));
});

for (const [dir, bin] of Object.entries(SYSFS_OF)) {
  Deno.test(`ibft sysfs: ${dir} reads as the same model as ${bin}, less what sysfs hides`, async () => {
    const got = await readSysfsIbft(`${FIXTURES}ibft-sysfs/${dir}`);
    assert.deepStrictEqual(got, asSysfsSees(EXPECTED[bin]));
    assert.deepStrictEqual(got, asSysfsSees(decodeIbft(fixture(bin))));
  });
}

Deno.test("ibft encode: re-encoding each fixture decodes to the same model", () => {
  for (const [name, want] of Object.entries(EXPECTED)) {
    const bytes = encodeIbft(want);
    assert.equal(ibftChecksum(bytes), 0, name);
    const back = decodeIbft(bytes);
    assert.deepStrictEqual(
      { ...back, header: { ...back.header, length: want.header.length } },
      want,
    );
  }
});

/** A copy of `bytes` changed by `edit`, with the checksum fixed so later checks are reached. */
function patched(bytes: Uint8Array, edit: (b: Uint8Array, v: DataView) => void): Uint8Array {
  const b = bytes.slice();
  edit(b, new DataView(b.buffer));
  b[9] = 0;
  b[9] = (0x100 - ibftChecksum(b)) & 0xff;
  return b;
}

function rejects(bytes: Uint8Array, message: RegExp): void {
  assert.throws(() => decodeIbft(bytes), (e: unknown) => {
    assert.ok(e instanceof InvalidInputError, `not InvalidInputError: ${e}`);
    assert.match(e.message, message);
    assert.equal(e.message.includes("\n"), false);
    return true;
  });
}

const mutual = fixture("ipxe-bios-mutual-chap.bin");
const twoTargets = fixture("ipxe-bios-two-targets.bin");
// Layout of iPXE's tables: initiator 0x50, NIC 0xa0, target 0x180, target 1 0x1c0.
const INI = 0x50, NIC = 0xa0, TGT = 0x180;

const CORRUPTIONS: [string, Uint8Array, RegExp][] = [
  [
    "bad checksum",
    (() => {
      const b = mutual.slice();
      b[0x300 % b.length] ^= 1;
      return b;
    })(),
    /^iBFT header: checksum: bytes do not sum to 0/,
  ],
  [
    "truncated by one byte",
    mutual.subarray(0, mutual.length - 1),
    /header: length: 617, but only 616 bytes.*truncated/,
  ],
  ["truncated inside the header", mutual.subarray(0, 20), /header: length: only 20 bytes/],
  ["empty input", new Uint8Array(0), /header: length: only 0 bytes/],
  [
    "trailing bytes",
    new Uint8Array([...mutual, 0]),
    /header: length: 617, but 618 bytes were given/,
  ],
  ["wrong signature", patched(mutual, (b) => b.set([0x58], 0)), /header: signature/],
  ["revision 2", patched(mutual, (b) => (b[8] = 2)), /header: revision: 2, expected 1/],
  [
    "header length too small",
    patched(mutual, (_b, v) => v.setUint32(4, 40, true)),
    /header: length: 40, at least 66/,
  ],
  ["oemId not text", patched(mutual, (b) => (b[11] = 0x07)), /header: oemId: not printable/],
  ["control id", patched(mutual, (b) => (b[0x30] = 7)), /control: structure id: 7, expected 1/],
  ["control version", patched(mutual, (b) => (b[0x31] = 2)), /control: version: 2/],
  [
    "control length 17",
    patched(mutual, (_b, v) => v.setUint16(0x32, 16, true)),
    /control: length: 16, at least 18/,
  ],
  [
    "control length odd pair",
    patched(mutual, (_b, v) => v.setUint16(0x32, 20, true)),
    /control: length: 20 does not end on a whole/,
  ],
  [
    "control length past end",
    patched(mutual, (_b, v) => v.setUint16(0x32, 0x2000 + 18, true)),
    /control: length: \d+ runs past the end/,
  ],
  [
    "initiator offset past end",
    patched(mutual, (_b, v) => v.setUint16(0x38, 0x1000, true)),
    /initiator: offset: 0x1000 is past the end/,
  ],
  [
    "initiator offset into the header",
    patched(mutual, (_b, v) => v.setUint16(0x38, 0x10, true)),
    /initiator: offset: 0x10 lies in the table header/,
  ],
  [
    "initiator length 73",
    patched(mutual, (_b, v) => v.setUint16(INI + 2, 73, true)),
    /initiator: length: 73, expected 74/,
  ],
  [
    "initiator version",
    patched(mutual, (b) => (b[INI + 1] = 0)),
    /initiator: version: 0, expected 1/,
  ],
  [
    "initiator at NIC's offset",
    patched(mutual, (_b, v) => v.setUint16(0x38, NIC, true)),
    /initiator: structure id: 3, expected 2/,
  ],
  [
    "NIC length 100",
    patched(mutual, (_b, v) => v.setUint16(NIC + 2, 100, true)),
    /nic 0: length: 100, expected 102/,
  ],
  [
    "NIC index 1 in slot 0",
    patched(mutual, (b) => (b[NIC + 4] = 1)),
    /nic 0: index: 1, but the control structure lists it as 0/,
  ],
  [
    "NIC prefix 33 for IPv4",
    patched(mutual, (b) => (b[NIC + 22] = 33)),
    /nic 0: prefixLength: 33, at most 32/,
  ],
  [
    "NIC origin 9",
    patched(mutual, (b) => (b[NIC + 23] = 9)),
    /nic 0: origin: 9 is not a defined origin/,
  ],
  [
    "NIC structure runs past the end",
    patched(mutual, (_b, v) => v.setUint16(0x3a, mutual.length - 50, true)),
    /nic 0: (length|structure id)/,
  ],
  [
    "target length 55",
    patched(mutual, (_b, v) => v.setUint16(TGT + 2, 55, true)),
    /target 0: length: 55, expected 54/,
  ],
  ["target id", patched(mutual, (b) => (b[TGT] = 3)), /target 0: structure id: 3, expected 4/],
  [
    "target chap type 3",
    patched(mutual, (b) => (b[TGT + 32] = 3)),
    /target 0: chap: type 3 is not 0, 1 or 2/,
  ],
  [
    "target name past end",
    patched(mutual, (_b, v) => v.setUint16(TGT + 36, mutual.length - 4, true)),
    /target 0: name: string at 0x265 length 22 runs past the end/,
  ],
  [
    "target name offset 0",
    patched(mutual, (_b, v) => v.setUint16(TGT + 36, 0, true)),
    /target 0: name: string offset 0x0 lies in the table header/,
  ],
  [
    "chap secret length past end",
    patched(mutual, (_b, v) => v.setUint16(TGT + 42, 0x400, true)),
    /target 0: chapSecret: string at 0x23e length 1024 runs past/,
  ],
  [
    "secret with a NUL",
    patched(mutual, (_b, v) => v.setUint16(TGT + 42, 15, true)),
    /target 0: chapSecret: string at 0x23e contains a control character or NUL/,
  ],
  [
    "name not UTF-8",
    patched(mutual, (b) => (b[0x218] = 0xff)),
    /target 0: name: string at 0x218 is not valid UTF-8/,
  ],
  [
    "initiator name control char",
    patched(mutual, (b) => (b[0x201] = 0x1b)),
    /initiator: name: string at 0x200 contains a control character/,
  ],
  [
    "target 1 index 0",
    patched(twoTargets, (b) => (b[0x1c4] = 0)),
    /target 1: index: 0, but the control structure lists it as 1/,
  ],
];

for (const [what, bytes, message] of CORRUPTIONS) {
  Deno.test(`ibft validation: ${what} is an InvalidInputError naming structure and field`, () => {
    rejects(bytes, message);
  });
}

Deno.test("ibft validation: secrets never appear in error messages", () => {
  for (const [, bytes] of CORRUPTIONS) {
    try {
      decodeIbft(bytes);
    } catch (e) {
      assert.ok(e instanceof Error);
      assert.doesNotMatch(e.message, /initsecret|targetsecret/);
    }
  }
});

Deno.test("ibft validation: --ignore-checksum decodes a bad checksum and says so", () => {
  const b = mutual.slice();
  b[9] ^= 0x55;
  const t = decodeIbft(b, { ignoreChecksum: true });
  assert.equal(t.header.checksumValid, false);
  assert.deepStrictEqual(
    { ...t, header: { ...t.header, checksumValid: true } },
    EXPECTED["ipxe-bios-mutual-chap.bin"],
  );
});

Deno.test("ibft decode: the expansion area's extra (NIC, target) pairs are followed", () => {
  const base = EXPECTED["ipxe-bios-two-targets.bin"];
  const model = structuredClone(base);
  model.nics.push({ ...model.nics[0], index: 3, mac: "52:54:00:00:00:03", bootSelected: false });
  model.targets.push({
    ...model.targets[1],
    index: 4,
    nicIndex: 3,
    name: "iqn.2026-11.test:disk5",
  });
  const bytes = encodeIbft(model);
  // 5 pairs: 10 + 5 * 4 bytes of control structure.
  assert.equal(new DataView(bytes.buffer).getUint16(0x32, true), 30);
  const back = decodeIbft(bytes);
  assert.deepStrictEqual(back.nics.map((n) => n.index), [0, 3]);
  assert.deepStrictEqual(back.targets.map((t) => [t.index, t.nicIndex, t.name]), [
    [0, 0, "iqn.2026-11.test:disk1"],
    [1, 0, "iqn.2026-11.test:disk2"],
    [4, 3, "iqn.2026-11.test:disk5"],
  ]);
});

Deno.test("ibft decode: flags, VLAN, IPv6, PCI, hostname and flat LUN survive encode/decode", () => {
  const model = structuredClone(EXPECTED["ipxe-bios-mutual-chap.bin"]);
  model.control = { bootFailover: true };
  model.initiator!.isnsServer = "fd00::5";
  model.initiator!.primaryRadius = "192.0.2.9";
  Object.assign(model.nics[0], {
    global: true,
    ip: "2001:db8::15",
    prefixLength: 64,
    origin: "router-advertisement",
    gateway: "fe80::1",
    vlan: 4094,
    pciBdf: "3a:1f.7",
    hostname: "client-1",
  });
  Object.assign(model.targets[0], {
    radiusChap: true,
    radiusReverseChap: true,
    ip: "2001:db8:0:1::2",
    lun: 261,
    lunRaw: "4105000000000000",
  });
  const back = decodeIbft(encodeIbft(model));
  back.header.length = model.header.length;
  assert.deepStrictEqual(back, model);
});

Deno.test("ibft decode: VLAN priority bits are dropped, the 12-bit id kept", () => {
  const b = patched(mutual, (_b, v) => v.setUint16(NIC + 88, 0xe00a, true));
  assert.equal(decodeIbft(b).nics[0].vlan, 10);
});

Deno.test("ibft decode: an unused NIC slot and an absent initiator decode as absent", () => {
  const b = patched(mutual, (_b, v) => v.setUint16(0x38, 0, true));
  assert.equal(decodeIbft(b).initiator, null);
});
