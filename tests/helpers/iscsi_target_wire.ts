/**
 * The target side of an iSCSI connection, for the suite's scripted targets
 * (tests/iscsi/fake_target.ts, tests/hostile/fake_target.ts): reads whole
 * initiator PDUs from a TCP connection and sends target PDUs with padding
 * and, once negotiated, CRC32C header and data digests — or wrong ones,
 * when a test asks for them. Digests received are skipped, not checked: the
 * initiator's own digests are tested against tgtd.
 *
 * @example
 * ```ts
 * const wire = new TargetWire(tcp, defaultCrc32c);
 * const pdu = await wire.readPdu();
 * await wire.send(responseBhs, data);
 * ```
 */
import { BHS_LENGTH, DIGEST_LENGTH } from "../../src/iscsi/constants.ts";
import type { Crc32c } from "../../src/iscsi/digest.ts";
import { padLength, PduHeader } from "../../src/iscsi/pdu.ts";

/** One initiator PDU as read: its header (a copy) and data segment. */
export interface WirePdu {
  bhs: Uint8Array;
  h: PduHeader;
  data: Uint8Array;
}

/** What a test may get wrong on purpose in a PDU it sends. */
export interface SendFaults {
  badHeaderDigest?: boolean;
  badDataDigest?: boolean;
  /** DataSegmentLength to declare instead of the data's length. */
  dslOverride?: number;
}

export class TargetWire {
  readonly tcp: Deno.Conn;
  /** Digests are sent (and expected) once the login agreed to them. */
  headerDigest = false;
  dataDigest = false;
  crc: Crc32c | null;
  #buf = new Uint8Array(65536);
  #start = 0;
  #end = 0;
  #sending: Promise<void> = Promise.resolve();

  constructor(tcp: Deno.Conn, crc: Crc32c | null = null) {
    this.tcp = tcp;
    this.crc = crc;
  }

  /** Have at least `n` unread bytes buffered; false at EOF (or a reset). */
  async #need(n: number): Promise<boolean> {
    while (this.#end - this.#start < n) {
      if (this.#start > 0) {
        this.#buf.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      }
      if (this.#buf.length < n) {
        const b = new Uint8Array(Math.max(n, this.#buf.length * 2));
        b.set(this.#buf.subarray(0, this.#end));
        this.#buf = b;
      }
      const got = await this.tcp.read(this.#buf.subarray(this.#end)).catch(() => null);
      if (got === null) return false;
      this.#end += got;
    }
    return true;
  }

  #take(n: number): Uint8Array {
    const out = this.#buf.slice(this.#start, this.#start + n);
    this.#start += n;
    return out;
  }

  /** The next initiator PDU, or null at EOF. */
  async readPdu(): Promise<WirePdu | null> {
    if (!(await this.#need(BHS_LENGTH))) return null;
    const bhs = this.#take(BHS_LENGTH);
    const h = new PduHeader(bhs);
    const skip = h.totalAhsLength + (this.headerDigest ? DIGEST_LENGTH : 0);
    const n = h.dataSegmentLength;
    const body = n + padLength(n) + (this.dataDigest && n > 0 ? DIGEST_LENGTH : 0);
    if (!(await this.#need(skip + body))) return null;
    this.#start += skip;
    const data = this.#take(body).subarray(0, n);
    return { bhs, h, data };
  }

  /**
   * Send a BHS (48 bytes; DataSegmentLength filled in here) and its data.
   * Sends are queued, so a script may answer from a timer while it reads on.
   */
  send(
    bhs: Uint8Array,
    data: Uint8Array = new Uint8Array(0),
    faults: SendFaults = {},
  ): Promise<void> {
    const b = bhs.slice(0, BHS_LENGTH);
    const next = this.#sending.then(() => this.#send(b, data, faults));
    this.#sending = next.catch(() => {});
    return next;
  }

  async #send(bhs: Uint8Array, data: Uint8Array, faults: SendFaults): Promise<void> {
    const dsl = faults.dslOverride ?? data.length;
    bhs[5] = (dsl >>> 16) & 0xff;
    bhs[6] = (dsl >>> 8) & 0xff;
    bhs[7] = dsl & 0xff;
    const crc = this.crc;
    const hd = this.headerDigest && crc ? DIGEST_LENGTH : 0;
    const padded = data.length + padLength(data.length);
    const dd = this.dataDigest && crc && data.length > 0 ? DIGEST_LENGTH : 0;
    const out = new Uint8Array(BHS_LENGTH + hd + padded + dd);
    const v = new DataView(out.buffer);
    out.set(bhs);
    if (hd) v.setUint32(BHS_LENGTH, crc!.digest(bhs) ^ (faults.badHeaderDigest ? 1 : 0), true);
    out.set(data, BHS_LENGTH + hd);
    if (dd) {
      const seg = out.subarray(BHS_LENGTH + hd, BHS_LENGTH + hd + padded);
      const d = crc!.digest(seg) ^ (faults.badDataDigest ? 1 : 0);
      v.setUint32(BHS_LENGTH + hd + padded, d >>> 0, true);
    }
    let off = 0;
    while (off < out.length) off += await this.tcp.write(out.subarray(off));
  }

  close(): void {
    try {
      this.tcp.close();
    } catch {
      // gone
    }
  }
}
