/**
 * Byte streams for the NBD server besides the reactor's sockets
 * (sys/reactor.ts): a `node:net` Socket and an in-memory pipe (tests). The
 * contract they keep, `ByteStream`, is in sys/stream.ts and re-exported here.
 *
 * @example
 * ```ts
 * const [client, server] = memoryStreamPair();
 * void nbd.serve(server);
 * ```
 * @module
 */
import type { Socket } from "node:net";
import type { ByteStream } from "../sys/stream.ts";

export { type ByteStream, denoConnStream } from "../sys/stream.ts";

/**
 * Wrap a `node:net` Socket, e.g. `new net.Socket({ fd })` around one end of
 * a socketpair made through FFI. No path in src/ uses it (the kernel's
 * socketpair ends are `FdStream`s, src/sys/reactor.ts); it lets the server
 * run over node sockets (tests/nbd/node_stream_test.ts). Incoming
 * chunks are queued and the socket is paused while more than `highWater`
 * bytes wait, so memory stays bounded. `close()` calls `destroy()`, which
 * (measured) does not shut the socket down for other holders of the fd.
 *
 * @example
 * ```ts
 * const net = await import("node:net");
 * const stream = nodeSocketStream(new net.Socket({ fd, readable: true, writable: true }));
 * ```
 */
export function nodeSocketStream(sock: Socket, highWater = 4 * 1024 * 1024): ByteStream {
  const chunks: Uint8Array[] = [];
  let queued = 0;
  let ended = false;
  let closed = false;
  let waiter: (() => void) | null = null;
  const wake = () => {
    const w = waiter;
    waiter = null;
    w?.();
  };
  sock.on("data", (b: Uint8Array) => {
    chunks.push(b);
    queued += b.length;
    if (queued > highWater) sock.pause();
    wake();
  });
  sock.on("end", () => {
    ended = true;
    wake();
  });
  sock.on("close", () => {
    ended = true;
    wake();
  });
  sock.on("error", () => {
    ended = true;
    wake();
  });
  return {
    async read(into) {
      while (chunks.length === 0) {
        if (ended || closed) return null;
        await new Promise<void>((r) => (waiter = r));
      }
      let n = 0;
      while (n < into.length && chunks.length > 0) {
        const c = chunks[0];
        const take = Math.min(c.length, into.length - n);
        into.set(take === c.length ? c : c.subarray(0, take), n);
        n += take;
        if (take === c.length) chunks.shift();
        else chunks[0] = c.subarray(take);
      }
      queued -= n;
      if (queued <= highWater && sock.isPaused()) sock.resume();
      return n;
    },
    write(data) {
      return new Promise<void>((resolve, reject) => {
        if (closed || sock.destroyed) {
          reject(new Error("socket closed"));
          return;
        }
        sock.write(data, (err?: Error | null) => (err ? reject(err) : resolve()));
      });
    },
    close() {
      if (closed) return;
      closed = true;
      sock.destroy();
      wake();
    },
  };
}

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
