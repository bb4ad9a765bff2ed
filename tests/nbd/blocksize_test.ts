/**
 * BlockSizeFilter (src/nbd/blocksize.ts) on a MemoryDevice alone, no NBD:
 * the device below is made strict (it rejects any call that is not whole
 * 4 KiB blocks or is longer than its transfer limit, as a SCSI disk would)
 * and records every call, so each test sees both the bytes a caller gets and
 * what reached the device.
 */
import assert from "node:assert/strict";
import type { BlockDevice, BlockDeviceLimits } from "../../src/blockdev.ts";
import { MemoryDevice } from "../../src/memory_device.ts";
import { BlockSizeFilter } from "../../src/nbd/blocksize.ts";
import { NBD_EIO, NBD_ENOTSUP } from "../../src/nbd/constants.ts";
import { nbdErrnoOf } from "../../src/nbd/errno.ts";
import { pattern } from "../helpers/bytes.ts";

const BS = 4096;
const MAX_TRANSFER = 4 * BS;
const SIZE = 64 * BS;

interface Call {
  op: string;
  offset: number;
  length: number;
  fua?: boolean;
}

/** A MemoryDevice behind a device that takes whole blocks only, at most MAX_TRANSFER a call, and logs calls. */
class StrictDevice implements BlockDevice {
  calls: Call[] = [];
  readonly mem: MemoryDevice;
  readonly size: bigint;
  readonly blockSize = BS;
  readonly readOnly = false;
  readonly limits: BlockDeviceLimits;
  readonly readInto?: (o: bigint, into: Uint8Array) => Promise<void>;
  constructor(opts: { canWriteZeroes?: boolean; readInto?: boolean } = {}) {
    this.mem = new MemoryDevice({
      size: BigInt(SIZE),
      blockSize: BS,
      maxTransfer: MAX_TRANSFER,
      canWriteZeroes: opts.canWriteZeroes,
    });
    this.size = this.mem.size;
    this.limits = this.mem.limits;
    if (opts.readInto !== false) {
      this.readInto = (o, into) => {
        this.#take("readInto", o, into.length);
        return this.mem.readInto(o, into);
      };
    }
  }
  #take(op: string, offset: bigint, length: number, fua?: boolean) {
    const o = Number(offset);
    if (o % BS !== 0 || length % BS !== 0) throw new Error(`unaligned ${op} ${o}+${length}`);
    if (op !== "trim" && op !== "zeroes" && length > MAX_TRANSFER) {
      throw new Error(`${op} of ${length} over the transfer limit`);
    }
    this.calls.push(fua ? { op, offset: o, length, fua } : { op, offset: o, length });
  }
  read(o: bigint, n: number) {
    this.#take("read", o, n);
    return this.mem.read(o, n);
  }
  write(o: bigint, d: Uint8Array, x?: { fua?: boolean }) {
    this.#take("write", o, d.length, x?.fua);
    return this.mem.write(o, d, x);
  }
  trim(o: bigint, n: number) {
    this.#take("trim", o, n);
    return this.mem.trim(o, n);
  }
  writeZeroes(o: bigint, n: number, x?: { mayTrim?: boolean; fast?: boolean }) {
    this.#take("zeroes", o, n);
    return this.mem.writeZeroes(o, n, x);
  }
  flush() {
    this.calls.push({ op: "flush", offset: 0, length: 0 });
    return this.mem.flush();
  }
  close() {
    return this.mem.close();
  }
}

/** A filter over a strict device filled with a pattern, and the same bytes as a model. */
async function setup(opts: { canWriteZeroes?: boolean } = {}) {
  const dev = new StrictDevice(opts);
  const model = pattern(SIZE, 3);
  for (let o = 0; o < SIZE; o += MAX_TRANSFER) {
    await dev.write(BigInt(o), model.subarray(o, o + MAX_TRANSFER));
  }
  dev.calls = [];
  return { dev, model, filter: new BlockSizeFilter(dev) };
}

async function contents(dev: StrictDevice): Promise<Uint8Array> {
  const out = new Uint8Array(SIZE);
  for (let o = 0; o < SIZE; o += MAX_TRANSFER) {
    out.set(await dev.mem.read(BigInt(o), MAX_TRANSFER), o);
  }
  return out;
}

Deno.test("blocksize: an unaligned write is a read-modify-write of its partial blocks only", async () => {
  const { dev, model, filter } = await setup();
  const data = pattern(BS + 200, 9);
  await filter.write(BigInt(BS - 100), data); // tail of block 0, all of block 1, head of block 2
  model.set(data, BS - 100);
  assert.deepEqual(dev.calls, [
    { op: "read", offset: 0, length: BS },
    { op: "read", offset: 2 * BS, length: BS },
    { op: "write", offset: 0, length: 3 * BS },
  ]);
  assert.deepEqual(await contents(dev), model);
  assert.equal(filter.blockSize, 1);
  assert.equal(filter.deviceBlockSize, BS);
});

Deno.test("blocksize: a write inside one block reads that block once", async () => {
  const { dev, model, filter } = await setup();
  await filter.write(BigInt(5 * BS + 10), pattern(20, 1), { fua: true });
  model.set(pattern(20, 1), 5 * BS + 10);
  assert.deepEqual(dev.calls, [
    { op: "read", offset: 5 * BS, length: BS },
    { op: "write", offset: 5 * BS, length: BS, fua: true },
  ]);
  assert.deepEqual(await contents(dev), model);
});

Deno.test("blocksize: unaligned reads widen to whole blocks; long ones split at the transfer limit", async () => {
  const { dev, model, filter } = await setup();
  assert.deepEqual(await filter.read(BigInt(BS + 1), 10), model.subarray(BS + 1, BS + 11));
  assert.deepEqual(dev.calls, [{ op: "read", offset: BS, length: BS }]);
  dev.calls = [];
  const long = await filter.read(BigInt(BS), 10 * BS);
  assert.deepEqual(long, model.subarray(BS, 11 * BS));
  assert.deepEqual(dev.calls.map((c) => [c.offset / BS, c.length / BS]), [[1, 4], [5, 4], [9, 2]]);
});

Deno.test("blocksize: readInto fills the caller's buffer in pieces, aligned or not", async () => {
  const { dev, model, filter } = await setup();
  assert.ok(filter.readInto, "the device has readInto, so the filter offers it");
  const into = new Uint8Array(9 * BS);
  await filter.readInto(BigInt(2 * BS), into);
  assert.deepEqual(into, model.subarray(2 * BS, 11 * BS));
  assert.deepEqual(dev.calls.map((c) => [c.op, c.length / BS]), [
    ["readInto", 4],
    ["readInto", 4],
    ["readInto", 1],
  ]);
  const odd = new Uint8Array(100);
  await filter.readInto(BigInt(BS - 50), odd);
  assert.deepEqual(odd, model.subarray(BS - 50, BS + 50));
  const plain = new BlockSizeFilter(new StrictDevice({ readInto: false }));
  assert.equal(plain.readInto, undefined, "no readInto below: none above");
});

Deno.test("blocksize: concurrent unaligned writes sharing a block keep each other's bytes", async () => {
  const { dev, model, filter } = await setup();
  // Eight writes of 100 bytes, all inside block 3, all at once.
  const writes = Array.from({ length: 8 }, (_, i) => {
    const d = pattern(100, 20 + i);
    model.set(d, 3 * BS + i * 300);
    return filter.write(BigInt(3 * BS + i * 300), d);
  });
  await Promise.all(writes);
  assert.deepEqual(await contents(dev), model);
});

Deno.test("blocksize: trim is advisory, only whole blocks inside the range", async () => {
  const { dev, filter } = await setup();
  await filter.trim(BigInt(BS - 1), 3 * BS + 2);
  assert.deepEqual(dev.calls, [{ op: "trim", offset: BS, length: 3 * BS }]);
  dev.calls = [];
  await filter.trim(BigInt(BS + 1), BS);
  assert.deepEqual(dev.calls, [], "no whole block inside: nothing trimmed");
});

Deno.test("blocksize: write-zeroes: partial blocks by read-modify-write, whole ones natively or written", async () => {
  for (const canWriteZeroes of [true, false]) {
    const { dev, model, filter } = await setup({ canWriteZeroes });
    await filter.writeZeroes(BigInt(BS + 10), 6 * BS, { fua: true });
    model.fill(0, BS + 10, 7 * BS + 10);
    assert.deepEqual(await contents(dev), model, `canWriteZeroes ${canWriteZeroes}`);
    const ops = dev.calls.filter((c) => c.op !== "read");
    // Blocks 1 and 7 are partial: read, then written back whole.
    const isPartial = (c: Call) => c.op === "write" && (c.offset === BS || c.offset === 7 * BS);
    const partial = ops.filter(isPartial);
    assert.deepEqual(partial.map((c) => [c.offset / BS, c.fua]), [[1, true], [7, true]]);
    const whole = ops.filter((c) => !isPartial(c));
    assert.deepEqual(
      whole,
      canWriteZeroes
        ? [{ op: "zeroes", offset: 2 * BS, length: 5 * BS }, { op: "flush", offset: 0, length: 0 }]
        : [
          { op: "write", offset: 2 * BS, length: 4 * BS, fua: true },
          { op: "write", offset: 6 * BS, length: BS, fua: true },
        ],
    );
  }
});

Deno.test("blocksize: a fast zero that cannot be fast fails with ENOTSUP and changes nothing", async () => {
  for (const [canWriteZeroes, offset] of [[true, 100], [false, 0]] as const) {
    const { dev, model, filter } = await setup({ canWriteZeroes });
    const e = await filter.writeZeroes(BigInt(offset), 2 * BS, { fast: true }).then(
      () => null,
      (err) => err,
    );
    assert.equal(nbdErrnoOf(e), NBD_ENOTSUP);
    assert.deepEqual(dev.calls, []);
    assert.deepEqual(await contents(dev), model);
  }
  const { dev, filter } = await setup();
  await filter.writeZeroes(0n, 2 * BS, { fast: true });
  assert.deepEqual(dev.calls, [{ op: "zeroes", offset: 0, length: 2 * BS }]);
});

Deno.test("blocksize: a short read from the device is EIO", async () => {
  const dev = new StrictDevice();
  dev.read = (o, n) => dev.mem.read(o, n - 1);
  const e = await new BlockSizeFilter(dev).read(0n, BS).then(() => null, (err) => err);
  assert.equal(nbdErrnoOf(e), NBD_EIO);
});

Deno.test("blocksize: random byte-granular operations at once match a byte model", async () => {
  const { dev, model, filter } = await setup();
  let seed = 12345;
  const rand = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
  for (let round = 0; round < 30; round++) {
    // Writes in one round do not overlap in bytes (so the model has one answer),
    // but may share blocks.
    const ops: Promise<unknown>[] = [];
    let at = rand(BS);
    while (at < SIZE - 1) {
      const len = 1 + rand(Math.min(3 * BS, SIZE - at - 1));
      const kind = rand(3);
      if (kind === 0) {
        const d = pattern(len, round * 100 + at);
        model.set(d, at);
        ops.push(filter.write(BigInt(at), d));
      } else if (kind === 1) {
        model.fill(0, at, at + len);
        ops.push(filter.writeZeroes(BigInt(at), len));
      }
      at += len + rand(2 * BS);
    }
    await Promise.all(ops);
    const o = rand(SIZE - 1);
    const n = 1 + rand(SIZE - o);
    assert.deepEqual(await filter.read(BigInt(o), n), model.subarray(o, o + n), `round ${round}`);
  }
  assert.deepEqual(await contents(dev), model);
});
