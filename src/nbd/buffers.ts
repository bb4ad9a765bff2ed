/**
 * What bounds an NBD server's memory: {@link IoBudget}, the cap on payload
 * bytes in flight that all connections of a server share, and its
 * {@link BufferPool} of payload and reply buffers.
 *
 * @example
 * ```ts
 * const budget = new IoBudget(8 << 20);
 * const buf = budget.pool.get(4096);
 * budget.pool.put(buf);
 * ```
 * @module
 */

/** Room for the reply header in front of read data: simple 16, structured 28 bytes. */
export const READ_HEADROOM = 32;

/**
 * Payload bytes in flight allowed by default, over all connections of a
 * server: 8 x 1 MiB or 64 x 256 KiB, enough to keep an iSCSI session's
 * command window busy (more only waits in the target's queue) while steady
 * RSS stays small (at most 64 MiB under load: docs/performance.md).
 */
export const DEFAULT_IN_FLIGHT_BYTES = 16 * 1024 * 1024;

/**
 * What connections share so that memory is bounded per server: a cap on
 * payload bytes of admitted, unreplied requests, and one pool of free
 * payload/reply buffers (at most the cap). A connection with nothing in
 * flight is always admitted (it cannot otherwise make progress), so the cap
 * can be exceeded by at most one request per connection.
 *
 * @example
 * ```ts
 * const budget = new IoBudget(8 << 20);
 * await Promise.all(streams.map((s) => serveTransmission(s, dev, { log, budget })));
 * ```
 */
export class IoBudget {
  readonly pool: BufferPool;
  #bytes = 0;
  #waiters: (() => void)[] = [];

  constructor(readonly maxBytes: number = DEFAULT_IN_FLIGHT_BYTES) {
    this.pool = new BufferPool(maxBytes, READ_HEADROOM);
  }

  /** Payload bytes admitted and not yet released. */
  get inFlightBytes(): number {
    return this.#bytes;
  }

  /** True when `cost` more bytes stay within the cap. */
  fits(cost: number): boolean {
    return this.#bytes + cost <= this.maxBytes;
  }

  take(cost: number): void {
    this.#bytes += cost;
  }

  /** Return `cost` bytes and wake every waiting connection (they re-check). */
  give(cost: number): void {
    this.#bytes -= cost;
    if (this.#waiters.length > 0) { for (const w of this.#waiters.splice(0)) w(); }
  }

  /** Resolves at the next give(). */
  changed(): Promise<void> {
    return new Promise<void>((r) => this.#waiters.push(r));
  }
}

/**
 * Reuses WRITE payload and READ reply buffers: a 1 MiB stream would
 * otherwise leave a megabyte of garbage per request, and V8 collects
 * external memory late (RSS climbs by tens to hundreds of MiB). Buffers come
 * in power-of-two sizes from 4 KiB, plus `headroom` bytes (room for a reply
 * header in front of read data, so that a 1 MiB read with its 16-byte
 * header is not a 2 MiB buffer); at most `maxBytes` are kept free.
 *
 * The pool keeps a working set, not a high-water mark: once per
 * `trimIntervalMs` (checked on get/put, no timer) every size class gives
 * up the free buffers it did not need during the last interval (the fewest
 * it held free at any moment). A switch from 1 MiB to 256 KiB requests
 * therefore stops holding the 1 MiB buffers after a second or two.
 */
export class BufferPool {
  #free = new Map<number, ArrayBuffer[]>();
  /** Per class: fewest free buffers held at any moment since the last trim. */
  #low = new Map<number, number>();
  #held = 0;
  #lastTrim: number;
  constructor(
    private maxBytes: number,
    private headroom = 0,
    private trimIntervalMs = 1000,
    private now: () => number = Date.now,
  ) {
    this.#lastTrim = now();
  }

  /** Bytes of free buffers held. */
  get heldBytes(): number {
    return this.#held;
  }

  /** A buffer of exactly `n` bytes (contents undefined). */
  get(n: number): Uint8Array {
    this.#maybeTrim();
    const cls = sizeClass(Math.max(0, n - this.headroom)) + this.headroom;
    const list = this.#free.get(cls);
    const ab = list?.pop();
    if (ab) {
      this.#held -= cls;
      if (list!.length < (this.#low.get(cls) ?? 0)) this.#low.set(cls, list!.length);
      return new Uint8Array(ab, 0, n);
    }
    return new Uint8Array(new ArrayBuffer(cls), 0, n);
  }

  /** Give back a buffer from get(); kept if the pool has room. */
  put(b: Uint8Array): void {
    this.#maybeTrim();
    const ab = b.buffer as ArrayBuffer;
    const cls = ab.byteLength;
    const body = cls - this.headroom;
    if (body < 0 || body !== sizeClass(body) || this.#held + cls > this.maxBytes) return;
    let list = this.#free.get(cls);
    if (!list) {
      this.#free.set(cls, list = []);
      this.#low.set(cls, 0); // needed during this interval
    }
    list.push(ab);
    this.#held += cls;
  }

  #maybeTrim(): void {
    const t = this.now();
    if (t - this.#lastTrim < this.trimIntervalMs) return;
    this.#lastTrim = t;
    for (const [cls, list] of this.#free) {
      const spare = Math.min(this.#low.get(cls) ?? list.length, list.length);
      if (spare > 0) {
        list.splice(0, spare); // the oldest first
        this.#held -= spare * cls;
      }
      this.#low.set(cls, list.length);
    }
  }
}

function sizeClass(n: number): number {
  let c = 4096;
  while (c < n) c *= 2;
  return c;
}
