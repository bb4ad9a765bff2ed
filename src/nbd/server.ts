/**
 * NBD server, generic over BlockDevice (src/blockdev.ts).
 *
 * - `NbdServer.serve(stream)` runs the fixed newstyle handshake
 *   (proto.md "Fixed newstyle negotiation") and then the transmission
 *   phase on one client connection.
 * - `serveTransmission(stream, device, opts)` runs the transmission phase
 *   alone, with no handshake: the kernel path, where the kernel's nbd driver
 *   was told size and flags over netlink and speaks requests at once.
 *
 * Transmission is pipelined: requests are parsed as they arrive and handed
 * to the device without waiting for earlier ones; replies go out in
 * completion order (proto.md allows any order), batched into few writes.
 * Memory is bounded for the whole server, not per connection: all
 * connections share one IoBudget, a request is admitted only while the
 * bytes of admitted-but-unreplied requests of all of them stay under its
 * cap, and payload and reply buffers come from its pool (so nbdcopy's four
 * connections cost what one does). Reading stops while a connection's reply
 * queue is full (a client that does not read its replies stalls itself,
 * nobody else).
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
import type { BlockDevice } from "../blockdev.ts";
import type { Logger } from "../log.ts";
import {
  NBD_CMD_DISC,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLUSH,
  NBD_CMD_NAMES,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_EIO,
  NBD_ENOMEM,
  NBD_ENOSPC,
  NBD_ENOTSUP,
  NBD_EOVERFLOW,
  NBD_EPERM,
  NBD_ERRORS,
  NBD_ESHUTDOWN,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FAST_ZERO,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_NAME,
  NBD_KNOWN_CLIENT_FLAGS,
  NBD_MAX_PAYLOAD,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_NAMES,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_OPTION_HEADER_SIZE,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_SHUTDOWN,
  NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_SERVER,
  NBD_REQUEST_SIZE,
  NBD_SIMPLE_REPLY_SIZE,
} from "./constants.ts";
import {
  type BlockSizes,
  decodeString,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeOptionError,
  encodeOptionReply,
  encodeServerEntry,
  encodeSimpleReply,
  encodeStructuredError,
  type NbdRequest,
  parseInfoRequest,
  parseOptionHeader,
  parseRequest,
  STRUCTURED_READ_HEADER_SIZE,
  writeSimpleReply,
  writeStructuredReadHeader,
} from "./protocol.ts";
import type { ByteStream } from "./stream.ts";
import { nextTurn } from "../sys/reactor.ts";

// ------------------------------------------------------------------ public

/** One export: a name clients ask for and the device behind it. */
export interface NbdExport {
  /** Export name, e.g. `iqn.2026-11.test:disk1/0`; the first export is also the default (""). */
  name: string;
  /** Shown to clients that ask (NBD_INFO_DESCRIPTION, NBD_OPT_LIST). */
  description?: string;
  device: BlockDevice;
  /** Export read-only even if the device is writable. */
  readOnly?: boolean;
}

/**
 * Counters shared by all connections of one server (for `isboot status`).
 * Plain numbers: they are updated on the hot path.
 */
export interface NbdCounters {
  /** Connections accepted so far. */
  connections: number;
  /** Connections open now. */
  activeConnections: number;
  /** Transmission requests received. */
  requests: number;
  /** Bytes returned by successful reads. */
  bytesRead: number;
  /** Bytes stored by successful writes. */
  bytesWritten: number;
  /** Requests answered with an error. */
  errors: number;
}

/** Fresh zeroed counters. */
export function newCounters(): NbdCounters {
  return {
    connections: 0,
    activeConnections: 0,
    requests: 0,
    bytesRead: 0,
    bytesWritten: 0,
    errors: 0,
  };
}

/** Tuning and plumbing common to both entry points. */
export interface TransmissionOptions {
  log: Logger;
  counters?: NbdCounters;
  /**
   * The in-flight cap and buffer pool this connection shares with others
   * (an NbdServer gives all its connections one; so should a caller that
   * runs several `serveTransmission`s for one device). Default: a budget of
   * its own with `maxInFlightBytes`.
   */
  budget?: IoBudget;
  /**
   * Cap on payload bytes of admitted requests not yet replied to, when no
   * `budget` is given (default DEFAULT_IN_FLIGHT_BYTES).
   */
  maxInFlightBytes?: number;
  /** Cap on requests in flight per connection (default 256). */
  maxInFlightRequests?: number;
  /** Label for log lines (default `nbd`). */
  label?: string;
  /**
   * Drain (a takeover's hand-over, docs/kernel.md): once aborted, stop
   * reading at the next request boundary — requests already received are
   * still served, one partly received is finished (for at most
   * DRAIN_GRACE_MS) — answer everything read, then close the stream as
   * after NBD_CMD_DISC.
   */
  drain?: AbortSignal;
}

/** Options of `serveTransmission` (the kernel path). */
export interface ServeTransmissionOptions extends TransmissionOptions {
  /**
   * Transmission flags the kernel was given (NBD_ATTR_SERVER_FLAGS); they
   * decide which commands are accepted. Default: `transmissionFlags(device)`.
   */
  flags?: number;
  /** Use structured replies (the kernel does not: default false). */
  structuredReplies?: boolean;
}

/**
 * Transmission flags for a device (proto.md "Transmission flags"):
 * HAS_FLAGS always; READ_ONLY when write-protected; FLUSH; and for writable
 * devices FUA, WRITE_ZEROES, FAST_ZERO, and TRIM only when the device can
 * unmap. CAN_MULTI_CONN: every connection reaches the same device, which
 * has no per-connection cache, so a flush on one covers writes of all.
 * SEND_DF only with structured replies (we always send one data chunk).
 *
 * @example
 * ```ts
 * const flags = transmissionFlags(device); // pass to NBD_ATTR_SERVER_FLAGS and serveTransmission
 * ```
 */
export function transmissionFlags(
  device: BlockDevice,
  opts: { readOnly?: boolean; structuredReplies?: boolean } = {},
): number {
  let f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_CAN_MULTI_CONN;
  if (device.readOnly || opts.readOnly) {
    f |= NBD_FLAG_READ_ONLY;
  } else {
    f |= NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
    if (device.limits.canUnmap) f |= NBD_FLAG_SEND_TRIM;
  }
  if (opts.structuredReplies) f |= NBD_FLAG_SEND_DF;
  return f;
}

/**
 * Block size constraints advertised in NBD_INFO_BLOCK_SIZE: the minimum is
 * the device's logical block (requests not aligned to it still work, by
 * read-modify-write, but cost more), the
 * preferred is at least 4 KiB, the maximum payload is 32 MiB (larger device
 * limits are split internally, so clients never need to know them).
 *
 * @example
 * ```ts
 * blockSizes(device); // { minimum: 512, preferred: 4096, maximum: 33554432 }
 * ```
 */
export function blockSizes(device: BlockDevice): BlockSizes {
  const min = validBlockSize(device.blockSize) ? device.blockSize : 1;
  let preferred = Math.max(min, 4096);
  const opt = device.limits.optimalTransfer;
  if (opt && validPowerOfTwo(opt) && opt >= preferred && opt <= 65536) preferred = opt;
  return { minimum: min, preferred, maximum: NBD_MAX_PAYLOAD };
}

function validPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

function validBlockSize(n: number): boolean {
  return validPowerOfTwo(n) && n <= 65536;
}

/**
 * Serve an already-connected stream in transmission mode with no
 * handshake (the kernel path: one end of a socketpair given to the nbd
 * driver with NBD_CMD_CONNECT). Resolves when the peer sends NBD_CMD_DISC
 * or closes, or on a protocol violation; the stream is closed on return.
 * Never rejects.
 *
 * @example
 * ```ts
 * const flags = transmissionFlags(device);
 * // ... NBD_CMD_CONNECT with NBD_ATTR_SERVER_FLAGS = flags, the other socket end ...
 * await serveTransmission(new FdStream(fd), device, { flags, log });
 * ```
 */
export async function serveTransmission(
  stream: ByteStream,
  device: BlockDevice,
  opts: ServeTransmissionOptions,
): Promise<void> {
  const structured = opts.structuredReplies ?? false;
  const flags = opts.flags ?? transmissionFlags(device, { structuredReplies: structured });
  const counters = opts.counters;
  if (counters) {
    counters.connections++;
    counters.activeConnections++;
  }
  try {
    const t = new Transmission(stream, new BufferedReader(stream), device, flags, structured, opts);
    await t.run();
  } finally {
    if (counters) counters.activeConnections--;
  }
}

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
  /** One read-modify-write lock per export, shared by all its connections. */
  #rmwLocks = new Map<NbdExport, Mutex>();
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
      // Small buffer while negotiating (options are at most MAX_OPTION_DATA).
      const reader = new BufferedReader(stream, HANDSHAKE_BUFFER_SIZE);
      timer = setTimeout(() => {
        log.debug(`${label}: handshake timed out`);
        stream.close();
      }, this.#opts.handshakeTimeoutMs ?? 30_000);
      const chosen = await this.#negotiate(stream, reader, label, conn);
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
        chosen.export.device,
        chosen.flags,
        chosen.structured,
        { ...this.#opts, counters: this.counters, label, budget: this.#budget },
        this.#rmwLockFor(chosen.export),
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

  #rmwLockFor(e: NbdExport): Mutex {
    let m = this.#rmwLocks.get(e);
    if (!m) this.#rmwLocks.set(e, m = new Mutex());
    return m;
  }

  #findExport(name: string): NbdExport | undefined {
    if (name === "") return this.#opts.exports[0];
    return this.#opts.exports.find((e) => e.name === name);
  }

  #flagsFor(e: NbdExport, structured: boolean): number {
    return transmissionFlags(e.device, { readOnly: e.readOnly, structuredReplies: structured });
  }

  /**
   * Fixed newstyle option haggling. Returns the export and settings for
   * transmission, or null when the connection ends (ABORT, EOF, a protocol
   * violation, or an NBD_OPT_EXPORT_NAME we cannot satisfy).
   */
  async #negotiate(
    stream: ByteStream,
    reader: BufferedReader,
    label: string,
    conn: Connection,
  ): Promise<{ export: NbdExport; flags: number; structured: boolean } | null> {
    const log = this.#opts.log;
    await stream.write(encodeGreeting());
    if (!(await reader.ensure(4))) return null;
    const clientFlags = reader.u32(reader.start);
    reader.start += 4;
    if ((clientFlags & ~NBD_KNOWN_CLIENT_FLAGS) !== 0) {
      // proto.md "Client flags": the server MUST drop the connection.
      log.debug(`${label}: unknown client flags 0x${clientFlags.toString(16)}`);
      return null;
    }
    const noZeroes = (clientFlags & NBD_FLAG_C_NO_ZEROES) !== 0;
    let structured = false;

    for (;;) {
      if (!(await reader.ensure(NBD_OPTION_HEADER_SIZE))) return null;
      const hdr = parseOptionHeader(reader.buf, reader.start); // bad magic: throws, connection ends
      reader.start += NBD_OPTION_HEADER_SIZE;
      const { option, length } = hdr;
      log.debug(() => `${label}: option ${NBD_OPT_NAMES[option] ?? option}, ${length} bytes`);

      if (length > MAX_OPTION_DATA) {
        // Discard without holding it in memory, then refuse.
        if (option === NBD_OPT_EXPORT_NAME) return null; // cannot answer: hard disconnect
        if (!(await reader.skip(length))) return null;
        await stream.write(encodeOptionError(option, NBD_REP_ERR_TOO_BIG, "option data too long"));
        continue;
      }
      if (!(await reader.ensure(length))) return null;
      const data = reader.buf.slice(reader.start, reader.start + length);
      reader.start += length;

      if (conn.stopping && option !== NBD_OPT_ABORT) {
        if (option === NBD_OPT_EXPORT_NAME) return null;
        await stream.write(
          encodeOptionError(option, NBD_REP_ERR_SHUTDOWN, "server is shutting down"),
        );
        continue;
      }

      switch (option) {
        case NBD_OPT_EXPORT_NAME: {
          const name = decodeString(data);
          const e = name === null ? undefined : this.#findExport(name);
          if (!e) {
            // proto.md: an export that does not exist MUST terminate the session.
            log.debug(`${label}: NBD_OPT_EXPORT_NAME for unknown export`);
            return null;
          }
          const flags = this.#flagsFor(e, structured);
          await stream.write(encodeExportNameReply(e.device.size, flags, noZeroes));
          return { export: e, flags, structured };
        }
        case NBD_OPT_ABORT:
          try {
            await stream.write(encodeOptionReply(option, NBD_REP_ACK));
          } catch {
            // the client may close without waiting for the ACK (proto.md)
          }
          return null;
        case NBD_OPT_LIST: {
          if (length !== 0) {
            await stream.write(
              encodeOptionError(option, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data"),
            );
            break;
          }
          for (const e of this.#opts.exports) {
            await stream.write(
              encodeOptionReply(
                option,
                NBD_REP_SERVER,
                encodeServerEntry(e.name, e.description ?? ""),
              ),
            );
          }
          await stream.write(encodeOptionReply(option, NBD_REP_ACK));
          break;
        }
        case NBD_OPT_STRUCTURED_REPLY:
          if (length !== 0) {
            await stream.write(
              encodeOptionError(
                option,
                NBD_REP_ERR_INVALID,
                "NBD_OPT_STRUCTURED_REPLY takes no data",
              ),
            );
            break;
          }
          structured = true;
          await stream.write(encodeOptionReply(option, NBD_REP_ACK));
          break;
        case NBD_OPT_INFO:
        case NBD_OPT_GO: {
          const req = parseInfoRequest(data);
          if (!req) {
            await stream.write(
              encodeOptionError(option, NBD_REP_ERR_INVALID, "malformed NBD_OPT_INFO/GO data"),
            );
            break;
          }
          const e = this.#findExport(req.name);
          if (!e) {
            await stream.write(
              encodeOptionError(
                option,
                NBD_REP_ERR_UNKNOWN,
                `no export named "${req.name.slice(0, 256)}"`,
              ),
            );
            break;
          }
          const flags = this.#flagsFor(e, structured);
          const replies: Uint8Array[] = [
            encodeOptionReply(option, NBD_REP_INFO, encodeInfoExport(e.device.size, flags)),
          ];
          if (req.infos.includes(NBD_INFO_NAME)) {
            replies.push(
              encodeOptionReply(option, NBD_REP_INFO, encodeInfoString(NBD_INFO_NAME, e.name)),
            );
          }
          if (req.infos.includes(NBD_INFO_DESCRIPTION) && e.description) {
            replies.push(
              encodeOptionReply(
                option,
                NBD_REP_INFO,
                encodeInfoString(NBD_INFO_DESCRIPTION, e.description),
              ),
            );
          }
          // NBD_INFO_BLOCK_SIZE is sent even when not asked for (proto.md
          // allows it): clients that honour it never send unaligned or
          // oversized requests.
          replies.push(
            encodeOptionReply(option, NBD_REP_INFO, encodeInfoBlockSize(blockSizes(e.device))),
          );
          replies.push(encodeOptionReply(option, NBD_REP_ACK));
          await stream.write(concat(replies));
          if (option === NBD_OPT_GO) return { export: e, flags, structured };
          break;
        }
        default:
          // STARTTLS, meta contexts, extended headers and anything unknown.
          await stream.write(
            encodeOptionError(
              option,
              NBD_REP_ERR_UNSUP,
              `option ${NBD_OPT_NAMES[option] ?? option} not supported`,
            ),
          );
      }
    }
  }
}

// ---------------------------------------------------------------- internals

/** Option data beyond this is discarded and refused (a GO with a 4096-byte name is ~4.2 KiB). */
const MAX_OPTION_DATA = 16 * 1024;
/** Receive buffer while negotiating: the largest option we read, plus its header. */
const HANDSHAKE_BUFFER_SIZE = MAX_OPTION_DATA + 4096;
/** Size of the receive buffer each connection parses requests from. */
const READ_BUFFER_SIZE = 256 * 1024;
/** Replies smaller than this are copied into one batch buffer; larger ones are written as they are. */
const COALESCE_LIMIT = 64 * 1024;
const EMPTY = new Uint8Array(0);
/** Size of the batch buffer. */
const BATCH_BUFFER_SIZE = 256 * 1024;
/** Reading stops while more than this waits in the reply queue. */
const REPLY_QUEUE_LIMIT = 8 * 1024 * 1024;
/**
 * After a drain began, how long a partly received request may still be
 * completed; then the drain stops anyway (what is lost is resent by the
 * kernel's request timeout, docs/kernel.md "Takeover").
 */
const DRAIN_GRACE_MS = 1000;
/** Room for the reply header in front of read data: simple 16, structured 28 bytes. */
const READ_HEADROOM = 32;
/** Zero buffer used to emulate WRITE_ZEROES on devices without it. */
const ZERO_CHUNK = 1024 * 1024;

interface Connection {
  stream: ByteStream;
  transmission: Transmission | null;
  stopping: boolean;
}

function concat(parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

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

/**
 * The reply side of a connection: replies are queued as they complete and
 * written by one loop, small ones batched into a single write.
 */
class ReplyWriter {
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

/** A failure that maps to one NBD error value. */
class RequestError extends Error {
  constructor(readonly errno: number, message: string) {
    super(message);
  }
}

/** Errno names a BlockDevice may put in an error's `errno` (src/scsi does), as NBD values. */
const ERRNO_NAMES: Readonly<Record<string, number>> = {
  EPERM: NBD_EPERM,
  EIO: NBD_EIO,
  ENOMEM: NBD_ENOMEM,
  EINVAL: NBD_EINVAL,
  ENOSPC: NBD_ENOSPC,
  EDQUOT: NBD_ENOSPC, // proto.md: map EDQUOT and EFBIG to ENOSPC
  EFBIG: NBD_ENOSPC,
  EOVERFLOW: NBD_EOVERFLOW,
  EOPNOTSUPP: NBD_ENOTSUP,
  ENOTSUP: NBD_ENOTSUP,
  ESHUTDOWN: NBD_ESHUTDOWN,
  EROFS: NBD_EPERM,
};

/**
 * The NBD error for a device failure. A BlockDevice says what went wrong
 * through an `errno` property on the error it throws: a name such as
 * "EPERM" (write-protect), "ENOSPC" (out of space), "EINVAL", "EOPNOTSUPP"
 * (the SCSI layer's SenseError and request errors carry one), or an NBD
 * error number. Anything else is EIO.
 *
 * @example
 * ```ts
 * nbdErrnoOf(Object.assign(new Error("write protected"), { errno: "EPERM" })); // 1
 * ```
 */
export function nbdErrnoOf(e: unknown): number {
  if (e instanceof RequestError) return e.errno;
  if (typeof e === "object" && e !== null && "errno" in e) {
    const n = (e as { errno: unknown }).errno;
    if (typeof n === "string" && Object.hasOwn(ERRNO_NAMES, n)) return ERRNO_NAMES[n];
    if (typeof n === "number" && NBD_ERRORS.has(n)) return n;
  }
  return NBD_EIO;
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

/** Runs async sections one at a time, in call order. */
class Mutex {
  #tail: Promise<unknown> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const r = this.#tail.then(fn);
    this.#tail = r.catch(() => {});
    return r;
  }
}

/** The transmission phase of one connection. */
class Transmission {
  #size: number;
  #bs: number;
  #chunk: number;
  #writer: ReplyWriter;
  #inFlight = 0;
  /** Budget bytes held by read replies queued but not yet written. */
  #replyHeld = 0;
  #budget: IoBudget;
  #maxRequests: number;
  #idleWaiters: (() => void)[] = [];
  #stopping = false;
  #done: Promise<void> | null = null;
  #zeroes: Uint8Array | null = null;
  #rmw: Mutex;
  /** Payload and reply buffers (the budget's pool, shared with other connections). */
  #pool: BufferPool;
  #log: Logger;
  #label: string;
  #drainSince: number | null = null;

  constructor(
    private stream: ByteStream,
    private reader: BufferedReader,
    private device: BlockDevice,
    private flags: number,
    private structured: boolean,
    private opts: TransmissionOptions,
    rmwLock?: Mutex,
  ) {
    // Sizes are kept as doubles: exact to 8 PiB, no BigInt per request.
    this.#size = Number(device.size);
    this.#bs = validBlockSize(device.blockSize) ? device.blockSize : 1;
    const maxT = device.limits.maxTransfer > 0 ? device.limits.maxTransfer : NBD_MAX_PAYLOAD;
    this.#chunk = Math.max(
      this.#bs,
      Math.floor(Math.min(maxT, NBD_MAX_PAYLOAD) / this.#bs) * this.#bs,
    );
    this.#budget = opts.budget ?? new IoBudget(opts.maxInFlightBytes);
    this.#pool = this.#budget.pool;
    this.#maxRequests = opts.maxInFlightRequests ?? 256;
    this.#rmw = rmwLock ?? new Mutex();
    this.#log = opts.log;
    this.#label = opts.label ?? "nbd";
    this.#writer = new ReplyWriter(stream, (e) => {
      this.#log.debug(`${this.#label}: write failed: ${e instanceof Error ? e.message : e}`);
      stream.close(); // the peer is gone: stop reading too
      // The dropped replies never release their bytes: return them now, so
      // that neither this connection's #admit nor the other connections
      // sharing the budget wait for them.
      const held = this.#replyHeld;
      this.#replyHeld = 0;
      this.#budget.give(held);
    });
  }

  /** Stop taking requests, answer those in flight, close. */
  stop(): Promise<void> {
    this.#stopping = true;
    const done = this.#done ?? Promise.resolve();
    void this.#whenIdle().then(async () => {
      await this.#writer.drain();
      this.stream.close(); // unblocks the read loop
    });
    return done;
  }

  run(): Promise<void> {
    this.#done = this.#loop();
    return this.#done;
  }

  async #loop(): Promise<void> {
    const r = this.reader;
    const counters = this.opts.counters;
    try {
      for (;;) {
        if (this.#writer.queuedBytes > REPLY_QUEUE_LIMIT) {
          await this.#writer.waitBelow(REPLY_QUEUE_LIMIT / 2);
        }
        if (this.#writer.failed) break;
        const next = await this.#nextHeader();
        if (next === "drain") {
          this.#log.debug(`${this.#label}: drained at a request boundary`);
          break;
        }
        if (!next) {
          if (r.available > 0) this.#log.debug(`${this.#label}: truncated request, closing`);
          break;
        }
        let req: NbdRequest;
        try {
          req = parseRequest(r.buf, r.start);
        } catch (e) {
          this.#log.debug(`${this.#label}: ${(e as Error).message}, closing`);
          break;
        }
        r.start += NBD_REQUEST_SIZE;
        if (counters) counters.requests++;
        if (req.type === NBD_CMD_DISC) {
          this.#log.debug(`${this.#label}: NBD_CMD_DISC`);
          break;
        }
        let problem = this.#stopping
          ? new RequestError(NBD_ESHUTDOWN, "server is shutting down")
          : this.#validate(req);

        if (req.type === NBD_CMD_WRITE) {
          if (problem === null) {
            await this.#admit(req.length);
            const payload = this.#pool.get(req.length);
            if (!(await r.readInto(payload))) {
              this.#pool.put(payload);
              this.#release(req.length);
              this.#log.debug(`${this.#label}: truncated write payload, closing`);
              break;
            }
            // Re-check: a shutdown may have begun while we waited.
            if (this.#stopping) {
              this.#pool.put(payload);
              this.#release(req.length);
              problem = new RequestError(NBD_ESHUTDOWN, "server is shutting down");
            } else {
              this.#dispatch(req, payload, req.length);
              continue;
            }
          } else if (!(await r.skip(req.length))) {
            break;
          }
        }
        if (problem !== null) {
          this.#replyError(req, problem.errno, problem.message);
          continue;
        }
        const cost = req.type === NBD_CMD_READ ? req.length : 0;
        await this.#admit(cost);
        this.#dispatch(req, null, cost);
      }
    } catch (e) {
      this.#log.debug(`${this.#label}: ${e instanceof Error ? e.message : String(e)}`);
    } finally {
      // proto.md NBD_CMD_DISC: handle all outstanding requests, then close.
      await this.#whenIdle();
      await this.#writer.drain();
      this.stream.close();
    }
  }

  /** Wait until the request may start without exceeding the in-flight caps. */
  async #admit(cost: number): Promise<void> {
    // Only a connection holding nothing (no request running, no reply
    // queued) is let in over the cap: it could not otherwise make progress.
    while (
      (this.#inFlight > 0 || this.#replyHeld > 0) &&
      (this.#inFlight >= this.#maxRequests || !this.#budget.fits(cost)) &&
      !this.#writer.failed // the peer is gone: let the loop run to its end
    ) {
      await this.#budget.changed();
    }
    this.#inFlight++;
    this.#budget.take(cost);
  }

  /**
   * Keep `bytes` of the budget until the reply carrying them is written:
   * queued replies are memory too (a slow reader would otherwise let every
   * connection's reply queue fill while the budget looks free).
   */
  #holdUntilWritten(bytes: number): () => void {
    if (this.#writer.failed) {
      // enqueue() drops the reply and will never call back.
      this.#budget.give(bytes);
      return () => {};
    }
    this.#replyHeld += bytes;
    return () => {
      this.#replyHeld -= bytes;
      this.#budget.give(bytes);
    };
  }

  #release(cost: number): void {
    this.#inFlight--;
    this.#budget.give(cost);
    if (this.#inFlight === 0 && this.#idleWaiters.length > 0) {
      for (const w of this.#idleWaiters.splice(0)) w();
    }
  }

  /**
   * `reader.ensure(NBD_REQUEST_SIZE)`, or "drain" once `opts.drain` was
   * aborted and no byte of a next request has been received (a request
   * boundary), or the drain grace ran out.
   */
  #nextHeader(): Promise<boolean | "drain"> {
    const r = this.reader;
    const signal = this.opts.drain;
    if (!signal) return r.ensure(NBD_REQUEST_SIZE);
    if (signal.aborted) {
      this.#drainSince ??= Date.now();
      if (r.available === 0 || Date.now() - this.#drainSince > DRAIN_GRACE_MS) {
        return Promise.resolve("drain");
      }
      return r.ensure(NBD_REQUEST_SIZE);
    }
    if (r.available >= NBD_REQUEST_SIZE) return Promise.resolve(true);
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        if (r.available === 0) resolve("drain");
      };
      signal.addEventListener("abort", onAbort, { once: true });
      r.ensure(NBD_REQUEST_SIZE).then(resolve, reject).finally(() =>
        signal.removeEventListener("abort", onAbort)
      );
    });
  }

  #whenIdle(): Promise<void> {
    if (this.#inFlight === 0) return Promise.resolve();
    return new Promise<void>((res) => this.#idleWaiters.push(res));
  }

  #dispatch(req: NbdRequest, payload: Uint8Array | null, cost: number): void {
    this.#execute(req, payload).then(
      () => {
        // The device is done with a payload once its write resolved; after
        // a failure it may still be queued somewhere below, so it is dropped.
        if (payload) this.#pool.put(payload);
        // A read's bytes stay counted until its reply is written (#holdUntilWritten).
        this.#release(req.type === NBD_CMD_READ ? 0 : cost);
      },
      (e) => {
        const errno = nbdErrnoOf(e);
        this.#log.debug(() =>
          `${this.#label}: ${NBD_CMD_NAMES[req.type]} ${req.offset}+${req.length}: ${
            e instanceof Error ? e.message : String(e)
          }`
        );
        this.#replyError(req, errno, e instanceof Error ? e.message : "I/O error");
        this.#release(cost);
      },
    );
  }

  /** Check a request against the spec and the export; null when it may run. */
  #validate(req: NbdRequest): RequestError | null {
    const f = this.flags;
    const { type, flags, offset, length } = req;
    let allowed = 0;
    if (f & NBD_FLAG_SEND_FUA) allowed |= NBD_CMD_FLAG_FUA;
    switch (type) {
      case NBD_CMD_READ:
        if (f & NBD_FLAG_SEND_DF) allowed |= NBD_CMD_FLAG_DF;
        break;
      case NBD_CMD_WRITE:
      case NBD_CMD_FLUSH:
        break;
      case NBD_CMD_TRIM:
        if (!(f & NBD_FLAG_SEND_TRIM) && !(f & NBD_FLAG_READ_ONLY)) {
          return new RequestError(NBD_EINVAL, "NBD_CMD_TRIM not supported by this export");
        }
        break;
      case NBD_CMD_WRITE_ZEROES:
        if (!(f & NBD_FLAG_SEND_WRITE_ZEROES) && !(f & NBD_FLAG_READ_ONLY)) {
          return new RequestError(NBD_EINVAL, "NBD_CMD_WRITE_ZEROES not supported");
        }
        allowed |= NBD_CMD_FLAG_NO_HOLE;
        if (f & NBD_FLAG_SEND_FAST_ZERO) allowed |= NBD_CMD_FLAG_FAST_ZERO;
        break;
      default:
        return new RequestError(NBD_EINVAL, `unsupported command ${type}`);
    }
    if ((flags & ~allowed) !== 0) {
      return new RequestError(NBD_EINVAL, `invalid flags 0x${flags.toString(16)} for command`);
    }
    const writes = type === NBD_CMD_WRITE || type === NBD_CMD_TRIM ||
      type === NBD_CMD_WRITE_ZEROES;
    if (writes && (f & NBD_FLAG_READ_ONLY)) {
      return new RequestError(NBD_EPERM, "export is read-only");
    }
    if (type === NBD_CMD_FLUSH) {
      return offset === 0 && length === 0
        ? null
        : new RequestError(NBD_EINVAL, "NBD_CMD_FLUSH with nonzero offset or length");
    }
    if ((type === NBD_CMD_READ || type === NBD_CMD_WRITE) && length > NBD_MAX_PAYLOAD) {
      return new RequestError(NBD_EOVERFLOW, `length ${length} exceeds ${NBD_MAX_PAYLOAD}`);
    }
    if (length === 0) return new RequestError(NBD_EINVAL, "zero length");
    if (offset + length > this.#size) {
      // proto.md "Error values": ENOSPC for writes beyond the end.
      const errno = type === NBD_CMD_WRITE || type === NBD_CMD_WRITE_ZEROES
        ? NBD_ENOSPC
        : NBD_EINVAL;
      return new RequestError(errno, `range ${offset}+${length} beyond size ${this.#size}`);
    }
    return null;
  }

  #aligned(offset: number, length: number): boolean {
    return this.#bs === 1 || (offset % this.#bs === 0 && length % this.#bs === 0);
  }

  async #execute(req: NbdRequest, payload: Uint8Array | null): Promise<void> {
    const dev = this.device;
    const counters = this.opts.counters;
    const fua = (req.flags & NBD_CMD_FLAG_FUA) !== 0;
    switch (req.type) {
      case NBD_CMD_READ: {
        if (dev.readInto && this.#aligned(req.offset, req.length)) {
          await this.#readReply(req);
          return;
        }
        const data = this.#aligned(req.offset, req.length)
          ? await this.#read(req.offset, req.length)
          : await this.#readUnaligned(req.offset, req.length);
        if (counters) counters.bytesRead += req.length;
        if (this.structured) {
          const h = new Uint8Array(STRUCTURED_READ_HEADER_SIZE);
          writeStructuredReadHeader(h, 0, req.handleHi, req.handleLo, req.offset, req.length);
          this.#writer.enqueue(h, data, this.#holdUntilWritten(req.length));
        } else {
          const h = new Uint8Array(NBD_SIMPLE_REPLY_SIZE);
          writeSimpleReply(h, 0, 0, req.handleHi, req.handleLo);
          this.#writer.enqueue(h, data, this.#holdUntilWritten(req.length));
        }
        return;
      }
      case NBD_CMD_WRITE:
        if (this.#aligned(req.offset, req.length)) await this.#write(req.offset, payload!, fua);
        else await this.#writeUnaligned(req.offset, payload!, fua);
        if (counters) counters.bytesWritten += req.length;
        break;
      case NBD_CMD_FLUSH:
        await dev.flush();
        break;
      case NBD_CMD_TRIM: {
        // TRIM is advisory (proto.md): only whole blocks inside the range are trimmed.
        const [start, end] = this.#interior(req.offset, req.length);
        if (end > start) await dev.trim(BigInt(start), end - start);
        if (fua) await dev.flush();
        break;
      }
      case NBD_CMD_WRITE_ZEROES: {
        const mayTrim = (req.flags & NBD_CMD_FLAG_NO_HOLE) === 0;
        const fast = (req.flags & NBD_CMD_FLAG_FAST_ZERO) !== 0;
        // proto.md NBD_CMD_FLAG_FAST_ZERO: fail at once if zeroing is no faster than
        // writing, which is the case without native zeroing or with partial blocks.
        if (fast && (!dev.limits.canWriteZeroes || !this.#aligned(req.offset, req.length))) {
          throw new RequestError(NBD_ENOTSUP, "fast zeroing not possible for this request");
        }
        const [start, end] = this.#interior(req.offset, req.length);
        if (start > req.offset || end < req.offset + req.length) {
          await this.#zeroPartialBlocks(req.offset, req.length, start, end, fua);
        }
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
        break;
      }
    }
    this.#writer.enqueue(encodeSimpleReply(0, req.handleHi, req.handleLo));
  }

  /**
   * An aligned READ on a device with readInto: the data goes straight into
   * a pooled buffer behind room for the reply header, and header and data
   * leave in one write; the buffer returns to the pool once written. After a
   * failed read the buffer is dropped, not pooled (the device may still
   * hold it). Nothing is allocated per request in steady state.
   */
  async #readReply(req: NbdRequest): Promise<void> {
    const dev = this.device;
    const hlen = this.structured ? STRUCTURED_READ_HEADER_SIZE : NBD_SIMPLE_REPLY_SIZE;
    const buf = this.#pool.get(hlen + req.length);
    const data = buf.subarray(hlen);
    if (req.length <= this.#chunk) {
      await dev.readInto!(BigInt(req.offset), data);
    } else {
      const parts: Promise<void>[] = [];
      for (let p = 0; p < req.length; p += this.#chunk) {
        const n = Math.min(this.#chunk, req.length - p);
        parts.push(dev.readInto!(BigInt(req.offset + p), data.subarray(p, p + n)));
      }
      // allSettled: no part may still be filling the buffer when we report.
      const results = await Promise.allSettled(parts);
      for (const r of results) if (r.status === "rejected") throw r.reason;
    }
    if (this.opts.counters) this.opts.counters.bytesRead += req.length;
    if (this.structured) {
      writeStructuredReadHeader(buf, 0, req.handleHi, req.handleLo, req.offset, req.length);
    } else {
      writeSimpleReply(buf, 0, 0, req.handleHi, req.handleLo);
    }
    const release = this.#holdUntilWritten(req.length);
    this.#writer.enqueue(buf, undefined, () => {
      this.#pool.put(buf);
      release();
    });
  }

  /** The whole blocks inside [offset, offset+length) as [start, end). */
  #interior(offset: number, length: number): [number, number] {
    const bs = this.#bs;
    return [Math.ceil(offset / bs) * bs, Math.floor((offset + length) / bs) * bs];
  }

  /**
   * An unaligned read: read the enclosing whole blocks, hand back a view
   * (no copy). Clients that honour NBD_INFO_BLOCK_SIZE never get here.
   */
  async #readUnaligned(offset: number, length: number): Promise<Uint8Array> {
    const bs = this.#bs;
    const a = Math.floor(offset / bs) * bs;
    const e = Math.ceil((offset + length) / bs) * bs;
    const d = await this.#read(a, e - a);
    return d.subarray(offset - a, offset - a + length);
  }

  /**
   * An unaligned write: read-modify-write of the partial first and last
   * blocks (like nbdkit's blocksize filter). All read-modify-writes of one
   * device are serialised, so two unaligned writes sharing a block never
   * lose each other's bytes; an aligned write racing with one on the same
   * block overlaps it in bytes, which the client may not rely on anyway.
   */
  #writeUnaligned(offset: number, data: Uint8Array, fua: boolean): Promise<void> {
    return this.#rmw.run(async () => {
      const bs = this.#bs;
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

  /** Read a range, split into device-sized pieces when needed. */
  async #read(offset: number, length: number): Promise<Uint8Array> {
    if (length <= this.#chunk) {
      const d = await this.device.read(BigInt(offset), length);
      if (d.length !== length) throw new RequestError(NBD_EIO, "short read from device");
      return d;
    }
    const out = new Uint8Array(length);
    const parts: Promise<void>[] = [];
    for (let p = 0; p < length; p += this.#chunk) {
      const n = Math.min(this.#chunk, length - p);
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
    if (data.length <= this.#chunk) return await this.device.write(BigInt(offset), data, opts);
    const parts: Promise<void>[] = [];
    for (let p = 0; p < data.length; p += this.#chunk) {
      const n = Math.min(this.#chunk, data.length - p);
      parts.push(this.device.write(BigInt(offset + p), data.subarray(p, p + n), opts));
    }
    await Promise.all(parts);
  }

  async #emulateZeroes(offset: number, length: number, fua: boolean): Promise<void> {
    const step = Math.min(this.#chunk, ZERO_CHUNK);
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

  #replyError(req: NbdRequest, errno: number, message: string): void {
    if (this.opts.counters) this.opts.counters.errors++;
    // proto.md: with structured replies a READ MUST get a structured reply;
    // errors SHOULD be structured so the message reaches the user.
    this.#writer.enqueue(
      this.structured
        ? encodeStructuredError(req.handleHi, req.handleLo, errno, message)
        : encodeSimpleReply(errno, req.handleHi, req.handleLo),
    );
  }
}

/** Option data above this size is refused with NBD_REP_ERR_TOO_BIG (exported for tests). */
export const MAX_OPTION_DATA_BYTES = MAX_OPTION_DATA;
