/**
 * A BlockDevice that takes byte ranges of any alignment and size over one
 * that takes whole logical blocks and at most `limits.maxTransfer` bytes a
 * call (like nbdkit's blocksize filter). NBD clients may send requests that
 * are not aligned to the device's block (those that honour
 * NBD_INFO_BLOCK_SIZE do not); the NBD server puts every export behind one.
 *
 * - Reads and writes longer than the device's transfer limit are split into
 *   pieces sent at once; a range that is not block-aligned is widened to the
 *   enclosing whole blocks.
 * - An unaligned write is a read-modify-write of its partial first and last
 *   blocks. All read-modify-writes through one filter are serialised, so two
 *   unaligned writes sharing a block never lose each other's bytes (an
 *   aligned write racing with one on the same block overlaps it in bytes,
 *   which a client may not rely on anyway). Share one filter per device.
 * - TRIM is advisory: only the whole blocks inside the range are trimmed.
 * - Write-zeroes zeroes the partial blocks by read-modify-write and the whole
 *   ones natively (`limits.canWriteZeroes`) or by writing zeros.
 *
 * Failures carry NBD error values (`RequestError`): EIO for a short read,
 * ENOTSUP for a fast zero that cannot be fast.
 *
 * @example
 * ```ts
 * const dev = new BlockSizeFilter(new MemoryDevice({ size: 1n << 20, blockSize: 4096 }));
 * await dev.write(100n, new Uint8Array([1, 2, 3])); // read-modify-write of block 0
 * (await dev.read(99n, 5)); // [0, 1, 2, 3, 0]
 * ```
 * @module
 */
import type { BlockDevice, BlockDeviceLimits } from "../blockdev.ts";
import { NBD_EIO, NBD_ENOTSUP, NBD_MAX_PAYLOAD } from "./constants.ts";
import { RequestError } from "./errno.ts";
import { validBlockSize } from "./export.ts";

/** Zero buffer used to emulate write-zeroes on devices without it. */
const ZERO_CHUNK = 1024 * 1024;

/** Runs async sections one at a time, in call order. */
class Mutex {
  #tail: Promise<unknown> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const r = this.#tail.then(fn);
    this.#tail = r.catch(() => {});
    return r;
  }
}

/** Options of write-zeroes through the filter: the device's, plus the NBD command's FUA. */
export interface ZeroOptions {
  mayTrim?: boolean;
  fast?: boolean;
  /** Every write it makes is FUA; native zeroing is followed by a flush. */
  fua?: boolean;
}

/** Byte-granular access to a block device; see the module comment. */
export class BlockSizeFilter implements BlockDevice {
  /** Any byte range is accepted. */
  readonly blockSize = 1;
  /** Present when the device has it: fills `into` with pieces read straight into it. */
  readonly readInto?: (offset: bigint, into: Uint8Array) => Promise<void>;
  /** The device's logical block (1 when it names none NBD can use). */
  readonly deviceBlockSize: number;
  /** Largest piece sent to the device in one call: a whole number of blocks. */
  readonly chunk: number;
  #rmw = new Mutex();
  #zeroes: Uint8Array | null = null;

  constructor(readonly device: BlockDevice) {
    this.deviceBlockSize = validBlockSize(device.blockSize) ? device.blockSize : 1;
    const bs = this.deviceBlockSize;
    const maxT = device.limits.maxTransfer > 0 ? device.limits.maxTransfer : NBD_MAX_PAYLOAD;
    this.chunk = Math.max(bs, Math.floor(Math.min(maxT, NBD_MAX_PAYLOAD) / bs) * bs);
    if (device.readInto) this.readInto = (o, into) => this.#readInto(Number(o), into);
  }

  get size(): bigint {
    return this.device.size;
  }

  get readOnly(): boolean {
    return this.device.readOnly;
  }

  /** The device's own (live: `canWriteZeroes` may turn false at run time). */
  get limits(): BlockDeviceLimits {
    return this.device.limits;
  }

  /** Whether a range is whole blocks of the device. */
  aligned(offset: number, length: number): boolean {
    const bs = this.deviceBlockSize;
    return bs === 1 || (offset % bs === 0 && length % bs === 0);
  }

  /**
   * An unaligned range reads the enclosing whole blocks and hands back a
   * view of them (no copy).
   */
  async read(offset: bigint, length: number): Promise<Uint8Array> {
    const o = Number(offset);
    if (this.aligned(o, length)) return await this.#read(o, length);
    const bs = this.deviceBlockSize;
    const a = Math.floor(o / bs) * bs;
    const e = Math.ceil((o + length) / bs) * bs;
    const d = await this.#read(a, e - a);
    return d.subarray(o - a, o - a + length);
  }

  write(offset: bigint, data: Uint8Array, opts?: { fua?: boolean }): Promise<void> {
    const o = Number(offset);
    const fua = opts?.fua ?? false;
    return this.aligned(o, data.length)
      ? this.#write(o, data, fua)
      : this.#writeUnaligned(o, data, fua);
  }

  flush(): Promise<void> {
    return this.device.flush();
  }

  async trim(offset: bigint, length: number): Promise<void> {
    const [start, end] = this.#interior(Number(offset), length);
    if (end > start) await this.device.trim(BigInt(start), end - start);
  }

  async writeZeroes(offset: bigint, length: number, opts: ZeroOptions = {}): Promise<void> {
    const o = Number(offset);
    const { mayTrim = false, fast = false, fua = false } = opts;
    const dev = this.device;
    // proto.md NBD_CMD_FLAG_FAST_ZERO: fail at once if zeroing is no faster than
    // writing, which is the case without native zeroing or with partial blocks.
    if (fast && (!dev.limits.canWriteZeroes || !this.aligned(o, length))) {
      throw new RequestError(NBD_ENOTSUP, "fast zeroing not possible for this request");
    }
    const [start, end] = this.#interior(o, length);
    if (start > o || end < o + length) await this.#zeroPartialBlocks(o, length, start, end, fua);
    if (end > start) {
      if (dev.limits.canWriteZeroes) {
        // `fast` goes down too: a device may learn only now that it
        // cannot zero natively, and must then fail instead of writing.
        await dev.writeZeroes(BigInt(start), end - start, { mayTrim, fast });
        if (fua) await dev.flush();
      } else {
        await this.#emulateZeroes(start, end - start, fua);
      }
    }
  }

  /** Closes the device. */
  close(): Promise<void> {
    return this.device.close();
  }

  /** The whole blocks inside [offset, offset+length) as [start, end). */
  #interior(offset: number, length: number): [number, number] {
    const bs = this.deviceBlockSize;
    return [Math.ceil(offset / bs) * bs, Math.floor((offset + length) / bs) * bs];
  }

  async #readInto(offset: number, into: Uint8Array): Promise<void> {
    if (!this.aligned(offset, into.length)) {
      into.set(await this.read(BigInt(offset), into.length));
      return;
    }
    const dev = this.device;
    if (into.length <= this.chunk) return await dev.readInto!(BigInt(offset), into);
    const parts: Promise<void>[] = [];
    for (let p = 0; p < into.length; p += this.chunk) {
      const n = Math.min(this.chunk, into.length - p);
      parts.push(dev.readInto!(BigInt(offset + p), into.subarray(p, p + n)));
    }
    // allSettled: no part may still be filling the buffer when we report.
    const results = await Promise.allSettled(parts);
    for (const r of results) if (r.status === "rejected") throw r.reason;
  }

  /** Read a range, split into device-sized pieces when needed. */
  async #read(offset: number, length: number): Promise<Uint8Array> {
    if (length <= this.chunk) {
      const d = await this.device.read(BigInt(offset), length);
      if (d.length !== length) throw new RequestError(NBD_EIO, "short read from device");
      return d;
    }
    const out = new Uint8Array(length);
    const parts: Promise<void>[] = [];
    for (let p = 0; p < length; p += this.chunk) {
      const n = Math.min(this.chunk, length - p);
      parts.push(
        this.device.read(BigInt(offset + p), n).then((d) => {
          if (d.length !== n) throw new RequestError(NBD_EIO, "short read from device");
          out.set(d, p);
        }),
      );
    }
    await Promise.all(parts);
    return out;
  }

  async #write(offset: number, data: Uint8Array, fua: boolean): Promise<void> {
    const opts = fua ? { fua: true } : undefined;
    if (data.length <= this.chunk) return await this.device.write(BigInt(offset), data, opts);
    const parts: Promise<void>[] = [];
    for (let p = 0; p < data.length; p += this.chunk) {
      const n = Math.min(this.chunk, data.length - p);
      parts.push(this.device.write(BigInt(offset + p), data.subarray(p, p + n), opts));
    }
    await Promise.all(parts);
  }

  /** Read-modify-write of the partial first and last blocks, one at a time per filter. */
  #writeUnaligned(offset: number, data: Uint8Array, fua: boolean): Promise<void> {
    return this.#rmw.run(async () => {
      const bs = this.deviceBlockSize;
      const a = Math.floor(offset / bs) * bs;
      const e = Math.ceil((offset + data.length) / bs) * bs;
      const buf = new Uint8Array(e - a);
      if (offset !== a) buf.set(await this.#read(a, bs), 0);
      if ((offset + data.length) % bs !== 0 && (e - bs > a || offset === a)) {
        buf.set(await this.#read(e - bs, bs), e - bs - a);
      }
      buf.set(data, offset - a);
      await this.#write(a, buf, fua);
    });
  }

  /** Zero the parts of [offset, offset+length) outside the whole blocks [start, end). */
  #zeroPartialBlocks(
    offset: number,
    length: number,
    start: number,
    end: number,
    fua: boolean,
  ): Promise<void> {
    const stop = offset + length;
    if (end <= start) {
      // Within one or two partial blocks and no whole one.
      return this.#writeUnaligned(offset, new Uint8Array(length), fua);
    }
    const parts: Promise<void>[] = [];
    if (offset < start) {
      parts.push(this.#writeUnaligned(offset, new Uint8Array(start - offset), fua));
    }
    if (stop > end) parts.push(this.#writeUnaligned(end, new Uint8Array(stop - end), fua));
    return Promise.all(parts).then(() => {});
  }

  async #emulateZeroes(offset: number, length: number, fua: boolean): Promise<void> {
    const step = Math.min(this.chunk, ZERO_CHUNK);
    this.#zeroes ??= new Uint8Array(step); // never written to: shared by all writes
    for (let p = 0; p < length; p += step) {
      const n = Math.min(step, length - p);
      await this.device.write(
        BigInt(offset + p),
        this.#zeroes.subarray(0, n),
        fua ? { fua: true } : undefined,
      );
    }
  }
}
