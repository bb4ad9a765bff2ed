/**
 * The server in-process over in-memory streams: handshake edge cases,
 * out-of-order replies, bounded memory against a client that never reads,
 * protocol violations, shutdown, and the no-handshake kernel entry point.
 */
import { assert_, assertEquals } from "../helpers/assert.ts";
import * as C from "../../src/nbd/constants.ts";
import { MemoryDevice } from "../../src/memory_device.ts";
import { BufferPool, IoBudget } from "../../src/nbd/buffers.ts";
import { blockSizes, transmissionFlags } from "../../src/nbd/export.ts";
import { NbdServer } from "../../src/nbd/server.ts";
import { newCounters, serveTransmission } from "../../src/nbd/transmission.ts";
import { memoryStreamPair } from "../../src/nbd/stream.ts";
import { Logger } from "../../src/log.ts";
import type { BlockDevice } from "../../src/blockdev.ts";
import { WireClient } from "./wire_client.ts";
import { Lun } from "../../src/scsi/lun.ts";
import { ScriptedTransport } from "../scsi/scripted.ts";

const log = new Logger({ quiet: true });
const MiB = 1024 * 1024;

function setup(
  device: BlockDevice = new MemoryDevice({ size: 8n * BigInt(MiB) }),
  capacity?: number,
) {
  const server = new NbdServer({
    exports: [
      { name: "iqn.2026-11.test:disk/0", description: "test disk", device },
      { name: "second", device: new MemoryDevice({ size: 1n * BigInt(MiB), readOnly: true }) },
    ],
    log,
  });
  const [c, s] = memoryStreamPair(capacity);
  const done = server.serve(s);
  return { server, client: new WireClient(c), done, device, clientStream: c };
}

Deno.test("nbd server: GO with name and description; unknown export and option errors", async () => {
  const { client, done, clientStream } = setup();
  const g = await client.greet();
  assertEquals(
    new DataView(g.buffer).getUint16(16),
    C.NBD_FLAG_FIXED_NEWSTYLE | C.NBD_FLAG_NO_ZEROES,
  );
  // unknown option -> NBD_REP_ERR_UNSUP, negotiation goes on
  await client.option(99);
  assertEquals((await client.optionReply())!.type, C.NBD_REP_ERR_UNSUP);
  await client.option(C.NBD_OPT_STARTTLS);
  assertEquals((await client.optionReply())!.type, C.NBD_REP_ERR_UNSUP);
  // LIST with data -> invalid; LIST -> two servers + ACK
  await client.option(C.NBD_OPT_LIST, new Uint8Array(1));
  assertEquals((await client.optionReply())!.type, C.NBD_REP_ERR_INVALID);
  await client.option(C.NBD_OPT_LIST);
  assertEquals((await client.optionReply())!.type, C.NBD_REP_SERVER);
  assertEquals((await client.optionReply())!.type, C.NBD_REP_SERVER);
  assertEquals((await client.optionReply())!.type, C.NBD_REP_ACK);
  // unknown export -> NBD_REP_ERR_UNKNOWN
  let r = await client.go("nope");
  assertEquals(r.at(-1)!.type, C.NBD_REP_ERR_UNKNOWN);
  // malformed GO -> invalid
  await client.option(C.NBD_OPT_GO, new Uint8Array([0, 0, 0, 9, 1]));
  assertEquals((await client.optionReply())!.type, C.NBD_REP_ERR_INVALID);
  // too big option data -> discarded, TOO_BIG
  await client.option(C.NBD_OPT_INFO, new Uint8Array(100_000));
  assertEquals((await client.optionReply())!.type, C.NBD_REP_ERR_TOO_BIG);
  // INFO on the second export: read-only flags, then GO on the default
  r = await client.go("second", [C.NBD_INFO_NAME], C.NBD_OPT_INFO);
  const exp = r.find((x) => new DataView(x.data.buffer).getUint16(0) === C.NBD_INFO_EXPORT)!;
  const flags = new DataView(exp.data.buffer).getUint16(10);
  assert_(flags & C.NBD_FLAG_READ_ONLY);
  await client.option(C.NBD_OPT_STRUCTURED_REPLY);
  assertEquals((await client.optionReply())!.type, C.NBD_REP_ACK);
  r = await client.go("", [C.NBD_INFO_NAME, C.NBD_INFO_DESCRIPTION, C.NBD_INFO_BLOCK_SIZE]);
  assertEquals(r.at(-1)!.type, C.NBD_REP_ACK);
  const infos = new Map(
    r.slice(0, -1).map((x) => [new DataView(x.data.buffer).getUint16(0), x.data]),
  );
  assertEquals(
    new TextDecoder().decode(infos.get(C.NBD_INFO_NAME)!.subarray(2)),
    "iqn.2026-11.test:disk/0",
  );
  assertEquals(
    new TextDecoder().decode(infos.get(C.NBD_INFO_DESCRIPTION)!.subarray(2)),
    "test disk",
  );
  const bs = new DataView(infos.get(C.NBD_INFO_BLOCK_SIZE)!.buffer);
  assertEquals([bs.getUint32(2), bs.getUint32(6), bs.getUint32(10)], [512, 4096, 32 * MiB]);
  const ex = new DataView(infos.get(C.NBD_INFO_EXPORT)!.buffer);
  assertEquals(ex.getBigUint64(2), 8n * BigInt(MiB));
  assert_(ex.getUint16(10) & C.NBD_FLAG_SEND_DF, "DF with structured replies");
  // transmission: structured read reply
  await client.request({ type: C.NBD_CMD_READ, handleLo: 7, length: 512 });
  const rep = (await client.reply(() => 512))!;
  assertEquals([rep.handleLo, rep.error, rep.structured, rep.data!.length], [7, 0, true, 512]);
  await client.request({ type: C.NBD_CMD_DISC });
  assert_(await client.closedByServer());
  await done;
  clientStream.close();
});

Deno.test("nbd server: NBD_OPT_EXPORT_NAME with and without zeroes; unknown name closes", async () => {
  for (const noZeroes of [false, true]) {
    const { client, done } = setup();
    await client.greet(C.NBD_FLAG_C_FIXED_NEWSTYLE | (noZeroes ? C.NBD_FLAG_C_NO_ZEROES : 0));
    await client.option(C.NBD_OPT_EXPORT_NAME, new TextEncoder().encode("second"));
    const r = (await client.read(noZeroes ? 10 : 134))!;
    assertEquals(new DataView(r.buffer).getBigUint64(0), BigInt(MiB));
    await client.request({ type: C.NBD_CMD_WRITE, handleLo: 1 }, new Uint8Array(512));
    assertEquals((await client.reply(() => 0))!.error, C.NBD_EPERM);
    await client.request({ type: C.NBD_CMD_DISC });
    await done;
  }
  const { client, done } = setup();
  await client.greet();
  await client.option(C.NBD_OPT_EXPORT_NAME, new TextEncoder().encode("nope"));
  assert_(await client.closedByServer(), "unknown EXPORT_NAME must end the session");
  await done;
});

Deno.test("nbd server: unknown client flags, bad option magic and ABORT close the connection", async () => {
  let t = setup();
  await t.client.greet(0x80);
  assert_(await t.client.closedByServer());
  await t.done;
  t = setup();
  await t.client.greet();
  await t.client.write(new Uint8Array(16).fill(0x41));
  assert_(await t.client.closedByServer());
  await t.done;
  t = setup();
  await t.client.greet();
  await t.client.option(C.NBD_OPT_ABORT);
  assertEquals((await t.client.optionReply())!.type, C.NBD_REP_ACK);
  assert_(await t.client.closedByServer());
  await t.done;
});

/** A device whose reads wait for a gate per offset. */
class GatedDevice extends MemoryDevice {
  gates = new Map<number, Promise<void>>();
  override async read(offset: bigint, length: number): Promise<Uint8Array> {
    await this.gates.get(Number(offset));
    return super.read(offset, length);
  }
}

function transmissionPair(
  device: BlockDevice,
  opts: { flags?: number; structured?: boolean } = {},
  capacity?: number,
) {
  const [c, s] = memoryStreamPair(capacity);
  const counters = newCounters();
  const done = serveTransmission(s, device, {
    log,
    counters,
    flags: opts.flags,
    structuredReplies: opts.structured,
    maxInFlightBytes: 4 * MiB,
  });
  return { client: new WireClient(c), done, counters, c };
}

Deno.test("nbd server: replies go out of order; many requests in flight", async () => {
  const dev = new GatedDevice({ size: 4n * BigInt(MiB) });
  let open!: () => void;
  dev.gates.set(0, new Promise<void>((r) => (open = r)));
  const { client, done, counters } = await transmissionPair(dev);
  await client.request({ type: C.NBD_CMD_READ, handleLo: 1, offset: 0, length: 4096 });
  for (let i = 2; i <= 50; i++) {
    await client.request({ type: C.NBD_CMD_READ, handleLo: i, offset: i * 4096, length: 4096 });
  }
  const order: number[] = [];
  for (let i = 2; i <= 50; i++) order.push((await client.reply(() => 4096))!.handleLo);
  assertEquals(order.includes(1), false, "handle 1 is still blocked");
  open();
  assertEquals((await client.reply(() => 4096))!.handleLo, 1);
  await client.request({ type: C.NBD_CMD_DISC });
  await done;
  assertEquals(counters.requests, 51);
  assertEquals(counters.bytesRead, 50 * 4096);
});

Deno.test("nbd server: memory stays bounded when the client never reads replies", async () => {
  let writes = 0;
  let release!: () => void;
  const stuck = new Promise<void>((r) => (release = r));
  class SlowDevice extends MemoryDevice {
    override async write(o: bigint, d: Uint8Array, x?: { fua?: boolean }) {
      writes++;
      await stuck;
      return super.write(o, d, x);
    }
  }
  const dev = new SlowDevice({ size: 64n * BigInt(MiB) });
  const { client, done, c } = await transmissionPair(dev, {}, 256 * 1024);
  // 32 x 1 MiB writes; the server admits ~4 MiB (maxInFlightBytes) and then
  // stops reading, so the client's writes back up into the pipe.
  const sending = (async () => {
    for (let i = 0; i < 32; i++) {
      await client.request(
        { type: C.NBD_CMD_WRITE, handleLo: i, offset: i * MiB },
        new Uint8Array(MiB),
      );
    }
  })();
  await new Promise((r) => setTimeout(r, 200));
  assert_(writes <= 5, `device saw ${writes} writes; expected at most 5 admitted`);
  assert_(c.bufferedBytes() <= 2 * 256 * 1024 + 64 * 1024, `pipe holds ${c.bufferedBytes()}`);
  release();
  await sending;
  for (let i = 0; i < 32; i++) assertEquals((await client.reply(() => 0))!.error, 0);
  await client.request({ type: C.NBD_CMD_DISC });
  await done;
  assertEquals(writes, 32);
});

Deno.test("nbd server: connections share one budget; unwritten replies count against it", async () => {
  let reads = 0;
  class CountingDevice extends MemoryDevice {
    override readInto(o: bigint, into: Uint8Array) {
      reads++;
      return super.readInto(o, into);
    }
  }
  const dev = new CountingDevice({ size: 16n * BigInt(MiB) });
  const budget = new IoBudget(4 * MiB);
  // Two connections whose clients do not read replies yet (the pipe takes 64 KiB).
  const conns = [0, 1].map(() => {
    const [c, s] = memoryStreamPair(64 * 1024);
    return { client: new WireClient(c), done: serveTransmission(s, dev, { log, budget }) };
  });
  for (const [k, { client }] of conns.entries()) {
    for (let i = 0; i < 8; i++) {
      await client.request({
        type: C.NBD_CMD_READ,
        handleLo: i,
        offset: (k * 8 + i) * MiB,
        length: MiB,
      });
    }
  }
  await new Promise((r) => setTimeout(r, 200));
  // 4 MiB of budget, plus the first request of each connection, which is
  // always let in: at most 6 of the 16 reads may have run.
  assert_(reads <= 6, `device saw ${reads} reads; the shared 4 MiB budget allows at most 6`);
  assert_(budget.inFlightBytes <= 6 * MiB, `budget says ${budget.inFlightBytes} bytes in flight`);
  for (const { client } of conns) {
    const got = new Set<number>();
    for (let i = 0; i < 8; i++) got.add((await client.reply(() => MiB))!.handleLo);
    assertEquals(got.size, 8);
    await client.request({ type: C.NBD_CMD_DISC });
  }
  await Promise.all(conns.map((c) => c.done));
  assertEquals(reads, 16);
  assertEquals(budget.inFlightBytes, 0, "every byte went back to the budget");
});

Deno.test("nbd server: a connection whose client vanishes returns its budget", async () => {
  const dev = new MemoryDevice({ size: 8n * BigInt(MiB) });
  const budget = new IoBudget(2 * MiB);
  const [c, s] = memoryStreamPair(16 * 1024);
  const done = serveTransmission(s, dev, { log, budget });
  const client = new WireClient(c);
  for (let i = 0; i < 4; i++) {
    await client.request({ type: C.NBD_CMD_READ, handleLo: i, offset: i * MiB, length: MiB });
  }
  await new Promise((r) => setTimeout(r, 100));
  assert_(budget.inFlightBytes > 0);
  c.close(); // replies can never be written now
  await done;
  assertEquals(budget.inFlightBytes, 0);
  // Another connection on the same budget is not starved.
  const [c2, s2] = memoryStreamPair();
  const done2 = serveTransmission(s2, dev, { log, budget });
  const client2 = new WireClient(c2);
  await client2.request({ type: C.NBD_CMD_READ, handleLo: 9, offset: 0, length: MiB });
  await client2.request({ type: C.NBD_CMD_READ, handleLo: 10, offset: MiB, length: MiB });
  assertEquals((await client2.reply(() => MiB))!.error, 0);
  assertEquals((await client2.reply(() => MiB))!.error, 0);
  await client2.request({ type: C.NBD_CMD_DISC });
  await done2;
});

Deno.test("nbd server: bad request magic and truncated requests close the connection", async () => {
  let t = await transmissionPair(new MemoryDevice({ size: BigInt(MiB) }));
  await t.client.write(new Uint8Array(28).fill(1));
  assert_(await t.client.closedByServer());
  await t.done;
  t = await transmissionPair(new MemoryDevice({ size: BigInt(MiB) }));
  await t.client.write(new Uint8Array([0x25, 0x60, 0x95, 0x13, 0, 0]));
  t.c.close(); // half a header, then hang up
  await t.done;
  t = await transmissionPair(new MemoryDevice({ size: BigInt(MiB) }));
  await t.client.request({ type: C.NBD_CMD_WRITE, length: 4096 }, new Uint8Array(100));
  t.c.close(); // payload cut short
  await t.done;
});

Deno.test("nbd server: serveTransmission honours the flags it was given; errors map to NBD values", async () => {
  class FailingDevice extends MemoryDevice {
    override read(o: bigint, n: number): Promise<Uint8Array> {
      if (o === 0n) return Promise.reject(new Error("medium error"));
      if (o === 512n) {
        return Promise.reject(Object.assign(new Error("x"), { errno: "ENOSPC" }));
      }
      return super.read(o, n);
    }
  }
  const dev = new FailingDevice({ size: BigInt(MiB), canUnmap: false });
  const flags = transmissionFlags(dev);
  assertEquals(flags & C.NBD_FLAG_SEND_TRIM, 0);
  const { client, done, counters } = await transmissionPair(dev, { flags });
  const cases: [Parameters<WireClient["request"]>[0], number][] = [
    [{ type: C.NBD_CMD_READ, offset: 0, length: 512 }, C.NBD_EIO],
    [{ type: C.NBD_CMD_READ, offset: 512, length: 512 }, C.NBD_ENOSPC],
    [{ type: C.NBD_CMD_READ, offset: 1024, length: 512 }, 0],
    [{ type: C.NBD_CMD_TRIM, offset: 0, length: 512 }, C.NBD_EINVAL],
    [{ type: C.NBD_CMD_CACHE, offset: 0, length: 512 }, C.NBD_EINVAL],
    [{ type: 200, offset: 0, length: 512 }, C.NBD_EINVAL],
    [{ type: C.NBD_CMD_READ, flags: C.NBD_CMD_FLAG_DF, offset: 0, length: 512 }, C.NBD_EINVAL],
    [{ type: C.NBD_CMD_READ, flags: 0x8000, offset: 0, length: 512 }, C.NBD_EINVAL],
    [{ type: C.NBD_CMD_FLUSH, offset: 1 }, C.NBD_EINVAL],
    [{ type: C.NBD_CMD_FLUSH, flags: C.NBD_CMD_FLAG_FUA }, 0],
    [{ type: C.NBD_CMD_READ, offset: 2 ** 60, length: 512 }, C.NBD_EINVAL],
    [{ type: C.NBD_CMD_WRITE_ZEROES, offset: MiB - 512, length: 1024 }, C.NBD_ENOSPC],
    [{ type: C.NBD_CMD_WRITE_ZEROES, offset: 0, length: 0 }, C.NBD_EINVAL],
  ];
  let h = 0;
  for (const [req, want] of cases) {
    await client.request({ ...req, handleLo: ++h });
    const r = (await client.reply(() => (req.type === C.NBD_CMD_READ ? 512 : 0)))!;
    assertEquals([r.handleLo, r.error], [h, want], JSON.stringify(req));
  }
  await client.request({ type: C.NBD_CMD_DISC });
  await done;
  assertEquals(counters.errors, cases.filter((c) => c[1] !== 0).length);
});

Deno.test("nbd server: WRITE_ZEROES without device support is emulated; FAST_ZERO fails fast", async () => {
  const dev = new MemoryDevice({ size: 4n * BigInt(MiB), canWriteZeroes: false });
  const { client, done } = await transmissionPair(dev, { structured: true });
  await client.request(
    { type: C.NBD_CMD_WRITE, handleLo: 1, offset: 0 },
    new Uint8Array(3 * MiB).fill(9),
  );
  assertEquals((await client.reply(() => 0))!.error, 0);
  await client.request({
    type: C.NBD_CMD_WRITE_ZEROES,
    handleLo: 2,
    flags: C.NBD_CMD_FLAG_FAST_ZERO,
    length: MiB,
  });
  assertEquals((await client.reply(() => 0))!.error, C.NBD_ENOTSUP);
  await client.request({ type: C.NBD_CMD_WRITE_ZEROES, handleLo: 3, offset: 512, length: 2 * MiB });
  assertEquals((await client.reply(() => 0))!.error, 0);
  const data = await dev.read(0n, 3 * MiB);
  assertEquals([data[0], data[511], data[512], data[2 * MiB + 511], data[2 * MiB + 512]], [
    9,
    9,
    0,
    0,
    9,
  ]);
  await client.request({ type: C.NBD_CMD_READ, handleLo: 4, offset: 0, length: 1024 });
  const r = (await client.reply(() => 1024))!;
  assertEquals([r.structured, r.data![0], r.data![600]], [true, 9, 0]);
  await client.request({ type: C.NBD_CMD_DISC });
  await done;
});

Deno.test("nbd server: FAST_ZERO on a LUN without WRITE SAME is ENOTSUP at once, nothing written", async () => {
  const t = new ScriptedTransport({ blockSize: 512, blocks: 8192, noWriteSame: true });
  t.media.fill(0x55);
  const lun = await Lun.open(t, 1);
  const { client, done } = await transmissionPair(lun, { structured: true });
  const zeroes = (handleLo: number, flags: number) =>
    client.request({ type: C.NBD_CMD_WRITE_ZEROES, handleLo, flags, offset: 4096, length: MiB });
  const written = () => t.ops(0x8a).length + t.ops(0x2a).length;
  // The LUN's refusal of WRITE SAME is the first news of it.
  await zeroes(1, C.NBD_CMD_FLAG_FAST_ZERO);
  assertEquals((await client.reply(() => 0))!.error, C.NBD_ENOTSUP);
  assertEquals([t.ops(0x93).length, written()], [1, 0]);
  assert_(t.media.every((x) => x === 0x55), "FAST_ZERO must not alter the export");
  assertEquals(lun.limits.canWriteZeroes, false);
  // Then without sending anything.
  await zeroes(2, C.NBD_CMD_FLAG_FAST_ZERO);
  assertEquals((await client.reply(() => 0))!.error, C.NBD_ENOTSUP);
  assertEquals([t.ops(0x93).length, written()], [1, 0]);
  // A plain WRITE_ZEROES still zeroes, by WRITE.
  await zeroes(3, 0);
  assertEquals((await client.reply(() => 0))!.error, 0);
  assert_(written() > 0);
  assert_(t.media.subarray(4096, 4096 + MiB).every((x) => x === 0));
  assertEquals([t.media[4095], t.media[4096 + MiB]], [0x55, 0x55]);
  await client.request({ type: C.NBD_CMD_DISC });
  await done;
});

Deno.test("nbd server: requests above the device's maxTransfer are split", async () => {
  const dev = new MemoryDevice({ size: 16n * BigInt(MiB), maxTransfer: 64 * 1024 });
  const { client, done } = await transmissionPair(dev);
  const pat = new Uint8Array(5 * MiB).map((_, i) => i * 7);
  await client.request({ type: C.NBD_CMD_WRITE, handleLo: 1, offset: MiB }, pat);
  assertEquals((await client.reply(() => 0))!.error, 0);
  assertEquals(dev.stats.writes, 80);
  await client.request({ type: C.NBD_CMD_READ, handleLo: 2, offset: MiB, length: 5 * MiB });
  assertEquals((await client.reply(() => 5 * MiB))!.data, pat);
  await client.request({ type: C.NBD_CMD_DISC });
  await done;
});

Deno.test("nbd server: shutdown answers in-flight requests, then closes", async () => {
  const dev = new GatedDevice({ size: BigInt(MiB) });
  let open!: () => void;
  dev.gates.set(0, new Promise<void>((r) => (open = r)));
  const { server, client, done } = setup(dev);
  await client.greet();
  await client.go();
  await client.request({ type: C.NBD_CMD_READ, handleLo: 1, length: 512 });
  await new Promise((r) => setTimeout(r, 20));
  const stopping = server.shutdown(5000);
  setTimeout(open, 50);
  const r = (await client.reply(() => 512))!;
  assertEquals([r.handleLo, r.error], [1, 0]);
  assert_(await client.closedByServer());
  await stopping;
  await done;
  assertEquals(server.activeConnections, 0);
});

Deno.test("nbd server: block sizes and flags from the device", () => {
  const d = new MemoryDevice({
    size: BigInt(MiB),
    blockSize: 4096,
    canUnmap: false,
    optimalTransfer: 65536,
  });
  assertEquals(blockSizes(d), { minimum: 4096, preferred: 65536, maximum: 32 * MiB });
  const f = transmissionFlags(d);
  assertEquals(f & C.NBD_FLAG_SEND_TRIM, 0);
  assert_(
    f & C.NBD_FLAG_SEND_WRITE_ZEROES && f & C.NBD_FLAG_CAN_MULTI_CONN && f & C.NBD_FLAG_SEND_FUA,
  );
  const ro = transmissionFlags(new MemoryDevice({ size: BigInt(MiB), readOnly: true }));
  assertEquals(
    ro,
    C.NBD_FLAG_HAS_FLAGS | C.NBD_FLAG_READ_ONLY | C.NBD_FLAG_SEND_FLUSH | C.NBD_FLAG_CAN_MULTI_CONN,
  );
});

Deno.test("nbd server: BufferPool reuses power-of-two buffers up to its cap", () => {
  const pool = new BufferPool(64 * 1024);
  const a = pool.get(5000);
  assertEquals([a.length, a.buffer.byteLength], [5000, 8192]);
  pool.put(a);
  const b = pool.get(8000);
  assertEquals(b.buffer, a.buffer); // reused
  const big = pool.get(MiB);
  pool.put(big); // over the cap: dropped
  assert_(pool.get(MiB).buffer !== big.buffer);
  pool.put(new Uint8Array(3000)); // not from the pool (not a size class): ignored
  assertEquals(pool.get(3000).buffer.byteLength, 4096);
});

Deno.test("nbd server: BufferPool gives up what the last interval did not use", () => {
  let t = 0;
  const pool = new BufferPool(64 * MiB, 32, 1000, () => t);
  // A 1 MiB workload: 8 in use at once, then all back.
  let big = Array.from({ length: 8 }, () => pool.get(MiB));
  for (const b of big) pool.put(b);
  assertEquals(pool.heldBytes, 8 * (MiB + 32));
  // It goes on for another interval with 4 in flight: 4 of the 8 were never needed.
  t = 1000;
  big = Array.from({ length: 4 }, () => pool.get(MiB));
  for (const b of big) pool.put(b);
  t = 2000;
  pool.get(4096); // any call past the interval trims
  assertEquals(pool.heldBytes, 4 * (MiB + 32), "the unused half went");
  // The workload switches to 256 KiB: the 1 MiB class is idle a whole interval and goes.
  for (let i = 0; i < 3; i++) {
    const s = Array.from({ length: 6 }, () => pool.get(256 * 1024));
    for (const b of s) pool.put(b);
    t += 600;
  }
  assertEquals(pool.heldBytes, 6 * (256 * 1024 + 32));
});

Deno.test("nbd server: connection cap and handshake timeout", async () => {
  const device = new MemoryDevice({ size: BigInt(MiB) });
  const server = new NbdServer({
    exports: [{ name: "d", device }],
    log,
    maxConnections: 2,
    handshakeTimeoutMs: 100,
  });
  const pairs = [memoryStreamPair(), memoryStreamPair(), memoryStreamPair()];
  const served = pairs.map(([, s]) => server.serve(s));
  const clients = pairs.map(([c]) => new WireClient(c));
  await clients[0].greet();
  await clients[1].greet();
  // the third is over the cap: closed without a greeting
  assertEquals(await clients[2].read(18, 1000), null);
  // the two others never finish negotiating: dropped after the timeout
  assert_(await clients[0].closedByServer(2000));
  assert_(await clients[1].closedByServer(2000));
  await Promise.all(served);
  assertEquals(server.activeConnections, 0);
  // a client that finishes in time stays connected past the timeout
  const [c, s] = memoryStreamPair();
  const done = server.serve(s);
  const w = new WireClient(c);
  await w.greet();
  await w.go();
  await new Promise((r) => setTimeout(r, 200));
  await w.request({ type: C.NBD_CMD_READ, handleLo: 1, length: 512 });
  assertEquals((await w.reply(() => 512))!.error, 0);
  await w.request({ type: C.NBD_CMD_DISC });
  await done;
});
