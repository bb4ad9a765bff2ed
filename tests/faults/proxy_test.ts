/**
 * The fault proxy itself, against a simple echo peer: every fault does what
 * it says on the wire, and the iSCSI framing survives any chunking.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { fuzzOptions } from "../helpers/fuzz.ts";
import { BHS_LENGTH, crc32c, FaultProxy, OPCODE_LOGIN_RESPONSE, PduFramer } from "./proxy.ts";

interface Echo {
  port: number;
  /** How each accepted connection ended: "eof", "reset" or another error name. */
  endings: string[];
  close(): Promise<void>;
}

function startEcho(): Echo {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const endings: string[] = [];
  const conns = new Set<Deno.Conn>();
  const tasks: Promise<void>[] = [];
  const serve = async (c: Deno.Conn) => {
    conns.add(c);
    const buf = new Uint8Array(65536);
    try {
      for (;;) {
        const n = await c.read(buf);
        if (n === null) {
          endings.push("eof");
          break;
        }
        let off = 0;
        while (off < n) off += await c.write(buf.subarray(off, n));
      }
    } catch (e) {
      endings.push(e instanceof Deno.errors.ConnectionReset ? "reset" : (e as Error).name);
    } finally {
      conns.delete(c);
      try {
        c.close();
      } catch { /* already closed */ }
    }
  };
  const accepting = (async () => {
    try {
      for await (const c of listener) tasks.push(serve(c));
    } catch { /* listener closed */ }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    endings,
    async close() {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* gone */ }
      }
      await accepting;
      await Promise.allSettled(tasks);
    },
  };
}

async function readExactly(c: Deno.Conn, n: number, timeoutMs = 5000): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let have = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timeout after ${have}/${n} bytes`)), timeoutMs);
  });
  try {
    while (have < n) {
      // A read left pending by a timeout is ended by the caller closing c.
      const got = await Promise.race([c.read(out.subarray(have)), timeout]);
      if (got === null) throw new Error(`EOF after ${have}/${n} bytes`);
      have += got;
    }
    return out;
  } finally {
    clearTimeout(timer);
  }
}

async function writeAll(c: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await c.write(data.subarray(off));
}

/** Builds a PDU with the given opcode, flags, AHS words, data and digest space. */
function pdu(
  opcode: number,
  opts: { flags?: number; ahsWords?: number; data?: Uint8Array; hd?: boolean; dd?: boolean } = {},
): Uint8Array {
  const data = opts.data ?? new Uint8Array(0);
  const ahs = (opts.ahsWords ?? 0) * 4;
  const hdLen = opts.hd ? 4 : 0;
  const padded = (data.length + 3) & ~3;
  const ddLen = opts.dd && data.length > 0 ? 4 : 0;
  const out = new Uint8Array(BHS_LENGTH + ahs + hdLen + padded + ddLen);
  out[0] = opcode;
  out[1] = opts.flags ?? 0x80;
  out[4] = opts.ahsWords ?? 0;
  out[5] = (data.length >> 16) & 0xff;
  out[6] = (data.length >> 8) & 0xff;
  out[7] = data.length & 0xff;
  for (let i = 8; i < BHS_LENGTH + ahs + hdLen; i++) out[i] = i & 0xff;
  out.set(data, BHS_LENGTH + ahs + hdLen);
  return out;
}

function loginFinal(text: string): Uint8Array {
  // T=1, CSG=1 (operational), NSG=3 (full feature).
  return pdu(OPCODE_LOGIN_RESPONSE, {
    flags: 0x80 | (1 << 2) | 3,
    data: new TextEncoder().encode(text),
  });
}

async function withProxy(
  iscsi: boolean,
  body: (proxy: FaultProxy, echo: Echo) => Promise<void>,
): Promise<void> {
  const echo = startEcho();
  const proxy = await FaultProxy.start({ targetPort: echo.port, iscsi });
  try {
    await body(proxy, echo);
  } finally {
    await proxy.close();
    await echo.close();
  }
}

/** Connects and reads once: "reset", "eof" or "data" (the proxy may reset before connect returns). */
async function connectAndRead(port: number): Promise<string> {
  let c: Deno.Conn;
  try {
    c = await Deno.connect({ hostname: "127.0.0.1", port });
  } catch (e) {
    if (e instanceof Deno.errors.ConnectionReset) return "reset";
    throw e;
  }
  try {
    const n = await c.read(new Uint8Array(1));
    return n === null ? "eof" : "data";
  } catch (e) {
    if (e instanceof Deno.errors.ConnectionReset) return "reset";
    throw e;
  } finally {
    c.close();
  }
}

async function waitFor(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not reached");
    await new Promise((r) => setTimeout(r, 10));
  }
}

Deno.test("proxy: passes 4 MiB of raw bytes through unchanged", async () => {
  await withProxy(false, async (proxy) => {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    try {
      const data = new Uint8Array(4 << 20);
      for (let i = 0; i < data.length; i += 65536) {
        crypto.getRandomValues(data.subarray(i, i + 65536));
      }
      const [, back] = await Promise.all([writeAll(c, data), readExactly(c, data.length, 20000)]);
      assert.deepEqual(back, data);
      assert.equal(proxy.accepted, 1);
    } finally {
      c.close();
    }
  });
});

Deno.test("proxy: passes framed iSCSI PDUs through unchanged and counts them", async () => {
  await withProxy(true, async (proxy) => {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    try {
      const pdus = [
        pdu(0x01, { data: new Uint8Array(5).fill(7) }),
        pdu(0x05, { ahsWords: 2, data: new Uint8Array(8192).fill(1) }),
        pdu(0x00),
      ];
      const all = new Uint8Array(pdus.reduce((a, p) => a + p.length, 0));
      let o = 0;
      for (const p of pdus) {
        all.set(p, o);
        o += p.length;
      }
      await writeAll(c, all);
      assert.deepEqual(await readExactly(c, all.length), all);
      const conn = proxy.connections[0];
      await waitFor(() => conn.toInitiator.count === 3);
      assert.equal(conn.toTarget.count, 3);
    } finally {
      c.close();
    }
  });
});

Deno.test("proxy: cut closes both sides with an orderly end", async () => {
  await withProxy(false, async (proxy, echo) => {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    try {
      await writeAll(c, new Uint8Array([1, 2, 3]));
      await readExactly(c, 3);
      proxy.cut();
      assert.equal(await c.read(new Uint8Array(16)), null);
      await waitFor(() => echo.endings.length === 1);
      assert.deepEqual(echo.endings, ["eof"]);
      assert.equal(proxy.open, 0);
    } finally {
      c.close();
    }
  });
});

Deno.test("proxy: reset sends RST to both sides", async () => {
  await withProxy(false, async (proxy, echo) => {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    try {
      await writeAll(c, new Uint8Array([1, 2, 3]));
      await readExactly(c, 3);
      proxy.reset();
      await assert.rejects(() => c.read(new Uint8Array(16)), Deno.errors.ConnectionReset);
      await waitFor(() => echo.endings.length === 1);
      assert.deepEqual(echo.endings, ["reset"]);
    } finally {
      c.close();
    }
  });
});

Deno.test("proxy: stall holds bytes both ways for the time given, then delivers them", async () => {
  await withProxy(false, async (proxy) => {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    try {
      await writeAll(c, new Uint8Array([9]));
      await readExactly(c, 1);
      proxy.stall(600);
      const t0 = performance.now();
      const payload = new Uint8Array(100_000).fill(0x42);
      const [, back] = await Promise.all([writeAll(c, payload), readExactly(c, payload.length)]);
      const waited = performance.now() - t0;
      assert.deepEqual(back, payload);
      assert.ok(waited >= 550, `bytes arrived after ${waited.toFixed(0)} ms, during the stall`);
      assert.ok(waited < 3000, `bytes took ${waited.toFixed(0)} ms after a 600 ms stall`);
    } finally {
      c.close();
    }
  });
});

Deno.test("proxy: blackhole silences open connections for good and lets new ones through", async () => {
  await withProxy(false, async (proxy, echo) => {
    const a = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    try {
      await writeAll(a, new Uint8Array([1]));
      await readExactly(a, 1);
      proxy.blackhole();
      await writeAll(a, new Uint8Array([2]));
      await assert.rejects(() => readExactly(a, 1, 800), /timeout/);
      proxy.passThrough(); // must not revive a black-holed connection
      await assert.rejects(() => readExactly(a, 1, 500), /timeout/);
      assert.deepEqual(echo.endings, [], "the black hole closed a side");
      const b = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
      try {
        await writeAll(b, new Uint8Array([3]));
        assert.deepEqual(await readExactly(b, 1), new Uint8Array([3]));
      } finally {
        b.close();
      }
    } finally {
      a.close();
    }
  });
});

Deno.test("proxy: refuse resets new connections and leaves open ones alone", async () => {
  await withProxy(false, async (proxy) => {
    const a = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    try {
      proxy.refuse(true);
      assert.ok(["reset", "eof"].includes(await connectAndRead(proxy.port)));
      await writeAll(a, new Uint8Array([5]));
      assert.deepEqual(await readExactly(a, 1), new Uint8Array([5]));
    } finally {
      a.close();
    }
  });
});

Deno.test("proxy: a target that refuses the connection becomes a reset to the initiator", async () => {
  // A port nobody listens on: bind and close a listener to find one.
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadPort = (l.addr as Deno.NetAddr).port;
  l.close();
  const proxy = await FaultProxy.start({ targetPort: deadPort });
  try {
    assert.ok(["reset", "eof"].includes(await connectAndRead(proxy.port)));
  } finally {
    await proxy.close();
  }
});

Deno.test("proxy: corrupts exactly one header byte, only in the Full Feature Phase, with digests sniffed from login", async () => {
  await withProxy(true, async (proxy) => {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    try {
      const armed = proxy.corrupt({ direction: "to-target", part: "header", byte: 20 });
      // A login-phase PDU: not corrupted.
      const login = loginFinal("HeaderDigest=CRC32C\0DataDigest=CRC32C\0");
      await writeAll(c, login);
      assert.deepEqual(await readExactly(c, login.length), login);
      await proxy.waitForLogin();
      // Full Feature Phase, digests on: the framer must expect 4 more header bytes.
      const cmd = pdu(0x01, { hd: true, dd: true, data: new Uint8Array(6).fill(3) });
      await writeAll(c, cmd);
      const back = await readExactly(c, cmd.length);
      const diffs = [...back.keys()].filter((i) => back[i] !== cmd[i]);
      assert.deepEqual(diffs, [20]);
      assert.equal(back[20], cmd[20] ^ 0xff);
      const rep = await armed;
      assert.equal(rep.pdu.headerDigest, true);
      assert.equal(rep.pdu.headerLength, 52);
      assert.equal(rep.pdu.dataWireLength, 8 + 4);
      // One-shot: the next PDU passes untouched.
      await writeAll(c, cmd);
      assert.deepEqual(await readExactly(c, cmd.length), cmd);
    } finally {
      c.close();
    }
  });
});

Deno.test("proxy: corrupts one data-segment byte in the chosen direction only", async () => {
  await withProxy(true, async (proxy) => {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    try {
      const login = loginFinal("HeaderDigest=None\0DataDigest=CRC32C\0");
      await writeAll(c, login);
      await readExactly(c, login.length);
      await proxy.waitForLogin();
      // to-initiator: the echo of what we send; data byte 1000 of a Data-In.
      const armed = proxy.corrupt({
        direction: "to-initiator",
        part: "data",
        byte: 1000,
        match: (p) => p.opcode === 0x25,
      });
      const nop = pdu(0x00, { dd: true, data: new Uint8Array(2000) });
      const dataIn = pdu(0x25, { dd: true, data: new Uint8Array(4096).fill(0x11) });
      await writeAll(c, nop);
      assert.deepEqual(await readExactly(c, nop.length), nop);
      await writeAll(c, dataIn);
      const back = await readExactly(c, dataIn.length);
      const diffs = [...back.keys()].filter((i) => back[i] !== dataIn[i]);
      assert.deepEqual(diffs, [BHS_LENGTH + 1000]);
      const rep = await armed;
      assert.equal(rep.wireOffset, BHS_LENGTH + 1000);
      assert.equal(rep.pdu.opcode, 0x25);
    } finally {
      c.close();
    }
  });
});

Deno.test("proxy: iSCSI framing property: any chunking yields the same PDUs and the same bytes", () => {
  const pduArb = fc.record({
    opcode: fc.integer({ min: 0, max: 0x3f }).filter((o) =>
      o !== OPCODE_LOGIN_RESPONSE && o !== 0x03
    ),
    ahsWords: fc.integer({ min: 0, max: 3 }),
    len: fc.integer({ min: 0, max: 3000 }),
  });
  fc.assert(
    fc.property(
      fc.array(pduArb, { minLength: 1, maxLength: 8 }),
      fc.boolean(),
      fc.boolean(),
      fc.array(fc.integer({ min: 1, max: 700 }), { minLength: 1, maxLength: 20 }),
      (specs, hd, dd, cuts) => {
        const pdus = specs.map((s) =>
          pdu(s.opcode, { ahsWords: s.ahsWords, data: new Uint8Array(s.len).fill(0xa5), hd, dd })
        );
        const stream = new Uint8Array(pdus.reduce((a, p) => a + p.length, 0));
        let o = 0;
        for (const p of pdus) {
          stream.set(p, o);
          o += p.length;
        }
        const f = new PduFramer("to-target");
        f.headerDigest = hd;
        f.dataDigest = dd;
        const seen: number[] = [];
        f.onPdu = (p) => seen.push(p.opcode);
        const out: Uint8Array[] = [];
        let pos = 0;
        let k = 0;
        while (pos < stream.length) {
          const n = Math.min(cuts[k++ % cuts.length], stream.length - pos);
          out.push(...f.feed(stream.subarray(pos, pos + n)));
          pos += n;
        }
        const joined = new Uint8Array(out.reduce((a, p) => a + p.length, 0));
        o = 0;
        for (const p of out) {
          joined.set(p, o);
          o += p.length;
        }
        assert.deepEqual(joined, stream);
        assert.deepEqual(seen, specs.map((s) => s.opcode));
      },
    ),
    fuzzOptions(200),
  );
});

Deno.test("proxy: swallows one target PDU whole (header, data, digests), only in the Full Feature Phase", async () => {
  await withProxy(true, async (proxy) => {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    try {
      const armed = proxy.swallow((p) => p.opcode === 0x21);
      const login = loginFinal("HeaderDigest=CRC32C\0DataDigest=CRC32C\0");
      await writeAll(c, login);
      assert.deepEqual(await readExactly(c, login.length), login);
      await proxy.waitForLogin();
      // The echo sends back what we write, so 0x21 "from the target" is dropped.
      const response = pdu(0x21, { hd: true, dd: true, data: new Uint8Array(18).fill(7) });
      const after = pdu(0x20, { hd: true });
      await writeAll(c, response);
      await writeAll(c, after);
      assert.deepEqual(await readExactly(c, after.length), after);
      const rep = await armed;
      assert.equal(rep.pdu.opcode, 0x21);
      // One-shot: the next one passes.
      await writeAll(c, response);
      assert.deepEqual(await readExactly(c, response.length), response);
    } finally {
      c.close();
    }
  });
});

Deno.test("proxy: injects an Async Message at a PDU boundary with the target's last numbers and a valid header digest", async () => {
  await withProxy(true, async (proxy) => {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    try {
      const login = loginFinal("HeaderDigest=CRC32C\0DataDigest=None\0");
      await writeAll(c, login);
      await readExactly(c, login.length);
      await proxy.waitForLogin();
      // A "SCSI Response" whose StatSN/ExpCmdSN/MaxCmdSN the proxy remembers.
      const resp = pdu(0x21, { hd: true });
      const rv = new DataView(resp.buffer);
      rv.setUint32(24, 0xfffffff0);
      rv.setUint32(28, 77);
      rv.setUint32(32, 108);
      await writeAll(c, resp);
      assert.deepEqual(await readExactly(c, resp.length), resp);
      // Half a PDU through the proxy: the message waits for the boundary.
      const big = pdu(0x25, { hd: true, data: new Uint8Array(4000).fill(9) });
      await writeAll(c, big.subarray(0, 1000));
      await readExactly(c, 1000);
      assert.deepEqual(proxy.asyncMessage(1, { p2: 2, p3: 7 }), [1]);
      await writeAll(c, big.subarray(1000));
      assert.deepEqual(await readExactly(c, big.length - 1000), big.subarray(1000));
      const msg = await readExactly(c, BHS_LENGTH + 4);
      const v = new DataView(msg.buffer);
      assert.equal(msg[0], 0x32);
      assert.equal(msg[36], 1);
      assert.equal(v.getUint32(16), 0xffffffff);
      assert.deepEqual([v.getUint32(24), v.getUint32(28), v.getUint32(32)], [0xfffffff0, 77, 108]);
      assert.deepEqual([v.getUint16(38), v.getUint16(40), v.getUint16(42)], [0, 2, 7]);
      assert.equal(v.getUint32(BHS_LENGTH, true), crc32c(msg.subarray(0, BHS_LENGTH)));
      // At a boundary already: it goes at once.
      proxy.asyncMessage(4);
      assert.equal((await readExactly(c, BHS_LENGTH + 4))[36], 4);
    } finally {
      c.close();
    }
  });
});
