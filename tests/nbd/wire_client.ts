/**
 * A scripted NBD client over a ByteStream, for driving the server in-process
 * (hostile inputs, ordering, backpressure) where real clients can't be made
 * to misbehave on demand.
 */
import * as C from "../../src/nbd/constants.ts";
import { encodeRequest, type NbdRequest } from "../../src/nbd/protocol.ts";
import type { ByteStream } from "../../src/nbd/stream.ts";

export class WireClient {
  #buf = new Uint8Array(0);
  #eof = false;
  constructor(readonly s: ByteStream) {}

  async #fill(n: number, timeoutMs = 5000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.#buf.length < n) {
      if (this.#eof) return false;
      const tmp = new Uint8Array(Math.max(65536, n - this.#buf.length));
      const got = await Promise.race([
        this.s.read(tmp),
        new Promise<"timeout">((r) =>
          setTimeout(() => r("timeout"), Math.max(1, deadline - Date.now()))
        ),
      ]);
      if (got === "timeout") throw new Error(`timed out waiting for ${n} bytes`);
      if (got === null) {
        this.#eof = true;
        return false;
      }
      const nb = new Uint8Array(this.#buf.length + got);
      nb.set(this.#buf);
      nb.set(tmp.subarray(0, got), this.#buf.length);
      this.#buf = nb;
    }
    return true;
  }

  /** Read exactly n bytes; null at EOF. */
  async read(n: number, timeoutMs?: number): Promise<Uint8Array | null> {
    if (!(await this.#fill(n, timeoutMs))) return null;
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }

  /** True when the server closed (read returns EOF) within the timeout. */
  async closedByServer(timeoutMs = 5000): Promise<boolean> {
    try {
      for (;;) {
        if (!(await this.#fill(this.#buf.length + 1, timeoutMs))) return true;
        this.#buf = new Uint8Array(0);
      }
    } catch {
      return false;
    }
  }

  write(b: Uint8Array): Promise<void> {
    return this.s.write(b);
  }

  /** Read the greeting, send client flags. */
  async greet(clientFlags = C.NBD_FLAG_C_FIXED_NEWSTYLE | C.NBD_FLAG_C_NO_ZEROES) {
    const g = await this.read(18);
    if (!g) throw new Error("no greeting");
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, clientFlags);
    await this.write(b);
    return g;
  }

  async option(option: number, data: Uint8Array = new Uint8Array(0)): Promise<void> {
    const b = new Uint8Array(16 + data.length);
    const v = new DataView(b.buffer);
    v.setUint32(0, C.IHAVEOPT_HI);
    v.setUint32(4, C.IHAVEOPT_LO);
    v.setUint32(8, option);
    v.setUint32(12, data.length);
    b.set(data, 16);
    await this.write(b);
  }

  /** Read one option reply. */
  async optionReply(): Promise<{ option: number; type: number; data: Uint8Array } | null> {
    const h = await this.read(20);
    if (!h) return null;
    const v = new DataView(h.buffer);
    if (v.getUint32(0) !== C.NBD_REP_MAGIC_HI || v.getUint32(4) !== C.NBD_REP_MAGIC_LO) {
      throw new Error("bad option reply magic");
    }
    const len = v.getUint32(16);
    const data = (await this.read(len)) ?? new Uint8Array(0);
    return { option: v.getUint32(8), type: v.getUint32(12), data };
  }

  /** NBD_OPT_GO (or INFO) for `name`; returns the replies up to the final one. */
  async go(name = "", infos: number[] = [C.NBD_INFO_BLOCK_SIZE], option = C.NBD_OPT_GO) {
    const n = new TextEncoder().encode(name);
    const d = new Uint8Array(4 + n.length + 2 + infos.length * 2);
    const v = new DataView(d.buffer);
    v.setUint32(0, n.length);
    d.set(n, 4);
    v.setUint16(4 + n.length, infos.length);
    infos.forEach((t, i) => v.setUint16(6 + n.length + i * 2, t));
    await this.option(option, d);
    const replies = [];
    for (;;) {
      const r = await this.optionReply();
      if (!r) throw new Error("EOF during GO");
      replies.push(r);
      if (r.type !== C.NBD_REP_INFO) return replies;
    }
  }

  async request(r: Partial<NbdRequest> & { type: number }, payload?: Uint8Array) {
    const hdr = encodeRequest({
      flags: 0,
      handleHi: 0,
      handleLo: 0,
      offset: 0,
      length: payload?.length ?? 0,
      ...r,
    });
    if (payload) {
      const b = new Uint8Array(hdr.length + payload.length);
      b.set(hdr);
      b.set(payload, hdr.length);
      await this.write(b);
    } else {
      await this.write(hdr);
    }
  }

  /** The `n` bytes that follow a reply header; the server closing first is its fault. */
  async #payload(n: number, handleLo: number): Promise<Uint8Array> {
    const data = await this.read(n);
    if (!data) throw new Error(`EOF inside the reply to handle ${handleLo} (${n} bytes due)`);
    return data;
  }

  /**
   * Read one reply: null at EOF before it begins; throws when the stream
   * ends inside it. `readLength(handle)` says how many data bytes a
   * successful simple reply to that handle carries (0 for non-reads).
   */
  async reply(
    readLength: (handleLo: number) => number,
  ): Promise<
    { handleLo: number; error: number; data: Uint8Array | null; structured: boolean } | null
  > {
    const m = await this.read(4);
    if (!m) return null;
    const magic = new DataView(m.buffer).getUint32(0);
    if (magic === C.NBD_SIMPLE_REPLY_MAGIC) {
      const r = await this.read(12);
      if (!r) return null;
      const v = new DataView(r.buffer);
      const error = v.getUint32(0);
      const handleLo = v.getUint32(8);
      const n = error === 0 ? readLength(handleLo) : 0;
      const data = n > 0 ? await this.#payload(n, handleLo) : null;
      return { handleLo, error, data, structured: false };
    }
    if (magic === C.NBD_STRUCTURED_REPLY_MAGIC) {
      const r = await this.read(16);
      if (!r) return null;
      const v = new DataView(r.buffer);
      const flags = v.getUint16(0);
      const type = v.getUint16(2);
      const handleLo = v.getUint32(8);
      const len = v.getUint32(12);
      const payload = await this.#payload(len, handleLo);
      if (!(flags & C.NBD_REPLY_FLAG_DONE)) throw new Error("multi-chunk replies not expected");
      const pv = new DataView(payload.buffer);
      if (type === C.NBD_REPLY_TYPE_OFFSET_DATA) {
        return { handleLo, error: 0, data: payload.subarray(8), structured: true };
      }
      if (type === C.NBD_REPLY_TYPE_ERROR) {
        return { handleLo, error: pv.getUint32(0), data: null, structured: true };
      }
      if (type === C.NBD_REPLY_TYPE_NONE) {
        return { handleLo, error: 0, data: null, structured: true };
      }
      throw new Error(`unexpected chunk type ${type}`);
    }
    throw new Error(`bad reply magic 0x${magic.toString(16)}`);
  }
}
