/**
 * serveTransmission's drain (a takeover's hand-over, docs/kernel.md
 * "Takeover under I/O"): once the signal fires the server stops reading at a
 * request boundary, still answers every request it read (also one that was
 * only partly received), and then closes the stream.
 */
import assert from "node:assert/strict";
import * as C from "../../src/nbd/constants.ts";
import { MemoryDevice } from "../../src/memory_device.ts";
import { newCounters, serveTransmission } from "../../src/nbd/transmission.ts";
import { memoryStreamPair } from "../../src/nbd/stream.ts";
import { encodeRequest } from "../../src/nbd/protocol.ts";
import { Logger } from "../../src/log.ts";
import { WireClient } from "./wire_client.ts";

const log = new Logger({ quiet: true });

class GatedDevice extends MemoryDevice {
  gate: Promise<void> | null = null;
  override async read(offset: bigint, length: number): Promise<Uint8Array> {
    if (offset === 0n) await this.gate;
    return super.read(offset, length);
  }
}

function start(device: MemoryDevice) {
  const [c, s] = memoryStreamPair();
  const drain = new AbortController();
  let settled = false;
  const done = serveTransmission(s, device, { log, counters: newCounters(), drain: drain.signal })
    .then(() => {
      settled = true;
    });
  return { client: new WireClient(c), drain, done, settled: () => settled };
}

const tick = () => new Promise((r) => setTimeout(r, 20));

Deno.test("nbd drain: answers requests in flight, reads nothing after the boundary, then closes", async () => {
  const dev = new GatedDevice({ size: 1n << 20n });
  let open!: () => void;
  dev.gate = new Promise<void>((r) => (open = r));
  const { client, drain, done, settled } = start(dev);
  const data = new Uint8Array(4096).fill(7);
  await client.request({ type: C.NBD_CMD_READ, handleLo: 1, offset: 0, length: 4096 });
  await client.request({ type: C.NBD_CMD_WRITE, handleLo: 2, offset: 8192 }, data);
  const w = await client.reply(() => 0);
  assert.deepEqual([w?.handleLo, w?.error], [2, 0]);

  drain.abort();
  await tick();
  assert.equal(settled(), false, "a read is still in flight: the drain waits for it");
  // Sent after the boundary: never read, never answered (the kernel resends it).
  await client.request({ type: C.NBD_CMD_WRITE, handleLo: 3, offset: 16384 }, data);
  open();
  const r = await client.reply((h) => (h === 1 ? 4096 : 0));
  assert.deepEqual([r?.handleLo, r?.error], [1, 0]);
  assert.equal(await client.closedByServer(), true, "the stream ends after the last reply");
  await done;
  assert.deepEqual(await dev.read(16384n, 4096), new Uint8Array(4096), "request 3 was not run");
  assert.deepEqual(await dev.read(8192n, 4096), data);
});

Deno.test("nbd drain: a request partly received when the drain starts is finished", async () => {
  const dev = new MemoryDevice({ size: 1n << 20n });
  const { client, drain, done } = start(dev);
  const data = new Uint8Array(512).fill(9);
  const hdr = encodeRequest({
    flags: 0,
    type: C.NBD_CMD_WRITE,
    handleHi: 0,
    handleLo: 5,
    offset: 512,
    length: data.length,
  });
  await client.write(hdr.subarray(0, 10));
  await tick();
  drain.abort();
  await tick();
  await client.write(hdr.subarray(10));
  await client.write(data);
  const r = await client.reply(() => 0);
  assert.deepEqual([r?.handleLo, r?.error], [5, 0]);
  assert.equal(await client.closedByServer(), true);
  await done;
  assert.deepEqual(await dev.read(512n, 512), data);
});

Deno.test("nbd drain: an idle connection ends at once", async () => {
  const { client, drain, done } = start(new MemoryDevice({ size: 1n << 20n }));
  await tick();
  drain.abort();
  assert.equal(await client.closedByServer(), true);
  await done;
});
