/**
 * Byte streams for the NBD server besides the reactor's sockets
 * (sys/reactor.ts): an in-memory pipe (tests). The
 * contract they keep, `ByteStream`, is in sys/stream.ts and re-exported here.
 *
 * @example
 * ```ts
 * const [client, server] = memoryStreamPair();
 * void nbd.serve(server);
 * ```
 * @module
 */
import type { ByteStream } from "../sys/stream.ts";

export { type ByteStream, denoConnStream } from "../sys/stream.ts";

/**
 * Two connected in-memory streams (for tests): what one writes the other
 * reads. Each direction holds at most `capacity` bytes; a writer waits for
 * the reader beyond that, so a peer that never reads exerts backpressure
 * the way a full socket buffer does. `bufferedBytes()` reports what waits
 * in both directions.
 *
 * @example
 * ```ts
 * const [client, server] = memoryStreamPair();
 * void nbd.serve(server);
 * await client.write(bytes);
 * ```
 */
export function memoryStreamPair(
  capacity = 1024 * 1024,
): [ByteStream & { bufferedBytes(): number }, ByteStream & { bufferedBytes(): number }] {
  const ab = new Pipe(capacity);
  const ba = new Pipe(capacity);
  const end = (rx: Pipe, tx: Pipe) => ({
    read: (into: Uint8Array) => rx.read(into),
    write: (data: Uint8Array) => tx.write(data),
    close: () => {
      rx.close();
      tx.close();
    },
    bufferedBytes: () => ab.size + ba.size,
  });
  return [end(ba, ab), end(ab, ba)];
}

class Pipe {
  #chunks: Uint8Array[] = [];
  size = 0;
  #closed = false;
  #readWaiters: (() => void)[] = [];
  #writeWaiters: (() => void)[] = [];
  constructor(readonly capacity: number) {}

  #wake(list: (() => void)[]): void {
    for (const w of list.splice(0)) w();
  }

  async read(into: Uint8Array): Promise<number | null> {
    while (this.#chunks.length === 0) {
      if (this.#closed) return null;
      await new Promise<void>((r) => this.#readWaiters.push(r));
    }
    let n = 0;
    while (n < into.length && this.#chunks.length > 0) {
      const c = this.#chunks[0];
      const take = Math.min(c.length, into.length - n);
      into.set(c.subarray(0, take), n);
      n += take;
      if (take === c.length) this.#chunks.shift();
      else this.#chunks[0] = c.subarray(take);
    }
    this.size -= n;
    this.#wake(this.#writeWaiters);
    return n;
  }

  async write(data: Uint8Array): Promise<void> {
    let off = 0;
    while (off < data.length) {
      if (this.#closed) throw new Error("pipe closed");
      if (this.size >= this.capacity) {
        await new Promise<void>((r) => this.#writeWaiters.push(r));
        continue;
      }
      const take = Math.min(data.length - off, this.capacity - this.size);
      this.#chunks.push(data.slice(off, off + take)); // copy: the writer may reuse its buffer
      this.size += take;
      off += take;
      this.#wake(this.#readWaiters);
    }
  }

  close(): void {
    this.#closed = true;
    this.#wake(this.#readWaiters);
    this.#wake(this.#writeWaiters);
  }
}
