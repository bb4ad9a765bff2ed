/**
 * One iSCSI connection: a TCP socket and PDU framing (RFC 7143 §11.2:
 * BHS, AHS, header digest, data segment, padding, data digest). It knows
 * nothing of commands or sequence numbers; the Session (session.ts) owns
 * those, so that recovery can throw a Connection away, open a new
 * one and carry on with the same Session state.
 *
 * Receive path: headers are read through a 64 KiB buffer; a data segment is
 * read straight into the buffer its consumer names (the caller's
 * `dataInBuffer` for Data-In), so bulk read data is never copied in user
 * space. Every header is bounds-checked (parseHeader) before use and every
 * digest is verified before the PDU is handed on.
 *
 * Send path: PDUs are queued and written by one writer that packs header
 * and data of small PDUs, and several small PDUs, into one write; large
 * data segments go out in place (Deno has no writev).
 *
 * The socket is a libc one driven by the reactor (sys/reactor.ts) when the
 * target's address is an IP literal (always, from the iBFT), so sends are
 * plain system calls; a host name goes through Deno.connect (which resolves
 * it) and Deno's own socket ops.
 */
import { OperationalError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { parseIp } from "../net/addr.ts";
import { ERRNO, SysError } from "../sys/errno.ts";
import { localAddress, type SocketBuffers } from "../sys/socket.ts";
import { connectTcp, nextTurn } from "../sys/reactor.ts";
import { type ByteStream, denoConnStream } from "../sys/stream.ts";
import { BHS_LENGTH, DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH, DIGEST_LENGTH } from "./constants.ts";
import type { Crc32c } from "./digest.ts";
import { IscsiProtocolError } from "./errors.ts";
import { padLength, parseHeader, type PduHeader } from "./pdu.ts";
import { formatPortal } from "./uri.ts";

/** A received PDU: its header and (possibly empty) data segment. */
export interface ReceivedPdu {
  header: PduHeader;
  /** The data segment; a view into the buffer `place` returned, or a fresh array. */
  data: Uint8Array;
}

/**
 * Chooses where a PDU's data segment goes, given its (already checked)
 * header: return a view of exactly `header.dataSegmentLength` bytes, or null
 * for a fresh buffer. Throwing IscsiProtocolError rejects the PDU.
 */
export type DataPlacer = (header: PduHeader) => Uint8Array | null;

/** Options for {@link Connection.connect}. */
export interface ConnectOptions {
  host: string;
  port: number;
  crc: Crc32c;
  log: Logger;
  /** TCP connect timeout (default 10 s). */
  timeoutMs?: number;
}

/**
 * Kernel buffers of the TCP socket (setSocketBuffers; the kernel doubles
 * them, 2 MiB each). Left to autotuning, the receive buffer of one
 * connection grew to 32 MiB (net.ipv4.tcp_rmem's maximum here) with 8-11 MiB
 * queued under 1 MiB reads: kernel memory the in-flight budget does not see.
 * A 2 MiB window still covers 1 ms of round trip at 10 Gb/s. Against the
 * build before, over tgtd on loopback (5 interleaved rounds on a busy
 * machine, medians): 1 MiB reads 164 -> 158 MB/s, 1 MiB writes 186 -> 175,
 * 4 KiB random reads at depth 32 6203 -> 6319 IOPS, each within the run's
 * spread (±30%); 2 MiB (4 MiB each) measured the same.
 */
export const SOCKET_BUFFERS: SocketBuffers = { send: 1 << 20, receive: 1 << 20 };
const RECV_BUFFER = 65536;
const SEND_BUFFER = 262144 + 1024;
/** Data segments at least this big are read/written in place rather than through our buffers. */
const DIRECT_THRESHOLD = 16384;
const EMPTY = new Uint8Array(0);
const ZERO_PAD = new Uint8Array(4);

interface OutPdu {
  bhs: Uint8Array;
  data: Uint8Array;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/** A host name: Deno.connect resolves it; the stream runs on Deno's own ops. */
async function connectByName(o: ConnectOptions, timeoutMs: number): Promise<ByteStream> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), timeoutMs);
  try {
    const tcp = await Deno.connect({ hostname: o.host, port: o.port, signal: ac.signal });
    tcp.setNoDelay(true);
    return denoConnStream(tcp);
  } catch (e) {
    throw ac.signal.aborted ? new SysError("connect", ERRNO.ETIMEDOUT) : e;
  } finally {
    clearTimeout(timer);
  }
}

/** A TCP connection carrying iSCSI PDUs. */
export class Connection {
  readonly #io: ByteStream;
  readonly #crc: Crc32c;
  readonly #log: Logger;
  /** `host:port` of the target, for messages. */
  readonly peer: string;
  /** Digests are switched on by login once full feature phase begins (§13.1). */
  headerDigest = false;
  dataDigest = false;
  /** Largest data segment we accept (what we declared; 8192 during login, §13.12). */
  maxRecvDataSegmentLength = DEFAULT_MAX_RECV_DATA_SEGMENT_LENGTH;

  readonly #rbuf = new Uint8Array(RECV_BUFFER);
  #rstart = 0;
  #rend = 0;
  readonly #sbuf = new Uint8Array(SEND_BUFFER);
  readonly #sview = new DataView(this.#sbuf.buffer);
  readonly #small = new Uint8Array(8);
  #queue: OutPdu[] = [];
  #writing = false;
  #closed = false;
  #closeReason: unknown = null;

  private constructor(io: ByteStream, crc: Crc32c, log: Logger, peer: string) {
    this.#io = io;
    this.#crc = crc;
    this.#log = log;
    this.peer = peer;
  }

  /**
   * Open a TCP connection to a portal (TCP_NODELAY on: PDUs are latency-bound).
   *
   * @example
   * ```ts
   * const c = await Connection.connect({ host: "::1", port: 3260, crc, log });
   * ```
   */
  static async connect(o: ConnectOptions): Promise<Connection> {
    const peer = formatPortal(o);
    const timeoutMs = o.timeoutMs ?? 10000;
    const ip = parseIp(o.host);
    let io: ByteStream;
    try {
      io = ip
        ? await connectTcp(ip, o.port, timeoutMs, undefined, SOCKET_BUFFERS)
        : await connectByName(o, timeoutMs);
    } catch (e) {
      const why = e instanceof SysError && e.is("ETIMEDOUT")
        ? "timed out"
        : e instanceof Error
        ? e.message
        : String(e);
      throw new OperationalError(`cannot connect to ${peer}: ${why}`);
    }
    o.log.debug(`connected to ${peer}`);
    return new Connection(io, o.crc, o.log, peer);
  }

  /**
   * A connection over a stream the caller opened (a socket made elsewhere,
   * or a scripted stream in a test).
   *
   * @example
   * ```ts
   * const c = Connection.over(stream, { crc, log, peer: "127.0.0.1:3260" });
   * ```
   */
  static over(io: ByteStream, o: { crc: Crc32c; log: Logger; peer: string }): Connection {
    return new Connection(io, o.crc, o.log, o.peer);
  }

  /**
   * The local address of the socket (`10.0.2.15`), which says the NIC a
   * path goes through; null when the stream is not a socket of ours or is
   * closed.
   */
  get local(): string | null {
    const fd = (this.#io as { fd?: unknown }).fd;
    if (this.#closed || typeof fd !== "number") return null;
    try {
      const a = localAddress(fd);
      return a.transport === "tcp" ? a.hostname : null;
    } catch {
      return null;
    }
  }

  /** True once closed (by us or by an error). */
  get closed(): boolean {
    return this.#closed;
  }

  /** Close the socket; pending sends fail. Idempotent. */
  close(reason: unknown = null): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closeReason = reason;
    this.#io.close();
    const q = this.#queue;
    this.#queue = [];
    for (const p of q) p.reject(this.#closedError());
  }

  #closedError(): Error {
    const r = this.#closeReason;
    if (r instanceof Error) return r;
    return new OperationalError(`connection to ${this.peer} closed`);
  }

  // ---- sending ------------------------------------------------------------

  /**
   * Queue a PDU: `bhs` is the 48-byte header (the caller may reuse it once
   * this returns), `data` the data segment (kept by reference until sent).
   * Resolves when the bytes are handed to the kernel.
   */
  send(bhs: Uint8Array, data: Uint8Array = EMPTY): Promise<void> {
    if (this.#closed) return Promise.reject(this.#closedError());
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ bhs: bhs.slice(0, BHS_LENGTH), data, resolve, reject });
      if (!this.#writing) {
        // Start the writer on the next turn, not now: the commands issued in
        // this turn then leave in one write (measured: ~10% less CPU at 4K QD32).
        this.#writing = true;
        void nextTurn().then(() => this.#writer());
      }
    });
  }

  async #writer(): Promise<void> {
    this.#writing = true;
    // PDUs taken off the queue and not yet handed to the kernel: when a write
    // fails they are failed with it. (close() fails only what is still
    // queued; a PDU lost here would leave its sender waiting for ever, as a
    // login whose request met a reset did.)
    let sending: OutPdu[] = [];
    try {
      while (this.#queue.length && !this.#closed) {
        // Pack as many queued PDUs as fit into the send buffer.
        let used = 0;
        while (this.#queue.length) {
          const p = this.#queue[0];
          const need = this.#wireLength(p.data.length);
          if (p.data.length >= DIRECT_THRESHOLD || used + need > SEND_BUFFER) {
            if (sending.length === 0 && p.data.length >= DIRECT_THRESHOLD) {
              this.#queue.shift();
              sending = [p];
              await this.#writeLarge(p);
              sending = [];
              p.resolve();
            }
            break;
          }
          this.#queue.shift();
          used = this.#frame(p, used);
          sending.push(p);
        }
        if (sending.length) {
          await this.#writeAll(this.#sbuf.subarray(0, used));
          const sent = sending;
          sending = [];
          for (const p of sent) p.resolve();
        }
      }
    } catch (e) {
      const err = e instanceof Error ? e : new OperationalError(String(e));
      const wrapped = err instanceof IscsiProtocolError || err instanceof OperationalError
        ? err
        : new OperationalError(`send to ${this.peer} failed: ${err.message}`);
      this.close(wrapped);
      for (const p of sending) p.reject(wrapped);
    } finally {
      this.#writing = false;
    }
  }

  #wireLength(dsl: number): number {
    let n = BHS_LENGTH + (this.headerDigest ? DIGEST_LENGTH : 0);
    if (dsl) n += dsl + padLength(dsl) + (this.dataDigest ? DIGEST_LENGTH : 0);
    return n;
  }

  /** Write header, data, padding and digests of `p` into the send buffer at `off`. */
  #frame(p: OutPdu, off: number): number {
    const b = this.#sbuf;
    b.set(p.bhs, off);
    off += BHS_LENGTH;
    if (this.headerDigest) {
      this.#sview.setUint32(off, this.#crc.digest(p.bhs), true);
      off += DIGEST_LENGTH;
    }
    const n = p.data.length;
    if (n) {
      b.set(p.data, off);
      const pad = padLength(n);
      b.fill(0, off + n, off + n + pad);
      if (this.dataDigest) {
        const d = this.#crc.digest(b.subarray(off, off + n + pad));
        this.#sview.setUint32(off + n + pad, d, true);
        off += DIGEST_LENGTH;
      }
      off += n + pad;
    }
    return off;
  }

  async #writeLarge(p: OutPdu): Promise<void> {
    const hlen = this.#frame({ ...p, data: EMPTY }, 0);
    await this.#writeAll(this.#sbuf.subarray(0, hlen));
    await this.#writeAll(p.data);
    const pad = padLength(p.data.length);
    let tail = pad;
    this.#small.fill(0);
    if (this.dataDigest) {
      const d = this.#crc.digest(p.data, ZERO_PAD.subarray(0, pad));
      new DataView(this.#small.buffer).setUint32(pad, d, true);
      tail += DIGEST_LENGTH;
    }
    if (tail) await this.#writeAll(this.#small.subarray(0, tail));
  }

  async #writeAll(b: Uint8Array): Promise<void> {
    if (this.#closed) throw this.#closedError();
    await this.#io.write(b);
  }

  // ---- receiving ----------------------------------------------------------

  /** Read more bytes into the receive buffer; false at EOF. */
  async #fill(): Promise<boolean> {
    if (this.#rstart === this.#rend) {
      this.#rstart = this.#rend = 0;
    } else if (this.#rend === this.#rbuf.length) {
      this.#rbuf.copyWithin(0, this.#rstart, this.#rend);
      this.#rend -= this.#rstart;
      this.#rstart = 0;
    }
    const n = await this.#read(this.#rbuf.subarray(this.#rend));
    if (n === null) return false;
    this.#rend += n;
    return true;
  }

  async #read(into: Uint8Array): Promise<number | null> {
    let n: number | null;
    try {
      n = await this.#io.read(into);
    } catch (e) {
      if (this.#closed) throw this.#closedError();
      throw new OperationalError(
        `connection to ${this.peer} failed: ${e instanceof Error ? e.message : String(e)}`,
      );
    }
    const error = this.#io.error;
    if (n === null && error && !this.#closed) {
      throw new OperationalError(`connection to ${this.peer} failed: ${error.message}`);
    }
    return n;
  }

  #eof(): OperationalError {
    if (this.#closed && this.#closeReason instanceof OperationalError) return this.#closeReason;
    return new OperationalError(`connection closed by ${this.peer}`);
  }

  /** `n` bytes as a view into the receive buffer, valid until the next read. */
  async #readExact(n: number): Promise<Uint8Array> {
    if (n > this.#rbuf.length) throw new IscsiProtocolError(`internal: read of ${n} bytes`);
    while (this.#rend - this.#rstart < n) {
      if (this.#rbuf.length - this.#rstart < n) {
        this.#rbuf.copyWithin(0, this.#rstart, this.#rend);
        this.#rend -= this.#rstart;
        this.#rstart = 0;
      }
      if (!(await this.#fill())) throw this.#eof();
    }
    const v = this.#rbuf.subarray(this.#rstart, this.#rstart + n);
    this.#rstart += n;
    return v;
  }

  /** Fill `dst` completely: buffered bytes first, then large reads straight into `dst`. */
  async #readInto(dst: Uint8Array): Promise<void> {
    let off = Math.min(dst.length, this.#rend - this.#rstart);
    dst.set(this.#rbuf.subarray(this.#rstart, this.#rstart + off));
    this.#rstart += off;
    while (off < dst.length) {
      const left = dst.length - off;
      if (left >= DIRECT_THRESHOLD) {
        const n = await this.#read(dst.subarray(off));
        if (n === null) throw this.#eof();
        off += n;
      } else {
        if (!(await this.#fill())) throw this.#eof();
        const n = Math.min(left, this.#rend - this.#rstart);
        dst.set(this.#rbuf.subarray(this.#rstart, this.#rstart + n), off);
        this.#rstart += n;
        off += n;
      }
    }
  }

  /**
   * Read one PDU. Checks the header (opcode, DataSegmentLength against what
   * we declared), the header digest, then reads the data segment into the
   * place `place` names and checks the data digest.
   */
  async readPdu(place?: DataPlacer): Promise<ReceivedPdu> {
    const bhs = (await this.#readExact(BHS_LENGTH)).slice();
    const header = parseHeader(bhs, { maxDataSegmentLength: this.maxRecvDataSegmentLength });
    const ahsLen = header.totalAhsLength;
    const ahs = ahsLen ? (await this.#readExact(ahsLen)).slice() : EMPTY;
    if (this.headerDigest) {
      const got = new DataView((await this.#readExact(DIGEST_LENGTH)).slice().buffer).getUint32(
        0,
        true,
      );
      const want = this.#crc.digest(bhs, ahs);
      if (got !== want) throw new IscsiProtocolError(`${header.name}: header digest mismatch`);
    }
    const dsl = header.dataSegmentLength;
    if (dsl === 0) return { header, data: EMPTY };
    let data = place?.(header) ?? null;
    if (data === null) data = new Uint8Array(dsl);
    else if (data.length !== dsl) {
      throw new IscsiProtocolError("internal: placed buffer has wrong length");
    }
    await this.#readInto(data);
    const pad = padLength(dsl);
    const padBytes = pad ? (await this.#readExact(pad)).slice() : EMPTY;
    if (this.dataDigest) {
      const got = new DataView((await this.#readExact(DIGEST_LENGTH)).slice().buffer).getUint32(
        0,
        true,
      );
      const want = this.#crc.digest(data, padBytes);
      if (got !== want) throw new IscsiProtocolError(`${header.name}: data digest mismatch`);
    }
    this.#log.debug(() => `recv ${header.name} itt=0x${header.itt.toString(16)} dsl=${dsl}`);
    return { header, data };
  }
}
