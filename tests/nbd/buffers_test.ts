/**
 * The buffer pool's reserve (src/nbd/buffers.ts): filled once, never given
 * up by trimming, and enough that serving within it allocates nothing; and
 * what reserveIoBuffers holds (locked reserve, lazily freed slack).
 */
import { assert_, assertEquals } from "../helpers/assert.ts";
import * as C from "../../src/nbd/constants.ts";
import { MemoryDevice } from "../../src/memory_device.ts";
import { BufferPool, IoBudget, READ_HEADROOM, reserveIoBuffers } from "../../src/nbd/buffers.ts";
import { serveTransmission } from "../../src/nbd/transmission.ts";
import { memoryStreamPair } from "../../src/nbd/stream.ts";
import { Logger } from "../../src/log.ts";
import { WireClient } from "./wire_client.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/** A kB field of /proc/self/status or /proc/self/smaps_rollup, in bytes. */
function procKb(file: string, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(Deno.readTextFileSync(file));
  if (!m) throw new Error(`${file}: no ${field}`);
  return Number(m[1]) * KiB;
}

const DEFAULT_CAP = 16 * MiB;
const HR = READ_HEADROOM;

Deno.test("BufferPool reserve: one buffer, the budget's payload plus headroom per 4 KiB", () => {
  const pool = new BufferPool(DEFAULT_CAP, HR);
  const arena = pool.reserve(16 * MiB);
  assertEquals(arena.length, 4096 * (4096 + HR));
  assertEquals(pool.reserved, { bytes: arena.length, inUseBytes: 0 });
  assertEquals(pool.heldBytes, 0, "the reserve is not counted against the free-buffer cap");
  // A 1 MiB read with its header is one block of 256 units, inside the reserve.
  const b = pool.get(MiB + 16);
  assertEquals([b.buffer, b.length], [arena.buffer, MiB + 16]);
  assertEquals(pool.reserved.inUseBytes, 256 * (4096 + HR));
  pool.put(b);
  assertEquals(pool.reserved.inUseBytes, 0);
});

Deno.test("BufferPool reserve: trimming never gives it up", () => {
  let t = 0;
  const pool = new BufferPool(DEFAULT_CAP, HR, 1000, () => t);
  const arena = pool.reserve(MiB).buffer;
  // A burst that fills the reserve, then nothing of that size for many intervals.
  const burst = Array.from({ length: 16 }, () => pool.get(64 * KiB));
  assert_(burst.every((b) => b.buffer === arena));
  for (const b of burst) pool.put(b);
  for (let i = 0; i < 10; i++) {
    t += 1000;
    pool.put(pool.get(4 * KiB)); // any call past the interval trims
  }
  assertEquals(pool.reserved, { bytes: 256 * (4096 + HR), inUseBytes: 0 });
  // The whole reserve is still there: the same burst again takes nothing new.
  const again = Array.from({ length: 16 }, () => pool.get(64 * KiB));
  assert_(again.every((b) => b.buffer === arena));
  assertEquals(pool.allocations, 0);
});

Deno.test("BufferPool reserve: a get() within it allocates nothing, whatever the mix", () => {
  const pool = new BufferPool(DEFAULT_CAP, HR);
  const arena = pool.reserve(MiB).buffer;
  // Up to 1 MiB of blocks (sizes round up to a power of two of 4 KiB units) in
  // sizes that split and merge blocks every way, each round allocated whole
  // and given back in the opposite order.
  const rounds = [
    [512 * KiB, 256 * KiB, 128 * KiB, 64 * KiB, 32 * KiB, 16 * KiB, 8 * KiB, 4 * KiB, 4 * KiB],
    Array.from({ length: 256 }, () => 4 * KiB),
    // Blocks of 1, 2, 4, 1, 16, 32, 64 and 128 units: 248 of the 256.
    [4 * KiB, 8 * KiB + HR, 16 * KiB, 100, 60 * KiB, 96 * KiB + HR, 256 * KiB, 320 * KiB],
    [MiB + HR],
  ];
  for (const sizes of rounds) {
    const got = sizes.map((n) => pool.get(n));
    for (const [i, b] of got.entries()) {
      assertEquals(b.length, sizes[i]);
      assert_(b.buffer === arena, `get(${sizes[i]}) allocated`);
    }
    // No two views overlap.
    const spans = got.map((b) => [b.byteOffset, b.byteOffset + b.length]).sort((x, y) =>
      x[0] - y[0]
    );
    for (let i = 1; i < spans.length; i++) {
      assert_(spans[i][0] >= spans[i - 1][1], "blocks overlap");
    }
    for (const b of got.reverse()) pool.put(b);
    assertEquals(pool.reserved.inUseBytes, 0);
  }
  assertEquals(pool.allocations, 0);
  // Full: the next request gets an extra buffer, which trimming may give up.
  const all = pool.get(MiB);
  const extra = pool.get(4 * KiB);
  assertEquals(pool.allocations, 1);
  assert_(extra.buffer !== arena);
  pool.put(all);
  pool.put(extra);
  assertEquals(pool.heldBytes, 4096 + HR);
});

Deno.test("BufferPool reserve: a retired block comes back only later", async () => {
  const pool = new BufferPool(DEFAULT_CAP, HR);
  pool.reserve(64 * KiB);
  const b = pool.get(64 * KiB);
  pool.retire(b);
  assertEquals(pool.reserved.inUseBytes, 16 * (4096 + HR), "still out");
  assert_(pool.get(4096).buffer !== b.buffer, "nothing of the reserve is free meanwhile");
  await new Promise((r) => setTimeout(r, 10));
  assertEquals(pool.reserved.inUseBytes, 16 * (4096 + HR));
});

Deno.test("BufferPool reserve: serving reads and writes within it allocates no buffer", async () => {
  const budget = new IoBudget(4 * MiB);
  budget.pool.reserve(4 * MiB);
  const dev = new MemoryDevice({ size: 64n * BigInt(MiB) });
  const [c, s] = memoryStreamPair(4 * MiB);
  const done = serveTransmission(s, dev, { log: new Logger({ quiet: true }), budget });
  const client = new WireClient(c);
  const lengths = new Map<number, number>();
  let handle = 0;
  // Eight requests in flight of every size class from 4 KiB to 1 MiB, writes then reads.
  for (const type of [C.NBD_CMD_WRITE, C.NBD_CMD_READ]) {
    for (let len = 4 * KiB; len <= MiB; len *= 2) {
      for (let i = 0; i < 8; i++) {
        const h = ++handle;
        lengths.set(h, type === C.NBD_CMD_READ ? len : 0);
        const payload = type === C.NBD_CMD_WRITE ? new Uint8Array(len).fill(h) : undefined;
        await client.request({ type, handleLo: h, offset: i * MiB, length: len }, payload);
      }
      for (let i = 0; i < 8; i++) {
        const r = await client.reply((h) => lengths.get(h)!);
        assertEquals(r?.error, 0);
      }
    }
  }
  await client.request({ type: C.NBD_CMD_DISC });
  await done;
  assertEquals(budget.pool.allocations, 0, "a request allocated a buffer outside the reserve");
});

Deno.test("reserveIoBuffers: the reserve is resident and locked, the slack lazily freed", () => {
  const lines: string[] = [];
  const log = new Logger({ sink: (_l, line) => lines.push(line) });
  const locked0 = procKb("/proc/self/status", "VmLck");
  const lazy0 = procKb("/proc/self/smaps_rollup", "LazyFree");
  const budget = new IoBudget(4 * MiB);
  reserveIoBuffers(budget, log, 4 * MiB, 2 * MiB);
  const { bytes } = budget.pool.reserved;
  assert_(bytes > 3.9 * MiB, `reserve of ${bytes} bytes`);
  if (lines.some((l) => l.includes("locked in RAM") && !l.includes("not locked"))) {
    // Absolute, not grown by: after other tests in this process the reserve
    // may land in heap memory an earlier mlock already covers.
    const locked = procKb("/proc/self/status", "VmLck");
    assert_(locked >= bytes, `VmLck ${locked} (was ${locked0}), the reserve is ${bytes} bytes`);
  } else {
    assert_(lines.some((l) => l.includes("not locked in RAM")), lines.join("\n"));
  }
  const slack = budget.slack;
  assert_(slack !== null, lines.join("\n"));
  assertEquals(slack.bytes, 2 * MiB);
  const lazy = procKb("/proc/self/smaps_rollup", "LazyFree") - lazy0;
  // (A few pages may already be gone: the kernel frees lazily freed pages when it likes.)
  assert_(lazy >= 0.9 * 2 * MiB, `LazyFree grew by ${lazy} bytes, want about the 2 MiB slack`);
  assertEquals(slack.taken(), 0);
});
