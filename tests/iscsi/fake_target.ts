/**
 * A scripted iSCSI target for what tgtd cannot do on demand: redirection,
 * discovery CHAP, mutual CHAP that answers wrongly or reflects our own
 * challenge, text split over several PDUs, and malformed full-feature PDUs
 * (Data-In past the buffer, unknown ITT, R2T beyond the transfer, oversized
 * DataSegmentLength, unknown opcodes). No digests. Listens on 127.0.0.1 at
 * a free port; `close()` ends the listener and every connection.
 */
import type { Crc32c } from "../../src/iscsi/digest.ts";
import { BHS_OFFSET } from "../../src/iscsi/pdu.ts";
import { decodeText, encodeText, type TextPair } from "../../src/iscsi/text.ts";
import { TargetWire } from "../helpers/iscsi_target_wire.ts";

export interface FakePdu {
  bhs: Uint8Array;
  data: Uint8Array;
  opcode: number;
  itt: number;
  cmdSN: number;
  expStatSN: number;
  flags: number;
  pairs: () => TextPair[];
}

/** One accepted connection, with helpers to read and write PDUs. */
export class FakeConn extends TargetWire {
  statSN = 0;
  /** Corrupt the data digest of the next PDU sent with data. */
  corruptNextDataDigest = false;

  constructor(conn: Deno.TcpConn) {
    super(conn);
  }

  /** The TCP connection (a script may write raw bytes or close it). */
  get conn(): Deno.Conn {
    return this.tcp;
  }

  /** Send and expect CRC32C header and data digests from now on. */
  useDigests(crc: Crc32c): void {
    this.crc = crc;
    this.headerDigest = true;
    this.dataDigest = true;
  }

  /** Next PDU from the initiator, or null at EOF. */
  async read(): Promise<FakePdu | null> {
    const p = await this.readPdu();
    if (!p) return null;
    const { bhs, h, data } = p;
    const v = new DataView(bhs.buffer, bhs.byteOffset, bhs.length);
    return {
      bhs,
      data,
      opcode: h.opcode,
      itt: h.itt,
      cmdSN: v.getUint32(BHS_OFFSET.cmdSN),
      expStatSN: v.getUint32(BHS_OFFSET.expStatSN),
      flags: h.flags,
      pairs: () => decodeText(data),
    };
  }

  /** Send a header (48 bytes) and data (padded here); queued behind earlier sends. */
  override send(bhs: Uint8Array, data: Uint8Array = new Uint8Array(0)): Promise<void> {
    const bad = this.corruptNextDataDigest && data.length > 0 && this.crc !== null;
    if (bad) this.corruptNextDataDigest = false;
    return super.send(bhs, data, { badDataDigest: bad });
  }

  /** A Login Response to `req`. */
  async loginResponse(
    req: FakePdu,
    o: {
      transit?: boolean;
      cont?: boolean;
      nsg?: number;
      status?: number;
      tsih?: number;
      pairs?: TextPair[];
      raw?: Uint8Array;
      /** MaxCmdSN - ExpCmdSN + 1 (default 32). */
      window?: number;
    },
  ): Promise<void> {
    const b = new Uint8Array(48);
    const v = new DataView(b.buffer);
    const csg = (req.flags >> 2) & 3;
    b[0] = 0x23;
    b[1] = (o.transit ? 0x80 : 0) | (o.cont ? 0x40 : 0) | (csg << 2) |
      (o.transit ? (o.nsg ?? 0) : 0);
    b.set(req.bhs.subarray(8, 14), 8); // ISID
    v.setUint16(14, o.tsih ?? 0);
    v.setUint32(16, req.itt);
    v.setUint32(24, this.statSN++);
    v.setUint32(28, req.cmdSN);
    v.setUint32(32, req.cmdSN + (o.window ?? 32) - 1);
    v.setUint16(36, o.status ?? 0);
    await this.send(b, o.raw ?? encodeText(o.pairs ?? []));
  }

  /**
   * Play a plain login: no authentication, operational keys answered by
   * echoing the initiator's values (digests None). Returns the first CmdSN.
   */
  async acceptLogin(o: { crc?: Crc32c; window?: number } = {}): Promise<number> {
    let req = await this.read();
    if (!req) throw new Error("no login");
    while (((req.flags >> 2) & 3) === 0) {
      await this.loginResponse(req, { transit: true, nsg: 1, pairs: [["AuthMethod", "None"]] });
      req = await this.read();
      if (!req) throw new Error("no operational login");
    }
    await this.loginResponse(req, {
      transit: true,
      nsg: 3,
      tsih: 7,
      pairs: echoOffers(req.pairs(), o.crc !== undefined),
      window: o.window,
    });
    if (o.crc) this.useDigests(o.crc);
    return req.cmdSN;
  }
}

/** Answer operational offers with the initiator's own values (legal under every rule). */
export function echoOffers(pairs: TextPair[], digests = false): TextPair[] {
  return pairs.map(([k, v]) =>
    [k, k.endsWith("Digest") ? (digests ? "CRC32C" : "None") : v] as TextPair
  )
    .filter(([k]) => k !== "MaxRecvDataSegmentLength")
    .concat([["MaxRecvDataSegmentLength", "65536"], ["TargetPortalGroupTag", "1"]]);
}

/** A listening scripted target; `script` runs once per accepted connection. */
export class FakeTarget {
  readonly port: number;
  readonly #listener: Deno.TcpListener;
  readonly #conns = new Set<FakeConn>();
  readonly #done: Promise<void>;
  /** Errors thrown by scripts (a test can assert there were none). */
  readonly errors: unknown[] = [];

  constructor(script: (c: FakeConn, index: number) => Promise<void>) {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#listener = listener;
    this.port = (listener.addr as Deno.NetAddr).port;
    this.#done = (async () => {
      let i = 0;
      for await (const conn of listener) {
        const c = new FakeConn(conn);
        this.#conns.add(c);
        const index = i++;
        script(c, index).catch((e) => this.errors.push(e)).finally(() => {
          c.close();
          this.#conns.delete(c);
        });
      }
    })().catch(() => {});
  }

  async close(): Promise<void> {
    try {
      this.#listener.close();
    } catch {
      // closed
    }
    for (const c of this.#conns) c.close();
    await this.#done;
  }
}

/** SCSI opcodes the fake disk knows. */
const READ_16 = 0x88;
const WRITE_16 = 0x8a;
const BLOCK = 512;
/** Data-In segments we send; below the initiator's declared 256 KiB. */
const DATA_IN_SEGMENT = 65536;

/**
 * One connection of a {@link FakeDisk}: the target's StatSN / ExpCmdSN /
 * MaxCmdSN bookkeeping and the PDUs a script sends (responses, Rejects,
 * Async Messages).
 */
export class DiskConn {
  readonly c: FakeConn;
  readonly disk: FakeDisk;
  expCmdSN: number;
  /** Every SCSI command received, in order. */
  readonly commands: FakePdu[] = [];
  /** Writes waiting for unsolicited Data-Out, by ITT. */
  readonly #writes = new Map<number, { offset: number; length: number; got: number }>();

  constructor(c: FakeConn, disk: FakeDisk, firstCmdSN: number) {
    this.c = c;
    this.disk = disk;
    this.expCmdSN = firstCmdSN >>> 0;
  }

  /** Count a non-immediate command's CmdSN as received (ExpCmdSN moves past it). */
  take(pdu: FakePdu): void {
    if ((pdu.bhs[0] & 0x40) === 0 && ((pdu.cmdSN + 1 - this.expCmdSN) | 0) > 0) {
      this.expCmdSN = (pdu.cmdSN + 1) >>> 0;
    }
  }

  /** A target BHS: opcode, F bit, ITT, StatSN (advanced when `status`), ExpCmdSN, MaxCmdSN = ExpCmdSN + 31. */
  bhs(op: number, itt: number, status = true): Uint8Array {
    const b = new Uint8Array(48);
    const v = new DataView(b.buffer);
    b[0] = op;
    b[1] = 0x80;
    v.setUint32(16, itt);
    v.setUint32(20, 0xffffffff);
    v.setUint32(24, status ? this.c.statSN++ : this.c.statSN);
    v.setUint32(28, this.expCmdSN);
    v.setUint32(32, (this.expCmdSN + 31) >>> 0);
    return b;
  }

  /** SCSI Response with GOOD status. */
  good(pdu: FakePdu): Promise<void> {
    return this.c.send(this.bhs(0x21, pdu.itt));
  }

  /** Reject `pdu` with `reason` (§11.17); the rejected header is the data segment. */
  reject(pdu: FakePdu, reason: number): Promise<void> {
    const b = this.bhs(0x3f, 0xffffffff);
    b[2] = reason;
    return this.c.send(b, pdu.bhs.slice(0, 48));
  }

  /** Async Message (§11.9) with AsyncEvent and Parameter1-3. */
  asyncMessage(event: number, p: { p1?: number; p2?: number; p3?: number } = {}): Promise<void> {
    const b = this.bhs(0x32, 0xffffffff);
    const v = new DataView(b.buffer);
    b[36] = event;
    v.setUint16(38, p.p1 ?? 0);
    v.setUint16(40, p.p2 ?? 0);
    v.setUint16(42, p.p3 ?? 0);
    return this.c.send(b);
  }

  /** Task Management Function Response with `response` (0: function complete). */
  tmfResponse(pdu: FakePdu, response = 0): Promise<void> {
    const b = this.bhs(0x22, pdu.itt);
    b[2] = response;
    return this.c.send(b);
  }

  /** Carry out a SCSI command on the RAM disk (READ/WRITE(16); everything else GOOD). */
  async execute(pdu: FakePdu): Promise<void> {
    const cdb = pdu.bhs.subarray(32, 48);
    const cv = new DataView(cdb.buffer, cdb.byteOffset, 16);
    const offset = cv.getUint32(6) * BLOCK;
    const length = cv.getUint32(10) * BLOCK;
    if (cdb[0] === READ_16) {
      const data = this.disk.bytes.subarray(offset, offset + length);
      for (let off = 0, sn = 0; off < length; off += DATA_IN_SEGMENT, sn++) {
        const last = off + DATA_IN_SEGMENT >= length;
        const b = this.bhs(0x25, pdu.itt, last);
        const v = new DataView(b.buffer);
        b[1] = last ? 0x81 : 0; // F + S (status GOOD) on the last
        v.setUint32(36, sn);
        v.setUint32(40, off);
        await this.c.send(b, data.slice(off, Math.min(length, off + DATA_IN_SEGMENT)));
      }
      return;
    }
    if (cdb[0] === WRITE_16) {
      this.disk.bytes.set(pdu.data, offset);
      if (pdu.data.length >= length || (pdu.flags & 0x80)) {
        if (pdu.data.length < length) {
          throw new Error("fake disk: writes need all data unsolicited");
        }
        return this.good(pdu);
      }
      this.#writes.set(pdu.itt, { offset, length, got: pdu.data.length });
      return;
    }
    return this.good(pdu);
  }

  /** The default answer to any PDU; true at Logout (the connection ends). */
  async answer(pdu: FakePdu): Promise<boolean> {
    switch (pdu.opcode) {
      case 0x00: { // NOP-Out: answer pings (ITT not reserved)
        if (pdu.itt === 0xffffffff) return false;
        const b = this.bhs(0x20, pdu.itt);
        b.set(pdu.bhs.subarray(8, 16), 8);
        await this.c.send(b, pdu.data);
        return false;
      }
      case 0x01:
        this.take(pdu);
        await this.execute(pdu);
        return false;
      case 0x02:
        await this.tmfResponse(pdu);
        return false;
      case 0x05: { // Data-Out, unsolicited (TTT reserved)
        const w = this.#writes.get(pdu.itt);
        if (!w) throw new Error(`fake disk: Data-Out for unknown ITT ${pdu.itt}`);
        const at = new DataView(pdu.bhs.buffer).getUint32(40);
        this.disk.bytes.set(pdu.data, w.offset + at);
        w.got += pdu.data.length;
        if (pdu.flags & 0x80) {
          this.#writes.delete(pdu.itt);
          if (w.got < w.length) throw new Error("fake disk: writes need all data unsolicited");
          const b = this.bhs(0x21, pdu.itt);
          await this.c.send(b);
        }
        return false;
      }
      case 0x06: {
        const b = this.bhs(0x26, pdu.itt);
        await this.c.send(b);
        return true;
      }
      default:
        throw new Error(`fake disk: opcode 0x${pdu.opcode.toString(16)} not handled`);
    }
  }
}

/**
 * A RAM disk behind the scripted target, for tests that need real I/O
 * (writes that must land, reads that return them) while the script plays
 * its part: `serve` answers every PDU of a logged-in connection, and a hook
 * sees each PDU first and may take it over.
 *
 * @example
 * ```ts
 * const disk = new FakeDisk(8192);
 * const fake = new FakeTarget(async (c) => disk.serve(c, await c.acceptLogin()));
 * ```
 */
export class FakeDisk {
  readonly bytes: Uint8Array;
  /** Connections served, in order. */
  readonly conns: DiskConn[] = [];

  constructor(blocks = 8192) {
    this.bytes = new Uint8Array(blocks * BLOCK);
  }

  /**
   * Answer the PDUs of a logged-in connection until Logout or EOF; `hook`
   * returns true when it dealt with a PDU itself.
   */
  async serve(
    c: FakeConn,
    firstCmdSN: number,
    hook?: (pdu: FakePdu, d: DiskConn) => boolean | Promise<boolean>,
  ): Promise<void> {
    const d = new DiskConn(c, this, firstCmdSN);
    this.conns.push(d);
    for (;;) {
      const pdu = await c.read();
      if (!pdu) return;
      if (pdu.opcode === 0x01) d.commands.push(pdu);
      if (hook && (await hook(pdu, d))) continue;
      if (await d.answer(pdu)) return;
    }
  }
}
