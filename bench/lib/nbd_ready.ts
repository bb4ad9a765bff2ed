/**
 * The smallest NBD client that proves an export is ready: fixed newstyle
 * handshake, NBD_OPT_GO on the default export, then NBD_CMD_DISC.
 * (NBD protocol, "Fixed newstyle negotiation" and "Option types".)
 */

const NBDMAGIC = 0x4e42444d41474943n; // "NBDMAGIC"
const IHAVEOPT = 0x49484156454f5054n; // "IHAVEOPT"
const REPLY_MAGIC = 0x3e889045565a9n;
const NBD_FLAG_C_FIXED_NEWSTYLE = 1;
const NBD_FLAG_C_NO_ZEROES = 2;
const NBD_OPT_GO = 7;
const NBD_REP_ACK = 1;
const NBD_REP_INFO = 3;
const NBD_INFO_EXPORT = 0;

async function readExact(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const buf = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = await conn.read(buf.subarray(got));
    if (r === null) throw new Error("NBD server closed the connection during handshake");
    got += r;
  }
  return buf;
}

/**
 * Connect to `socketPath`, negotiate NBD_OPT_GO and return the export size.
 * Throws if the socket is not there yet or the server refuses.
 *
 * @example
 * const size = await nbdGo("/tmp/bench/isboot.sock");
 */
export async function nbdGo(socketPath: string): Promise<bigint> {
  const conn = await Deno.connect({ transport: "unix", path: socketPath });
  try {
    const greet = new DataView((await readExact(conn, 18)).buffer);
    if (greet.getBigUint64(0) !== NBDMAGIC || greet.getBigUint64(8) !== IHAVEOPT) {
      throw new Error("not a fixed-newstyle NBD server");
    }
    const out = new DataView(new ArrayBuffer(4 + 16 + 6));
    out.setUint32(0, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    out.setBigUint64(4, IHAVEOPT);
    out.setUint32(12, NBD_OPT_GO);
    out.setUint32(16, 6); // name length (0) + information request count (0)
    await conn.write(new Uint8Array(out.buffer));
    let size = -1n;
    for (;;) {
      const h = new DataView((await readExact(conn, 20)).buffer);
      if (h.getBigUint64(0) !== REPLY_MAGIC) throw new Error("bad NBD option reply magic");
      const type = h.getUint32(12);
      const len = h.getUint32(16);
      const data = len ? new DataView((await readExact(conn, len)).buffer) : null;
      if (type === NBD_REP_ACK) break;
      if (type & 0x80000000) {
        throw new Error(`NBD_OPT_GO refused (reply type 0x${type.toString(16)})`);
      }
      if (type === NBD_REP_INFO && data && len >= 12 && data.getUint16(0) === NBD_INFO_EXPORT) {
        size = data.getBigUint64(2);
      }
    }
    // Transmission phase now; a clean NBD_CMD_DISC ends it.
    const disc = new DataView(new ArrayBuffer(28));
    disc.setUint32(0, 0x25609513);
    disc.setUint16(6, 2); // NBD_CMD_DISC
    await conn.write(new Uint8Array(disc.buffer));
    return size;
  } finally {
    conn.close();
  }
}

/**
 * Poll until `nbdGo` succeeds or `timeoutMs` passes; returns ms waited and the size.
 *
 * @example
 * const { ms } = await waitReady("/tmp/s.sock", 10_000, () => alive(child.pid));
 */
export async function waitReady(
  socketPath: string,
  timeoutMs: number,
  stillRunning: () => boolean,
): Promise<{ ms: number; size: bigint }> {
  const t0 = performance.now();
  let last = "";
  while (performance.now() - t0 < timeoutMs) {
    try {
      const size = await nbdGo(socketPath);
      return { ms: performance.now() - t0, size };
    } catch (e) {
      last = (e as Error).message;
    }
    if (!stillRunning()) throw new Error(`server exited before it was ready (${last})`);
    await new Promise((r) => setTimeout(r, 3));
  }
  throw new Error(`not ready after ${timeoutMs} ms: ${last}`);
}
