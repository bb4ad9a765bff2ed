/**
 * NBD server, generic over BlockDevice (src/blockdev.ts): `NbdServer.serve`
 * runs one client connection, the fixed newstyle handshake
 * (src/nbd/handshake.ts) and then the transmission phase
 * (src/nbd/transmission.ts). `serveTransmission` there runs the
 * transmission phase alone: the kernel path, where the kernel's nbd driver
 * was told size and flags over netlink and speaks requests at once.
 *
 * All connections of a server share one IoBudget (src/nbd/buffers.ts), so
 * nbdcopy's four connections cost what one does, and one BlockSizeFilter
 * per export (src/nbd/blocksize.ts).
 *
 * @example
 * ```ts
 * const server = new NbdServer({ exports: [{ name: "disk", device }], log });
 * for await (const conn of Deno.listen({ port: 10809 })) {
 *   void server.serve(denoConnStream(conn));
 * }
 * ```
 * @module
 */
import { BlockSizeFilter } from "./blocksize.ts";
import { IoBudget } from "./buffers.ts";
import type { NbdExport } from "./export.ts";
import { HANDSHAKE_BUFFER_SIZE, negotiate } from "./handshake.ts";
import { BufferedReader, READ_BUFFER_SIZE } from "./reader.ts";
import type { ByteStream } from "./stream.ts";
import {
  type NbdCounters,
  newCounters,
  Transmission,
  type TransmissionOptions,
} from "./transmission.ts";

interface Connection {
  stream: ByteStream;
  transmission: Transmission | null;
  stopping: boolean;
}

/** Options of an NbdServer. */
export interface NbdServerOptions extends TransmissionOptions {
  /** The exports; the first is the default (empty name). At least one. */
  exports: NbdExport[];
  /**
   * Connections served at once (default 128); more are closed at once, so
   * a flood of idle connections cannot exhaust memory.
   */
  maxConnections?: number;
  /** A client that has not finished negotiating after this long is dropped (default 30 s). */
  handshakeTimeoutMs?: number;
  /**
   * Before each handshake, ask every export's device for its size again
   * (BlockDevice.refreshSize: one READ CAPACITY for a LUN), so that a client
   * that connects after the LUN grew is told the new size even when the
   * target raised no UNIT ATTENTION (tgt raises none). Connected clients
   * keep the size they were told (docs/nbd.md, "Size changes").
   */
  refreshSizeOnConnect?: boolean;
}

/**
 * A server for any number of client connections over the same exports.
 *
 * @example
 * ```ts
 * const server = new NbdServer({ exports: [{ name: "memory", device }], log });
 * void server.serve(denoConnStream(conn));
 * await server.shutdown(); // on SIGTERM: finish in-flight requests, close connections
 * ```
 */
export class NbdServer {
  readonly counters: NbdCounters;
  #opts: NbdServerOptions;
  #connections = new Set<Connection>();
  /**
   * One BlockSizeFilter per export, shared by all its connections: their
   * read-modify-writes of a block are serialised.
   */
  #filters = new Map<NbdExport, BlockSizeFilter>();
  #budget: IoBudget;
  #nextId = 1;
  #shuttingDown = false;

  constructor(opts: NbdServerOptions) {
    if (opts.exports.length === 0) throw new Error("NbdServer: no exports");
    this.#opts = opts;
    this.counters = opts.counters ?? newCounters();
    this.#budget = opts.budget ?? new IoBudget(opts.maxInFlightBytes);
  }

  /** Connections open now. */
  get activeConnections(): number {
    return this.#connections.size;
  }

  /**
   * Run one client connection to its end: handshake, then transmission.
   * Never rejects; closes the stream on return.
   */
  async serve(stream: ByteStream): Promise<void> {
    const id = this.#nextId++;
    const label = `${this.#opts.label ?? "nbd"}[${id}]`;
    const log = this.#opts.log;
    if (this.#connections.size >= (this.#opts.maxConnections ?? 128)) {
      log.debug(`${label}: too many connections, refusing one`);
      stream.close();
      return;
    }
    const conn: Connection = { stream, transmission: null, stopping: this.#shuttingDown };
    this.#connections.add(conn);
    this.counters.connections++;
    this.counters.activeConnections++;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      if (conn.stopping) return;
      if (this.#opts.refreshSizeOnConnect) await this.#refreshSizes(label);
      // Small buffer while negotiating (options are at most MAX_OPTION_DATA).
      const reader = new BufferedReader(stream, HANDSHAKE_BUFFER_SIZE);
      timer = setTimeout(() => {
        log.debug(`${label}: handshake timed out`);
        stream.close();
      }, this.#opts.handshakeTimeoutMs ?? 30_000);
      const chosen = await negotiate(stream, reader, this.#opts.exports, {
        log,
        label,
        stopping: () => conn.stopping,
      });
      clearTimeout(timer);
      if (!chosen || conn.stopping) return;
      reader.grow(READ_BUFFER_SIZE);
      log.debug(() =>
        `${label}: transmission on export "${chosen.export.name}", flags 0x${
          chosen.flags.toString(16)
        }${chosen.structured ? ", structured replies" : ""}`
      );
      const t = new Transmission(
        stream,
        reader,
        this.#filterFor(chosen.export),
        chosen.flags,
        chosen.structured,
        { ...this.#opts, counters: this.counters, label, budget: this.#budget },
      );
      conn.transmission = t;
      await t.run();
    } catch (e) {
      log.debug(`${label}: ${e instanceof Error ? e.message : String(e)}`);
    } finally {
      clearTimeout(timer);
      stream.close();
      this.#connections.delete(conn);
      this.counters.activeConnections--;
    }
  }

  /**
   * Stop all connections: no new requests are taken (late ones get
   * ESHUTDOWN), in-flight ones finish and are answered, then the streams
   * close. Resolves when every connection has ended, or after `graceMs`.
   */
  async shutdown(graceMs = 10_000): Promise<void> {
    this.#shuttingDown = true;
    const waits: Promise<void>[] = [];
    for (const c of this.#connections) {
      c.stopping = true;
      if (c.transmission) waits.push(c.transmission.stop());
      else c.stream.close();
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all(waits),
      new Promise<void>((r) => (timer = setTimeout(r, graceMs))),
    ]);
    clearTimeout(timer);
    for (const c of this.#connections) c.stream.close();
  }

  /** Re-read each export's size; a failure leaves the old size and is logged. */
  async #refreshSizes(label: string): Promise<void> {
    for (const e of this.#opts.exports) {
      try {
        await e.device.refreshSize?.();
      } catch (err) {
        this.#opts.log.warn(
          `${label}: export "${e.name}": size not re-read: ${
            err instanceof Error ? err.message : err
          }`,
        );
      }
    }
  }

  #filterFor(e: NbdExport): BlockSizeFilter {
    let f = this.#filters.get(e);
    if (!f) this.#filters.set(e, f = new BlockSizeFilter(e.device));
    return f;
  }
}
