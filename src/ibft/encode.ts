/**
 * iBFT encoder: {@link IbftTable} in, table bytes out, with a correct
 * checksum. Used by the tests and by `isboot ibft encode` to make tables for
 * `qemu -acpitable file=TABLE`.
 *
 * Layout: header (48), control (18 bytes plus 4 per pair past the second),
 * initiator, NICs, targets, each at an 8-byte boundary, then the strings,
 * NUL-terminated as iPXE writes them. NIC n and target n go in control slot n
 * (their `index`).
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
  STRUCTURE_ALIGNMENT,
  STRUCTURE_ID,
  STRUCTURE_VERSION,
  TARGET,
} from "./constants.ts";
import { ibftChecksum } from "./decode.ts";
import { lunBytes, lunFromHex, lunNumber, parseAddress, parseBdf, parseMac } from "./fields.ts";
import type { IbftTable } from "./model.ts";

function bad(where: string, field: string, problem: string): never {
  throw new InvalidInputError(`iBFT model ${where}: ${field}: ${problem}`);
}

const align = (n: number) => Math.ceil(n / STRUCTURE_ALIGNMENT) * STRUCTURE_ALIGNMENT;
const utf8 = new TextEncoder();

/** The 8 LUN bytes a target entry stands for: lunRaw, checked against lun when both are given. */
function targetLun(where: string, lun: number | null, lunRaw: string | null): Uint8Array {
  if (lunRaw !== null) {
    const raw = lunFromHex(lunRaw);
    if (!raw) bad(where, "lunRaw", "not 16 hex digits");
    if (lun !== null && lunNumber(raw) !== lun) {
      bad(where, "lun", `${lun} does not match lunRaw ${lunRaw}`);
    }
    return raw;
  }
  if (lun === null) return new Uint8Array(8);
  const b = lunBytes(lun);
  if (!b) bad(where, "lun", `${lun} is not 0..16383`);
  return b;
}

/**
 * Encode a table. `header.length` and `header.checksumValid` are computed,
 * not read; `control: null` encodes as no flags.
 *
 * @throws InvalidInputError naming the model field that cannot be encoded.
 * @example
 * ```ts
 * const bytes = encodeIbft(decodeIbft(fixture));
 * await Deno.writeFile("ibft.bin", bytes); // qemu -acpitable file=ibft.bin
 * ```
 */
export function encodeIbft(table: IbftTable): Uint8Array {
  const { header, initiator, nics, targets } = table;
  if (!(IBFT_SIGNATURES as readonly string[]).includes(header.signature)) {
    bad("header", "signature", "must be iBFT, IBFT or BIFT");
  }
  if (header.revision !== IBFT_REVISION) bad("header", "revision", "must be 1");
  for (
    const [field, v, max] of [
      ["oemId", header.oemId, HEADER.OEM_ID_LENGTH],
      ["oemTableId", header.oemTableId, HEADER.OEM_TABLE_ID_LENGTH],
    ] as const
  ) {
    if (v.length > max || !/^[\x20-\x7e]*$/.test(v)) {
      bad("header", field, `must be at most ${max} printable ASCII characters`);
    }
  }
  const slotsOf = (kind: string, list: { index: number }[]) => {
    const seen = new Set<number>();
    for (const x of list) {
      if (!Number.isInteger(x.index) || x.index < 0 || x.index > 255) {
        bad(`${kind} ${x.index}`, "index", "must be 0..255");
      }
      if (seen.has(x.index)) bad(`${kind} ${x.index}`, "index", "used twice");
      seen.add(x.index);
    }
    return seen;
  };
  slotsOf("nic", nics);
  slotsOf("target", targets);
  const pairs = Math.max(2, ...nics.map((n) => n.index + 1), ...targets.map((t) => t.index + 1));
  const controlLength = CONTROL.FIRST_PAIR + pairs * CONTROL.PAIR_SIZE;

  // Place the structures, then the strings after them.
  let pos = align(HEADER.LENGTH + controlLength);
  const initiatorOff = initiator ? pos : 0;
  if (initiator) pos = align(pos + INITIATOR.LENGTH);
  const nicOffs = nics.map(() => {
    const at = pos;
    pos = align(pos + NIC.LENGTH);
    return at;
  });
  const tgtOffs = targets.map(() => {
    const at = pos;
    pos = align(pos + TARGET.LENGTH);
    return at;
  });
  const strings: { at: number; bytes: Uint8Array }[] = [];
  const place = (where: string, field: string, s: string | null): [number, number] => {
    if (s === null || s === "") return [0, 0];
    // deno-lint-ignore no-control-regex
    if (/[\u0000-\u001f\u007f]/.test(s)) bad(where, field, "contains a control character");
    const b = utf8.encode(s);
    if (b.length > 0xffff) bad(where, field, "too long");
    const at = pos;
    strings.push({ at, bytes: b });
    pos += b.length + 1;
    return [b.length, at];
  };
  // Plan string placement in structure order so offsets are known before writing.
  const initiatorName = initiator ? place("initiator", "name", initiator.name) : [0, 0];
  const nicHost = nics.map((n) => place(`nic ${n.index}`, "hostname", n.hostname));
  const tgtStrings = targets.map((t) => {
    const w = `target ${t.index}`;
    return [
      place(w, "name", t.name),
      place(w, "chapName", t.chapName),
      place(w, "chapSecret", t.chapSecret),
      place(w, "reverseChapName", t.reverseChapName),
      place(w, "reverseChapSecret", t.reverseChapSecret),
    ];
  });
  const length = pos;
  if (length > IBFT_MAX_LENGTH) bad("table", "length", "over 64 KiB");

  const out = new Uint8Array(length);
  const v = new DataView(out.buffer);
  out.set(utf8.encode(header.signature), HEADER.SIGNATURE);
  v.setUint32(HEADER.TABLE_LENGTH, length, true);
  out[HEADER.REVISION] = IBFT_REVISION;
  out.set(utf8.encode(header.oemId), HEADER.OEM_ID);
  out.set(utf8.encode(header.oemTableId), HEADER.OEM_TABLE_ID);

  const structHeader = (off: number, id: number, len: number, index: number, flags: number) => {
    out[off + STRUCT_HEADER.ID] = id;
    out[off + STRUCT_HEADER.VERSION] = STRUCTURE_VERSION;
    v.setUint16(off + STRUCT_HEADER.LENGTH, len, true);
    out[off + STRUCT_HEADER.INDEX] = index;
    out[off + STRUCT_HEADER.FLAGS] = flags;
  };
  const addr = (where: string, field: string, off: number, s: string | null) => {
    const b = parseAddress(s);
    if (!b) bad(where, field, "not an IPv4 or IPv6 address");
    out.set(b, off);
  };
  const str = (off: number, lenAt: number, offAt: number, [len, at]: number[]) => {
    v.setUint16(off + lenAt, len, true);
    v.setUint16(off + offAt, at, true);
  };
  const flags = (...bits: [boolean, number][]) => bits.reduce((f, [on, b]) => on ? f | b : f, 0);

  const c = HEADER.LENGTH;
  structHeader(
    c,
    STRUCTURE_ID.CONTROL,
    controlLength,
    0,
    table.control?.bootFailover ? CONTROL_FLAG.BOOT_FAILOVER : 0,
  );
  v.setUint16(c + CONTROL.INITIATOR_OFFSET, initiatorOff, true);
  nics.forEach((n, i) => {
    v.setUint16(c + CONTROL.FIRST_PAIR + n.index * CONTROL.PAIR_SIZE, nicOffs[i], true);
  });
  targets.forEach((t, i) => {
    v.setUint16(c + CONTROL.FIRST_PAIR + t.index * CONTROL.PAIR_SIZE + 2, tgtOffs[i], true);
  });

  if (initiator) {
    const o = initiatorOff;
    structHeader(
      o,
      STRUCTURE_ID.INITIATOR,
      INITIATOR.LENGTH,
      0,
      flags([initiator.valid, FLAG.BLOCK_VALID], [
        initiator.bootSelected,
        FLAG.FIRMWARE_BOOT_SELECTED,
      ]),
    );
    addr("initiator", "isnsServer", o + INITIATOR.ISNS_SERVER, initiator.isnsServer);
    addr("initiator", "slpServer", o + INITIATOR.SLP_SERVER, initiator.slpServer);
    addr("initiator", "primaryRadius", o + INITIATOR.PRIMARY_RADIUS, initiator.primaryRadius);
    addr("initiator", "secondaryRadius", o + INITIATOR.SECONDARY_RADIUS, initiator.secondaryRadius);
    str(o, INITIATOR.NAME_LENGTH, INITIATOR.NAME_OFFSET, initiatorName);
  }

  nics.forEach((n, i) => {
    const o = nicOffs[i];
    const w = `nic ${n.index}`;
    structHeader(
      o,
      STRUCTURE_ID.NIC,
      NIC.LENGTH,
      n.index,
      flags([n.valid, FLAG.BLOCK_VALID], [n.bootSelected, FLAG.FIRMWARE_BOOT_SELECTED], [
        n.global,
        FLAG.NIC_GLOBAL,
      ]),
    );
    addr(w, "ip", o + NIC.IP, n.ip);
    const maxPrefix = n.ip !== null && !n.ip.includes(":") ? 32 : 128;
    if (!Number.isInteger(n.prefixLength) || n.prefixLength < 0 || n.prefixLength > maxPrefix) {
      bad(w, "prefixLength", `must be 0..${maxPrefix}`);
    }
    out[o + NIC.PREFIX_LENGTH] = n.prefixLength;
    const origin = ORIGINS.indexOf(n.origin);
    if (origin < 0) bad(w, "origin", `must be one of ${ORIGINS.join(", ")}`);
    out[o + NIC.ORIGIN] = origin;
    addr(w, "gateway", o + NIC.GATEWAY, n.gateway);
    addr(w, "primaryDns", o + NIC.PRIMARY_DNS, n.primaryDns);
    addr(w, "secondaryDns", o + NIC.SECONDARY_DNS, n.secondaryDns);
    addr(w, "dhcpServer", o + NIC.DHCP, n.dhcpServer);
    if (!Number.isInteger(n.vlan) || n.vlan < 0 || n.vlan > 0xfff) {
      bad(w, "vlan", "must be 0..4095");
    }
    v.setUint16(o + NIC.VLAN, n.vlan, true);
    const mac = parseMac(n.mac);
    if (!mac) bad(w, "mac", "must look like 52:54:00:12:34:56");
    out.set(mac, o + NIC.MAC);
    if (n.pciBdf !== null) {
      const bdf = parseBdf(n.pciBdf);
      if (bdf === undefined) bad(w, "pciBdf", "must look like 00:03.0");
      v.setUint16(o + NIC.PCI_BDF, bdf, true);
    }
    str(o, NIC.HOSTNAME_LENGTH, NIC.HOSTNAME_OFFSET, nicHost[i]);
  });

  targets.forEach((t, i) => {
    const o = tgtOffs[i];
    const w = `target ${t.index}`;
    structHeader(
      o,
      STRUCTURE_ID.TARGET,
      TARGET.LENGTH,
      t.index,
      flags(
        [t.valid, FLAG.BLOCK_VALID],
        [t.bootSelected, FLAG.FIRMWARE_BOOT_SELECTED],
        [t.radiusChap, FLAG.TARGET_RADIUS_CHAP],
        [t.radiusReverseChap, FLAG.TARGET_RADIUS_REVERSE_CHAP],
      ),
    );
    addr(w, "ip", o + TARGET.IP, t.ip);
    if (!Number.isInteger(t.port) || t.port < 0 || t.port > 0xffff) {
      bad(w, "port", "must be 0..65535");
    }
    v.setUint16(o + TARGET.PORT, t.port, true);
    out.set(targetLun(w, t.lun, t.lunRaw === "" ? null : t.lunRaw), o + TARGET.LUN);
    const chap = { none: CHAP_TYPE.NONE, chap: CHAP_TYPE.CHAP, mutual: CHAP_TYPE.MUTUAL }[t.chap];
    if (chap === undefined) bad(w, "chap", "must be none, chap or mutual");
    out[o + TARGET.CHAP_TYPE] = chap;
    if (!Number.isInteger(t.nicIndex) || t.nicIndex < 0 || t.nicIndex > 255) {
      bad(w, "nicIndex", "must be 0..255");
    }
    out[o + TARGET.NIC_ASSOCIATION] = t.nicIndex;
    const [name, chapName, chapSecret, revName, revSecret] = tgtStrings[i];
    str(o, TARGET.NAME_LENGTH, TARGET.NAME_OFFSET, name);
    str(o, TARGET.CHAP_NAME_LENGTH, TARGET.CHAP_NAME_OFFSET, chapName);
    str(o, TARGET.CHAP_SECRET_LENGTH, TARGET.CHAP_SECRET_OFFSET, chapSecret);
    str(o, TARGET.REVERSE_CHAP_NAME_LENGTH, TARGET.REVERSE_CHAP_NAME_OFFSET, revName);
    str(o, TARGET.REVERSE_CHAP_SECRET_LENGTH, TARGET.REVERSE_CHAP_SECRET_OFFSET, revSecret);
  });

  for (const s of strings) out.set(s.bytes, s.at);
  out[HEADER.CHECKSUM] = (0x100 - ibftChecksum(out)) & 0xff;
  return out;
}
