/**
 * A LUN that grows while it is open, against the scripted fake target's RAM
 * disk (tests/helpers/fake_target/), whose size a test can change at will
 * and which then raises UNIT ATTENTION 2A/09 CAPACITY DATA HAS CHANGED, as
 * tgt never does: the Lun reads its capacity again on that UA, or when asked
 * (refreshSize), grows, tells its listeners, and refuses to shrink.
 */
import assert from "node:assert/strict";
import type { SizeRefresh } from "../../src/blockdev.ts";
import { Logger } from "../../src/log.ts";
import { type OpenedTarget, openTarget } from "../../src/iscsi/open_target.ts";
import { BlockRequestError } from "../../src/scsi/errors.ts";
import { SenseError } from "../../src/scsi/sense.ts";
import { FakeDisk, fakeSessionConfig, FakeTarget } from "../helpers/fake_target/mod.ts";
import { until } from "../helpers/wait.ts";

const BLOCK = 512;

/** A fake target with a `blocks`-block disk, its log lines, and the READ CAPACITY(16)s it got. */
async function setUp(blocks: number) {
  const disk = new FakeDisk(blocks);
  let readCapacities = 0;
  const fake = new FakeTarget(async (c) =>
    disk.serve(c, await c.acceptLogin(), (pdu) => {
      if (pdu.opcode === 0x01 && pdu.bhs[32] === 0x9e) readCapacities++;
      return false;
    })
  );
  const lines: string[] = [];
  const log = new Logger({ debug: true, sink: (level, l) => lines.push(`${level}: ${l}`) });
  let t: OpenedTarget;
  try {
    t = await openTarget(fakeSessionConfig(fake.port), { log });
  } catch (e) {
    await fake.close();
    throw e;
  }
  return {
    disk,
    t,
    lines,
    readCapacities: () => readCapacities,
    async [Symbol.asyncDispose]() {
      await t.close();
      await fake.close();
      assert.deepEqual(fake.errors, []);
    },
  };
}

Deno.test("resize: UNIT ATTENTION 2A/09 on an ordinary READ makes the Lun grow; listeners hear it once", async () => {
  await using s = await setUp(2048);
  const lun = s.t.device;
  assert.equal(lun.size, 2048n * 512n);
  const heard: SizeRefresh[] = [];
  lun.onResize((r) => heard.push(r));

  s.disk.resize(4096);
  // Until the target says so, the Lun serves its old size.
  await assert.rejects(lun.read(2048n * 512n, BLOCK), BlockRequestError);
  const before = s.readCapacities();
  // This READ gets CHECK CONDITION + UA 2A/09 first, is retried, and succeeds;
  // the capacity is read again beside it.
  assert.deepEqual(await lun.read(0n, BLOCK), new Uint8Array(BLOCK));
  await until("the Lun to grow", () => lun.size === 4096n * 512n);
  assert.equal(s.readCapacities(), before + 1, "one READ CAPACITY(16) for one UA");
  assert.deepEqual(heard, [{
    oldSize: 2048n * 512n,
    newSize: 4096n * 512n,
    reportedSize: 4096n * 512n,
    refused: null,
  }]);
  assert.equal(lun.inventory.blocks, 4096);
  assert.equal(lun.inventory.size, 4096 * 512);
  assert.ok(
    s.lines.some((l) => /capacity grew from 1048576 to 2097152 bytes/.test(l)),
    s.lines.join("\n"),
  );

  // The new blocks are usable: write past the old end, read it back, see it on the disk.
  const data = new Uint8Array(4 * BLOCK).fill(0xa5);
  await lun.write(4000n * 512n, data);
  assert.deepEqual(await lun.read(4000n * 512n, data.length), data);
  assert.deepEqual(s.disk.bytes.subarray(4000 * BLOCK, 4004 * BLOCK), data);
});

Deno.test("resize: refreshSize by hand grows without a UA; unchanged says so; a shrink is refused and the old size kept", async () => {
  await using s = await setUp(2048);
  const lun = s.t.device;
  const heard: SizeRefresh[] = [];
  lun.onResize((r) => heard.push(r));

  s.disk.resize(3072, { unitAttention: false }); // tgt's way: no UA
  assert.deepEqual(await lun.refreshSize(), {
    oldSize: 2048n * 512n,
    newSize: 3072n * 512n,
    reportedSize: 3072n * 512n,
    refused: null,
  });
  assert.equal(lun.size, 3072n * 512n);
  assert.deepEqual(await lun.refreshSize(), {
    oldSize: 3072n * 512n,
    newSize: 3072n * 512n,
    reportedSize: 3072n * 512n,
    refused: null,
  });
  assert.equal(heard.length, 1, "listeners hear of growth only");

  s.disk.resize(1024, { unitAttention: false });
  const r = await lun.refreshSize();
  assert.equal(r.newSize, 3072n * 512n);
  assert.equal(r.reportedSize, 1024n * 512n);
  assert.match(r.refused ?? "", /reports 524288 bytes, less than the 1572864 served.*never shrunk/);
  assert.equal(lun.size, 3072n * 512n, "still serving the old size");
  assert.equal(heard.length, 1);
  assert.ok(s.lines.some((l) => l.startsWith("warn: ") && /never shrunk/.test(l)));
  // The blocks the target took away now fail at the target, not in the Lun.
  await assert.rejects(lun.read(2000n * 512n, BLOCK), SenseError);
});

Deno.test("resize: a shrink announced by UNIT ATTENTION is refused with a warning, I/O below the new end goes on", async () => {
  await using s = await setUp(2048);
  const lun = s.t.device;
  s.disk.resize(1024);
  assert.deepEqual(await lun.read(0n, BLOCK), new Uint8Array(BLOCK));
  await until("the refusal", () => s.lines.some((l) => /never shrunk/.test(l)));
  assert.equal(lun.size, 2048n * 512n);
  await lun.write(512n, new Uint8Array(BLOCK).fill(1));
});

Deno.test("resize: refreshSize calls made while one runs share the next READ CAPACITY", async () => {
  await using s = await setUp(2048);
  const lun = s.t.device;
  s.disk.resize(2560, { unitAttention: false });
  const before = s.readCapacities();
  const all = await Promise.all([lun.refreshSize(), lun.refreshSize(), lun.refreshSize()]);
  for (const r of all) assert.equal(r.newSize, 2560n * 512n);
  assert.ok(s.readCapacities() - before <= 2, `${s.readCapacities() - before} READ CAPACITYs`);
  await lun.close();
  await assert.rejects(lun.refreshSize(), /after close/);
});
