/**
 * Field codecs shared by the decoder, the encoder and the sysfs reader:
 * 16-byte addresses, MAC, PCI bus/device/function and the 8-byte SAM LUN.
 * Parsers return null on malformed text; callers turn that into an
 * InvalidInputError naming the field.
 *
 * @module
 */

/** True when all bytes are zero. */
function allZero(b: Uint8Array): boolean {
  return b.every((x) => x === 0);
}

/** True for `::ffff:a.b.c.d` (IPv4-mapped, RFC 4291 §2.5.5.2). */
function isV4Mapped(b: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}

/**
 * Format a 16-byte iBFT address: dotted quad for IPv4-mapped, RFC 5952 text
 * otherwise, null for `::` and `::ffff:0.0.0.0` (both mean "none", as the
 * kernel's address_not_null() treats them).
 *
 * @example
 * ```ts
 * formatAddress(new Uint8Array([0,0,0,0,0,0,0,0,0,0,0xff,0xff,10,0,2,15])); // "10.0.2.15"
 * ```
 */
export function formatAddress(b: Uint8Array): string | null {
  if (b.length !== 16) throw new RangeError("address must be 16 bytes");
  if (allZero(b)) return null;
  if (isV4Mapped(b)) {
    if (allZero(b.subarray(12))) return null;
    return `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  }
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((b[i] << 8) | b[i + 1]);
  // RFC 5952 §4.2: compress the longest run (>= 2) of zero groups, the first on a tie.
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (g: number) => g.toString(16);
  if (bestLen < 2) return groups.map(hex).join(":");
  const head = groups.slice(0, bestStart).map(hex).join(":");
  const tail = groups.slice(bestStart + bestLen).map(hex).join(":");
  return `${head}::${tail}`;
}

function parseIpv4(s: string): number[] | null {
  const parts = s.split(".");
  if (parts.length !== 4) return null;
  const out: number[] = [];
  for (const p of parts) {
    if (!/^[0-9]{1,3}$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    out.push(n);
  }
  return out;
}

/**
 * Parse address text (dotted quad, or IPv6 in any RFC 4291 §2.2 form, as the
 * kernel's `%pI6` prints it uncompressed) to the 16-byte iBFT form; IPv4
 * becomes IPv4-mapped. `null` (the model's "none") gives 16 zero bytes.
 * Returns undefined when the text is not an address.
 *
 * @example
 * ```ts
 * parseAddress("10.0.2.2"); // ::ffff:10.0.2.2 as 16 bytes
 * ```
 */
export function parseAddress(s: string | null): Uint8Array | undefined {
  const out = new Uint8Array(16);
  if (s === null) return out;
  const v4 = parseIpv4(s);
  if (v4) {
    out[10] = 0xff;
    out[11] = 0xff;
    out.set(v4, 12);
    return out;
  }
  if (!/^[0-9a-fA-F:.]+$/.test(s) || s.length > 45) return undefined;
  const halves = s.split("::");
  if (halves.length > 2) return undefined;
  const toGroups = (part: string, allowV4Tail: boolean): number[] | undefined => {
    if (part === "") return [];
    const items = part.split(":");
    const groups: number[] = [];
    for (let i = 0; i < items.length; i++) {
      const it = items[i];
      if (allowV4Tail && i === items.length - 1 && it.includes(".")) {
        const q = parseIpv4(it);
        if (!q) return undefined;
        groups.push((q[0] << 8) | q[1], (q[2] << 8) | q[3]);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(it)) return undefined;
        groups.push(parseInt(it, 16));
      }
    }
    return groups;
  };
  let groups: number[];
  if (halves.length === 2) {
    const a = toGroups(halves[0], false);
    const b = toGroups(halves[1], true);
    if (!a || !b || a.length + b.length > 7) return undefined;
    groups = [...a, ...new Array(8 - a.length - b.length).fill(0), ...b];
  } else {
    const g = toGroups(s, true);
    if (!g || g.length !== 8) return undefined;
    groups = g;
  }
  groups.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

/** `52:54:00:12:34:56` from 6 bytes. */
export function formatMac(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(":");
}

/** 6 bytes from `52:54:00:12:34:56` (either case); undefined when malformed. */
export function parseMac(s: string): Uint8Array | undefined {
  if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(s)) return undefined;
  return Uint8Array.from(s.split(":"), (h) => parseInt(h, 16));
}

/** `bus:device.function` as lspci prints it, from the iBFT u16 (bus << 8 | dev << 3 | fn). */
export function formatBdf(v: number): string {
  const bus = (v >> 8) & 0xff;
  const dev = (v >> 3) & 0x1f;
  const fn = v & 0x7;
  return `${bus.toString(16).padStart(2, "0")}:${dev.toString(16).padStart(2, "0")}.${fn}`;
}

/**
 * The u16 from `bb:dd.f`, also accepting a sysfs name with a PCI domain
 * (`0000:00:03.0`, domain 0 only: the field has no room for one).
 */
export function parseBdf(s: string): number | undefined {
  const m = /^(?:(0{4}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$/.exec(s);
  if (!m) return undefined;
  const bus = parseInt(m[2], 16);
  const dev = parseInt(m[3], 16);
  if (dev > 0x1f) return undefined;
  return (bus << 8) | (dev << 3) | Number(m[4]);
}

/** 16 lower-case hex digits for 8 LUN bytes. */
export function lunToHex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** 8 bytes from 16 hex digits; undefined when malformed. */
export function lunFromHex(s: string): Uint8Array | undefined {
  if (!/^[0-9a-fA-F]{16}$/.test(s)) return undefined;
  const out = new Uint8Array(8);
  for (let i = 0; i < 8; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/**
 * The LUN number of an 8-byte SAM LUN (SAM-5 §4.7) when it is a single-level
 * LUN in peripheral device addressing with bus 0 (`00 NN`) or flat space
 * addressing (`01bbbbbb NN`, 14 bits); null for every other form (bus != 0,
 * logical unit or extended addressing, or more than one level), which
 * callers must pass on as the raw bytes.
 *
 * @example
 * ```ts
 * lunNumber(new Uint8Array([0, 1, 0, 0, 0, 0, 0, 0])); // 1
 * lunNumber(new Uint8Array([0x41, 0x05, 0, 0, 0, 0, 0, 0])); // 261
 * ```
 */
export function lunNumber(b: Uint8Array): number | null {
  if (!allZero(b.subarray(2, 8))) return null;
  const method = b[0] >> 6;
  if (method === 0b00 && (b[0] & 0x3f) === 0) return b[1];
  if (method === 0b01) return ((b[0] & 0x3f) << 8) | b[1];
  return null;
}

/**
 * The 8 bytes for a LUN number as SAM-5 and iPXE write it: peripheral
 * addressing below 256, flat addressing up to 16383.
 */
export function lunBytes(n: number): Uint8Array | undefined {
  if (!Number.isInteger(n) || n < 0 || n > 0x3fff) return undefined;
  const out = new Uint8Array(8);
  if (n < 256) out[1] = n;
  else {
    out[0] = 0x40 | (n >> 8);
    out[1] = n & 0xff;
  }
  return out;
}

/**
 * Recover the 8 LUN bytes from the kernel's sysfs `lun` text, which prints
 * each byte with an unpadded `%x` (drivers/firmware/iscsi_ibft.c), so
 * `00 01 00 ...` reads `01000000`. A byte is 1 digit when < 0x10, else 2
 * digits with no leading 0. Several splits can fit one text (`415000000` can
 * be `41 05 00..`, `04 15 00..` or `04 01 50 00..`); we
 * take the single split that is a plain LUN (peripheral bus 0 or flat, one
 * level), else the only split; anything else is ambiguous: undefined.
 */
export function lunFromSysfs(text: string): Uint8Array | undefined {
  if (!/^[0-9a-fA-F]{8,16}$/.test(text)) return undefined;
  const s = text.toLowerCase();
  const results: Uint8Array[] = [];
  const cur: number[] = [];
  const walk = (pos: number) => {
    if (cur.length === 8) {
      if (pos === s.length) results.push(Uint8Array.from(cur));
      return;
    }
    const left = 8 - cur.length;
    const remaining = s.length - pos;
    if (remaining < left || remaining > 2 * left) return;
    cur.push(parseInt(s[pos], 16));
    walk(pos + 1);
    cur.pop();
    if (pos + 1 < s.length && s[pos] !== "0") {
      cur.push(parseInt(s.slice(pos, pos + 2), 16));
      walk(pos + 2);
      cur.pop();
    }
  };
  walk(0);
  if (results.length === 1) return results[0];
  const plain = results.filter((r) => lunNumber(r) !== null);
  return plain.length === 1 ? plain[0] : undefined;
}
