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

  /** Send a header (48 bytes) and data (padded here). */
  async send(bhs: Uint8Array, data: Uint8Array = new Uint8Array(0)): Promise<void> {
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
