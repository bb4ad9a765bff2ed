/**
 * A scripted iSCSI target for what tgtd cannot do on demand: redirection,
 * discovery CHAP, mutual CHAP that answers wrongly or reflects our own
 * challenge, text split over several PDUs, and malformed full-feature PDUs
 * (Data-In past the buffer, unknown ITT, R2T beyond the transfer, oversized
 * DataSegmentLength, unknown opcodes). No digests. Listens on 127.0.0.1 at
 * a free port; `close()` ends the listener and every connection.
 */
import type { Crc32c } from "../../src/iscsi/digest.ts";
import { decodeText, encodeText, type TextPair } from "../../src/iscsi/text.ts";

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
export class FakeConn {
  readonly conn: Deno.TcpConn;
  #buf = new Uint8Array(0);
  statSN = 0;
  /** When set, PDUs carry CRC32C header and data digests (after a login that agreed to them). */
  crc: Crc32c | null = null;
  /** Corrupt the data digest of the next PDU sent with data. */
  corruptNextDataDigest = false;
  constructor(conn: Deno.TcpConn) {
    this.conn = conn;
  }

  async #need(n: number): Promise<boolean> {
    while (this.#buf.length < n) {
      const chunk = new Uint8Array(65536);
      const got = await this.conn.read(chunk).catch(() => null);
      if (got === null) return false;
      const b = new Uint8Array(this.#buf.length + got);
      b.set(this.#buf);
      b.set(chunk.subarray(0, got), this.#buf.length);
      this.#buf = b;
    }
    return true;
  }

  /** Next PDU from the initiator, or null at EOF. */
  async read(): Promise<FakePdu | null> {
    if (!(await this.#need(48))) return null;
    const dsl = (this.#buf[5] << 16) | (this.#buf[6] << 8) | this.#buf[7];
    const dg = this.crc ? 4 : 0;
    const total = 48 + this.#buf[4] * 4 + dg + dsl + ((4 - (dsl & 3)) & 3) + (dsl ? dg : 0);
    if (!(await this.#need(total))) return null;
    const bhs = this.#buf.slice(0, 48);
    const data = this.#buf.slice(48 + bhs[4] * 4 + dg, 48 + bhs[4] * 4 + dg + dsl);
    this.#buf = this.#buf.slice(total);
    const v = new DataView(bhs.buffer);
    return {
      bhs,
      data,
      opcode: bhs[0] & 0x3f,
      itt: v.getUint32(16),
      cmdSN: v.getUint32(24),
      expStatSN: v.getUint32(28),
      flags: bhs[1],
      pairs: () => decodeText(data),
    };
  }

  #sending: Promise<void> = Promise.resolve();

  /**
   * Send a header (48 bytes) and data (padded here). Sends are queued, so a
   * script may answer from a timer while it reads on.
   */
  send(bhs: Uint8Array, data: Uint8Array = new Uint8Array(0)): Promise<void> {
    const b = bhs.slice(0, 48);
    const next = this.#sending.then(() => this.#send(b, data));
    this.#sending = next.catch(() => {});
    return next;
  }

  async #send(bhs: Uint8Array, data: Uint8Array): Promise<void> {
    const dsl = data.length;
    bhs[5] = dsl >>> 16;
    bhs[6] = (dsl >>> 8) & 0xff;
    bhs[7] = dsl & 0xff;
    const pad = (4 - (dsl & 3)) & 3;
    const dg = this.crc ? 4 : 0;
    const out = new Uint8Array(48 + dg + dsl + pad + (dsl ? dg : 0));
    const v = new DataView(out.buffer);
    out.set(bhs);
    if (this.crc) v.setUint32(48, this.crc.digest(bhs.subarray(0, 48)), true);
    out.set(data, 48 + dg);
    if (this.crc && dsl) {
      let d = this.crc.digest(out.subarray(48 + dg, 48 + dg + dsl + pad));
      if (this.corruptNextDataDigest) {
        d ^= 1;
        this.corruptNextDataDigest = false;
      }
      v.setUint32(48 + dg + dsl + pad, d >>> 0, true);
    }
    let off = 0;
    while (off < out.length) off += await this.conn.write(out.subarray(off));
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
    if (o.crc) this.crc = o.crc;
    return req.cmdSN;
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // gone
    }
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
