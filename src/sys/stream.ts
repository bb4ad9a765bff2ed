/**
 * The byte stream both protocol layers work over: the NBD server (nbd/) and
 * an iSCSI connection (iscsi/connection.ts). It is deliberately small so
 * that a socket driven by the reactor (reactor.ts), a `Deno.Conn`, a
 * `node:net` Socket and an in-memory pipe (tests) all fit.
 *
 * Contract:
 * - `read(into)` fills some of `into` and resolves the byte count, or null
 *   at end of stream (also after `close()` or a reset). It is never called
 *   again before the previous call settles.
 * - `write(data)` resolves once all of `data` was handed on; the caller may
 *   reuse `data` afterwards. Writes are issued one at a time. It rejects when
 *   the peer is gone.
 * - `close()` ends both directions; pending reads resolve null. Idempotent.
 *
 * @example
 * ```ts
 * const conn = await Deno.connect({ transport: "unix", path: "/run/x.sock" });
 * const stream = denoConnStream(conn);
 * await stream.write(new Uint8Array([1, 2, 3]));
 * ```
 * @module
 */

export interface ByteStream {
  read(into: Uint8Array): Promise<number | null>;
  write(data: Uint8Array): Promise<void>;
  close(): void;
  /** What ended the stream when it was not a clean end (a reset), if the stream knows. */
  readonly error?: Error | null;
}

/**
 * Wrap a Deno connection (`Deno.Conn`, `Deno.TcpConn`, `Deno.UnixConn`).
 *
 * @example
 * ```ts
 * for await (const conn of Deno.listen({ port: 0 })) server.serve(denoConnStream(conn));
 * ```
 */
export function denoConnStream(conn: Deno.Conn): ByteStream {
  let closed = false;
  return {
    async read(into) {
      if (closed) return null;
      try {
        return await conn.read(into);
      } catch {
        return null; // reset, or closed under us: the same as end of stream here
      }
    },
    async write(data) {
      let off = 0;
      while (off < data.length) off += await conn.write(data.subarray(off));
    },
    close() {
      if (closed) return;
      closed = true;
      try {
        conn.close();
      } catch {
        // already closed by the peer's reset
      }
    },
  };
}
