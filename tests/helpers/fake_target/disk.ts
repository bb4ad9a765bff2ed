/**
 * A RAM disk behind the fake target ({@link FakeDisk}): answers the
 * full-feature PDUs of a logged-in connection as a plain target with one
 * LU would: SCSI commands (INQUIRY with its VPD pages, READ CAPACITY(10/16),
 * MODE SENSE(10), REPORT LUNS, TEST UNIT READY, SYNCHRONIZE CACHE,
 * READ/WRITE(10/16), CHECK CONDITION for the rest), NOP-Out, Task
 * Management, SendTargets, Logout. Reads go out as Data-In in segments of
 * the initiator's MaxRecvDataSegmentLength with the status in the last;
 * writes take immediate and unsolicited data and ask for the rest with one
 * R2T per burst. A hook sees each PDU first and may take it over; a tamper
 * function sees each Data-In, SCSI Response and R2T before it goes and may
 * change it or send something else. `resize()` changes the disk's size and
 * raises UNIT ATTENTION 2A/09 CAPACITY DATA HAS CHANGED on every connection
 * it serves (each an I_T nexus here), as SPC-4 §5.14 has a target do.
 *
 * @example
 * ```ts
 * const disk = new FakeDisk(8192);
 * const fake = new FakeTarget(async (c) => disk.serve(c, await c.acceptLogin()));
 * ```
 */
import {
  OP_DATA_IN,
  OP_DATA_OUT,
  OP_LOGOUT_REQ,
  OP_NOP_OUT,
  OP_R2T,
  OP_SCSI_CMD,
  OP_SCSI_RESP,
  OP_TASK_MGMT_REQ,
  OP_TEXT_REQ,
  RESERVED_TAG,
} from "../../../src/iscsi/constants.ts";
import type { TextPair } from "../../../src/iscsi/text.ts";
import { type FakeConn, type FakePdu, getU32, type SendFaults, setU32 } from "./conn.ts";

/** Sees each PDU of a served connection first; true when it dealt with the PDU itself. */
export type DiskHook = (pdu: FakePdu, c: FakeConn) => boolean | Promise<boolean>;

/** A Data-In, SCSI Response or R2T the disk is about to send for a command. */
export interface DiskReply {
  /** The command it answers. */
  cmd: FakePdu;
  /** The command's Expected Data Transfer Length. */
  edtl: number;
  bhs: Uint8Array;
  data: Uint8Array;
  faults: SendFaults;
}

/**
 * Sees each reply before it goes: "send" sends it (changed or not); "stop"
 * when the tamper function sent what it wanted instead, and the rest of the
 * command is left unanswered.
 */
export type Tamper = (r: DiskReply, c: FakeConn) => "send" | "stop" | Promise<"send" | "stop">;

export interface DiskOptions {
  /** LUN of the disk (default 1); other LUNs get CHECK CONDITION. */
  lun?: number;
  /** The target's name, for SendTargets. */
  iqn?: string;
}

/** A WRITE waiting for its data. */
interface PendingWrite {
  cmd: FakePdu;
  edtl: number;
  /** Byte offset on the disk. */
  at: number;
  length: number;
  got: number;
  r2tSN: number;
  /** Its R2T was tampered with: Data-Out for it is ignored. */
  dead: boolean;
}

interface Served {
  writes: Map<number, PendingWrite>;
  tamper?: Tamper;
  /** ASC/ASCQ of a UNIT ATTENTION the next command gets (one pending at most here). */
  unitAttention?: number;
}

const BLOCK = 512;
const encoder = new TextEncoder();

export class FakeDisk {
  #bytes: Uint8Array;
  readonly lun: number;
  readonly iqn?: string;
  /** Connections served, in order. */
  readonly conns: FakeConn[] = [];
  readonly #served = new WeakMap<FakeConn, Served>();

  constructor(blocks = 8192, o: DiskOptions = {}) {
    this.#bytes = new Uint8Array(blocks * BLOCK);
    this.lun = o.lun ?? 1;
    this.iqn = o.iqn;
  }

  /** The disk's contents (a new array after resize()). */
  get bytes(): Uint8Array {
    return this.#bytes;
  }

  get blocks(): number {
    return this.#bytes.length / BLOCK;
  }

  /**
   * Make the disk `blocks` long (contents kept up to the shorter length),
   * and give every connection served so far UNIT ATTENTION 2A/09 CAPACITY
   * DATA HAS CHANGED on its next command, unless `unitAttention` is false
   * (a target that changes size silently, as tgt does).
   */
  resize(blocks: number, o: { unitAttention?: boolean } = {}): void {
    const next = new Uint8Array(blocks * BLOCK);
    next.set(this.#bytes.subarray(0, Math.min(next.length, this.#bytes.length)));
    this.#bytes = next;
    if (o.unitAttention === false) return;
    for (const c of this.conns) this.#state(c).unitAttention = 0x2a09;
  }

  #state(c: FakeConn): Served {
    let s = this.#served.get(c);
    if (!s) this.#served.set(c, s = { writes: new Map() });
    return s;
  }

  /**
   * Answer the PDUs of a logged-in connection until Logout or EOF. `hook`
   * sees each PDU first and returns true when it dealt with it; `tamper`
   * sees each reply of the disk. `firstCmdSN`: the ExpCmdSN to start from,
   * for a script that did the login by hand.
   */
  async serve(c: FakeConn, firstCmdSN?: number, hook?: DiskHook, tamper?: Tamper): Promise<void> {
    if (firstCmdSN !== undefined) c.expCmdSN = firstCmdSN >>> 0;
    this.#state(c).tamper = tamper;
    this.conns.push(c);
    for (;;) {
      const pdu = await c.read();
      if (!pdu) return;
      if (pdu.opcode === OP_SCSI_CMD) c.noteCommand(pdu);
      if (hook && (await hook(pdu, c))) continue;
      if (await this.answer(c, pdu)) return;
    }
  }

  /** The default answer to any full-feature PDU; true at Logout (the connection ends). */
  async answer(c: FakeConn, pdu: FakePdu): Promise<boolean> {
    switch (pdu.opcode) {
      case OP_NOP_OUT: // answer pings (ITT not reserved)
        if (pdu.itt !== RESERVED_TAG) await c.nopIn(pdu);
        return false;
      case OP_SCSI_CMD:
        c.take(pdu);
        await this.execute(c, pdu);
        return false;
      case OP_TASK_MGMT_REQ:
        await c.tmfResponse(pdu);
        return false;
      case OP_TEXT_REQ: {
        c.take(pdu);
        const answer: TextPair[] = [];
        if (this.iqn !== undefined && pdu.pairs().some(([k]) => k === "SendTargets")) {
          const addr = c.tcp.localAddr as Deno.NetAddr;
          answer.push(["TargetName", this.iqn], [
            "TargetAddress",
            `${addr.hostname}:${addr.port},1`,
          ]);
        }
        await c.textResponse(pdu, answer);
        return false;
      }
      case OP_DATA_OUT:
        await this.#dataOut(c, pdu);
        return false;
      case OP_LOGOUT_REQ:
        await c.logoutResponse(pdu);
        return true;
      default:
        throw new Error(`fake disk: opcode 0x${pdu.opcode.toString(16)} not handled`);
    }
  }

  /** Send a reply through the connection's tamper function; false when it stopped the command. */
  async #reply(c: FakeConn, r: DiskReply): Promise<boolean> {
    const tamper = this.#state(c).tamper;
    if (tamper && (await tamper(r, c)) === "stop") return false;
    await c.send(r.bhs, r.data, r.faults);
    return true;
  }

  /** SCSI Response: status, sense data, residual (§11.4). */
  #respond(
    c: FakeConn,
    cmd: FakePdu,
    edtl: number,
    status: number,
    sense?: Uint8Array,
  ): Promise<boolean> {
    const b = c.bhs(OP_SCSI_RESP, cmd.itt);
    b[3] = status;
    let seg = new Uint8Array(0);
    if (sense) {
      seg = new Uint8Array(2 + sense.length);
      seg[0] = sense.length >> 8;
      seg[1] = sense.length & 0xff;
      seg.set(sense, 2);
    }
    return this.#reply(c, { cmd, edtl, bhs: b, data: seg, faults: {} });
  }

  /** CHECK CONDITION with fixed-format sense data. */
  #checkCondition(
    c: FakeConn,
    cmd: FakePdu,
    edtl: number,
    key: number,
    asc: number,
    ascq = 0,
  ) {
    const s = new Uint8Array(18);
    s[0] = 0x70;
    s[2] = key;
    s[7] = 10;
    s[12] = asc;
    s[13] = ascq;
    return this.#respond(c, cmd, edtl, 0x02, s);
  }

  /** Data-In with the status in the last PDU (phase collapse, §11.7.4); underflow as residual. */
  async #dataIn(c: FakeConn, cmd: FakePdu, edtl: number, payload: Uint8Array): Promise<void> {
    const n = Math.min(payload.length, edtl);
    const under = payload.length < edtl;
    let off = 0;
    let dataSN = 0;
    do {
      const len = Math.min(c.params.peerMrdsl, n - off);
      const last = off + len >= n;
      const b = c.bhs(OP_DATA_IN, cmd.itt, last);
      b[1] = last ? 0x80 | 0x01 | (under ? 0x02 : 0) : 0;
      setU32(b, 36, dataSN++);
      setU32(b, 40, off);
      if (last) setU32(b, 44, under ? edtl - n : 0);
      const data = payload.subarray(off, off + len);
      if (!(await this.#reply(c, { cmd, edtl, bhs: b, data, faults: {} }))) return;
      off += len;
    } while (off < n);
  }

  /** Carry out a SCSI command on the RAM disk. */
  async execute(c: FakeConn, cmd: FakePdu): Promise<void> {
    const edtl = getU32(cmd.bhs, 20);
    const cdb = cmd.bhs.subarray(32, 48);
    const cv = new DataView(cdb.buffer, cdb.byteOffset, 16);
    const lun = cmd.h.lunBytes[1];
    const op = cdb[0];
    const dataIn = (d: Uint8Array) => this.#dataIn(c, cmd, edtl, d);
    const check = (key: number, asc: number) => this.#checkCondition(c, cmd, edtl, key, asc);
    if (lun !== this.lun && op !== 0x12 && op !== 0xa0) {
      await check(0x05, 0x25); // LOGICAL UNIT NOT SUPPORTED
      return;
    }
    // A pending UNIT ATTENTION ends the first command that is not INQUIRY,
    // REPORT LUNS or REQUEST SENSE (SPC-4 §5.14), which is not executed.
    const st = this.#state(c);
    if (st.unitAttention !== undefined && op !== 0x12 && op !== 0xa0 && op !== 0x03) {
      const ua = st.unitAttention;
      st.unitAttention = undefined;
      await this.#checkCondition(c, cmd, edtl, 0x06, ua >> 8, ua & 0xff);
      return;
    }
    switch (op) {
      case 0x00: // TEST UNIT READY
      case 0x35: // SYNCHRONIZE CACHE(10)
      case 0x91: // SYNCHRONIZE CACHE(16)
        await this.#respond(c, cmd, edtl, 0);
        return;
      case 0x12: { // INQUIRY
        const evpd = cdb[1] & 1;
        const alloc = (cdb[3] << 8) | cdb[4];
        let d: Uint8Array;
        if (!evpd) {
          d = new Uint8Array(96);
          d[0] = lun === this.lun ? 0x00 : 0x7f;
          d[2] = 0x06;
          d[3] = 0x02;
          d[4] = 91;
          d.set(encoder.encode("FAKE    HOSTILE TARGET  0001"), 8);
        } else if (cdb[2] === 0x00) {
          d = Uint8Array.from([0, 0x00, 0, 3, 0x00, 0x80, 0x83]);
        } else if (cdb[2] === 0x80) {
          const sn = encoder.encode("hostile0001");
          d = new Uint8Array(4 + sn.length);
          d[1] = 0x80;
          d[3] = sn.length;
          d.set(sn, 4);
        } else if (cdb[2] === 0x83) {
          const id = encoder.encode("FAKE    hostile0001");
          d = new Uint8Array(8 + id.length);
          d[1] = 0x83;
          d[3] = 4 + id.length;
          d[4] = 0x02; // ASCII
          d[5] = 0x01; // T10 vendor ID
          d[7] = id.length;
          d.set(id, 8);
        } else {
          await check(0x05, 0x24); // INVALID FIELD IN CDB
          return;
        }
        await dataIn(d.subarray(0, Math.min(d.length, alloc)));
        return;
      }
      case 0x25: { // READ CAPACITY(10)
        const d = new Uint8Array(8);
        setU32(d, 0, this.blocks - 1);
        setU32(d, 4, BLOCK);
        await dataIn(d);
        return;
      }
      case 0x9e: { // SERVICE ACTION IN(16) / READ CAPACITY(16)
        if ((cdb[1] & 0x1f) !== 0x10) {
          await check(0x05, 0x20);
          return;
        }
        const d = new Uint8Array(32);
        setU32(d, 4, this.blocks - 1);
        setU32(d, 8, BLOCK);
        await dataIn(d.subarray(0, Math.min(32, cv.getUint32(10))));
        return;
      }
      case 0x5a: { // MODE SENSE(10): header only, not write-protected
        const d = new Uint8Array(8);
        d[1] = 6;
        await dataIn(d);
        return;
      }
      case 0xa0: { // REPORT LUNS
        const d = new Uint8Array(16);
        setU32(d, 0, 8);
        d[9] = this.lun;
        await dataIn(d);
        return;
      }
      case 0x28: // READ(10)
      case 0x88: // READ(16)
      case 0x2a: // WRITE(10)
      case 0x8a: { // WRITE(16)
        const sixteen = op === 0x88 || op === 0x8a;
        const lba = sixteen ? cv.getUint32(6) : cv.getUint32(2); // disks here are small
        const count = sixteen ? cv.getUint32(10) : cv.getUint16(7);
        if ((sixteen && cv.getUint32(2) !== 0) || lba + count > this.blocks) {
          await check(0x05, 0x21); // LBA OUT OF RANGE
          return;
        }
        const at = lba * BLOCK;
        if (op === 0x28 || op === 0x88) {
          await dataIn(this.bytes.slice(at, at + count * BLOCK));
          return;
        }
        const length = Math.min(count * BLOCK, edtl);
        const w: PendingWrite = { cmd, edtl, at, length, got: 0, r2tSN: 0, dead: false };
        this.#state(c).writes.set(cmd.itt, w);
        this.#put(w, cmd.data, 0); // immediate data
        // F: no unsolicited Data-Out follows (§11.3.4); else wait for it.
        if (cmd.flags & 0x80) await this.#solicit(c, w);
        return;
      }
      default:
        await check(0x05, 0x20); // INVALID COMMAND OPERATION CODE
    }
  }

  #put(w: PendingWrite, data: Uint8Array, offset: number): void {
    if (offset + data.length <= w.length) this.#bytes.set(data, w.at + offset);
    w.got += data.length;
  }

  /** Data-Out, unsolicited or for an R2T (§11.7). */
  async #dataOut(c: FakeConn, pdu: FakePdu): Promise<void> {
    const w = this.#state(c).writes.get(pdu.itt);
    if (!w) throw new Error(`fake disk: Data-Out for unknown ITT ${pdu.itt}`);
    if (w.dead) return;
    this.#put(w, pdu.data, getU32(pdu.bhs, 40));
    if (pdu.flags & 0x80) await this.#solicit(c, w);
  }

  /** Ask for the rest of a write (one R2T per burst, in order), or answer it when all is in. */
  async #solicit(c: FakeConn, w: PendingWrite): Promise<void> {
    const { cmd, edtl } = w;
    if (w.got >= w.length) {
      this.#state(c).writes.delete(cmd.itt);
      await this.#respond(c, cmd, edtl, 0);
      return;
    }
    const b = c.bhs(OP_R2T, cmd.itt, false);
    setU32(b, 20, c.nextTtt());
    setU32(b, 36, w.r2tSN++);
    setU32(b, 40, w.got);
    setU32(b, 44, Math.min(c.params.maxBurst, w.length - w.got));
    if (!(await this.#reply(c, { cmd, edtl, bhs: b, data: new Uint8Array(0), faults: {} }))) {
      w.dead = true; // the initiator is expected to give up on this connection
    }
  }
}
