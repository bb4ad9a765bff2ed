/**
 * Parsers for the data-in of every command in cdb.ts. Each checks lengths
 * before reading and throws ScsiDataError for data a conforming target could
 * not have sent; optional trailing fields a short (older) page lacks come
 * back as null rather than as invented values.
 */
import {
  ASSOCIATION_NAMES,
  DESIGNATOR_TYPE_NAMES,
  DEVICE_TYPE_NAMES,
  PROVISIONING_TYPE_NAMES,
} from "./constants.ts";
import { ScsiDataError } from "./errors.ts";

const TWO32 = 0x1_0000_0000;
const decoder = new TextDecoder("latin1");

function u16(b: Uint8Array, o: number): number {
  return (b[o] << 8) | b[o + 1];
}
function u32(b: Uint8Array, o: number): number {
  return ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
}
/** A 64-bit big-endian field as a number; throws if it exceeds 2^53-1. */
function u64(b: Uint8Array, o: number, what: string): number {
  const hi = u32(b, o);
  if (hi >= 0x20_0000) throw new ScsiDataError(`${what} 0x${hi.toString(16)}... exceeds 2^53`);
  return hi * TWO32 + u32(b, o + 4);
}
function need(b: Uint8Array, n: number, what: string): void {
  if (b.length < n) throw new ScsiDataError(`${what}: ${b.length} bytes, need at least ${n}`);
}
/** ASCII field with trailing spaces and NULs removed (SPC-4 §4.4.1). */
function ascii(b: Uint8Array, from: number, to: number): string {
  return decoder.decode(b.subarray(Math.min(from, b.length), Math.min(to, b.length)))
    .replace(/[\0 ]+$/, "").replace(/^[\0 ]+/, "");
}
function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Standard INQUIRY data (SPC-4 §6.6.2). */
export interface StandardInquiry {
  peripheralQualifier: number;
  peripheralDeviceType: number;
  deviceTypeName: string;
  removable: boolean;
  version: number;
  responseDataFormat: number;
  /** TPGS: 0 none, 1 implicit, 2 explicit, 3 both (ALUA). */
  tpgs: number;
  /** PROTECT: the device supports protection information. */
  protect: boolean;
  /** CMDQUE: command queuing. */
  cmdQue: boolean;
  vendor: string;
  product: string;
  revision: string;
}

/**
 * Parse standard INQUIRY data. At least 5 bytes (the header) are needed;
 * identification strings shorter than their field are read as far as sent.
 *
 * @example
 * ```ts
 * const inq = parseStandardInquiry(resp.data);
 * console.log(inq.vendor, inq.product, inq.revision);
 * ```
 */
export function parseStandardInquiry(b: Uint8Array): StandardInquiry {
  need(b, 5, "INQUIRY data");
  const type = b[0] & 0x1f;
  return {
    peripheralQualifier: b[0] >> 5,
    peripheralDeviceType: type,
    deviceTypeName: DEVICE_TYPE_NAMES[type] ?? `type 0x${type.toString(16)}`,
    removable: (b[1] & 0x80) !== 0,
    version: b[2],
    responseDataFormat: b[3] & 0x0f,
    tpgs: b.length > 5 ? (b[5] >> 4) & 0x03 : 0,
    protect: b.length > 5 && (b[5] & 0x01) !== 0,
    cmdQue: b.length > 7 && (b[7] & 0x02) !== 0,
    vendor: ascii(b, 8, 16),
    product: ascii(b, 16, 32),
    revision: ascii(b, 32, 36),
  };
}

/**
 * Check a VPD page header (SPC-4 §7.8.1) and return the page body (the bytes
 * after the 4-byte header, as far as both PAGE LENGTH and the data allow)
 * and the full length the target has (to retry with a larger allocation).
 */
export function parseVpdHeader(
  b: Uint8Array,
  page: number,
): { body: Uint8Array; fullLength: number } {
  need(b, 4, `VPD page 0x${page.toString(16)}`);
  if (b[1] !== page) {
    throw new ScsiDataError(
      `VPD page 0x${page.toString(16)} requested, page 0x${b[1].toString(16)} returned`,
    );
  }
  const pageLength = u16(b, 2);
  return { body: b.subarray(4, Math.min(b.length, 4 + pageLength)), fullLength: 4 + pageLength };
}

/** Supported VPD Pages (SPC-4 §7.8.16): the page codes listed. */
export function parseSupportedVpdPages(body: Uint8Array): number[] {
  return Array.from(body);
}

/** Unit Serial Number (SPC-4 §7.8.17). */
export function parseUnitSerialNumber(body: Uint8Array): string {
  return ascii(body, 0, body.length);
}

/** One designator from the Device Identification VPD page. */
export interface Designator {
  /** "naa", "t10-vendor-id", "eui-64", "scsi-name-string", ... */
  type: string;
  /** "logical-unit", "target-port" or "target-device". */
  association: string;
  codeSet: "binary" | "ascii" | "utf8" | "reserved";
  /** Hex for binary designators (with the SPC "naa."/"eui." prefix), else the text. */
  value: string;
}

/**
 * Device Identification (SPC-4 §7.8.6). Designators whose declared length
 * runs past the page end stop the walk (the rest is ignored, not guessed).
 *
 * @example
 * ```ts
 * parseDeviceIdentification(body).find((d) => d.type === "naa")?.value; // "naa.60000000..."
 * ```
 */
export function parseDeviceIdentification(body: Uint8Array): Designator[] {
  const out: Designator[] = [];
  let p = 0;
  while (p + 4 <= body.length) {
    const codeSetNum = body[p] & 0x0f;
    const association = (body[p + 1] >> 4) & 0x03;
    const typeNum = body[p + 1] & 0x0f;
    const len = body[p + 3];
    if (p + 4 + len > body.length) break;
    const d = body.subarray(p + 4, p + 4 + len);
    const codeSet = codeSetNum === 1
      ? "binary"
      : codeSetNum === 2
      ? "ascii"
      : codeSetNum === 3
      ? "utf8"
      : "reserved";
    const type = DESIGNATOR_TYPE_NAMES[typeNum] ?? `type-${typeNum}`;
    let value: string;
    if (codeSet === "ascii" || codeSet === "utf8") {
      value = new TextDecoder().decode(d).replace(/\0+$/, "").trim();
    } else if (type === "naa") value = `naa.${hex(d)}`;
    else if (type === "eui-64") value = `eui.${hex(d)}`;
    else value = hex(d);
    out.push({ type, association: ASSOCIATION_NAMES[association], codeSet, value });
    p += 4 + len;
  }
  return out;
}

/** Block Limits (SBC-3 §6.6.3). Values are in logical blocks; 0 = not reported. */
export interface BlockLimits {
  /** WSNZ: WRITE SAME with 0 blocks (= whole medium) is refused. */
  wsnz: boolean;
  maximumCompareAndWriteLength: number;
  optimalTransferLengthGranularity: number;
  maximumTransferLength: number;
  optimalTransferLength: number;
  maximumPrefetchLength: number | null;
  maximumUnmapLbaCount: number | null;
  maximumUnmapBlockDescriptorCount: number | null;
  optimalUnmapGranularity: number | null;
  /** UNMAP GRANULARITY ALIGNMENT when UGAVALID is set, else null. */
  unmapGranularityAlignment: number | null;
  maximumWriteSameLength: number | null;
}

/**
 * Parse the Block Limits page body. SPC-3-era targets send a 12-byte body
 * (PAGE LENGTH 0x0c); the later fields then read as null.
 */
export function parseBlockLimits(body: Uint8Array): BlockLimits {
  need(body, 12, "Block Limits VPD page");
  const has = (end: number) => body.length >= end;
  return {
    wsnz: (body[0] & 0x01) !== 0,
    maximumCompareAndWriteLength: body[1],
    optimalTransferLengthGranularity: u16(body, 2),
    maximumTransferLength: u32(body, 4),
    optimalTransferLength: u32(body, 8),
    maximumPrefetchLength: has(16) ? u32(body, 12) : null,
    maximumUnmapLbaCount: has(20) ? u32(body, 16) : null,
    maximumUnmapBlockDescriptorCount: has(24) ? u32(body, 20) : null,
    optimalUnmapGranularity: has(28) ? u32(body, 24) : null,
    unmapGranularityAlignment: has(32) && (body[28] & 0x80) !== 0
      ? u32(body, 28) & 0x7fff_ffff
      : null,
    maximumWriteSameLength: has(40) ? u64(body, 32, "MAXIMUM WRITE SAME LENGTH") : null,
  };
}

/** Block Device Characteristics (SBC-3 §6.6.2). */
export interface BlockDeviceCharacteristics {
  /** 0 not reported, 1 non-rotating (SSD), else RPM. */
  mediumRotationRate: number;
  /** 0 not reported, 1 5.25", 2 3.5", 3 2.5", 4 1.8", 5 below 1.8". */
  nominalFormFactor: number;
}

export function parseBlockDeviceCharacteristics(body: Uint8Array): BlockDeviceCharacteristics {
  need(body, 4, "Block Device Characteristics VPD page");
  return { mediumRotationRate: u16(body, 0), nominalFormFactor: body[3] & 0x0f };
}

/**
 * Logical Block Provisioning (SBC-3 §6.6.4; SBC-4 "Logical Block
 * Provisioning VPD page"). SBC-4 widened LBPRZ from one bit to a 3-bit field
 * in byte 1 bits 4..2 (the "LBPRZ field" table): 000b vendor specific,
 * xx1b unmapped blocks read as zeros, 010b they read as the provisioning
 * initialization pattern (not necessarily zeros), others reserved. Only the
 * low bit of the field promises zeros; SBC-3's one bit is that same bit.
 */
export interface LogicalBlockProvisioning {
  thresholdExponent: number;
  /** LBPU: UNMAP is supported. */
  lbpu: boolean;
  /** LBPWS: WRITE SAME(16) with UNMAP is supported. */
  lbpws: boolean;
  /** LBPWS10: WRITE SAME(10) with UNMAP is supported. */
  lbpws10: boolean;
  /** The raw 3-bit LBPRZ field (SBC-4), 0..7. */
  lbprzField: number;
  /** LBPRZ field xx1b: unmapped blocks read as zeros (010b does not mean so). */
  lbprz: boolean;
  /** ANC_SUP: anchored blocks supported. */
  ancSup: boolean;
  /** DP: a provisioning group descriptor follows. */
  dp: boolean;
  /** "full", "resource", "thin" or "unknown". */
  provisioningType: string;
}

export function parseLogicalBlockProvisioning(body: Uint8Array): LogicalBlockProvisioning {
  need(body, 2, "Logical Block Provisioning VPD page");
  const pt = body.length > 2 ? body[2] & 0x07 : -1;
  const lbprzField = (body[1] >> 2) & 0x07;
  return {
    thresholdExponent: body[0],
    lbpu: (body[1] & 0x80) !== 0,
    lbpws: (body[1] & 0x40) !== 0,
    lbpws10: (body[1] & 0x20) !== 0,
    lbprzField,
    lbprz: (lbprzField & 0x01) !== 0,
    ancSup: (body[1] & 0x02) !== 0,
    dp: (body[1] & 0x01) !== 0,
    provisioningType: PROVISIONING_TYPE_NAMES[pt] ?? "unknown",
  };
}

/** READ CAPACITY data, from either command. */
export interface Capacity {
  /** LAST LOGICAL BLOCK ADDRESS + 1. */
  blocks: number;
  logicalBlockLength: number;
  /** READ CAPACITY(10) reported 0xFFFFFFFF: the device needs READ CAPACITY(16). */
  needs16: boolean;
  /** From (16) only: logical blocks per physical block = 2^exponent. */
  logicalBlocksPerPhysicalBlockExponent: number;
  lowestAlignedLba: number;
  /** LBPME: logical block provisioning management enabled (thin). */
  lbpme: boolean;
  /**
   * LBPRZ (byte 14 bit 6 of the (16) data; SBC-4 keeps it one bit): unmapped
   * blocks read as zeros. Always false from READ CAPACITY(10), which has no
   * such field.
   */
  lbprz: boolean;
  /** PROT_EN and P_TYPE (protection information). */
  protectionEnabled: boolean;
  protectionType: number;
}

function checkBlockLength(n: number): void {
  // SBC allows any length; we need a power of two from 512 to 64 KiB to
  // serve the device over NBD and keep offsets exact.
  if (n < 512 || n > 65536 || (n & (n - 1)) !== 0) {
    throw new ScsiDataError(`logical block length ${n} is not a power of two in 512..65536`);
  }
}

/** READ CAPACITY(10) data (SBC-3 §5.15.2): 8 bytes. */
export function parseReadCapacity10(b: Uint8Array): Capacity {
  need(b, 8, "READ CAPACITY(10) data");
  const last = u32(b, 0);
  const len = u32(b, 4);
  const needs16 = last === 0xffff_ffff;
  if (!needs16) checkBlockLength(len);
  return {
    blocks: last + 1,
    logicalBlockLength: len,
    needs16,
    logicalBlocksPerPhysicalBlockExponent: 0,
    lowestAlignedLba: 0,
    lbpme: false,
    lbprz: false,
    protectionEnabled: false,
    protectionType: 0,
  };
}

/** READ CAPACITY(16) data (SBC-3 §5.16.2): 32 bytes (the first 16 are used). */
export function parseReadCapacity16(b: Uint8Array): Capacity {
  need(b, 16, "READ CAPACITY(16) data");
  const last = u64(b, 0, "RETURNED LOGICAL BLOCK ADDRESS");
  const len = u32(b, 8);
  checkBlockLength(len);
  return {
    blocks: last + 1,
    logicalBlockLength: len,
    needs16: false,
    logicalBlocksPerPhysicalBlockExponent: b[13] & 0x0f,
    lowestAlignedLba: ((b[14] & 0x3f) << 8) | b[15],
    lbpme: (b[14] & 0x80) !== 0,
    lbprz: (b[14] & 0x40) !== 0,
    protectionEnabled: (b[12] & 0x01) !== 0,
    protectionType: (b[12] >> 1) & 0x07,
  };
}

/** REPORT LUNS parameter data (SPC-4 §6.33.2). */
export interface ReportLuns {
  /** LUN numbers decoded from peripheral (00b) and flat (01b) addressing. */
  luns: number[];
  /** Entries in other addressing methods, as 16 hex digits. */
  other: string[];
  /** Bytes the full list needs (8 + LUN LIST LENGTH), to retry with more allocation. */
  fullLength: number;
}

export function parseReportLuns(b: Uint8Array): ReportLuns {
  need(b, 8, "REPORT LUNS data");
  const listLength = u32(b, 0);
  if (listLength % 8 !== 0) {
    throw new ScsiDataError(`LUN LIST LENGTH ${listLength} is not a multiple of 8`);
  }
  const end = Math.min(b.length, 8 + listLength);
  const luns: number[] = [];
  const other: string[] = [];
  for (let p = 8; p + 8 <= end; p += 8) {
    const method = b[p] >> 6;
    const rest = b.subarray(p + 2, p + 8);
    const tailZero = rest.every((x) => x === 0);
    if (method === 0 && (b[p] & 0x3f) === 0 && tailZero) luns.push(b[p + 1]);
    else if (method === 1 && tailZero) luns.push(((b[p] & 0x3f) << 8) | b[p + 1]);
    else other.push(hex(b.subarray(p, p + 8)));
  }
  return { luns, other, fullLength: 8 + listLength };
}

/** What MODE SENSE(10) tells a disk initiator. */
export interface ModeSenseInfo {
  /** WP in the DEVICE-SPECIFIC PARAMETER (SBC-3 §6.5.1). */
  writeProtect: boolean;
  /** DPOFUA: the device honours DPO and FUA. */
  dpoFua: boolean;
  /** WCE of the Caching mode page (0x08), when the page was returned. */
  writeCacheEnabled: boolean | null;
}

/**
 * MODE SENSE(10) data (SPC-4 §7.5.5): the 8-byte header, block descriptors
 * (skipped), then mode pages, searched for the Caching page.
 */
export function parseModeSense10(b: Uint8Array): ModeSenseInfo {
  need(b, 8, "MODE SENSE(10) data");
  const end = Math.min(b.length, 2 + u16(b, 0));
  const dsp = b[3];
  let wce: boolean | null = null;
  let p = 8 + u16(b, 6);
  while (p + 2 <= end) {
    const code = b[p] & 0x3f;
    const spf = (b[p] & 0x40) !== 0;
    const len = spf ? (p + 4 <= end ? u16(b, p + 2) + 4 : end) : b[p + 1] + 2;
    if (!spf && code === 0x08 && p + 3 <= end) wce = (b[p + 2] & 0x04) !== 0;
    p += len;
  }
  return { writeProtect: (dsp & 0x80) !== 0, dpoFua: (dsp & 0x10) !== 0, writeCacheEnabled: wce };
}
