/**
 * The zero-copy read path (BlockDevice.readInto): MemoryDevice and Lun
 * (against a private tgtd) fill a caller's buffer exactly as read() returns
 * bytes; the NBD server's pooled read replies never leak bytes of an earlier
 * reply into a later one (simple and structured replies, requests split into
 * several device reads, failures), checked in-process and with libnbd's
 * nbdsh asking for simple replies (what the kernel uses) against
 * `isboot serve memory:`. Correctness only, no timing.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import * as C from "../../src/nbd/constants.ts";
import { MemoryDevice } from "../../src/memory_device.ts";
import { newCounters, serveTransmission } from "../../src/nbd/transmission.ts";
import { memoryStreamPair } from "../../src/nbd/stream.ts";
import { Logger } from "../../src/log.ts";
import { openTarget } from "../../src/iscsi/open_target.ts";
import { sessionConfigFromUri } from "../../src/cli/target_options.ts";
import { BlockRequestError } from "../../src/scsi/errors.ts";
import { WireClient } from "../nbd/wire_client.ts";
import { startServe, tool } from "../nbd/serve_helper.ts";
import { withTgtd } from "../../peers/tgtd.ts";
import { fuzzOptions } from "../helpers/fuzz.ts";

const MiB = 1024 * 1024;
const quiet = new Logger({ quiet: true });

/** Deterministic pseudo-random bytes (xorshift32). */
function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed | 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

/** Byte equality without a diff of megabytes (assert.deepEqual's diff takes minutes). */
function same(a: Uint8Array, b: Uint8Array, what: string): void {
  if (a.length === b.length && Buffer.compare(a, b) === 0) return;
  let i = 0;
  while (i < Math.min(a.length, b.length) && a[i] === b[i]) i++;
  assert.fail(`${what}: lengths ${a.length}/${b.length}, first difference at byte ${i}`);
}

Deno.test("readInto: MemoryDevice fills a dirty buffer like read(), zeroes where never written", async () => {
  const dev = new MemoryDevice({ size: 4n * BigInt(MiB) });
  const data = pattern(MiB + 4096, 7);
  await dev.write(BigInt(MiB - 2048), data); // straddles three 1 MiB pages
  for (const [off, len] of [[0, 4096], [MiB - 4096, 8192], [0, 3 * MiB], [2 * MiB, 2 * MiB]]) {
    const into = new Uint8Array(len).fill(0xee); // stale bytes from an earlier use
    await dev.readInto(BigInt(off), into);
    same(into, await dev.read(BigInt(off), len), `${off}+${len}`);
  }
  const tail = new Uint8Array(MiB).fill(0xee);
  await dev.readInto(3n * BigInt(MiB), tail);
  assert.ok(tail.every((b) => b === 0), "never-written page reads as zeroes");
  await assert.rejects(dev.readInto(4n * BigInt(MiB) - 512n, new Uint8Array(1024)));
  await assert.rejects(dev.readInto(-512n, new Uint8Array(512)));
  await dev.close();
  await assert.rejects(dev.readInto(0n, new Uint8Array(512)));
});

/** A memory device that splits requests (small maxTransfer) and can fail chosen reads. */
class FlakyDevice extends MemoryDevice {
  failAt = new Set<bigint>();
  override readInto(offset: bigint, into: Uint8Array): Promise<void> {
    if (this.failAt.has(offset)) {
      into.fill(0x5a); // scribble, as a half-done transfer would
      return Promise.reject(Object.assign(new Error("medium error"), { errno: "EIO" }));
    }
    return super.readInto(offset, into);
  }
}

for (const structured of [false, true]) {
  Deno.test(
    `readInto property: pooled ${
      structured ? "structured" : "simple"
    } read replies equal the device's bytes`,
    async () => {
      const size = 8 * MiB;
      const dev = new FlakyDevice({ size: BigInt(size), maxTransfer: 64 * 1024 });
      // Half the device written with a pattern, half never written (zeroes).
      const model = new Uint8Array(size);
      model.set(pattern(4 * MiB, 3), 0);
      await dev.write(0n, model.subarray(0, 4 * MiB));
      dev.failAt.add(BigInt(2 * MiB + 64 * 1024)); // the second piece of a split request
      const [c, s] = memoryStreamPair(4 * MiB);
      const counters = newCounters();
      const done = serveTransmission(s, dev, {
        log: quiet,
        counters,
        structuredReplies: structured,
        flags: C.NBD_FLAG_HAS_FLAGS | C.NBD_FLAG_SEND_FLUSH | (structured ? C.NBD_FLAG_SEND_DF : 0),
      });
      const client = new WireClient(c);
      let handle = 0;
      try {
        await fc.assert(
          fc.asyncProperty(
            fc.array(
              fc.record({
                block: fc.nat(size / 4096 - 1),
                blocks: fc.integer({ min: 1, max: 64 }), // up to 256 KiB: split in up to 4 pieces
              }),
              { minLength: 1, maxLength: 12 },
            ),
            async (reqs) => {
              // All requests in flight at once, so buffers are reused across replies.
              const sent: { h: number; off: number; len: number }[] = [];
              for (const r of reqs) {
                const off = r.block * 4096;
                const len = Math.min(r.blocks * 4096, size - off);
                const h = ++handle;
                sent.push({ h, off, len });
                await client.request({
                  type: C.NBD_CMD_READ,
                  handleLo: h,
                  offset: off,
                  length: len,
                });
              }
              const byHandle = new Map(sent.map((x) => [x.h, x]));
              for (let i = 0; i < sent.length; i++) {
                const rep = await client.reply((h) => byHandle.get(h)!.len);
                assert.ok(rep, "reply");
                assert.equal(rep.structured, structured);
                const x = byHandle.get(rep.handleLo)!;
                if (failsOn(x)) {
                  assert.notEqual(rep.error, 0, `read ${x.off}+${x.len} should fail`);
                  continue;
                }
                assert.equal(rep.error, 0);
                assert.ok(rep.data, "data");
                same(rep.data, model.subarray(x.off, x.off + x.len), `read ${x.off}+${x.len}`);
              }
            },
          ),
          fuzzOptions(60),
        );
        await client.request({ type: C.NBD_CMD_DISC });
        await done;
      } finally {
        c.close();
      }
      function failsOn(x: { off: number; len: number }): boolean {
        for (const f of dev.failAt) {
          const p = Number(f);
          if (p >= x.off && p < x.off + x.len && (p - x.off) % (64 * 1024) === 0) return true;
        }
        return false;
      }
    },
  );
}

Deno.test("readInto: nbdsh with simple replies reads back what it wrote from isboot serve memory:", async () => {
  await using srv = await startServe("memory:64M");
  // Many overlapping async reads of one size, so pooled buffers are reused;
  // half the reads are of never-written space, which must come back zero.
  const script = `
import os, random
h.set_request_structured_replies(False)
h.connect_uri(${JSON.stringify(srv.uri)})
assert not h.get_structured_replies_negotiated()
random.seed(5)
data = os.urandom(32 * 1024 * 1024)
for off in range(0, len(data), 1024 * 1024):
    h.pwrite(data[off:off + 1024 * 1024], off)
bufs = []
for i in range(400):
    blk = random.randrange(0, 16384 - 64)
    n = random.choice([1, 8, 64]) * 4096
    b = nbd.Buffer(n)
    bufs.append((blk * 4096, n, b, h.aio_pread(b, blk * 4096)))
    if len(bufs) >= 16:
        off, n, b, cookie = bufs.pop(0)
        while not h.aio_command_completed(cookie):
            h.poll(-1)
        want = data[off:off + n] if off + n <= len(data) else (data[off:] + bytes(off + n - len(data)) if off < len(data) else bytes(n))
        assert b.to_bytearray() == want, (off, n)
print("ok")
`;
  const r = await tool("nbdsh", ["-c", script]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.equal(r.stdout.trim(), "ok");
});

Deno.test("readInto: Lun fills a caller's buffer from tgtd exactly as read() does, split into commands", async () => {
  const IQN = "iqn.2026-11.test.isboot:perf";
  const path = await Deno.makeTempFile({ dir: "/dev/shm", prefix: "isboot-perf-", suffix: ".img" });
  try {
    const image = pattern(8 * MiB, 11);
    await Deno.writeFile(path, image);
    await withTgtd(async (tgt) => {
      const tid = await tgt.createTarget(IQN);
      await tgt.addLun(tid, { lun: 1, size: 8 * MiB, path });
      const cfg = await sessionConfigFromUri(`iscsi://${tgt.portal}/${IQN}/1`, {}, () => undefined);
      // 64 KiB per command: a 1 MiB readInto is 16 READs into slices of one buffer.
      const t = await openTarget(cfg, { log: quiet, lun: { maxCommandBytes: 64 * 1024 } });
      try {
        const lun = t.device;
        for (
          const [off, len] of [[0, 512], [4096, MiB], [MiB - 512, 3 * MiB + 1024], [0, 8 * MiB]]
        ) {
          // A view into a larger buffer at an odd offset, as the NBD server passes.
          const backing = new Uint8Array(len + 16).fill(0xee);
          const into = backing.subarray(16);
          await lun.readInto(BigInt(off), into);
          same(into, image.subarray(off, off + len), `${off}+${len}`);
          assert.ok(
            backing.subarray(0, 16).every((b) => b === 0xee),
            "bytes before the view untouched",
          );
          same(await lun.read(BigInt(off), len), into, `read() ${off}+${len}`);
        }
        await assert.rejects(
          lun.readInto(8n * BigInt(MiB), new Uint8Array(512)),
          BlockRequestError,
        );
        await assert.rejects(lun.readInto(100n, new Uint8Array(512)), BlockRequestError);
        await assert.rejects(lun.readInto(0n, new Uint8Array(100)), BlockRequestError);
      } finally {
        await t.close();
      }
    });
  } finally {
    await Deno.remove(path);
  }
});
