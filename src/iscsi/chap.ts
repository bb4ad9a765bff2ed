/**
 * CHAP for iSCSI login (RFC 7143 §12.1.3, RFC 1994): the response is
 * H(CHAP_I as one byte || secret || challenge) with the algorithm the target
 * picked from our CHAP_A list. Algorithm numbers are IANA's PPP
 * authentication algorithms: 5 MD5, 6 SHA-1, 7 SHA-256, 8 SHA3-256
 * (RFC 7143 as updated for SHA-2/SHA-3; the Linux target uses the same).
 *
 * Binary values travel as `0x` hex or `0b` base64 (§6.1); we send hex and
 * read both, of any length. Secrets are bytes (UTF-8 of what was
 * configured) and never enter a message or a log line.
 */
import { md5, sha1, sha256, sha3 } from "hash-wasm";
import { AuthError } from "../errors.ts";

/** A CHAP digest algorithm we implement. */
export type ChapAlgorithmName = "sha3-256" | "sha256" | "sha1" | "md5";

/** IANA numbers (CHAP_A values). */
export const CHAP_ALGORITHM_IDS: Readonly<Record<ChapAlgorithmName, number>> = {
  "sha3-256": 8,
  sha256: 7,
  sha1: 6,
  md5: 5,
};

/** Our default CHAP_A offer, strongest first. */
export const DEFAULT_CHAP_ALGORITHMS: readonly ChapAlgorithmName[] = [
  "sha3-256",
  "sha256",
  "sha1",
  "md5",
];

/** Digest length in bytes for each algorithm id. */
export const CHAP_DIGEST_LENGTH: Readonly<Record<number, number>> = { 5: 16, 6: 20, 7: 32, 8: 32 };

/** Name for an algorithm id (for logs and probe output). */
export function chapAlgorithmName(id: number): string {
  for (const [n, v] of Object.entries(CHAP_ALGORITHM_IDS)) if (v === id) return n;
  return `unknown(${id})`;
}

/**
 * Parse `--chap-algorithms` text such as `sha256,md5` (order is kept).
 *
 * @example
 * ```ts
 * parseChapAlgorithms("SHA-256, md5"); // ["sha256", "md5"]
 * ```
 */
export function parseChapAlgorithms(text: string): ChapAlgorithmName[] | null {
  const names: Record<string, ChapAlgorithmName> = {
    sha3256: "sha3-256",
    sha256: "sha256",
    sha1: "sha1",
    md5: "md5",
  };
  const out: ChapAlgorithmName[] = [];
  for (const raw of text.split(",")) {
    const key = raw.trim().toLowerCase().replace(/[-_]/g, "");
    const name = Object.hasOwn(names, key) ? names[key] : undefined;
    if (!name) return null;
    if (!out.includes(name)) out.push(name);
  }
  return out.length ? out : null;
}

function hexToBytes(h: string): Uint8Array {
  const out = new Uint8Array(h.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(h.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/**
 * Decode a CHAP binary value (`0x...` hex, `0b...` base64; §6.1). Throws
 * AuthError for anything else (the message names the key, not the value).
 *
 * @example
 * ```ts
 * decodeChapBinary("0x0102"); // Uint8Array [1, 2]
 * ```
 */
export function decodeChapBinary(key: string, v: string): Uint8Array {
  if (/^0[xX]([0-9a-fA-F]{2})*$/.test(v)) return hexToBytes(v.slice(2));
  if (/^0[xX][0-9a-fA-F]+$/.test(v)) return hexToBytes("0" + v.slice(2)); // odd length: leading nibble
  if (/^0[bB][A-Za-z0-9+/]+={0,2}$/.test(v) && (v.length - 2) % 4 === 0) {
    const bin = atob(v.slice(2));
    return Uint8Array.from(bin, (c) => c.charCodeAt(0));
  }
  throw new AuthError(`CHAP: ${key} from the target is not a hex or base64 binary value`);
}

/** Encode bytes as a `0x` hex CHAP value. */
export function encodeChapBinary(b: Uint8Array): string {
  let s = "0x";
  for (const x of b) s += x.toString(16).padStart(2, "0");
  return s;
}

/**
 * Compute a CHAP response: H(id || secret || challenge).
 *
 * @example
 * ```ts
 * const r = await chapResponse(5, 1, new TextEncoder().encode("secret"), challenge);
 * ```
 */
export async function chapResponse(
  algorithm: number,
  id: number,
  secret: Uint8Array,
  challenge: Uint8Array,
): Promise<Uint8Array> {
  const input = new Uint8Array(1 + secret.length + challenge.length);
  input[0] = id & 0xff;
  input.set(secret, 1);
  input.set(challenge, 1 + secret.length);
  let hex: string;
  switch (algorithm) {
    case 5:
      hex = await md5(input);
      break;
    case 6:
      hex = await sha1(input);
      break;
    case 7:
      hex = await sha256(input);
      break;
    case 8:
      hex = await sha3(input, 256);
      break;
    default:
      throw new AuthError(`CHAP: unsupported algorithm ${algorithm}`);
  }
  input.fill(0);
  return hexToBytes(hex);
}

/** Compare in time independent of where the first difference is. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}
