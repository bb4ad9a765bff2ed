/**
 * The reply side of an NBD connection: replies are queued as they complete
 * and written by one loop, small ones batched into a single write.
 *
 * @example
 * ```ts
 * const w = new ReplyWriter(stream, (e) => log.debug(String(e)));
 * w.enqueue(encodeSimpleReply(0, handleHi, handleLo));
 * await w.drain();
 * ```
 * @module
 */
import type { ByteStream } from "./stream.ts";
import { nextTurn } from "../sys/reactor.ts";

/** Replies smaller than this are copied into one batch buffer; larger ones are written as they are. */
const COALESCE_LIMIT = 64 * 1024;
const EMPTY = new Uint8Array(0);
/** Size of the batch buffer. */
const BATCH_BUFFER_SIZE = 256 * 1024;

/** Queues replies and writes them in batches; see the module comment. */
export class ReplyWriter {
  #queue: Uint8Array[] = [];
  /** Per queued item: called once its bytes were copied into a batch or written (or undefined). */
  #release: ((() => void) | undefined)[] = [];
  #queued = 0;
  #running = false;
  #failed = false;
  #batch = EMPTY; // allocated on first use: idle connections cost little
  #waiters: (() => void)[] = [];

  constructor(private stream: ByteStream, private onFail: (e: unknown) => void) {}

  /** Bytes queued or copied into the batch and not yet written to the stream. */
  get queuedBytes(): number {
    return this.#queued;
  }

  get failed(): boolean {
    return this.#failed;
  }

  /**
   * Queue `a` (then `b`) for writing. `release`, if given, is called once
   * the last of them has been copied into a batch or written, i.e. when the
   * caller may reuse its buffer; never when writing failed.
   */
  enqueue(a: Uint8Array, b?: Uint8Array, release?: () => void): void {
    if (this.#failed) return;
    this.#queue.push(a);
    this.#release.push(b ? undefined : release);
    this.#queued += a.length;
    if (b) {
      this.#queue.push(b);
      this.#release.push(release);
      this.#queued += b.length;
    }
    if (!this.#running) void this.#run();
  }

  /** Resolves when the queue holds at most `limit` bytes (or writing failed). */
  async waitBelow(limit: number): Promise<void> {
    while (this.#queued > limit && !this.#failed) {
      await new Promise<void>((r) => this.#waiters.push(r));
    }
  }

  /** Resolves when everything queued has been written (or writing failed). */
  drain(): Promise<void> {
    return this.waitBelow(0);
  }

  async #run(): Promise<void> {
    this.#running = true;
    if (this.#batch.length === 0) this.#batch = new Uint8Array(BATCH_BUFFER_SIZE);
    // Yield to the next event-loop turn so that every reply completed from one
    // receive buffer joins one batch (one write instead of one per reply).
    await nextTurn();
    try {
      while (this.#queue.length > 0) {
        const items = this.#queue;
        const releases = this.#release;
        this.#queue = [];
        this.#release = [];
        // Bytes copied into the batch stay counted in #queued until the batch
        // is written: drain() must not resolve (and the stream be closed)
        // while the last batch still waits for room in the stream.
        let fill = 0;
        for (let i = 0; i < items.length; i++) {
          const item = items[i];
          if (item.length < COALESCE_LIMIT) {
            if (fill + item.length > this.#batch.length) fill = await this.#flush(fill);
            this.#batch.set(item, fill);
            fill += item.length;
          } else {
            if (fill > 0) fill = await this.#flush(fill);
            await this.stream.write(item);
            this.#queued -= item.length;
          }
          releases[i]?.();
        }
        if (fill > 0) await this.#flush(fill);
        this.#wake();
      }
    } catch (e) {
      this.#failed = true;
      this.#queue = [];
      this.#release = [];
      this.#queued = 0;
      this.onFail(e);
    } finally {
      this.#running = false;
      this.#wake();
    }
  }

  /** Write the first `fill` bytes of the batch; returns the new fill, 0. */
  async #flush(fill: number): Promise<number> {
    await this.stream.write(this.#batch.subarray(0, fill));
    this.#queued -= fill;
    return 0;
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }
}
