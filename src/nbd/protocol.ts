/**
 * NBD wire codec: bounds-checked parsing of what a client sends (client
 * flags, option headers, NBD_OPT_INFO/GO data, transmission requests) and
 * encoding of what the server sends (greeting, option replies, info blocks,
 * simple replies, structured reply chunks). Pure functions over bytes; no
 * I/O. Layouts are from NetworkBlockDevice/nbd `doc/proto.md`.
 *
 * Hot-path values stay plain numbers: a 64-bit handle travels as two 32-bit
 * halves and an offset as a double (exact below 2^53, which covers every
 * device; larger offsets still compare as out of range).
 *
 * @example
 * ```ts
 * const req = parseRequest(bytes, 0); // throws NbdProtocolError on bad magic
 * const reply = encodeSimpleReply(0, req.handleHi, req.handleLo);
 * ```
 * @module
 */
import { InvalidInputError } from "../errors.ts";
import {
  IHAVEOPT_HI,
  IHAVEOPT_LO,
  NBD_EXPORT_NAME_PADDING,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_MAX_STRING,
  NBD_OPTION_HEADER_SIZE,
  NBD_OPTION_REPLY_HEADER_SIZE,
  NBD_REP_MAGIC_HI,
  NBD_REP_MAGIC_LO,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REQUEST_MAGIC,
  NBD_REQUEST_SIZE,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_SIMPLE_REPLY_SIZE,
  NBD_STRUCTURED_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_SIZE,
  NBDMAGIC_HI,
  NBDMAGIC_LO,
} from "./constants.ts";

/** A client broke the protocol in a way that ends its connection. */
export class NbdProtocolError extends InvalidInputError {}

const TWO32 = 0x1_0000_0000;
const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function need(b: Uint8Array, off: number, n: number, what: string): void {
  if (off < 0 || off + n > b.length) {
    throw new NbdProtocolError(`NBD: ${what}: need ${n} bytes at ${off}, have ${b.length - off}`);
  }
}

// ---------------------------------------------------------------- handshake

/**
 * The 18 bytes that open fixed newstyle negotiation: NBDMAGIC, IHAVEOPT and
 * the handshake flags (FIXED_NEWSTYLE | NO_ZEROES).
 *
 * @example
 * ```ts
 * await stream.write(encodeGreeting());
 * ```
 */
export function encodeGreeting(): Uint8Array {
  const b = new Uint8Array(18);
  const v = view(b);
  v.setUint32(0, NBDMAGIC_HI);
  v.setUint32(4, NBDMAGIC_LO);
  v.setUint32(8, IHAVEOPT_HI);
  v.setUint32(12, IHAVEOPT_LO);
  v.setUint16(16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
  return b;
}

/** Option header as the client sent it (proto.md "Fixed newstyle negotiation"). */
export interface OptionHeader {
  option: number;
  /** Length of the option data that follows (unsigned 32 bits). */
  length: number;
}

/**
 * Parse the 16-byte option header: IHAVEOPT, option, data length.
 * Throws NbdProtocolError when the magic is wrong (the connection ends).
 *
 * @example
 * ```ts
 * const { option, length } = parseOptionHeader(hdr);
 * ```
 */
export function parseOptionHeader(b: Uint8Array, off = 0): OptionHeader {
  need(b, off, NBD_OPTION_HEADER_SIZE, "option header");
  const v = view(b);
  if (v.getUint32(off) !== IHAVEOPT_HI || v.getUint32(off + 4) !== IHAVEOPT_LO) {
    throw new NbdProtocolError("NBD: option without IHAVEOPT magic");
  }
  return { option: v.getUint32(off + 8), length: v.getUint32(off + 12) };
}

/** Data of NBD_OPT_INFO and NBD_OPT_GO. */
export interface InfoRequest {
  /** Export name; "" asks for the default export. */
  name: string;
  /** NBD_INFO_* types the client asked for, in order. */
  infos: number[];
}

/**
 * Parse NBD_OPT_INFO/NBD_OPT_GO data: u32 name length, name, u16 number of
 * requests, u16 per request. Returns null when the layout is inconsistent,
 * the name is too long, not UTF-8, or holds NUL (the server answers
 * NBD_REP_ERR_INVALID and negotiation goes on).
 *
 * @example
 * ```ts
 * const req = parseInfoRequest(data);
 * if (!req) return replyError(NBD_REP_ERR_INVALID);
 * ```
 */
export function parseInfoRequest(data: Uint8Array): InfoRequest | null {
  if (data.length < 6) return null;
  const v = view(data);
  const nameLen = v.getUint32(0);
  if (nameLen > NBD_MAX_STRING || nameLen > data.length - 6) return null;
  const name = decodeString(data.subarray(4, 4 + nameLen));
  if (name === null) return null;
  let p = 4 + nameLen;
  const n = v.getUint16(p);
  p += 2;
  if (data.length - p !== n * 2) return null;
  const infos: number[] = [];
  for (let i = 0; i < n; i++) infos.push(v.getUint16(p + i * 2));
  return { name, infos };
}

/**
 * Decode an NBD string: UTF-8, no NUL, at most 4096 bytes. Null when it is not one.
 *
 * @example
 * ```ts
 * decodeString(new TextEncoder().encode("disk")); // "disk"
 * ```
 */
export function decodeString(b: Uint8Array): string | null {
  if (b.length > NBD_MAX_STRING || b.includes(0)) return null;
  try {
    return strictDecoder.decode(b);
  } catch {
    return null;
  }
}

/**
 * One option reply: magic, option, reply type, length, data.
 *
 * @example
 * ```ts
 * encodeOptionReply(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK);
 * ```
 */
export function encodeOptionReply(
  option: number,
  type: number,
  data: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const b = new Uint8Array(NBD_OPTION_REPLY_HEADER_SIZE + data.length);
  const v = view(b);
  v.setUint32(0, NBD_REP_MAGIC_HI);
  v.setUint32(4, NBD_REP_MAGIC_LO);
  v.setUint32(8, option >>> 0);
  v.setUint32(12, type >>> 0);
  v.setUint32(16, data.length);
  b.set(data, NBD_OPTION_REPLY_HEADER_SIZE);
  return b;
}

/** An option error reply carrying a human-readable message (truncated to 4096 bytes). */
export function encodeOptionError(option: number, type: number, message: string): Uint8Array {
  return encodeOptionReply(option, type, encodeLimitedString(message));
}

/**
 * proto.md "Conventions": a string is UTF-8 and MUST be no longer than 4096
 * bytes, error messages included. A longer one is cut back to the last whole
 * character, so that a client with a strict decoder can still show it.
 */
function encodeLimitedString(s: string): Uint8Array {
  const b = encoder.encode(s);
  if (b.length <= NBD_MAX_STRING) return b;
  let end = NBD_MAX_STRING;
  // b[end] is the first byte dropped; while it continues a character
  // (10xxxxxx), that character's lead byte is before `end`: drop it too.
  while (end > 0 && (b[end] & 0xc0) === 0x80) end--;
  return b.subarray(0, end);
}

/**
 * NBD_REP_SERVER data for NBD_OPT_LIST: u32 name length, name, then a
 * description for humans.
 */
export function encodeServerEntry(name: string, description = ""): Uint8Array {
  const n = encodeLimitedString(name);
  const d = encodeLimitedString(description);
  const b = new Uint8Array(4 + n.length + d.length);
  view(b).setUint32(0, n.length);
  b.set(n, 4);
  b.set(d, 4 + n.length);
  return b;
}

/** NBD_INFO_EXPORT: u16 type, u64 size, u16 transmission flags. */
export function encodeInfoExport(size: bigint, flags: number): Uint8Array {
  const b = new Uint8Array(12);
  const v = view(b);
  v.setUint16(0, NBD_INFO_EXPORT);
  v.setBigUint64(2, size);
  v.setUint16(10, flags);
  return b;
}

/** NBD_INFO_NAME or NBD_INFO_DESCRIPTION: u16 type, string. */
export function encodeInfoString(
  type: typeof NBD_INFO_NAME | typeof NBD_INFO_DESCRIPTION,
  s: string,
): Uint8Array {
  const t = encodeLimitedString(s);
  const b = new Uint8Array(2 + t.length);
  view(b).setUint16(0, type);
  b.set(t, 2);
  return b;
}

/** Block size constraints (proto.md "Block size constraints"). */
export interface BlockSizes {
  minimum: number;
  preferred: number;
  maximum: number;
}

/** NBD_INFO_BLOCK_SIZE: u16 type, u32 minimum, u32 preferred, u32 maximum payload. */
export function encodeInfoBlockSize(s: BlockSizes): Uint8Array {
  const b = new Uint8Array(14);
  const v = view(b);
  v.setUint16(0, NBD_INFO_BLOCK_SIZE);
  v.setUint32(2, s.minimum);
  v.setUint32(6, s.preferred);
  v.setUint32(10, s.maximum);
  return b;
}

/**
 * Reply to NBD_OPT_EXPORT_NAME: u64 size, u16 transmission flags, and 124
 * zero bytes unless the client set NBD_FLAG_C_NO_ZEROES.
 */
export function encodeExportNameReply(size: bigint, flags: number, noZeroes: boolean): Uint8Array {
  const b = new Uint8Array(10 + (noZeroes ? 0 : NBD_EXPORT_NAME_PADDING));
  const v = view(b);
  v.setBigUint64(0, size);
  v.setUint16(8, flags);
  return b;
}

// ------------------------------------------------------------- transmission

/** A transmission request (the compact 28-byte header). */
export interface NbdRequest {
  /** Command flags (NBD_CMD_FLAG_*). */
  flags: number;
  /** Command type (NBD_CMD_*). */
  type: number;
  /** The client's 64-bit handle, as two halves echoed back unchanged. */
  handleHi: number;
  handleLo: number;
  /** Byte offset; exact below 2^53. */
  offset: number;
  /** Byte length (unsigned 32 bits). */
  length: number;
}

/**
 * Parse one request header at `off`. Throws NbdProtocolError when the
 * magic is not NBD_REQUEST_MAGIC: the stream is out of step and the
 * connection must end.
 *
 * @example
 * ```ts
 * const r = parseRequest(buf, start);
 * if (r.type === NBD_CMD_WRITE) readPayload(r.length);
 * ```
 */
export function parseRequest(b: Uint8Array, off = 0): NbdRequest {
  need(b, off, NBD_REQUEST_SIZE, "request");
  const v = view(b);
  const magic = v.getUint32(off);
  if (magic !== NBD_REQUEST_MAGIC) {
    throw new NbdProtocolError(`NBD: bad request magic 0x${magic.toString(16).padStart(8, "0")}`);
  }
  return {
    flags: v.getUint16(off + 4),
    type: v.getUint16(off + 6),
    handleHi: v.getUint32(off + 8),
    handleLo: v.getUint32(off + 12),
    offset: v.getUint32(off + 16) * TWO32 + v.getUint32(off + 20),
    length: v.getUint32(off + 24),
  };
}

/**
 * Encode a request header (the client side; used by tests and tools).
 *
 * @example
 * ```ts
 * encodeRequest({ flags: 0, type: NBD_CMD_READ, handleHi: 0, handleLo: 1, offset: 0, length: 512 });
 * ```
 */
export function encodeRequest(r: NbdRequest): Uint8Array {
  const b = new Uint8Array(NBD_REQUEST_SIZE);
  const v = view(b);
  v.setUint32(0, NBD_REQUEST_MAGIC);
  v.setUint16(4, r.flags);
  v.setUint16(6, r.type);
  v.setUint32(8, r.handleHi);
  v.setUint32(12, r.handleLo);
  v.setUint32(16, Math.floor(r.offset / TWO32));
  v.setUint32(20, r.offset % TWO32);
  v.setUint32(24, r.length);
  return b;
}

/**
 * Write a simple reply header (magic, error, handle) into `b` at `off`.
 * Used to build a header in front of read data without a second buffer.
 */
export function writeSimpleReply(
  b: Uint8Array,
  off: number,
  error: number,
  handleHi: number,
  handleLo: number,
): void {
  const v = view(b);
  v.setUint32(off, NBD_SIMPLE_REPLY_MAGIC);
  v.setUint32(off + 4, error);
  v.setUint32(off + 8, handleHi);
  v.setUint32(off + 12, handleLo);
}

/**
 * A 16-byte simple reply (no payload).
 *
 * @example
 * ```ts
 * encodeSimpleReply(NBD_EINVAL, req.handleHi, req.handleLo);
 * ```
 */
export function encodeSimpleReply(error: number, handleHi: number, handleLo: number): Uint8Array {
  const b = new Uint8Array(NBD_SIMPLE_REPLY_SIZE);
  writeSimpleReply(b, 0, error, handleHi, handleLo);
  return b;
}

/** Size of the header in front of read data in a structured reply: chunk header + offset. */
export const STRUCTURED_READ_HEADER_SIZE = NBD_STRUCTURED_REPLY_SIZE + 8;

/**
 * Write the header of a final NBD_REPLY_TYPE_OFFSET_DATA chunk (chunk
 * header and the 64-bit offset) for `dataLength` bytes of data that follow.
 */
export function writeStructuredReadHeader(
  b: Uint8Array,
  off: number,
  handleHi: number,
  handleLo: number,
  offset: number,
  dataLength: number,
): void {
  const v = view(b);
  v.setUint32(off, NBD_STRUCTURED_REPLY_MAGIC);
  v.setUint16(off + 4, NBD_REPLY_FLAG_DONE);
  v.setUint16(off + 6, NBD_REPLY_TYPE_OFFSET_DATA);
  v.setUint32(off + 8, handleHi);
  v.setUint32(off + 12, handleLo);
  v.setUint32(off + 16, 8 + dataLength);
  v.setUint32(off + 20, Math.floor(offset / TWO32));
  v.setUint32(off + 24, offset % TWO32);
}

/**
 * A final NBD_REPLY_TYPE_ERROR chunk: error, u16 message length, message
 * (cut to 4096 bytes of whole UTF-8 characters: the u16 could say more, but
 * proto.md's rule for strings applies).
 *
 * @example
 * ```ts
 * encodeStructuredError(h.hi, h.lo, NBD_EINVAL, "read past the end");
 * ```
 */
export function encodeStructuredError(
  handleHi: number,
  handleLo: number,
  error: number,
  message: string,
): Uint8Array {
  const m = encodeLimitedString(message);
  const b = new Uint8Array(NBD_STRUCTURED_REPLY_SIZE + 6 + m.length);
  const v = view(b);
  v.setUint32(0, NBD_STRUCTURED_REPLY_MAGIC);
  v.setUint16(4, NBD_REPLY_FLAG_DONE);
  v.setUint16(6, NBD_REPLY_TYPE_ERROR);
  v.setUint32(8, handleHi);
  v.setUint32(12, handleLo);
  v.setUint32(16, 6 + m.length);
  v.setUint32(20, error);
  v.setUint16(24, m.length);
  b.set(m, 26);
  return b;
}
