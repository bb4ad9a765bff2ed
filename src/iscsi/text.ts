/**
 * iSCSI text data (RFC 7143 §6.1): `key=value` pairs, each ended by a NUL,
 * carried by Login and Text PDUs; a long exchange spans several PDUs with
 * the C (continue) bit set on all but the last (§6.1, §11.10.2).
 *
 * Decoding is strict and bounded: key names follow §6.1 (at most 63 bytes of
 * `a-zA-Z0-9.-+@_`), values at most {@link MAX_VALUE_LENGTH} bytes, and an
 * accumulated exchange never grows past the bound its caller gives, so an
 * endless continuation from a hostile target ends in an error, not in
 * unbounded memory.
 */
import { IscsiProtocolError } from "./errors.ts";

/** One key=value pair in the order received. */
export type TextPair = [key: string, value: string];

/** Longest key name (§6.1). */
export const MAX_KEY_LENGTH = 63;
/**
 * Longest value we accept. §6.1 allows text values up to 8192 bytes; CHAP
 * binary values (§12.1.3) are bounded by the exchange bound instead.
 */
export const MAX_VALUE_LENGTH = 65536;

const KEY_RE = /^[A-Za-z0-9.\-+@_]+$/;
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Encode pairs as `key=value\0...`.
 *
 * @example
 * ```ts
 * encodeText([["HeaderDigest", "CRC32C,None"]]); // "HeaderDigest=CRC32C,None\0"
 * ```
 */
export function encodeText(pairs: readonly TextPair[]): Uint8Array {
  let s = "";
  for (const [k, v] of pairs) {
    if (!KEY_RE.test(k) || k.length > MAX_KEY_LENGTH) throw new RangeError(`bad text key ${k}`);
    if (v.includes("\0")) throw new RangeError(`text value of ${k} contains NUL`);
    s += `${k}=${v}\0`;
  }
  return encoder.encode(s);
}

/**
 * Split encoded text into data segments of at most `maxSegment` bytes, to be
 * sent with the C bit on every segment but the last (§6.1). Always returns at
 * least one (possibly empty) segment.
 *
 * @example
 * ```ts
 * splitText(encodeText(pairs), 8192).forEach((seg, i, all) => send(seg, i < all.length - 1));
 * ```
 */
export function splitText(text: Uint8Array, maxSegment: number): Uint8Array[] {
  if (maxSegment < 1) throw new RangeError("maxSegment must be positive");
  const out: Uint8Array[] = [];
  for (let off = 0; off < text.length; off += maxSegment) {
    out.push(text.subarray(off, Math.min(text.length, off + maxSegment)));
  }
  if (out.length === 0) out.push(new Uint8Array(0));
  return out;
}

/**
 * Decode `key=value\0...` text. A missing final NUL is tolerated (some
 * targets omit it); everything else malformed raises IscsiProtocolError.
 *
 * @example
 * ```ts
 * decodeText(new TextEncoder().encode("AuthMethod=None\0")); // [["AuthMethod", "None"]]
 * ```
 */
export function decodeText(data: Uint8Array): TextPair[] {
  const pairs: TextPair[] = [];
  let start = 0;
  while (start < data.length) {
    let end = data.indexOf(0, start);
    if (end < 0) end = data.length;
    if (end > start) pairs.push(decodePair(data.subarray(start, end)));
    else if (end < data.length - 1 || pairs.length === 0) {
      // An empty entry between NULs (or a lone NUL) is not key=value.
      throw new IscsiProtocolError("text: empty key=value entry");
    }
    start = end + 1;
  }
  return pairs;
}

function decodePair(entry: Uint8Array): TextPair {
  const eq = entry.indexOf(0x3d); // '='
  if (eq <= 0) throw new IscsiProtocolError("text: entry without key=value");
  if (eq > MAX_KEY_LENGTH) throw new IscsiProtocolError("text: key name too long");
  if (entry.length - eq - 1 > MAX_VALUE_LENGTH) {
    throw new IscsiProtocolError("text: value too long");
  }
  let key: string;
  let value: string;
  try {
    key = decoder.decode(entry.subarray(0, eq));
    value = decoder.decode(entry.subarray(eq + 1));
  } catch {
    throw new IscsiProtocolError("text: not valid UTF-8");
  }
  if (!KEY_RE.test(key)) throw new IscsiProtocolError("text: invalid key name");
  return [key, value];
}

/**
 * Collects the data segments of one multi-PDU text exchange (C bit), with a
 * bound on the total size.
 *
 * @example
 * ```ts
 * const acc = new TextAccumulator(65536);
 * acc.push(segment);            // for each PDU
 * if (!continueBit) pairs = acc.take();
 * ```
 */
export class TextAccumulator {
  readonly #limit: number;
  #parts: Uint8Array[] = [];
  #size = 0;

  constructor(limit: number) {
    this.#limit = limit;
  }

  /** Bytes collected so far. */
  get size(): number {
    return this.#size;
  }

  /** Append one PDU's data segment (copied: receive buffers are reused). */
  push(segment: Uint8Array): void {
    if (this.#size + segment.length > this.#limit) {
      throw new IscsiProtocolError(`text exchange exceeds ${this.#limit} bytes`);
    }
    this.#parts.push(segment.slice());
    this.#size += segment.length;
  }

  /** Decode everything collected and reset. */
  take(): TextPair[] {
    const all = new Uint8Array(this.#size);
    let off = 0;
    for (const p of this.#parts) {
      all.set(p, off);
      off += p.length;
    }
    this.#parts = [];
    this.#size = 0;
    return decodeText(all);
  }
}
