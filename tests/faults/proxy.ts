/**
 * A TCP fault proxy for the tests: sits between isboot and tgtd on
 * 127.0.0.1 (random port) and, on the test's command, passes bytes through,
 * cuts every connection (FIN both ways), resets it (RST both ways), stalls it
 * (stops forwarding both ways for a while), or corrupts one byte of an iSCSI
 * PDU header or data segment in one direction.
 *
 * It understands iSCSI framing (RFC 7143 §11.2): a 48-byte Basic Header
 * Segment, TotalAHSLength (byte 4, in 4-byte words) of Additional Header
 * Segments, an optional 4-byte HeaderDigest, the data segment of
 * DataSegmentLength (bytes 5..7) padded to a multiple of 4, and an optional
 * 4-byte DataDigest when the data segment is not empty. Digests start with the
 * first PDU after the final Login Response (§13.1, §13.12 "HeaderDigest and
 * DataDigest"), so the proxy reads the negotiated HeaderDigest/DataDigest keys
 * out of the target's Login Responses and turns its framing on at that point.
 *
 * Resets use node:net's `resetAndDestroy()`, which closes with SO_LINGER 0 so
 * the kernel sends RST; it works in Deno 2.9.
 *
 * @example
 * ```ts
 * const proxy = await FaultProxy.start({ targetPort: 3260 });
 * // point the initiator at 127.0.0.1:proxy.port, then
 * proxy.reset();
 * await proxy.close();
 * ```
 */
import { concatBytes } from "../../src/bytes.ts";
import * as net from "node:net";

/** RFC 7143 §11.2.1: the Basic Header Segment is 48 bytes. */
export const BHS_LENGTH = 48;
/** Opcode of a Login Response (§11.13), target to initiator. */
export const OPCODE_LOGIN_RESPONSE = 0x23;
/** Opcode of a Login Request (§11.12). */
export const OPCODE_LOGIN_REQUEST = 0x03;
/** Login stage value of the Full Feature Phase (§11.12.3, NSG/CSG). */
const FULL_FEATURE_PHASE = 3;
/** Bound on the login text the proxy keeps per connection for sniffing digests. */
const LOGIN_TEXT_LIMIT = 256 * 1024;

/** The direction bytes travel. */
export type Direction = "to-target" | "to-initiator";

/** What the proxy learned about one PDU from its header. */
export interface PduInfo {
  direction: Direction;
  /** Opcode (byte 0 & 0x3f). */
  opcode: number;
  /** Byte 1 (flags: F/T, C, stages). */
  flags: number;
  /** TotalAHSLength in bytes. */
  ahsLength: number;
  /** DataSegmentLength in bytes (without padding). */
  dataSegmentLength: number;
  /** Header size on the wire (BHS + AHS + HeaderDigest). */
  headerLength: number;
  /** Data size on the wire (data + padding + DataDigest). */
  dataWireLength: number;
  /** Whether the PDU was framed with digests. */
  headerDigest: boolean;
  dataDigest: boolean;
  /** Sequence number of this PDU within its direction on its connection, from 0. */
  index: number;
  /** Byte 2 (a response or reason code: TMF Response, Logout Response, Reject). */
  byte2: number;
  /** Initiator Task Tag (bytes 16..19). */
  itt: number;
  /**
   * Bytes 24..35 as three numbers: StatSN, ExpCmdSN and MaxCmdSN in most PDUs
   * a target sends (§11.1), CmdSN and ExpStatSN in an initiator's.
   */
  sn: [number, number, number];
}

/** What a swallow dropped. */
export interface DropReport {
  pdu: PduInfo;
  /** Id of the connection it happened on. */
  connection: number;
}

/**
 * Opcodes of target PDUs whose StatSN/ExpCmdSN/MaxCmdSN fields are valid
 * (§11.1: SCSI Response, TMF Response, Logout Response, NOP-In, Async
 * Message, Reject; a Data-In carries them too, StatSN only with the S bit).
 */
const STATUS_BEARING = new Set([0x21, 0x22, 0x26, 0x20, 0x32, 0x3f]);

/** CRC32C (Castagnoli, reflected), bit by bit: the proxy's own, independent of src/. */
export function crc32c(data: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of data) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0x82f63b78 & -(c & 1));
  }
  return (c ^ 0xffffffff) >>> 0;
}

/** Where a corruption lands. */
export interface CorruptionSpec {
  direction: Direction;
  part: "header" | "data";
  /** Byte offset inside the BHS (header) or the data segment (data); default 19 / 0. */
  byte?: number;
  /** XOR mask applied to the byte (default 0xff; must not be 0). */
  mask?: number;
  /** Only PDUs this accepts (default: any PDU of the Full Feature Phase that has the part). */
  match?: (pdu: PduInfo) => boolean;
  /** Also corrupt PDUs of the login phase (default false). */
  duringLogin?: boolean;
}

/** What a corruption did. */
export interface CorruptionReport {
  pdu: PduInfo;
  part: "header" | "data";
  /** Offset inside the BHS (header) or the data segment (data). */
  offset: number;
  /** Offset inside the PDU on the wire. */
  wireOffset: number;
  /** The XOR mask applied. */
  mask: number;
  /** Id of the connection it happened on. */
  connection: number;
}

function pad4(n: number): number {
  return (n + 3) & ~3;
}

/** Returns the value of `key` in NUL-separated iSCSI text (§6.1), or undefined. */
export function textValue(text: Uint8Array, key: string): string | undefined {
  const s = new TextDecoder().decode(text);
  let found: string | undefined;
  for (const kv of s.split("\0")) {
    const eq = kv.indexOf("=");
    if (eq > 0 && kv.slice(0, eq) === key) found = kv.slice(eq + 1);
  }
  return found;
}

/**
 * Splits one direction of an iSCSI byte stream into PDUs without delaying
 * data: header bytes are held until the header is complete (so a decision can
 * be made on it), data bytes pass as they arrive. `feed` returns the bytes to
 * forward, which may be fewer than given (a partial header is held back).
 *
 * @example
 * ```ts
 * const f = new PduFramer("to-target");
 * const out = f.feed(chunk); // forward `out`
 * ```
 */
export class PduFramer {
  readonly direction: Direction;
  headerDigest = false;
  dataDigest = false;
  /** Called when a header is complete; may return a byte offset (in the header) and mask to corrupt. */
  onHeader: ((pdu: PduInfo) => { offset: number; mask: number } | undefined) | undefined;
  /** Called for data of the current PDU before forwarding; may return an offset (in the data segment) to corrupt. */
  onDataStart: ((pdu: PduInfo) => { offset: number; mask: number } | undefined) | undefined;
  /** Called when a PDU is complete, with its data segment if it was kept (login PDUs). */
  onPdu: ((pdu: PduInfo, data: Uint8Array | undefined) => void) | undefined;
  /** Called when a header is complete: true drops the whole PDU (header, data, digests). */
  onDrop: ((pdu: PduInfo) => boolean) | undefined;

  #hdr = new Uint8Array(BHS_LENGTH + 255 * 4 + 4);
  #hdrHave = 0;
  #hdrNeed = BHS_LENGTH;
  #pdu: PduInfo | undefined;
  #dataPos = 0; // bytes of data wire part seen for #pdu
  #dataCorrupt: { offset: number; mask: number } | undefined;
  #keep: Uint8Array | undefined;
  #dropping = false;
  #count = 0;
  /** PDUs to insert into the stream at the next PDU boundary (see inject()). */
  #inject: Uint8Array[] = [];

  constructor(direction: Direction) {
    this.direction = direction;
  }

  /** PDUs completed so far. */
  get count(): number {
    return this.#count;
  }

  /**
   * Whether what was forwarded so far ends at a PDU boundary (bytes of a
   * header still being collected are not forwarded yet).
   */
  get atBoundary(): boolean {
    return this.#pdu === undefined;
  }

  /**
   * Queue a whole PDU (its wire bytes) to be forwarded at the next PDU
   * boundary; `feed` returns it among its pieces.
   */
  inject(pdu: Uint8Array): void {
    this.#inject.push(pdu);
  }

  /** The injected PDUs, once at a boundary (the caller forwards them). */
  takeInjected(): Uint8Array[] {
    return this.#pdu === undefined ? this.#inject.splice(0) : [];
  }

  feed(chunk: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = [];
    let i = 0;
    while (i < chunk.length) {
      if (this.#pdu === undefined) {
        if (this.#inject.length) out.push(...this.#inject.splice(0));
        const take = Math.min(this.#hdrNeed - this.#hdrHave, chunk.length - i);
        this.#hdr.set(chunk.subarray(i, i + take), this.#hdrHave);
        this.#hdrHave += take;
        i += take;
        if (this.#hdrHave === BHS_LENGTH && this.#hdrNeed === BHS_LENGTH) {
          const ahs = this.#hdr[4] * 4;
          this.#hdrNeed = BHS_LENGTH + ahs + (this.headerDigest ? 4 : 0);
        }
        if (this.#hdrHave === this.#hdrNeed && this.#hdrHave >= BHS_LENGTH) {
          this.#startPdu(out);
        }
      } else {
        const pdu = this.#pdu;
        const take = Math.min(pdu.dataWireLength - this.#dataPos, chunk.length - i);
        let piece = chunk.subarray(i, i + take);
        const c = this.#dataCorrupt;
        if (c && c.offset >= this.#dataPos && c.offset < this.#dataPos + take) {
          piece = piece.slice();
          piece[c.offset - this.#dataPos] ^= c.mask;
          this.#dataCorrupt = undefined;
        }
        if (this.#dropping) piece = piece.subarray(0, 0);
        if (this.#keep) {
          const end = Math.min(this.#dataPos + take, this.#keep.length);
          if (end > this.#dataPos) {
            this.#keep.set(piece.subarray(0, end - this.#dataPos), this.#dataPos);
          }
        }
        out.push(piece);
        this.#dataPos += take;
        i += take;
        if (this.#dataPos === pdu.dataWireLength) this.#endPdu();
      }
    }
    if (this.#pdu === undefined && this.#inject.length) out.push(...this.#inject.splice(0));
    return out;
  }

  #startPdu(out: Uint8Array[]): void {
    const h = this.#hdr;
    const dsl = (h[5] << 16) | (h[6] << 8) | h[7];
    const ahs = h[4] * 4;
    const v = new DataView(h.buffer, h.byteOffset, BHS_LENGTH);
    const pdu: PduInfo = {
      direction: this.direction,
      opcode: h[0] & 0x3f,
      flags: h[1],
      ahsLength: ahs,
      dataSegmentLength: dsl,
      headerLength: this.#hdrHave,
      dataWireLength: pad4(dsl) + (this.dataDigest && dsl > 0 ? 4 : 0),
      headerDigest: this.headerDigest,
      dataDigest: this.dataDigest,
      index: this.#count,
      byte2: h[2],
      itt: v.getUint32(16),
      sn: [v.getUint32(24), v.getUint32(28), v.getUint32(32)],
    };
    const header = h.slice(0, this.#hdrHave);
    this.#dropping = this.onDrop?.(pdu) ?? false;
    const hc = this.#dropping ? undefined : this.onHeader?.(pdu);
    if (hc && hc.offset >= 0 && hc.offset < header.length) header[hc.offset] ^= hc.mask;
    if (!this.#dropping) out.push(header);
    this.#hdrHave = 0;
    this.#hdrNeed = BHS_LENGTH;
    this.#pdu = pdu;
    this.#dataPos = 0;
    this.#dataCorrupt = pdu.dataSegmentLength > 0 ? this.onDataStart?.(pdu) : undefined;
    const login = pdu.opcode === OPCODE_LOGIN_RESPONSE || pdu.opcode === OPCODE_LOGIN_REQUEST;
    this.#keep = login ? new Uint8Array(Math.min(dsl, LOGIN_TEXT_LIMIT)) : undefined;
    if (pdu.dataWireLength === 0) this.#endPdu();
  }

  #endPdu(): void {
    const pdu = this.#pdu!;
    const data = this.#keep;
    this.#pdu = undefined;
    this.#keep = undefined;
    this.#dataCorrupt = undefined;
    const dropped = this.#dropping;
    this.#dropping = false;
    this.#count++;
    // A dropped PDU never reached the other side: listeners do not see it.
    if (!dropped) this.onPdu?.(pdu, data);
  }
}

/** Control state of one proxied connection. */
export interface ProxiedConnection {
  /** 1-based number in order of acceptance. */
  id: number;
  /** Time the Full Feature Phase started (final Login Response passed), performance.now() ms. */
  loggedInAt?: number;
  closed: boolean;
  toTarget: PduFramer;
  toInitiator: PduFramer;
}

interface Pair {
  /** Never forwarded again (see blackhole()). */
  blackholed?: boolean;
  info: ProxiedConnection;
  client: net.Socket;
  upstream: net.Socket;
  loginText: Uint8Array[];
  loginTextBytes: number;
}

export interface FaultProxyOptions {
  targetHost?: string;
  targetPort: number;
  /** Treat the stream as iSCSI (framing, digest sniffing); default true. */
  iscsi?: boolean;
}

/**
 * The proxy. One instance per test; `close()` ends everything it started.
 */
export class FaultProxy {
  readonly port: number;
  readonly #server: net.Server;
  readonly #targetHost: string;
  #targetPort: number;
  readonly #iscsi: boolean;
  readonly #pairs = new Set<Pair>();
  #accepted = 0;
  #stalledUntil = 0;
  #stallTimer: ReturnType<typeof setTimeout> | undefined;
  #corruptions: { spec: CorruptionSpec; resolve: (r: CorruptionReport) => void }[] = [];
  #loginWaiters: { after: number; resolve: (c: ProxiedConnection) => void }[] = [];
  #refusing = false;
  #pduListeners = new Set<(conn: ProxiedConnection, pdu: PduInfo) => void>();
  #drops: { match: (pdu: PduInfo) => boolean; resolve: (r: DropReport) => void }[] = [];
  /** Last StatSN, ExpCmdSN, MaxCmdSN the target sent on each connection (by id). */
  readonly #lastSn = new Map<number, [number, number, number]>();
  /** Every connection seen, in order. */
  readonly connections: ProxiedConnection[] = [];
  /** Human-readable events (for test failure messages). */
  readonly events: string[] = [];

  private constructor(server: net.Server, port: number, opts: FaultProxyOptions) {
    this.#server = server;
    this.port = port;
    this.#targetHost = opts.targetHost ?? "127.0.0.1";
    this.#targetPort = opts.targetPort;
    this.#iscsi = opts.iscsi ?? true;
  }

  /** Starts a proxy on 127.0.0.1 at a random port. */
  static start(opts: FaultProxyOptions): Promise<FaultProxy> {
    return new Promise((resolve, reject) => {
      const server = net.createServer({ pauseOnConnect: true });
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => {
        const addr = server.address() as net.AddressInfo;
        const proxy = new FaultProxy(server, addr.port, opts);
        server.on("connection", (s: net.Socket) => proxy.#accept(s));
        resolve(proxy);
      });
    });
  }

  /** Connections accepted so far. */
  get accepted(): number {
    return this.#accepted;
  }

  /** Connections currently open. */
  get open(): number {
    return this.#pairs.size;
  }

  /** Change where new connections go (e.g. a restarted target on another port). */
  setTarget(port: number): void {
    this.#targetPort = port;
  }

  /**
   * While on, new connections are reset as soon as they arrive (the target
   * looks unreachable); existing ones are untouched.
   */
  refuse(on: boolean): void {
    this.#refusing = on;
    this.#log(`refuse ${on}`);
  }

  #log(msg: string): void {
    this.events.push(`${performance.now().toFixed(0)}ms ${msg}`);
    if (this.events.length > 1000) this.events.splice(0, this.events.length - 1000);
  }

  #accept(client: net.Socket): void {
    const id = ++this.#accepted;
    client.setNoDelay(true);
    if (this.#refusing) {
      this.#log(`conn ${id}: refused`);
      client.resetAndDestroy();
      return;
    }
    const info: ProxiedConnection = {
      id,
      closed: false,
      toTarget: new PduFramer("to-target"),
      toInitiator: new PduFramer("to-initiator"),
    };
    this.connections.push(info);
    const upstream = net.connect({ host: this.#targetHost, port: this.#targetPort });
    upstream.setNoDelay(true);
    upstream.pause();
    const pair: Pair = { info, client, upstream, loginText: [], loginTextBytes: 0 };
    this.#pairs.add(pair);
    this.#log(`conn ${id}: accepted`);

    const finish = (why: string) => {
      if (info.closed) return;
      info.closed = true;
      this.#pairs.delete(pair);
      this.#log(`conn ${id}: closed (${why})`);
      // Propagate what happened: an RST from one side becomes an RST to the
      // other; an orderly end becomes an orderly end.
      if (why.includes("ECONNRESET") || why.includes("ECONNREFUSED")) {
        if (!client.destroyed) client.resetAndDestroy();
        if (!upstream.destroyed) upstream.resetAndDestroy();
      } else {
        client.end();
        upstream.end();
        setTimeout(() => {
          client.destroy();
          upstream.destroy();
        }, 1000);
      }
    };
    client.on("error", (e: Error) => finish(`initiator error ${errCode(e)}`));
    upstream.on("error", (e: Error) => finish(`target error ${errCode(e)}`));
    client.on("end", () => finish("initiator closed"));
    upstream.on("end", () => finish("target closed"));
    client.on("close", () => finish("initiator socket closed"));
    upstream.on("close", () => finish("target socket closed"));

    if (this.#iscsi) this.#wireFraming(pair);
    this.#pipe(pair, client, upstream, info.toTarget);
    this.#pipe(pair, upstream, client, info.toInitiator);
    upstream.once("connect", () => {
      if (!this.#stalled()) {
        client.resume();
        upstream.resume();
      }
    });
  }

  #pipe(pair: Pair, from: net.Socket, to: net.Socket, framer: PduFramer): void {
    from.on("data", (buf: Uint8Array) => {
      const chunk = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
      const pieces = this.#iscsi ? framer.feed(chunk) : [chunk];
      let ok = true;
      for (const p of pieces) if (p.length > 0 && !to.destroyed) ok = to.write(p) && ok;
      if (!ok) {
        from.pause();
        to.once("drain", () => {
          if (!this.#stalled() && !pair.info.closed && !pair.blackholed) from.resume();
        });
      }
    });
  }

  #wireFraming(pair: Pair): void {
    const { info } = pair;
    for (const framer of [info.toTarget, info.toInitiator]) {
      framer.onHeader = (pdu) => this.#corruptionFor(pair, pdu, "header");
      framer.onDataStart = (pdu) => this.#corruptionFor(pair, pdu, "data");
    }
    info.toTarget.onPdu = (pdu) => {
      for (const l of this.#pduListeners) l(info, pdu);
    };
    info.toInitiator.onDrop = (pdu) => this.#dropFor(pair, pdu);
    info.toInitiator.onPdu = (pdu, data) => {
      if (STATUS_BEARING.has(pdu.opcode)) this.#lastSn.set(info.id, pdu.sn);
      for (const l of this.#pduListeners) l(info, pdu);
      if (pdu.opcode !== OPCODE_LOGIN_RESPONSE) return;
      if (data && pair.loginTextBytes < LOGIN_TEXT_LIMIT) {
        pair.loginText.push(data.subarray(0, pdu.dataSegmentLength));
        pair.loginTextBytes += data.length;
      }
      const transit = (pdu.flags & 0x80) !== 0;
      const nsg = pdu.flags & 0x03;
      if (transit && nsg === FULL_FEATURE_PHASE) {
        const all = concatBytes(pair.loginText);
        const hd = textValue(all, "HeaderDigest") === "CRC32C";
        const dd = textValue(all, "DataDigest") === "CRC32C";
        for (const f of [info.toTarget, info.toInitiator]) {
          f.headerDigest = hd;
          f.dataDigest = dd;
        }
        info.loggedInAt = performance.now();
        this.#log(`conn ${info.id}: full feature phase (HeaderDigest ${hd}, DataDigest ${dd})`);
        this.#loginWaiters = this.#loginWaiters.filter((w) => {
          if (info.id > w.after) {
            w.resolve(info);
            return false;
          }
          return true;
        });
      }
    };
  }

  #corruptionFor(
    pair: Pair,
    pdu: PduInfo,
    part: "header" | "data",
  ): { offset: number; mask: number } | undefined {
    const inFfp = pair.info.loggedInAt !== undefined;
    const idx = this.#corruptions.findIndex(({ spec }) =>
      spec.direction === pdu.direction && spec.part === part &&
      (inFfp || spec.duringLogin === true) && (spec.match?.(pdu) ?? true)
    );
    if (idx < 0) return undefined;
    const { spec, resolve } = this.#corruptions[idx];
    const offset = spec.byte ?? (part === "header" ? 19 : 0);
    if (part === "data" && offset >= pdu.dataSegmentLength) return undefined;
    if (part === "header" && offset >= BHS_LENGTH + pdu.ahsLength) return undefined;
    this.#corruptions.splice(idx, 1);
    const mask = spec.mask ?? 0xff;
    const wireOffset = part === "header" ? offset : pdu.headerLength + offset;
    this.#log(
      `conn ${pair.info.id}: corrupt ${part} byte ${offset} of opcode 0x${
        pdu.opcode.toString(16)
      } ${pdu.direction}`,
    );
    // The framer applies the mask as the bytes pass.
    queueMicrotask(() =>
      resolve({ pdu, part, offset, wireOffset, mask, connection: pair.info.id })
    );
    return { offset, mask };
  }

  #dropFor(pair: Pair, pdu: PduInfo): boolean {
    if (pair.info.loggedInAt === undefined) return false;
    const idx = this.#drops.findIndex(({ match }) => match(pdu));
    if (idx < 0) return false;
    const { resolve } = this.#drops[idx];
    this.#drops.splice(idx, 1);
    this.#log(
      `conn ${pair.info.id}: swallow opcode 0x${pdu.opcode.toString(16)} ITT 0x${
        pdu.itt.toString(16)
      }`,
    );
    queueMicrotask(() => resolve({ pdu, connection: pair.info.id }));
    return true;
  }

  /**
   * Arms a one-shot swallow: the next PDU of the Full Feature Phase from the
   * target that `match` accepts is dropped whole (header, data, digests), so
   * the initiator never sees it (a SCSI Response lost in a target that still
   * answers everything else). Resolves when it happened.
   */
  swallow(match: (pdu: PduInfo) => boolean): Promise<DropReport> {
    this.#log("arm swallow to-initiator");
    return new Promise((resolve) => this.#drops.push({ match, resolve }));
  }

  /**
   * Sends an Async Message (RFC 7143 §11.9) to the initiator on every open
   * connection in the Full Feature Phase, at the next PDU boundary of the
   * target's stream, as if the target had sent it: AsyncEvent `event` with
   * Parameter1-3, the last StatSN/ExpCmdSN/MaxCmdSN the target sent on that
   * connection (the window does not move, no StatSN is acknowledged that the
   * target did not send), and a CRC32C header digest when one was
   * negotiated. Returns the ids of the connections it went to.
   */
  asyncMessage(event: number, p: { p1?: number; p2?: number; p3?: number } = {}): number[] {
    const sent: number[] = [];
    for (const pair of this.#pairs) {
      const { info } = pair;
      if (info.loggedInAt === undefined || pair.blackholed) continue;
      const bhs = new Uint8Array(BHS_LENGTH);
      const v = new DataView(bhs.buffer);
      bhs[0] = 0x32;
      bhs[1] = 0x80;
      v.setUint32(16, 0xffffffff);
      const [statSN, expCmdSN, maxCmdSN] = this.#lastSn.get(info.id) ?? [0, 0, 0];
      v.setUint32(24, statSN);
      v.setUint32(28, expCmdSN);
      v.setUint32(32, maxCmdSN);
      bhs[36] = event;
      v.setUint16(38, p.p1 ?? 0);
      v.setUint16(40, p.p2 ?? 0);
      v.setUint16(42, p.p3 ?? 0);
      let wire = bhs;
      if (info.toInitiator.headerDigest) {
        wire = new Uint8Array(BHS_LENGTH + 4);
        wire.set(bhs);
        new DataView(wire.buffer).setUint32(BHS_LENGTH, crc32c(bhs), true);
      }
      info.toInitiator.inject(wire);
      for (const b of info.toInitiator.takeInjected()) {
        if (!pair.client.destroyed) pair.client.write(b);
      }
      this.#log(`conn ${info.id}: Async Message event ${event} to initiator`);
      sent.push(info.id);
    }
    return sent;
  }

  /** Forward normally again (ends a stall early, stops refusing). */
  passThrough(): void {
    this.#refusing = false;
    this.#stalledUntil = 0;
    if (this.#stallTimer !== undefined) clearTimeout(this.#stallTimer);
    this.#stallTimer = undefined;
    for (const p of this.#pairs) {
      if (p.blackholed) continue;
      p.client.resume();
      p.upstream.resume();
    }
    this.#log("pass through");
  }

  /** Close every open connection on both sides with FIN. */
  cut(): void {
    this.#log(`cut ${this.#pairs.size} connection(s)`);
    for (const p of [...this.#pairs]) {
      p.info.closed = true;
      this.#pairs.delete(p);
      p.client.destroySoon();
      p.upstream.destroySoon();
      p.client.end();
      p.upstream.end();
    }
  }

  /** Reset every open connection on both sides (RST, as with SO_LINGER 0). */
  reset(): void {
    this.#log(`reset ${this.#pairs.size} connection(s)`);
    for (const p of [...this.#pairs]) {
      p.info.closed = true;
      this.#pairs.delete(p);
      p.client.resetAndDestroy();
      p.upstream.resetAndDestroy();
    }
  }

  /**
   * Silently drop the open connections: stop forwarding on them for good,
   * without closing anything (a path that lost its NAT or ARP state; the
   * only way to notice is a ping that is not answered). New connections
   * pass normally.
   */
  blackhole(): void {
    this.#log(`black hole ${this.#pairs.size} connection(s)`);
    for (const p of this.#pairs) {
      p.blackholed = true;
      p.client.pause();
      p.upstream.pause();
    }
  }

  #stalled(): boolean {
    return performance.now() < this.#stalledUntil;
  }

  /**
   * Stop forwarding both ways on every connection, open or new, for `ms`
   * milliseconds; bytes wait in the sockets' buffers and flow again after.
   */
  stall(ms: number): void {
    this.#log(`stall ${ms}ms`);
    this.#stalledUntil = performance.now() + ms;
    for (const p of this.#pairs) {
      p.client.pause();
      p.upstream.pause();
    }
    if (this.#stallTimer !== undefined) clearTimeout(this.#stallTimer);
    this.#stallTimer = setTimeout(() => {
      this.#stallTimer = undefined;
      this.passThrough();
    }, ms);
  }

  /**
   * Arms a one-shot corruption: the next PDU that matches gets one byte
   * flipped. Resolves when it happened.
   */
  corrupt(spec: CorruptionSpec): Promise<CorruptionReport> {
    if (spec.mask === 0) throw new RangeError("mask 0 corrupts nothing");
    this.#log(`arm corrupt ${spec.direction} ${spec.part}`);
    return new Promise((resolve) => this.#corruptions.push({ spec, resolve }));
  }

  /**
   * Calls `listener` for every complete PDU in either direction (iSCSI mode);
   * returns a function that removes it.
   */
  onPdu(listener: (conn: ProxiedConnection, pdu: PduInfo) => void): () => void {
    this.#pduListeners.add(listener);
    return () => this.#pduListeners.delete(listener);
  }

  /** Disarms corruptions that have not fired. */
  disarm(): void {
    this.#corruptions = [];
  }

  /**
   * Resolves when a connection numbered above `afterId` reaches the Full
   * Feature Phase (use `this.accepted` or a connection id as the mark).
   */
  waitForLogin(afterId = 0): Promise<ProxiedConnection> {
    const done = this.connections.find((c) => c.id > afterId && c.loggedInAt !== undefined);
    if (done) return Promise.resolve(done);
    return new Promise((resolve) => this.#loginWaiters.push({ after: afterId, resolve }));
  }

  /** Stops listening and destroys every connection. */
  close(): Promise<void> {
    if (this.#stallTimer !== undefined) clearTimeout(this.#stallTimer);
    this.#stallTimer = undefined;
    for (const p of this.#pairs) {
      p.client.destroy();
      p.upstream.destroy();
    }
    this.#pairs.clear();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

function errCode(e: Error): string {
  return (e as Error & { code?: string }).code ?? e.message;
}
