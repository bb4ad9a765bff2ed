/**
 * CDB layouts against SBC-3/SPC-4 tables, sense decoding in both formats,
 * response parsers on hand-built pages and on arbitrary bytes (property:
 * only ScsiDataError, never a crash).
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import * as cdb from "../../src/scsi/cdb.ts";
import { ScsiDataError } from "../../src/scsi/errors.ts";
import * as R from "../../src/scsi/responses.ts";
import { ascName, describeSense, parseSense, SenseError } from "../../src/scsi/sense.ts";
import { fuzzOptions } from "../helpers/fuzz.ts";
import { descriptorSense, fixedSense } from "./scripted.ts";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(" ");

Deno.test("cdb: READ(16)/WRITE(16) layout with 64-bit LBA and FUA (SBC-3 5.8/5.40)", () => {
  assert.equal(
    hex(cdb.rw16(false, 0x1_2345_6789, 0x100)),
    "88 00 00 00 00 01 23 45 67 89 00 00 01 00 00 00",
  );
  assert.equal(
    hex(cdb.rw16(true, 7, 1, { fua: true })),
    "8a 08 00 00 00 00 00 00 00 07 00 00 00 01 00 00",
  );
  // the largest safe LBA still encodes exactly
  const big = cdb.rw16(false, Number.MAX_SAFE_INTEGER, 1);
  assert.equal(new DataView(big.buffer).getBigUint64(2), BigInt(Number.MAX_SAFE_INTEGER));
  assert.throws(() => cdb.rw16(false, -1, 1), RangeError);
  assert.throws(() => cdb.rw16(false, 0, 2 ** 32), RangeError);
});

Deno.test("cdb: READ(10)/WRITE(10), INQUIRY, READ CAPACITY, MODE SENSE(10), REPORT LUNS", () => {
  assert.equal(
    hex(cdb.rw10(true, 0x01020304, 0x0506, { fua: true })),
    "2a 08 01 02 03 04 00 05 06 00",
  );
  assert.throws(() => cdb.rw10(false, 2 ** 32, 1), RangeError);
  assert.throws(() => cdb.rw10(false, 0, 0x10000), RangeError);
  assert.equal(hex(cdb.inquiry(undefined, 96)), "12 00 00 00 60 00");
  assert.equal(hex(cdb.inquiry(0xb0, 0x1000)), "12 01 b0 10 00 00");
  assert.equal(hex(cdb.readCapacity16(32)), "9e 10 00 00 00 00 00 00 00 00 00 00 00 20 00 00");
  assert.equal(hex(cdb.readCapacity10()), "25 00 00 00 00 00 00 00 00 00");
  assert.equal(hex(cdb.modeSense10(0x08, 0xff)), "5a 08 08 00 00 00 00 00 ff 00");
  assert.equal(hex(cdb.reportLuns(0x208)), "a0 00 00 00 00 00 00 00 02 08 00 00");
  assert.equal(hex(cdb.testUnitReady()), "00 00 00 00 00 00");
});

Deno.test("cdb: SYNCHRONIZE CACHE, UNMAP parameter list, WRITE SAME(16) with/without UNMAP", () => {
  assert.equal(hex(cdb.synchronizeCache10()), "35 00 00 00 00 00 00 00 00 00");
  assert.equal(
    hex(cdb.synchronizeCache16(9, 3)),
    "91 00 00 00 00 00 00 00 00 09 00 00 00 03 00 00",
  );
  const u = cdb.unmap([{ lba: 0x10, blocks: 8 }, { lba: 0x1_0000_0000, blocks: 1 }]);
  assert.equal(hex(u.cdb), "42 00 00 00 00 00 00 00 28 00");
  assert.equal(u.parameterList.length, 40);
  // UNMAP DATA LENGTH = n - 2, BLOCK DESCRIPTOR DATA LENGTH = n - 8 (SBC-3 5.29.2)
  assert.equal(hex(u.parameterList.subarray(0, 8)), "00 26 00 20 00 00 00 00");
  assert.equal(
    hex(u.parameterList.subarray(8, 24)),
    "00 00 00 00 00 00 00 10 00 00 00 08 00 00 00 00",
  );
  assert.equal(
    hex(u.parameterList.subarray(24, 40)),
    "00 00 00 01 00 00 00 00 00 00 00 01 00 00 00 00",
  );
  assert.throws(() => cdb.unmap([]), RangeError);
  assert.equal(hex(cdb.writeSame16(5, 2)), "93 00 00 00 00 00 00 00 00 05 00 00 00 02 00 00");
  assert.equal(cdb.writeSame16(5, 2, { unmap: true })[1], 0x08);
});

Deno.test("sense: fixed format with INFORMATION and sense-key specific", () => {
  const b = fixedSense(0x05, 0x24, 0x00, 0x1234);
  b[15] = 0xc0; // SKSV + C/D
  b[17] = 0x02; // field pointer byte 2
  const s = parseSense(b)!;
  assert.equal(s.format, "fixed");
  assert.equal(s.current, true);
  assert.equal(s.senseKey, 5);
  assert.equal(s.asc, 0x24);
  assert.equal(s.information, 0x1234n);
  assert.equal(s.senseKeySpecific, 0x400002);
  assert.equal(
    describeSense(s),
    "ILLEGAL REQUEST: Invalid field in CDB (24/00), information 0x1234",
  );
});

Deno.test("sense: descriptor format with a 64-bit information descriptor, deferred", () => {
  const b = descriptorSense(0x03, 0x11, 0x00, 0x1_0000_0001n);
  b[0] = 0x73;
  const s = parseSense(b)!;
  assert.equal(s.format, "descriptor");
  assert.equal(s.current, false);
  assert.equal(s.senseKey, 3);
  assert.equal(s.information, 0x1_0000_0001n);
  assert.match(
    describeSense(s),
    /^MEDIUM ERROR: Unrecovered read error \(11\/00\), information 0x100000001 \(deferred\)$/,
  );
});

Deno.test("sense: truncated, lying lengths and unknown codes", () => {
  assert.equal(parseSense(new Uint8Array([])), null);
  assert.equal(parseSense(new Uint8Array([0x70, 0])), null);
  assert.equal(parseSense(new Uint8Array([0x7f, 0, 5, 0, 0, 0, 0, 0])), null);
  // additional sense length says 200 but only 14 bytes came
  const s = parseSense(new Uint8Array([0x70, 0, 6, 0, 0, 0, 0, 200, 0, 0, 0, 0, 0x29, 0]))!;
  assert.equal(s.asc, 0x29);
  // additional length 0: ASC is not there and reads as 0
  assert.equal(
    parseSense(new Uint8Array([0x70, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x29, 0]))!.asc,
    0,
  );
  // descriptor whose length runs past the end is ignored
  const d = parseSense(new Uint8Array([0x72, 2, 4, 1, 0, 0, 0, 4, 0x00, 0x0a, 0x80, 0]))!;
  assert.equal(d.information, null);
  assert.equal(ascName(0x04, 0x33), "Logical unit not ready (ascq 0x33)");
  assert.equal(ascName(0x99, 0x01), "asc 0x99 ascq 0x01");
});

Deno.test("sense: SenseError carries errno for the NBD layer", () => {
  const e = (k: number, a: number, q: number) =>
    new SenseError("WRITE(16)", 2, parseSense(fixedSense(k, a, q)));
  assert.equal(e(0x07, 0x27, 0).errno, "EPERM");
  assert.equal(e(0x07, 0x27, 0x07).errno, "ENOSPC");
  assert.equal(e(0x05, 0x21, 0).errno, "EINVAL");
  assert.equal(e(0x05, 0x20, 0).errno, "EOPNOTSUPP");
  assert.equal(e(0x03, 0x11, 0).errno, "EIO");
  assert.equal(new SenseError("READ(16)", 0x18, null).message, "READ(16): RESERVATION CONFLICT");
  assert.equal(e(0x07, 0x27, 0).exitCode, 1);
});

Deno.test("responses: standard INQUIRY and VPD pages", () => {
  const inq = new Uint8Array(36);
  inq[0] = 0x00;
  inq[2] = 5;
  inq[3] = 2;
  inq[7] = 2;
  inq.set(new TextEncoder().encode("IET     VIRTUAL-DISK    0001"), 8);
  const s = R.parseStandardInquiry(inq);
  assert.deepEqual([s.vendor, s.product, s.revision, s.cmdQue, s.deviceTypeName], [
    "IET",
    "VIRTUAL-DISK",
    "0001",
    true,
    "disk",
  ]);
  assert.throws(() => R.parseStandardInquiry(new Uint8Array(4)), ScsiDataError);
  assert.throws(() => R.parseVpdHeader(new Uint8Array([0, 0x80, 0, 0]), 0x83), ScsiDataError);
  const { body, fullLength } = R.parseVpdHeader(new Uint8Array([0, 0x80, 0, 10, 0x41, 0x42]), 0x80);
  assert.equal(fullLength, 14);
  assert.equal(R.parseUnitSerialNumber(body), "AB");
  // NAA designator, a UTF-8 SCSI name string, then one whose length runs past the end
  const naa = [0x01, 0x03, 0, 4, 0x60, 1, 2, 3];
  const name = [0x53, 0x28, 0, 4, 0x69, 0x71, 0x6e, 0];
  const ids = R.parseDeviceIdentification(new Uint8Array([...naa, ...name, 0x01, 0x03, 0, 9, 1]));
  assert.deepEqual(ids, [
    { type: "naa", association: "logical-unit", codeSet: "binary", value: "naa.60010203" },
    { type: "scsi-name-string", association: "target-device", codeSet: "utf8", value: "iqn" },
  ]);
});

Deno.test("responses: Block Limits (full and SPC-3 short page), LBP, capacity, REPORT LUNS, MODE SENSE", () => {
  const bl = new Uint8Array(0x3c);
  const v = new DataView(bl.buffer);
  v.setUint16(2, 8);
  v.setUint32(4, 2048);
  v.setUint32(8, 1024);
  v.setUint32(16, 0x4000);
  v.setUint32(20, 16);
  v.setUint32(24, 8);
  v.setUint32(28, 0x8000_0001);
  v.setBigUint64(32, 0x10000n);
  const p = R.parseBlockLimits(bl);
  assert.equal(p.optimalTransferLengthGranularity, 8);
  assert.equal(p.maximumTransferLength, 2048);
  assert.equal(p.maximumUnmapLbaCount, 0x4000);
  assert.equal(p.maximumUnmapBlockDescriptorCount, 16);
  assert.equal(p.unmapGranularityAlignment, 1);
  assert.equal(p.maximumWriteSameLength, 0x10000);
  const short = R.parseBlockLimits(bl.subarray(0, 12));
  assert.equal(short.maximumUnmapLbaCount, null);
  assert.equal(short.maximumWriteSameLength, null);
  v.setUint32(32, 0xffff_ffff);
  assert.throws(() => R.parseBlockLimits(bl), ScsiDataError);

  const lbp = R.parseLogicalBlockProvisioning(new Uint8Array([0, 0xc4, 0x02, 0]));
  assert.deepEqual([lbp.lbpu, lbp.lbpws, lbp.lbpws10, lbp.lbprz, lbp.provisioningType], [
    true,
    true,
    false,
    true,
    "thin",
  ]);
  // SBC-4 LBPRZ field (byte 1 bits 4..2): only xx1b means unmapped blocks
  // read as zeros; 010b is the provisioning initialization pattern.
  const rz = (field: number) =>
    R.parseLogicalBlockProvisioning(new Uint8Array([0, 0x40 | (field << 2), 0x02, 0]));
  assert.deepEqual(
    [0, 1, 2, 3, 5, 7].map((f) => [rz(f).lbprzField, rz(f).lbprz, rz(f).ancSup, rz(f).lbpws10]),
    [
      [0, false, false, false],
      [1, true, false, false],
      [2, false, false, false],
      [
        3,
        true,
        false,
        false,
      ],
      [5, true, false, false],
      [7, true, false, false],
    ],
  );

  const rc16 = new Uint8Array(32);
  const c = new DataView(rc16.buffer);
  c.setBigUint64(0, 0x1_0000_0000n);
  c.setUint32(8, 4096);
  rc16[13] = 3;
  rc16[14] = 0xc0;
  const cap = R.parseReadCapacity16(rc16);
  assert.equal(cap.blocks, 0x1_0000_0001);
  assert.deepEqual([cap.logicalBlocksPerPhysicalBlockExponent, cap.lbpme, cap.lbprz], [
    3,
    true,
    true,
  ]);
  c.setUint32(8, 520); // not a power of two
  assert.throws(() => R.parseReadCapacity16(rc16), ScsiDataError);
  const rc10 = R.parseReadCapacity10(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0, 0, 2, 0]));
  assert.equal(rc10.needs16, true);

  const luns = R.parseReportLuns(
    new Uint8Array([
      0,
      0,
      0,
      24,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      5,
      0,
      0,
      0,
      0,
      0,
      0,
      0x41,
      0x02,
      0,
      0,
      0,
      0,
      0,
      0,
    ]),
  );
  assert.deepEqual(luns.luns, [0, 5, 0x102]);
  assert.equal(luns.fullLength, 32);
  assert.throws(() => R.parseReportLuns(new Uint8Array([0, 0, 0, 7, 0, 0, 0, 0])), ScsiDataError);

  const ms = R.parseModeSense10(
    new Uint8Array([0, 26, 0, 0x90, 0, 0, 0, 0, 0x08, 18, 0x04, ...new Array(17).fill(0)]),
  );
  assert.deepEqual(ms, { writeProtect: true, dpoFua: true, writeCacheEnabled: true });
});

Deno.test("responses: property: every parser on arbitrary bytes returns or throws ScsiDataError", () => {
  const parsers: Array<(b: Uint8Array) => unknown> = [
    R.parseStandardInquiry,
    (b) => R.parseVpdHeader(b, 0xb0),
    R.parseSupportedVpdPages,
    R.parseUnitSerialNumber,
    R.parseDeviceIdentification,
    R.parseBlockLimits,
    R.parseBlockDeviceCharacteristics,
    R.parseLogicalBlockProvisioning,
    R.parseReadCapacity10,
    R.parseReadCapacity16,
    R.parseReportLuns,
    R.parseModeSense10,
    parseSense,
  ];
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 96 }), fc.nat(parsers.length - 1), (b, i) => {
      try {
        parsers[i](b);
      } catch (e) {
        if (!(e instanceof ScsiDataError)) throw e;
      }
    }),
    fuzzOptions(3000),
  );
});
