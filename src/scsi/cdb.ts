/**
 * CDB builders for the commands a disk initiator needs (SPC-4, SBC-3). Each
 * returns a fresh Uint8Array; LBAs are JavaScript numbers (exact up to 2^53
 * blocks, far beyond any device) split into two 32-bit halves so that no
 * BigInt appears on the I/O path.
 */
import { OP, SAI_READ_CAPACITY_16 } from "./constants.ts";

const TWO32 = 0x1_0000_0000;

function putU16(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >>> 8) & 0xff;
  b[o + 1] = v & 0xff;
}

function putU32(b: Uint8Array, o: number, v: number): void {
  b[o] = (v >>> 24) & 0xff;
  b[o + 1] = (v >>> 16) & 0xff;
  b[o + 2] = (v >>> 8) & 0xff;
  b[o + 3] = v & 0xff;
}

/** Write a non-negative integer below 2^53 as a big-endian 64-bit field. */
export function putU64(b: Uint8Array, o: number, v: number): void {
  putU32(b, o, Math.floor(v / TWO32));
  putU32(b, o + 4, v >>> 0);
}

function checkRange(name: string, v: number, max: number): void {
  if (!Number.isInteger(v) || v < 0 || v > max) {
    throw new RangeError(`${name} ${v} out of range 0..${max}`);
  }
}

/**
 * TEST UNIT READY (SPC-4 §6.47).
 *
 * @example
 * ```ts
 * await transport.execute({ lun: 1, cdb: testUnitReady() });
 * ```
 */
export function testUnitReady(): Uint8Array {
  return new Uint8Array(6);
}

/**
 * INQUIRY (SPC-4 §6.6): standard data when `page` is undefined, else the
 * VPD page (EVPD=1). `allocationLength` ≤ 65535.
 *
 * @example
 * ```ts
 * inquiry(0x83, 255); // Device Identification VPD page
 * ```
 */
export function inquiry(page: number | undefined, allocationLength: number): Uint8Array {
  checkRange("allocation length", allocationLength, 0xffff);
  const b = new Uint8Array(6);
  b[0] = OP.INQUIRY;
  if (page !== undefined) {
    checkRange("VPD page", page, 0xff);
    b[1] = 0x01;
    b[2] = page;
  }
  putU16(b, 3, allocationLength);
  return b;
}

/** READ CAPACITY(10) (SBC-3 §5.15). */
export function readCapacity10(): Uint8Array {
  const b = new Uint8Array(10);
  b[0] = OP.READ_CAPACITY_10;
  return b;
}

/** READ CAPACITY(16) (SBC-3 §5.16): SERVICE ACTION IN(16), action 0x10. */
export function readCapacity16(allocationLength = 32): Uint8Array {
  const b = new Uint8Array(16);
  b[0] = OP.SERVICE_ACTION_IN_16;
  b[1] = SAI_READ_CAPACITY_16;
  putU32(b, 10, allocationLength);
  return b;
}

/** REPORT LUNS (SPC-4 §6.33), SELECT REPORT 0 (all logical units). */
export function reportLuns(allocationLength: number): Uint8Array {
  checkRange("allocation length", allocationLength, 0xffff_ffff);
  const b = new Uint8Array(12);
  b[0] = OP.REPORT_LUNS;
  putU32(b, 6, allocationLength);
  return b;
}

/**
 * MODE SENSE(10) (SPC-4 §6.12) with DBD=1 (no block descriptors): the
 * header's DEVICE-SPECIFIC PARAMETER carries WP and DPOFUA (SBC-3 §6.5.1).
 */
export function modeSense10(page: number, allocationLength: number, subpage = 0): Uint8Array {
  checkRange("page", page, 0x3f);
  checkRange("allocation length", allocationLength, 0xffff);
  const b = new Uint8Array(10);
  b[0] = OP.MODE_SENSE_10;
  b[1] = 0x08; // DBD
  b[2] = page; // PC=0 current values
  b[3] = subpage;
  putU16(b, 7, allocationLength);
  return b;
}

/** Options common to READ and WRITE. */
export interface RwOptions {
  /** Force Unit Access (SBC-3 §5.8): complete only once on the medium. */
  fua?: boolean;
}

/**
 * READ(16) / WRITE(16) (SBC-3 §5.8, §5.40). `blocks` ≤ 2^32-1.
 *
 * @example
 * ```ts
 * rw16(true, 2048, 8, { fua: true }); // WRITE(16) 8 blocks at LBA 2048, FUA
 * ```
 */
export function rw16(
  write: boolean,
  lba: number,
  blocks: number,
  opts: RwOptions = {},
): Uint8Array {
  checkRange("LBA", lba, Number.MAX_SAFE_INTEGER);
  checkRange("transfer length", blocks, 0xffff_ffff);
  const b = new Uint8Array(16);
  b[0] = write ? OP.WRITE_16 : OP.READ_16;
  if (opts.fua) b[1] = 0x08;
  putU64(b, 2, lba);
  putU32(b, 10, blocks);
  return b;
}

/** READ(10) / WRITE(10): LBA < 2^32, `blocks` ≤ 65535 (SBC-3 §5.7, §5.37). */
export function rw10(
  write: boolean,
  lba: number,
  blocks: number,
  opts: RwOptions = {},
): Uint8Array {
  checkRange("LBA", lba, 0xffff_ffff);
  checkRange("transfer length", blocks, 0xffff);
  const b = new Uint8Array(10);
  b[0] = write ? OP.WRITE_10 : OP.READ_10;
  if (opts.fua) b[1] = 0x08;
  putU32(b, 2, lba);
  putU16(b, 7, blocks);
  return b;
}

/**
 * SYNCHRONIZE CACHE(10) (SBC-3 §5.22). LBA 0 and 0 blocks mean "through the
 * last logical block".
 */
export function synchronizeCache10(lba = 0, blocks = 0): Uint8Array {
  checkRange("LBA", lba, 0xffff_ffff);
  checkRange("blocks", blocks, 0xffff);
  const b = new Uint8Array(10);
  b[0] = OP.SYNCHRONIZE_CACHE_10;
  putU32(b, 2, lba);
  putU16(b, 7, blocks);
  return b;
}

/** SYNCHRONIZE CACHE(16) (SBC-3 §5.23). */
export function synchronizeCache16(lba = 0, blocks = 0): Uint8Array {
  checkRange("LBA", lba, Number.MAX_SAFE_INTEGER);
  checkRange("blocks", blocks, 0xffff_ffff);
  const b = new Uint8Array(16);
  b[0] = OP.SYNCHRONIZE_CACHE_16;
  putU64(b, 2, lba);
  putU32(b, 10, blocks);
  return b;
}

/** One UNMAP block descriptor. */
export interface UnmapExtent {
  lba: number;
  blocks: number;
}

/**
 * UNMAP (SBC-3 §5.29): the CDB and its parameter list (8-byte header, then
 * 16-byte block descriptors).
 *
 * @example
 * ```ts
 * const { cdb, parameterList } = unmap([{ lba: 0, blocks: 2048 }]);
 * await transport.execute({ lun, cdb, dataOut: parameterList });
 * ```
 */
export function unmap(
  extents: readonly UnmapExtent[],
): { cdb: Uint8Array; parameterList: Uint8Array } {
  if (extents.length === 0) throw new RangeError("UNMAP needs at least one descriptor");
  const len = 8 + 16 * extents.length;
  checkRange("UNMAP parameter list length", len, 0xffff);
  const p = new Uint8Array(len);
  putU16(p, 0, len - 2); // UNMAP DATA LENGTH
  putU16(p, 2, len - 8); // UNMAP BLOCK DESCRIPTOR DATA LENGTH
  extents.forEach((e, i) => {
    checkRange("LBA", e.lba, Number.MAX_SAFE_INTEGER);
    checkRange("blocks", e.blocks, 0xffff_ffff);
    putU64(p, 8 + 16 * i, e.lba);
    putU32(p, 8 + 16 * i + 8, e.blocks);
  });
  const cdb = new Uint8Array(10);
  cdb[0] = OP.UNMAP;
  putU16(cdb, 7, len);
  return { cdb, parameterList: p };
}

/**
 * WRITE SAME(16) (SBC-3 §5.42): one block of data written to `blocks`
 * blocks from `lba`. With `unmap`, the device may deallocate instead
 * (SBC-3 §4.7.3.4), reading back as zeros when LBPRZ is set.
 */
export function writeSame16(
  lba: number,
  blocks: number,
  opts: { unmap?: boolean } = {},
): Uint8Array {
  checkRange("LBA", lba, Number.MAX_SAFE_INTEGER);
  checkRange("blocks", blocks, 0xffff_ffff);
  const b = new Uint8Array(16);
  b[0] = OP.WRITE_SAME_16;
  if (opts.unmap) b[1] = 0x08;
  putU64(b, 2, lba);
  putU32(b, 10, blocks);
  return b;
}
