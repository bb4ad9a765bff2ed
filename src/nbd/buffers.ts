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
import type { Logger } from "../log.ts";
import { holdReclaimableSlack, lockBuffer, type ReclaimableSlack } from "../sys/process.ts";

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
  /** Memory held for the kernel to take back first (see reserveIoBuffers), if any. */
  slack: ReclaimableSlack | null = null;
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
 * Lazily freed memory a server holds besides its buffer reserve
 * ({@link holdReclaimableSlack}): what covers the growth no reserve can, V8's
 * JIT code, compiler zones, GC work lists and next heap pages. Measured with
 * the buffer reserve in place, uncapped, in the 4 s from 0.5 s into a
 * workload: 0.7-2.3 MiB of new anonymous memory (0.2-0.9 MiB from 5 s in).
 * Capped at exactly what `isboot serve` held (the fault matrix's memory-cap
 * row, 15 rows), the kernel took 0-4.7 MiB of an 8 MiB slack (reclaim frees
 * in batches, and a major GC in the window needs more): 16 MiB is over three
 * times the most taken. It costs no memory the system could not have back.
 */
export const SLACK_BYTES = 16 << 20;

/**
 * Fill `budget`'s pool reserve ({@link BufferPool.reserve}, by default as
 * many payload bytes as the budget lets in flight) and lock it in RAM
 * (mlock), then hold `slackBytes` of reclaimable slack ({@link SLACK_BYTES}),
 * logging what is held. Call before serving. Locking is skipped, with a
 * warning, where the kernel refuses it (no CAP_IPC_LOCK and a small
 * RLIMIT_MEMLOCK): the reserve is still allocated and resident.
 *
 * @example
 * ```ts
 * const budget = new IoBudget();
 * reserveIoBuffers(budget, log); // "I/O buffer reserve: 16.1 MiB, locked in RAM"
 * const server = new NbdServer({ exports, log, budget });
 * ```
 */
export function reserveIoBuffers(
  budget: IoBudget,
  log: Logger,
  reserveBytes: number = budget.maxBytes,
  slackBytes: number = SLACK_BYTES,
): void {
  const arena = budget.pool.reserve(reserveBytes);
  const mib = (n: number) => `${(n / (1 << 20)).toFixed(1)} MiB`;
  const what = `I/O buffer reserve: ${mib(arena.byteLength)}`;
  const locked = lockBuffer(arena);
  if (locked.ok) log.info(`${what}, locked in RAM`);
  else log.warn(`${what}, not locked in RAM: ${locked.error}`);
  if (slackBytes > 0) {
    const s = holdReclaimableSlack(slackBytes);
    if ("error" in s) log.warn(`no reclaimable slack: ${s.error}`);
    else {
      budget.slack = s.slack;
      log.info(`reclaimable slack: ${mib(s.slack.bytes)} (MADV_FREE: the kernel takes it first)`);
    }
  }
}

/** How long a buffer a failed request may still hold stays out of the reserve. */
const RETIRE_MS = 30_000;

/**
 * The reserve: one buffer cut into blocks by the buddy system (Knuth, TAOCP
 * vol. 1, 2.5). The unit is 4 KiB plus the pool's headroom, so a block of
 * 2^k units holds 2^k * 4 KiB of payload and a reply header in front of
 * it; a block is split to serve a smaller request and merged with its
 * buddy when both are free again. Any mix of requests whose blocks add up
 * to the arena fits, bar fragmentation.
 *
 * The free blocks of each order are a doubly linked list through two
 * arrays indexed by unit, used as a stack (the block given back last is the
 * next one taken, still warm in the caches): unlike a Set, nothing is
 * allocated per call, not even an iterator.
 */
class Arena {
  readonly buffer: ArrayBuffer;
  readonly #unit: number;
  readonly #maxOrder: number;
  /** Per order: the first unit of the free block on top of its stack, or -1. */
  readonly #head: Int32Array;
  /** Per unit, for a free block starting there: the next and previous on its order's list. */
  readonly #next: Int32Array;
  readonly #prev: Int32Array;
  /** Per unit: the order of the free block that starts there, or -1. */
  readonly #freeOrder: Int8Array;
  /** Per unit: the order of the block in use that starts there, or -1. */
  readonly #usedOrder: Int8Array;
  usedBytes = 0;

  constructor(units: number, unit: number) {
    this.#unit = unit;
    this.#maxOrder = Math.log2(units);
    this.buffer = new ArrayBuffer(units * unit);
    this.#head = new Int32Array(this.#maxOrder + 1).fill(-1);
    this.#next = new Int32Array(units);
    this.#prev = new Int32Array(units);
    this.#freeOrder = new Int8Array(units).fill(-1);
    this.#usedOrder = new Int8Array(units).fill(-1);
    this.#push(this.#maxOrder, 0);
  }

  #push(k: number, at: number): void {
    const h = this.#head[k];
    this.#next[at] = h;
    this.#prev[at] = -1;
    if (h >= 0) this.#prev[h] = at;
    this.#head[k] = at;
    this.#freeOrder[at] = k;
  }

  #remove(k: number, at: number): void {
    const n = this.#next[at], p = this.#prev[at];
    if (p >= 0) this.#next[p] = n;
    else this.#head[k] = n;
    if (n >= 0) this.#prev[n] = p;
    this.#freeOrder[at] = -1;
  }

  /** A block for `n` bytes as a view of exactly `n` bytes, or null when none is free. */
  alloc(n: number): Uint8Array | null {
    const want = Math.ceil(Math.log2(Math.max(1, Math.ceil(n / this.#unit))));
    if (want > this.#maxOrder) return null;
    let k = want;
    while (k <= this.#maxOrder && this.#head[k] < 0) k++;
    if (k > this.#maxOrder) return null;
    const at = this.#head[k];
    this.#remove(k, at);
    while (k > want) {
      k--;
      this.#push(k, at + (1 << k)); // the upper half stays free
    }
    this.#usedOrder[at] = want;
    this.usedBytes += (1 << want) * this.#unit;
    return new Uint8Array(this.buffer, at * this.#unit, n);
  }

  /** Give back a block alloc() returned, merging it with its free buddies. */
  free(b: Uint8Array): void {
    let at = b.byteOffset / this.#unit;
    let k = this.#usedOrder[at];
    if (k < 0) throw new Error("BufferPool: a reserve block given back twice");
    this.#usedOrder[at] = -1;
    this.usedBytes -= (1 << k) * this.#unit;
    while (k < this.#maxOrder) {
      const buddy = at ^ (1 << k);
      if (this.#freeOrder[buddy] !== k) break;
      this.#remove(k, buddy);
      at = Math.min(at, buddy);
      k++;
    }
    this.#push(k, at);
  }
}

/**
 * Reuses WRITE payload and READ reply buffers: a 1 MiB stream would
 * otherwise leave a megabyte of garbage per request, and V8 collects
 * external memory late (RSS climbs by tens to hundreds of MiB). Every
 * buffer has room for `headroom` bytes (a reply header in front of read
 * data) besides its power-of-two payload size from 4 KiB.
 *
 * Buffers come from, in this order:
 * - the reserve ({@link BufferPool.reserve}): one buffer allocated and
 *   touched before serving and never given up, cut into blocks as requests
 *   need them (see Arena), so that serving within it allocates nothing (a
 *   process capped at what it holds keeps serving; docs/faults.md, "Memory
 *   pressure");
 * - extra buffers, one per request size class, when the reserve has no
 *   block free (there is none, the request is bigger than the reserve, or it
 *   is full: a connection with nothing in flight is let in over the budget).
 *   At most `maxBytes` of them are kept free, as a working set, not a
 *   high-water mark: once per `trimIntervalMs` (checked on get/put, no timer)
 *   every size class gives up the extra buffers it did not need during the
 *   last interval (the fewest it held free at any moment).
 */
export class BufferPool {
  #arena: Arena | null = null;
  /** Free extra buffers, per class (buffer bytes, headroom included). */
  #free = new Map<number, ArrayBuffer[]>();
  /** Per class: fewest free extra buffers held at any moment since the last trim. */
  #low = new Map<number, number>();
  #held = 0;
  #allocations = 0;
  #lastTrim: number;
  constructor(
    private maxBytes: number,
    private headroom = 0,
    private trimIntervalMs = 1000,
    private now: () => number = Date.now,
  ) {
    this.#lastTrim = now();
  }

  /** Bytes of free extra buffers held (the reserve not counted). */
  get heldBytes(): number {
    return this.#held;
  }

  /** Bytes of the reserve, and how many of them requests hold now. */
  get reserved(): { bytes: number; inUseBytes: number } {
    return { bytes: this.#arena?.buffer.byteLength ?? 0, inUseBytes: this.#arena?.usedBytes ?? 0 };
  }

  /** Extra buffers allocated so far (requests the reserve could not serve). */
  get allocations(): number {
    return this.#allocations;
  }

  /**
   * Allocate the reserve: room for `payloadBytes` of payload (rounded up to
   * a power of two times 4 KiB) plus headroom per 4 KiB, every page written
   * to now so that it is resident and charged before serving, not during.
   * Returns it whole (for a caller that locks it in RAM). Once only.
   *
   * @example
   * ```ts
   * lockBuffer(pool.reserve(16 << 20)); // 16 MiB + 128 KiB
   * ```
   */
  reserve(payloadBytes: number): Uint8Array {
    if (this.#arena) throw new Error("BufferPool: reserve already made");
    let units = 1;
    while (units * 4096 < payloadBytes) units *= 2;
    this.#arena = new Arena(units, 4096 + this.headroom);
    const all = new Uint8Array(this.#arena.buffer);
    for (let p = 0; p < all.length; p += 4096) all[p] = 0;
    all[all.length - 1] = 0;
    return all;
  }

  /** A buffer of exactly `n` bytes (contents undefined). */
  get(n: number): Uint8Array {
    this.#maybeTrim();
    const block = this.#arena?.alloc(n);
    if (block) return block;
    const cls = sizeClass(Math.max(0, n - this.headroom)) + this.headroom;
    const list = this.#free.get(cls);
    const ab = list?.pop();
    if (ab) {
      this.#held -= cls;
      if (list!.length < (this.#low.get(cls) ?? 0)) this.#low.set(cls, list!.length);
      return new Uint8Array(ab, 0, n);
    }
    this.#allocations++;
    return new Uint8Array(new ArrayBuffer(cls), 0, n);
  }

  /** Give back a buffer from get(); kept if it is the reserve's or the pool has room. */
  put(b: Uint8Array): void {
    this.#maybeTrim();
    const ab = b.buffer as ArrayBuffer;
    if (ab === this.#arena?.buffer) {
      this.#arena.free(b);
      return;
    }
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

  /**
   * A buffer from get() that a failed request may still be written into or
   * sent from below (the device had it when it gave up): never reused at
   * once. An extra buffer is dropped; a block of the reserve comes back
   * after RETIRE_MS, when whatever held it has long let go.
   */
  retire(b: Uint8Array): void {
    if (b.buffer !== this.#arena?.buffer) return;
    const t = setTimeout(() => this.put(b), RETIRE_MS);
    Deno.unrefTimer(t);
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
