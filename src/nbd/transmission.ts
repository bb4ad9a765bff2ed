/**
 * The NBD transmission phase (proto.md "Transmission"), after the handshake
 * or on the kernel path without one.
 *
 * Pipelined: requests are parsed as they arrive and handed to the device
 * without waiting for earlier ones; replies go out in completion order
 * (proto.md allows any order), batched into few writes. Memory is bounded
 * for the whole server, not per connection: all connections share one
 * IoBudget, a request is admitted only while the bytes of
 * admitted-but-unreplied requests of all of them stay under its cap, and
 * payload and reply buffers come from its pool. Reading stops while a
 * connection's reply queue is full (a client that does not read its replies
 * stalls itself, nobody else).
 *
 * @example
 * ```ts
 * const flags = transmissionFlags(device);
 * await serveTransmission(new FdStream(fd), device, { flags, log });
 * ```
 * @module
 */
import type { BlockDevice } from "../blockdev.ts";
import type { Logger } from "../log.ts";
import { BlockSizeFilter } from "./blocksize.ts";
import { IoBudget } from "./buffers.ts";
import type { BufferPool } from "./buffers.ts";
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
  NBD_ENOSPC,
  NBD_EOVERFLOW,
  NBD_EPERM,
  NBD_ESHUTDOWN,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FAST_ZERO,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_MAX_PAYLOAD,
  NBD_REQUEST_SIZE,
  NBD_SIMPLE_REPLY_SIZE,
} from "./constants.ts";
import { nbdErrnoOf, RequestError } from "./errno.ts";
import { transmissionFlags } from "./export.ts";
import {
  encodeSimpleReply,
  encodeStructuredError,
  type NbdRequest,
  parseRequest,
  STRUCTURED_READ_HEADER_SIZE,
  writeSimpleReply,
  writeStructuredReadHeader,
} from "./protocol.ts";
import { BufferedReader } from "./reader.ts";
import { ReplyWriter } from "./reply_writer.ts";
import type { ByteStream } from "./stream.ts";

/** Reading stops while more than this waits in the reply queue. */
const REPLY_QUEUE_LIMIT = 8 * 1024 * 1024;
/**
 * After a drain began, how long a partly received request may still be
 * completed; then the drain stops anyway (what is lost is resent by the
 * kernel's request timeout, docs/kernel.md "Takeover").
 */
const DRAIN_GRACE_MS = 1000;

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
  /**
   * The size requests are checked against, in bytes. A handshake client is
   * held to the size it was told (NBD has no way to tell it of a change, so a
   * request past that end is refused the same way for the whole
   * connection); the kernel path shares one object among the device's
   * sockets and grows it just before the kernel is told of a new size
   * (nbd/attach.ts). Default: the device's size when the connection starts.
   */
  exportSize?: ExportSize;
}

/** A size in bytes that whoever holds the object may change (see TransmissionOptions.exportSize). */
export interface ExportSize {
  bytes: number;
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
    const t = new Transmission(
      stream,
      new BufferedReader(stream),
      new BlockSizeFilter(device),
      flags,
      structured,
      opts,
    );
    await t.run();
  } finally {
    if (counters) counters.activeConnections--;
  }
}

/**
 * The transmission phase of one connection: requests are validated against
 * the flags, admitted under the budget, run on the device (through a
 * BlockSizeFilter, so any alignment works) and answered in completion order.
 *
 * @example
 * ```ts
 * await new Transmission(stream, reader, new BlockSizeFilter(device), flags, false, { log }).run();
 * ```
 */
export class Transmission {
  #size: ExportSize;
  #writer: ReplyWriter;
  #inFlight = 0;
  /** Budget bytes held by read replies queued but not yet written. */
  #replyHeld = 0;
  #budget: IoBudget;
  #maxRequests: number;
  #idleWaiters: (() => void)[] = [];
  #stopping = false;
  #done: Promise<void> | null = null;
  /** Payload and reply buffers (the budget's pool, shared with other connections). */
  #pool: BufferPool;
  #log: Logger;
  #label: string;
  #drainSince: number | null = null;

  constructor(
    private stream: ByteStream,
    private reader: BufferedReader,
    private device: BlockSizeFilter,
    private flags: number,
    private structured: boolean,
    private opts: TransmissionOptions,
  ) {
    // Offsets and lengths are doubles (exact to 8 PiB) while parsed and checked.
    this.#size = opts.exportSize ?? { bytes: Number(device.size) };
    this.#budget = opts.budget ?? new IoBudget(opts.maxInFlightBytes);
    this.#pool = this.#budget.pool;
    this.#maxRequests = opts.maxInFlightRequests ?? 256;
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
        // a failure it may still be queued somewhere below, so it is retired.
        if (payload) this.#pool.put(payload);
        // A read's bytes stay counted until its reply is written (#holdUntilWritten).
        this.#release(req.type === NBD_CMD_READ ? 0 : cost);
      },
      (e) => {
        if (payload) this.#pool.retire(payload);
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
    if (offset + length > this.#size.bytes) {
      // proto.md "Error values": ENOSPC for writes beyond the end.
      const errno = type === NBD_CMD_WRITE || type === NBD_CMD_WRITE_ZEROES
        ? NBD_ENOSPC
        : NBD_EINVAL;
      return new RequestError(errno, `range ${offset}+${length} beyond size ${this.#size.bytes}`);
    }
    return null;
  }

  async #execute(req: NbdRequest, payload: Uint8Array | null): Promise<void> {
    const dev = this.device;
    const counters = this.opts.counters;
    const fua = (req.flags & NBD_CMD_FLAG_FUA) !== 0;
    switch (req.type) {
      case NBD_CMD_READ: {
        if (dev.readInto && dev.aligned(req.offset, req.length)) {
          await this.#readReply(req);
          return;
        }
        const data = await dev.read(BigInt(req.offset), req.length);
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
        await dev.write(BigInt(req.offset), payload!, fua ? { fua: true } : undefined);
        if (counters) counters.bytesWritten += req.length;
        break;
      case NBD_CMD_FLUSH:
        await dev.flush();
        break;
      case NBD_CMD_TRIM:
        await dev.trim(BigInt(req.offset), req.length);
        if (fua) await dev.flush();
        break;
      case NBD_CMD_WRITE_ZEROES:
        await dev.writeZeroes(BigInt(req.offset), req.length, {
          mayTrim: (req.flags & NBD_CMD_FLAG_NO_HOLE) === 0,
          fast: (req.flags & NBD_CMD_FLAG_FAST_ZERO) !== 0,
          fua,
        });
        break;
    }
    this.#writer.enqueue(encodeSimpleReply(0, req.handleHi, req.handleLo));
  }

  /**
   * An aligned READ on a device with readInto: the data goes straight into
   * a pooled buffer behind room for the reply header, and header and data
   * leave in one write; the buffer returns to the pool once written. After a
   * failed read the buffer is retired, not reused at once (the device may
   * still hold it). Nothing is allocated per request in steady state.
   */
  async #readReply(req: NbdRequest): Promise<void> {
    const dev = this.device;
    const hlen = this.structured ? STRUCTURED_READ_HEADER_SIZE : NBD_SIMPLE_REPLY_SIZE;
    const buf = this.#pool.get(hlen + req.length);
    try {
      await dev.readInto!(BigInt(req.offset), buf.subarray(hlen));
    } catch (e) {
      this.#pool.retire(buf);
      throw e;
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
