/**
 * The receive side of an NBD connection: one buffer that headers and
 * options are parsed from in place, and payloads read straight into their
 * own buffers.
 *
 * @example
 * ```ts
 * const r = new BufferedReader(stream);
 * if (await r.ensure(NBD_REQUEST_SIZE)) parseRequest(r.buf, r.start);
 * ```
 * @module
 */
import type { ByteStream } from "./stream.ts";

/** Size of the receive buffer each connection parses requests from. */
export const READ_BUFFER_SIZE = 256 * 1024;

/**
 * A receive buffer over a ByteStream: small messages (headers, options) are
 * parsed in place; payloads are copied from what is already buffered and
 * the rest is read straight into the payload's own buffer.
 */
export class BufferedReader {
  buf: Uint8Array;
  start = 0;
  end = 0;
  #dv: DataView;
  #eof = false;

  constructor(private stream: ByteStream, size = READ_BUFFER_SIZE) {
    this.buf = new Uint8Array(size);
    this.#dv = new DataView(this.buf.buffer);
  }

  /** Enlarge the buffer (keeping what is buffered), e.g. when transmission starts. */
  grow(size: number): void {
    if (this.buf.length >= size) return;
    const b = new Uint8Array(size);
    b.set(this.buf.subarray(this.start, this.end));
    this.end -= this.start;
    this.start = 0;
    this.buf = b;
    this.#dv = new DataView(b.buffer);
  }

  get available(): number {
    return this.end - this.start;
  }

  u32(off: number): number {
    return this.#dv.getUint32(off);
  }

  /** Ensure `n` (≤ buffer size) bytes are buffered. False at end of stream. */
  async ensure(n: number): Promise<boolean> {
    if (this.end - this.start >= n) return true;
    if (n > this.buf.length) throw new Error(`BufferedReader: ${n} exceeds buffer`);
    if (this.buf.length - this.start < n) {
      this.buf.copyWithin(0, this.start, this.end);
      this.end -= this.start;
      this.start = 0;
    }
    while (this.end - this.start < n) {
      if (this.#eof) return false;
      const got = await this.stream.read(this.buf.subarray(this.end));
      if (got === null || got === 0) {
        this.#eof = true;
        return false;
      }
      this.end += got;
    }
    return true;
  }

  /** Fill all of `dst`. False when the stream ends first. */
  async readInto(dst: Uint8Array): Promise<boolean> {
    const have = Math.min(this.end - this.start, dst.length);
    if (have > 0) {
      dst.set(this.buf.subarray(this.start, this.start + have));
      this.start += have;
    }
    let off = have;
    while (off < dst.length) {
      if (this.#eof) return false;
      const got = await this.stream.read(dst.subarray(off));
      if (got === null || got === 0) {
        this.#eof = true;
        return false;
      }
      off += got;
    }
    return true;
  }

  /** Read and drop `n` bytes, holding at most the buffer in memory. */
  async skip(n: number): Promise<boolean> {
    while (n > 0) {
      if (this.end === this.start) {
        this.start = this.end = 0;
        if (!(await this.ensure(1))) return false;
      }
      const take = Math.min(n, this.end - this.start);
      this.start += take;
      n -= take;
    }
    return true;
  }
}
