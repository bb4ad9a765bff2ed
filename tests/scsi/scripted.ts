/**
 * A scripted ScsiTransport for unit tests only: it answers the commands Lun
 * sends from a small configurable disk model (so that Block Limits, odd VPD
 * pages, FUA support, missing commands can be set at will), and replays
 * one-shot scripted answers first — descriptor sense, BUSY, TASK SET FULL,
 * UNIT ATTENTION storms, residuals — that a real target (tgtd, tested in
 * lun_tgtd_test.ts) cannot produce on demand.
 */
import type { ScsiCommand, ScsiResponse, ScsiTransport } from "../../src/scsi/transport.ts";

export interface DiskModel {
  blockSize: number;
  blocks: number;
  physicalExponent?: number;
  vendor?: string;
  product?: string;
  revision?: string;
  deviceType?: number;
  qualifier?: number;
  serial?: string | null;
  /** Block Limits: max transfer, granularity, optimal, max unmap LBAs, max unmap descriptors, max write same. */
  blockLimits?: {
    maxTransfer?: number;
    granularity?: number;
    optimal?: number;
    maxUnmapLba?: number;
    maxUnmapDescriptors?: number;
    maxWriteSame?: number;
  } | null;
  /**
   * Logical Block Provisioning VPD page. `lbprz` true/false is the LBPRZ
   * field 001b/000b; a number is the raw 3-bit field (SBC-4 §6.6.6), e.g.
   * 010b. READ CAPACITY(16) reports its low bit as the LBPRZ bit unless
   * `rc16Lbprz` says otherwise (a target that contradicts itself).
   */
  lbp?: { lbpu: boolean; lbpws: boolean; lbprz: boolean | number; rc16Lbprz?: boolean } | null;
  lbpme?: boolean;
  writeProtect?: boolean;
  dpoFua?: boolean;
  /** READ CAPACITY(16) refused (old device). */
  no16?: boolean;
  /** WRITE SAME(16) refused. */
  noWriteSame?: boolean;
  /** SYNCHRONIZE CACHE(10) refused. */
  noSync10?: boolean;
}

type LbpModel = NonNullable<DiskModel["lbp"]>;
const lbprzField = (l: LbpModel) => typeof l.lbprz === "number" ? l.lbprz & 7 : l.lbprz ? 1 : 0;
const rc16Lbprz = (m: DiskModel) =>
  m.lbp ? m.lbp.rc16Lbprz ?? (lbprzField(m.lbp) & 1) === 1 : false;

export function good(data: Uint8Array = new Uint8Array(0), underflow = 0): ScsiResponse {
  return { status: 0, data, residualUnderflow: underflow, residualOverflow: 0 };
}

export function status(s: number, sense?: Uint8Array): ScsiResponse {
  return { status: s, data: new Uint8Array(0), residualUnderflow: 0, residualOverflow: 0, sense };
}

/** Fixed-format sense (SPC-4 §4.5.3), 18 bytes. */
export function fixedSense(key: number, asc: number, ascq: number, info?: number): Uint8Array {
  const b = new Uint8Array(18);
  b[0] = 0x70 | (info !== undefined ? 0x80 : 0);
  b[2] = key;
  if (info !== undefined) new DataView(b.buffer).setUint32(3, info);
  b[7] = 10;
  b[12] = asc;
  b[13] = ascq;
  return b;
}

/** Descriptor-format sense (SPC-4 §4.5.2) with an information descriptor when `info` is given. */
export function descriptorSense(key: number, asc: number, ascq: number, info?: bigint): Uint8Array {
  const descs: number[] = [];
  if (info !== undefined) {
    const d = new Uint8Array(12);
    d[0] = 0x00;
    d[1] = 0x0a;
    d[2] = 0x80;
    new DataView(d.buffer).setBigUint64(4, info);
    descs.push(...d);
  }
  return new Uint8Array([0x72, key, asc, ascq, 0, 0, 0, descs.length, ...descs]);
}

export const checkCondition = (sense: Uint8Array) => status(0x02, sense);

type Script = (cmd: ScsiCommand) => ScsiResponse | undefined | Promise<ScsiResponse | undefined>;

export class ScriptedTransport implements ScsiTransport {
  maxTransferHint = 0;
  readonly media: Uint8Array;
  /** Every command received, in order. */
  readonly commands: ScsiCommand[] = [];
  /** One-shot answers consulted (and removed) before the disk model; undefined = pass. */
  readonly script: Script[] = [];
  /** Persistent interceptors consulted before the disk model; undefined = pass. */
  readonly intercept: Script[] = [];
  inFlight = 0;
  maxInFlight = 0;
  /** Simulated latency per command (ms) so concurrency is observable. */
  latencyMs = 0;
  closed = false;

  constructor(readonly model: DiskModel) {
    this.media = new Uint8Array(model.blockSize * model.blocks);
  }

  async execute(cmd: ScsiCommand): Promise<ScsiResponse> {
    this.commands.push({ ...cmd, cdb: cmd.cdb.slice() });
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      if (this.latencyMs > 0) await new Promise((r) => setTimeout(r, this.latencyMs));
      else await Promise.resolve();
      const s = this.script.shift();
      const r = s ? await s(cmd) : undefined;
      if (r) return r;
      for (const i of this.intercept) {
        const x = await i(cmd);
        if (x) return x;
      }
      return this.#disk(cmd);
    } finally {
      this.inFlight--;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.resolve();
  }

  /** Commands with this opcode. */
  ops(op: number): ScsiCommand[] {
    return this.commands.filter((c) => c.cdb[0] === op);
  }

  #data(cmd: ScsiCommand, bytes: Uint8Array): ScsiResponse {
    const want = cmd.dataInLength ?? 0;
    const n = Math.min(want, bytes.length);
    const out = cmd.dataInBuffer ? cmd.dataInBuffer.subarray(0, n) : new Uint8Array(n);
    out.set(bytes.subarray(0, n));
    return good(out, want - n);
  }

  #illegal(asc = 0x20): ScsiResponse {
    return checkCondition(fixedSense(0x05, asc, 0));
  }

  #disk(cmd: ScsiCommand): ScsiResponse {
    const m = this.model;
    const c = cmd.cdb;
    const dv = new DataView(c.buffer, c.byteOffset, c.byteLength);
    const bs = m.blockSize;
    const lba64 = () => Number(dv.getBigUint64(2));
    switch (c[0]) {
      case 0x00:
        return good();
      case 0x12: {
        if (c[1] & 1) return this.#data(cmd, this.#vpd(c[2]) ?? new Uint8Array(0));
        const b = new Uint8Array(96);
        b[0] = ((m.qualifier ?? 0) << 5) | (m.deviceType ?? 0);
        b[2] = 6;
        b[3] = 2;
        b[4] = 91;
        b[7] = 0x02;
        const put = (s: string, o: number, n: number) =>
          b.set(new TextEncoder().encode(s.padEnd(n, " ").slice(0, n)), o);
        put(m.vendor ?? "ISBOOT", 8, 8);
        put(m.product ?? "SCRIPTED DISK", 16, 16);
        put(m.revision ?? "0.1", 32, 4);
        return this.#data(cmd, b);
      }
      case 0x9e: {
        if (m.no16) return this.#illegal();
        const b = new Uint8Array(32);
        const v = new DataView(b.buffer);
        v.setBigUint64(0, BigInt(m.blocks - 1));
        v.setUint32(8, bs);
        b[13] = m.physicalExponent ?? 0;
        b[14] = (m.lbpme ? 0x80 : 0) | (rc16Lbprz(m) ? 0x40 : 0);
        return this.#data(cmd, b);
      }
      case 0x25: {
        const b = new Uint8Array(8);
        const v = new DataView(b.buffer);
        v.setUint32(0, Math.min(m.blocks - 1, 0xffffffff));
        v.setUint32(4, bs);
        return this.#data(cmd, b);
      }
      case 0x5a: {
        const b = new Uint8Array(8 + 20);
        b[1] = b.length - 2;
        b[3] = (m.writeProtect ? 0x80 : 0) | (m.dpoFua ? 0x10 : 0);
        b[8] = 0x08;
        b[9] = 18;
        b[10] = 0x04; // WCE
        return this.#data(cmd, b);
      }
      case 0x88:
      case 0x28: {
        const lba = c[0] === 0x88 ? lba64() : dv.getUint32(2);
        const n = c[0] === 0x88 ? dv.getUint32(10) : dv.getUint16(7);
        if (lba + n > m.blocks) return this.#illegal(0x21);
        return this.#data(cmd, this.media.subarray(lba * bs, (lba + n) * bs));
      }
      case 0x8a:
      case 0x2a: {
        if (m.writeProtect) return checkCondition(fixedSense(0x07, 0x27, 0));
        const lba = c[0] === 0x8a ? lba64() : dv.getUint32(2);
        const n = c[0] === 0x8a ? dv.getUint32(10) : dv.getUint16(7);
        if (lba + n > m.blocks) return this.#illegal(0x21);
        if (!cmd.dataOut || cmd.dataOut.length !== n * bs) return this.#illegal(0x24);
        this.media.set(cmd.dataOut, lba * bs);
        return good();
      }
      case 0x35:
        return m.noSync10 ? this.#illegal() : good();
      case 0x91:
        return good();
      case 0x42: {
        if (!m.lbp?.lbpu) return this.#illegal();
        const p = cmd.dataOut!;
        const pv = new DataView(p.buffer, p.byteOffset, p.byteLength);
        for (let o = 8; o + 16 <= p.length; o += 16) {
          const lba = Number(pv.getBigUint64(o));
          const n = pv.getUint32(o + 8);
          if (lba + n > m.blocks) return this.#illegal(0x21);
          this.media.fill(0, lba * bs, (lba + n) * bs);
        }
        return good();
      }
      case 0x93: {
        if (m.noWriteSame) return this.#illegal();
        const lba = lba64();
        const n = dv.getUint32(10);
        if (lba + n > m.blocks) return this.#illegal(0x21);
        const d = cmd.dataOut!;
        for (let i = 0; i < n; i++) this.media.set(d, (lba + i) * bs);
        return good();
      }
      default:
        return this.#illegal();
    }
  }

  #vpd(page: number): Uint8Array | null {
    const m = this.model;
    const pages = [0x00, 0x83];
    if (m.serial !== null) pages.push(0x80);
    if (m.blockLimits !== null) pages.push(0xb0);
    pages.push(0xb1);
    if (m.lbp) pages.push(0xb2);
    pages.sort((a, b) => a - b);
    const wrap = (body: number[] | Uint8Array) =>
      new Uint8Array([0, page, body.length >> 8, body.length & 0xff, ...body]);
    switch (page) {
      case 0x00:
        return wrap(pages);
      case 0x80:
        return m.serial === null ? null : wrap(new TextEncoder().encode(m.serial ?? "SCRIPT0001"));
      case 0x83: {
        const naa = [
          0x60,
          0x01,
          0x40,
          0x50,
          0x12,
          0x34,
          0x56,
          0x78,
          0x9a,
          0xbc,
          0xde,
          0xf0,
          1,
          2,
          3,
          4,
        ];
        const t10 = new TextEncoder().encode("ISBOOT  disk-0001");
        return wrap([0x01, 0x03, 0, naa.length, ...naa, 0x02, 0x01, 0, t10.length, ...t10]);
      }
      case 0xb0: {
        const bl = m.blockLimits ?? {};
        const b = new Uint8Array(0x3c);
        const v = new DataView(b.buffer);
        v.setUint16(2, bl.granularity ?? 0);
        v.setUint32(4, bl.maxTransfer ?? 0);
        v.setUint32(8, bl.optimal ?? 0);
        v.setUint32(16, bl.maxUnmapLba ?? 0);
        v.setUint32(20, bl.maxUnmapDescriptors ?? 0);
        v.setBigUint64(32, BigInt(bl.maxWriteSame ?? 0));
        return wrap(b);
      }
      case 0xb1:
        return wrap([0, 1, 0, 3, ...new Array(56).fill(0)]);
      case 0xb2: {
        const l = m.lbp!;
        return wrap([0, (l.lbpu ? 0x80 : 0) | (l.lbpws ? 0x40 : 0) | (lbprzField(l) << 2), 2, 0]);
      }
    }
    return null;
  }
}
