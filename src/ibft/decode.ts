/**
 * Bounds-checked iBFT 1.03 decoder: bytes in, {@link IbftTable} out, or an
 * InvalidInputError (exit 3) whose one-line message names the structure and
 * field. It checks what Linux's iscsi_ibft checks (revision 1, checksum,
 * structure ids, versions and exact lengths) and more: every structure and
 * string lies inside the table, past the header and control structure;
 * NIC/target indexes match their control slots; strings are UTF-8 text
 * without control characters; enumerations hold defined values. See
 * docs/ibft.md for the rules and why.
 *
 * @module
 */
import { InvalidInputError } from "../errors.ts";
import {
  CHAP_TYPE,
  CONTROL,
  CONTROL_FLAG,
  FLAG,
  HEADER,
  IBFT_MAX_LENGTH,
  IBFT_REVISION,
  IBFT_SIGNATURES,
  INITIATOR,
  NIC,
  ORIGINS,
  STRUCT_HEADER,
  STRUCTURE_ID,
  STRUCTURE_VERSION,
  TARGET,
} from "./constants.ts";
import { formatAddress, formatBdf, formatMac, lunNumber, lunToHex } from "./fields.ts";
import type {
  ChapType,
  IbftControl,
  IbftHeader,
  IbftInitiator,
  IbftNic,
  IbftTable,
  IbftTarget,
} from "./model.ts";

/** Options for {@link decodeIbft}. */
export interface DecodeOptions {
  /** Accept a bad checksum (header.checksumValid is then false); for broken firmware. */
  ignoreChecksum?: boolean;
  /** Accept bytes past the table's length (a memory image); otherwise they are an error. */
  allowTrailing?: boolean;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function fail(where: string, field: string, problem: string): never {
  throw new InvalidInputError(`iBFT ${where}: ${field}: ${problem}`);
}

const hex = (n: number) => `0x${n.toString(16)}`;

/** Sum of bytes mod 256; a valid table sums to 0. */
export function ibftChecksum(bytes: Uint8Array): number {
  let sum = 0;
  for (const b of bytes) sum = (sum + b) & 0xff;
  return sum;
}

/** A view of the table that only reads inside it. */
class TableReader {
  readonly bytes: Uint8Array;
  readonly view: DataView;
  /** First byte a structure or string may use: past the header and control structure. */
  dataStart: number = HEADER.LENGTH;

  constructor(bytes: Uint8Array) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get length(): number {
    return this.bytes.length;
  }

  u8(off: number): number {
    return this.view.getUint8(off);
  }

  u16(off: number): number {
    return this.view.getUint16(off, true);
  }

  slice(off: number, len: number): Uint8Array {
    return this.bytes.subarray(off, off + len);
  }

  /** A string by (length, offset) fields of a structure at `base`. */
  string(where: string, field: string, base: number, lenAt: number, offAt: number): string | null {
    const len = this.u16(base + lenAt);
    const off = this.u16(base + offAt);
    if (len === 0) return null;
    if (off < this.dataStart) {
      fail(where, field, `string offset ${hex(off)} lies in the table header or control structure`);
    }
    if (off + len > this.length) {
      fail(
        where,
        field,
        `string at ${hex(off)} length ${len} runs past the end of the table (${this.length} bytes)`,
      );
    }
    let text: string;
    try {
      text = utf8.decode(this.slice(off, len));
    } catch {
      fail(where, field, `string at ${hex(off)} is not valid UTF-8`);
    }
    // deno-lint-ignore no-control-regex
    if (/[\u0000-\u001f\u007f]/.test(text)) {
      fail(where, field, `string at ${hex(off)} contains a control character or NUL`);
    }
    return text;
  }

  address(base: number, at: number): string | null {
    return formatAddress(this.slice(base + at, 16));
  }
}

/** A fixed-size ASCII header field: trailing NULs dropped, the rest printable. */
function headerText(r: TableReader, at: number, len: number, field: string): string {
  const raw = r.slice(at, len);
  let end = raw.length;
  while (end > 0 && raw[end - 1] === 0) end--;
  const used = raw.subarray(0, end);
  if (!used.every((c) => c >= 0x20 && c <= 0x7e)) {
    fail("header", field, "not printable ASCII");
  }
  return String.fromCharCode(...used);
}

/**
 * Check a structure's common header (§3.2) at `off`, as the kernel's
 * ibft_verify_hdr() does (id, version, exact length) plus bounds.
 */
function checkStructure(
  r: TableReader,
  where: string,
  off: number,
  id: number,
  length: number,
): void {
  if (off < r.dataStart) {
    fail(where, "offset", `${hex(off)} lies in the table header or control structure`);
  }
  if (off + STRUCT_HEADER.SIZE > r.length) {
    fail(where, "offset", `${hex(off)} is past the end of the table (${r.length} bytes)`);
  }
  const gotId = r.u8(off + STRUCT_HEADER.ID);
  if (gotId !== id) fail(where, "structure id", `${gotId}, expected ${id}`);
  const version = r.u8(off + STRUCT_HEADER.VERSION);
  if (version !== STRUCTURE_VERSION) {
    fail(where, "version", `${version}, expected ${STRUCTURE_VERSION}`);
  }
  const len = r.u16(off + STRUCT_HEADER.LENGTH);
  if (len !== length) fail(where, "length", `${len}, expected ${length}`);
  if (off + length > r.length) {
    fail(where, "length", `structure at ${hex(off)} runs past the end of the table`);
  }
}

function decodeHeader(r: TableReader, opts: DecodeOptions, inputLength: number): IbftHeader {
  if (inputLength < HEADER.LENGTH) {
    fail("header", "length", `only ${inputLength} bytes, a table header needs ${HEADER.LENGTH}`);
  }
  const sig = String.fromCharCode(...r.slice(HEADER.SIGNATURE, 4));
  if (!(IBFT_SIGNATURES as readonly string[]).includes(sig)) {
    fail("header", "signature", `not iBFT, IBFT or BIFT`);
  }
  const length = r.view.getUint32(HEADER.TABLE_LENGTH, true);
  const minLength = HEADER.LENGTH + CONTROL.MIN_LENGTH;
  if (length < minLength) fail("header", "length", `${length}, at least ${minLength} needed`);
  if (length > IBFT_MAX_LENGTH) {
    fail("header", "length", `${length}, more than the ${IBFT_MAX_LENGTH} that u16 offsets reach`);
  }
  if (length > inputLength) {
    fail("header", "length", `${length}, but only ${inputLength} bytes are there (truncated)`);
  }
  if (length < inputLength && !opts.allowTrailing) {
    fail("header", "length", `${length}, but ${inputLength} bytes were given`);
  }
  const revision = r.u8(HEADER.REVISION);
  if (revision !== IBFT_REVISION) fail("header", "revision", `${revision}, expected 1`);
  return {
    signature: sig,
    length,
    revision,
    checksumValid: true, // checked by the caller over exactly `length` bytes
    oemId: headerText(r, HEADER.OEM_ID, HEADER.OEM_ID_LENGTH, "oemId"),
    oemTableId: headerText(r, HEADER.OEM_TABLE_ID, HEADER.OEM_TABLE_ID_LENGTH, "oemTableId"),
  };
}

function flag(flags: number, bit: number): boolean {
  return (flags & bit) !== 0;
}

function decodeInitiator(r: TableReader, off: number): IbftInitiator {
  const where = "initiator";
  checkStructure(r, where, off, STRUCTURE_ID.INITIATOR, INITIATOR.LENGTH);
  const index = r.u8(off + STRUCT_HEADER.INDEX);
  if (index !== 0) fail(where, "index", `${index}, expected 0 (there is one initiator)`);
  const flags = r.u8(off + STRUCT_HEADER.FLAGS);
  return {
    name: r.string(where, "name", off, INITIATOR.NAME_LENGTH, INITIATOR.NAME_OFFSET),
    valid: flag(flags, FLAG.BLOCK_VALID),
    bootSelected: flag(flags, FLAG.FIRMWARE_BOOT_SELECTED),
    isnsServer: r.address(off, INITIATOR.ISNS_SERVER),
    slpServer: r.address(off, INITIATOR.SLP_SERVER),
    primaryRadius: r.address(off, INITIATOR.PRIMARY_RADIUS),
    secondaryRadius: r.address(off, INITIATOR.SECONDARY_RADIUS),
  };
}

function decodeNic(r: TableReader, off: number, slot: number): IbftNic {
  const where = `nic ${slot}`;
  checkStructure(r, where, off, STRUCTURE_ID.NIC, NIC.LENGTH);
  const index = r.u8(off + STRUCT_HEADER.INDEX);
  if (index !== slot) {
    fail(where, "index", `${index}, but the control structure lists it as ${slot}`);
  }
  const flags = r.u8(off + STRUCT_HEADER.FLAGS);
  const ip = r.address(off, NIC.IP);
  const prefixLength = r.u8(off + NIC.PREFIX_LENGTH);
  const maxPrefix = ip !== null && !ip.includes(":") ? 32 : 128;
  if (prefixLength > maxPrefix) {
    fail(where, "prefixLength", `${prefixLength}, at most ${maxPrefix} for this address`);
  }
  const originCode = r.u8(off + NIC.ORIGIN);
  const origin = ORIGINS[originCode];
  if (origin === undefined) fail(where, "origin", `${originCode} is not a defined origin (0-4)`);
  return {
    index,
    valid: flag(flags, FLAG.BLOCK_VALID),
    bootSelected: flag(flags, FLAG.FIRMWARE_BOOT_SELECTED),
    global: flag(flags, FLAG.NIC_GLOBAL),
    ip,
    prefixLength,
    origin,
    gateway: r.address(off, NIC.GATEWAY),
    primaryDns: r.address(off, NIC.PRIMARY_DNS),
    secondaryDns: r.address(off, NIC.SECONDARY_DNS),
    dhcpServer: r.address(off, NIC.DHCP),
    // 802.1Q: the low 12 bits are the VLAN id; priority/DEI bits do not select a VLAN.
    vlan: r.u16(off + NIC.VLAN) & 0x0fff,
    mac: formatMac(r.slice(off + NIC.MAC, 6)),
    pciBdf: formatBdf(r.u16(off + NIC.PCI_BDF)),
    hostname: r.string(where, "hostname", off, NIC.HOSTNAME_LENGTH, NIC.HOSTNAME_OFFSET),
  };
}

const CHAP_NAMES: Record<number, ChapType> = {
  [CHAP_TYPE.NONE]: "none",
  [CHAP_TYPE.CHAP]: "chap",
  [CHAP_TYPE.MUTUAL]: "mutual",
};

function decodeTarget(r: TableReader, off: number, slot: number): IbftTarget {
  const where = `target ${slot}`;
  checkStructure(r, where, off, STRUCTURE_ID.TARGET, TARGET.LENGTH);
  const index = r.u8(off + STRUCT_HEADER.INDEX);
  if (index !== slot) {
    fail(where, "index", `${index}, but the control structure lists it as ${slot}`);
  }
  const flags = r.u8(off + STRUCT_HEADER.FLAGS);
  const chapCode = r.u8(off + TARGET.CHAP_TYPE);
  const chap = CHAP_NAMES[chapCode];
  if (chap === undefined) fail(where, "chap", `type ${chapCode} is not 0, 1 or 2`);
  const lun = r.slice(off + TARGET.LUN, 8);
  const s = (field: string, lenAt: number, offAt: number) =>
    r.string(where, field, off, lenAt, offAt);
  return {
    index,
    valid: flag(flags, FLAG.BLOCK_VALID),
    bootSelected: flag(flags, FLAG.FIRMWARE_BOOT_SELECTED),
    radiusChap: flag(flags, FLAG.TARGET_RADIUS_CHAP),
    radiusReverseChap: flag(flags, FLAG.TARGET_RADIUS_REVERSE_CHAP),
    ip: r.address(off, TARGET.IP),
    port: r.u16(off + TARGET.PORT),
    lun: lunNumber(lun),
    lunRaw: lunToHex(lun),
    chap,
    nicIndex: r.u8(off + TARGET.NIC_ASSOCIATION),
    name: s("name", TARGET.NAME_LENGTH, TARGET.NAME_OFFSET),
    chapName: s("chapName", TARGET.CHAP_NAME_LENGTH, TARGET.CHAP_NAME_OFFSET),
    chapSecret: s("chapSecret", TARGET.CHAP_SECRET_LENGTH, TARGET.CHAP_SECRET_OFFSET),
    reverseChapName: s(
      "reverseChapName",
      TARGET.REVERSE_CHAP_NAME_LENGTH,
      TARGET.REVERSE_CHAP_NAME_OFFSET,
    ),
    reverseChapSecret: s(
      "reverseChapSecret",
      TARGET.REVERSE_CHAP_SECRET_LENGTH,
      TARGET.REVERSE_CHAP_SECRET_OFFSET,
    ),
  };
}

/**
 * Decode and validate an iBFT. `bytes` must start with the table header; it
 * must be exactly the table unless `allowTrailing`.
 *
 * @throws InvalidInputError naming the structure and field that is wrong.
 * @example
 * ```ts
 * const table = decodeIbft(await Deno.readFile("tests/fixtures/ibft/ipxe-bios-plain.bin"));
 * table.targets[0].name; // "iqn.2026-11.test:disk1"
 * ```
 */
export function decodeIbft(bytes: Uint8Array, opts: DecodeOptions = {}): IbftTable {
  const whole = new TableReader(bytes);
  const header = decodeHeader(whole, opts, bytes.length);
  const length = header.length as number;
  const r = new TableReader(bytes.subarray(0, length));
  if (ibftChecksum(r.bytes) !== 0) {
    if (!opts.ignoreChecksum) {
      fail(
        "header",
        "checksum",
        "bytes do not sum to 0 (use --ignore-checksum for broken firmware)",
      );
    }
    header.checksumValid = false;
  }

  // §3.4 control structure, right after the header.
  const cOff = HEADER.LENGTH;
  const cId = r.u8(cOff + STRUCT_HEADER.ID);
  if (cId !== STRUCTURE_ID.CONTROL) fail("control", "structure id", `${cId}, expected 1`);
  const cVersion = r.u8(cOff + STRUCT_HEADER.VERSION);
  if (cVersion !== STRUCTURE_VERSION) fail("control", "version", `${cVersion}, expected 1`);
  const cLength = r.u16(cOff + STRUCT_HEADER.LENGTH);
  if (cLength < CONTROL.MIN_LENGTH) {
    fail("control", "length", `${cLength}, at least ${CONTROL.MIN_LENGTH} needed`);
  }
  if ((cLength - CONTROL.FIRST_PAIR) % CONTROL.PAIR_SIZE !== 0) {
    fail("control", "length", `${cLength} does not end on a whole (NIC, target) offset pair`);
  }
  if (cOff + cLength > length) {
    fail("control", "length", `${cLength} runs past the end of the table`);
  }
  const cIndex = r.u8(cOff + STRUCT_HEADER.INDEX);
  if (cIndex !== 0) fail("control", "index", `${cIndex}, expected 0`);
  const control: IbftControl = {
    bootFailover: flag(r.u8(cOff + STRUCT_HEADER.FLAGS), CONTROL_FLAG.BOOT_FAILOVER),
  };
  const extensions = r.u16(cOff + CONTROL.EXTENSIONS);
  if (extensions !== 0 && extensions >= length) {
    fail("control", "extensions", `offset ${hex(extensions)} is past the end of the table`);
  }
  r.dataStart = cOff + cLength;

  const initiatorOff = r.u16(cOff + CONTROL.INITIATOR_OFFSET);
  const initiator = initiatorOff === 0 ? null : decodeInitiator(r, initiatorOff);

  const nics: IbftNic[] = [];
  const targets: IbftTarget[] = [];
  const pairs = (cLength - CONTROL.FIRST_PAIR) / CONTROL.PAIR_SIZE;
  for (let slot = 0; slot < pairs; slot++) {
    const at = cOff + CONTROL.FIRST_PAIR + slot * CONTROL.PAIR_SIZE;
    const nicOff = r.u16(at);
    const tgtOff = r.u16(at + 2);
    if (nicOff !== 0) nics.push(decodeNic(r, nicOff, slot));
    if (tgtOff !== 0) targets.push(decodeTarget(r, tgtOff, slot));
  }
  return { header, control, initiator, nics, targets };
}
