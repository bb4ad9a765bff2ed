/** PDU layouts against RFC 7143 §11, CRC32C against RFC 3720 B.4, text encoding (§6.1). */
import assert from "node:assert/strict";
import fc from "fast-check";
import { defaultCrc32c } from "../../src/iscsi/digest.ts";
import {
  decodePdu,
  encodeDataOut,
  encodeLoginRequest,
  encodeLun,
  encodeNopOut,
  encodeScsiCommand,
  encodeTaskMgmt,
  padLength,
  parseHeader,
} from "../../src/iscsi/pdu.ts";
import { decodeText, encodeText, splitText, TextAccumulator } from "../../src/iscsi/text.ts";
import { IscsiProtocolError } from "../../src/iscsi/errors.ts";
import { fuzzOptions } from "../helpers/fuzz.ts";
import { b4ReadPdu, RFC3720_B4, wireHex } from "../helpers/crc32c_vectors.ts";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

Deno.test("CRC32C matches the RFC 3720 B.4 vectors", async () => {
  const crc = await defaultCrc32c();
  for (const [data, want] of RFC3720_B4) assert.equal(wireHex(crc.digest(data)), want);
  // Split input gives the same digest as contiguous input.
  const read = b4ReadPdu();
  assert.equal(crc.digest(read.subarray(0, 20), read.subarray(20)), crc.digest(read));
});

Deno.test("SCSI Command BHS layout (§11.3)", () => {
  const b = new Uint8Array(48);
  const cdb = Uint8Array.from([0x88, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 8, 0, 0]);
  encodeScsiCommand(b, {
    final: true,
    read: true,
    write: false,
    lun: 1,
    itt: 0x01020304,
    expectedDataTransferLength: 4096,
    cmdSN: 7,
    expStatSN: 9,
    cdb,
    dataSegmentLength: 0,
  });
  assert.equal(
    hex(b),
    "01c10000000000000001000000000000" + "01020304000010000000000700000009" + hex(cdb),
  );
});

Deno.test("Login Request BHS layout (§11.12)", () => {
  const b = new Uint8Array(48);
  encodeLoginRequest(b, {
    transit: true,
    cont: false,
    csg: 1,
    nsg: 3,
    isid: Uint8Array.from([0x80, 1, 2, 3, 0, 1]),
    tsih: 0,
    itt: 5,
    cid: 1,
    cmdSN: 0x10,
    expStatSN: 0,
    dataSegmentLength: 0x123,
  });
  assert.equal(
    hex(b.subarray(0, 32)),
    "43870000000001238001020300010000" + "00000005000100000000001000000000",
  );
});

Deno.test("Data-Out, NOP-Out and TMF layouts", () => {
  const b = new Uint8Array(48);
  encodeDataOut(b, {
    final: true,
    lun: 2,
    itt: 9,
    ttt: 0xaabbccdd,
    expStatSN: 3,
    dataSN: 1,
    bufferOffset: 8192,
    dataSegmentLength: 8192,
  });
  assert.equal(
    hex(b.subarray(0, 48)),
    "05800000000020000002000000000000" + "00000009aabbccdd0000000000000003" +
      "00000000000000010000200000000000",
  );
  encodeNopOut(b, { itt: 0xffffffff, ttt: 0x11, cmdSN: 4, expStatSN: 5, dataSegmentLength: 0 });
  assert.equal(b[0], 0x40);
  assert.equal(b[1], 0x80);
  encodeTaskMgmt(b, {
    func: 1,
    lun: 1,
    itt: 2,
    referencedTaskTag: 3,
    cmdSN: 4,
    expStatSN: 5,
    refCmdSN: 6,
  });
  assert.equal(
    hex(b.subarray(0, 36)),
    "42810000000000000001000000000000" + "00000002000000030000000400000005" + "00000006",
  );
  const lun = new Uint8Array(8);
  encodeLun(lun, 0, 300);
  assert.equal(hex(lun), "412c000000000000");
});

Deno.test("received headers: field views and bounds checks", () => {
  const b = new Uint8Array(48);
  b[0] = 0x25; // Data-In
  b[1] = 0x81; // F + S
  b[3] = 0x02;
  b.set([0, 0x10, 0], 5); // DSL 4096
  new DataView(b.buffer).setUint32(16, 0x77, false);
  new DataView(b.buffer).setUint32(40, 512, false);
  const h = parseHeader(b, { maxDataSegmentLength: 8192 });
  assert.equal(h.opcode, 0x25);
  assert.equal(h.dataSegmentLength, 4096);
  assert.equal(h.itt, 0x77);
  assert.equal(h.bufferOffset, 512);
  assert.throws(() => parseHeader(b, { maxDataSegmentLength: 1024 }), IscsiProtocolError);
  b[0] = 0x01; // an initiator opcode from a target
  assert.throws(() => parseHeader(b, { maxDataSegmentLength: 8192 }), IscsiProtocolError);
  assert.deepEqual([0, 1, 2, 3, 4].map(padLength), [0, 3, 2, 1, 0]);
});

Deno.test("decodePdu checks digests and padding", async () => {
  const crc = await defaultCrc32c();
  const pdu = new Uint8Array(48 + 4 + 8 + 4);
  pdu[0] = 0x24; // Text Response
  pdu[1] = 0x80;
  pdu[7] = 5;
  pdu.set(new TextEncoder().encode("a=b\0x"), 52);
  const dv = new DataView(pdu.buffer);
  dv.setUint32(48, crc.digest(pdu.subarray(0, 48)), true);
  dv.setUint32(60, crc.digest(pdu.subarray(52, 60)), true);
  const d = decodePdu(pdu, {
    maxDataSegmentLength: 8192,
    headerDigest: true,
    dataDigest: true,
    crc,
  });
  assert.equal(d.length, pdu.length);
  assert.equal(d.data.length, 5);
  pdu[55] ^= 1;
  assert.throws(
    () => decodePdu(pdu, { maxDataSegmentLength: 8192, headerDigest: true, dataDigest: true, crc }),
    /data digest mismatch/,
  );
  pdu[3] ^= 1;
  assert.throws(
    () => decodePdu(pdu, { maxDataSegmentLength: 8192, headerDigest: true, dataDigest: true, crc }),
    /header digest mismatch/,
  );
});

Deno.test("text: encode, decode, split with C-bit continuation, bounds", () => {
  const t = encodeText([["HeaderDigest", "CRC32C,None"], ["MaxBurstLength", "262144"]]);
  assert.equal(new TextDecoder().decode(t), "HeaderDigest=CRC32C,None\0MaxBurstLength=262144\0");
  assert.deepEqual(decodeText(t), [["HeaderDigest", "CRC32C,None"], ["MaxBurstLength", "262144"]]);
  const segs = splitText(t, 7);
  assert.equal(segs.length, Math.ceil(t.length / 7));
  const acc = new TextAccumulator(1000);
  for (const s of segs) acc.push(s);
  assert.deepEqual(acc.take(), decodeText(t));
  const small = new TextAccumulator(10);
  assert.throws(() => small.push(t), IscsiProtocolError);
  assert.throws(() => decodeText(new TextEncoder().encode("novalue\0")), IscsiProtocolError);
  assert.throws(() => decodeText(new TextEncoder().encode("=x\0")), IscsiProtocolError);
  assert.throws(() => decodeText(Uint8Array.from([0x61, 0x3d, 0xff, 0])), IscsiProtocolError);
  assert.deepEqual(decodeText(new TextEncoder().encode("TargetAlias=")), [["TargetAlias", ""]]);
});

Deno.test("property: PDU decoder fed arbitrary bytes raises only IscsiProtocolError", async () => {
  const crc = await defaultCrc32c();
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 400 }),
      fc.boolean(),
      fc.boolean(),
      (bytes, hd, dd) => {
        try {
          const d = decodePdu(bytes, {
            maxDataSegmentLength: 256,
            headerDigest: hd,
            dataDigest: dd,
            crc,
          });
          assert.ok(d.length <= bytes.length);
          assert.ok(d.data.length <= 256);
        } catch (e) {
          if (!(e instanceof IscsiProtocolError)) throw e;
        }
      },
    ),
    fuzzOptions(2000),
  );
});

Deno.test("property: text decoder fed arbitrary bytes raises only IscsiProtocolError", () => {
  const alphabet = fc.constantFrom(0, 0x3d, 0x41, 0x61, 0x2e, 0xc3, 0xff, 0x20);
  fc.assert(
    fc.property(
      fc.oneof(
        fc.uint8Array({ maxLength: 300 }),
        fc.array(alphabet, { maxLength: 100 }).map((a) => Uint8Array.from(a)),
      ),
      (bytes) => {
        try {
          const acc = new TextAccumulator(200);
          for (const s of splitText(bytes, 17)) acc.push(s);
          for (const [k] of acc.take()) assert.ok(k.length > 0 && k.length <= 63);
        } catch (e) {
          if (!(e instanceof IscsiProtocolError)) throw e;
        }
      },
    ),
    fuzzOptions(2000),
  );
});
