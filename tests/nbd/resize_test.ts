/**
 * What NBD clients see when the device grows (docs/nbd.md, "Size changes"):
 * over a handshake, a connected client keeps the size it was told, for the
 * life of its connection, and a new client is told the new size (the server
 * re-reads a LUN's capacity before each handshake; the LUN here is the fake
 * target's RAM disk, grown silently as tgt grows one); on the kernel path
 * the size requests are checked against is the one the kernel has, grown
 * together with it.
 */
import assert from "node:assert/strict";
import * as C from "../../src/nbd/constants.ts";
import { Logger } from "../../src/log.ts";
import { MemoryDevice } from "../../src/memory_device.ts";
import { openTarget } from "../../src/iscsi/open_target.ts";
import { NbdServer } from "../../src/nbd/server.ts";
import { memoryStreamPair } from "../../src/nbd/stream.ts";
import { type ExportSize, serveTransmission } from "../../src/nbd/transmission.ts";
import { FakeDisk, fakeSessionConfig, FakeTarget } from "../helpers/fake_target/mod.ts";
import { WireClient } from "./wire_client.ts";

const log = new Logger({ quiet: true, sink: () => {} });

/** Handshake on a new connection to `server`; the export size it was told. */
async function connect(server: NbdServer): Promise<{ client: WireClient; size: bigint }> {
  const [c, s] = memoryStreamPair();
  void server.serve(s);
  const client = new WireClient(c);
  await client.greet();
  const replies = await client.go("", []);
  const info = replies.find((r) =>
    r.type === C.NBD_REP_INFO && new DataView(r.data.buffer).getUint16(0) === C.NBD_INFO_EXPORT
  );
  assert.ok(info, "NBD_INFO_EXPORT");
  assert.equal(replies.at(-1)?.type, C.NBD_REP_ACK);
  const v = new DataView(info.data.buffer, info.data.byteOffset);
  return { client, size: v.getBigUint64(2) };
}

/** One request's NBD error (0: success). */
async function errorOf(
  client: WireClient,
  type: number,
  offset: number,
  handleLo: number,
): Promise<number> {
  const data = type === C.NBD_CMD_WRITE ? new Uint8Array(512).fill(9) : undefined;
  await client.request({ type, handleLo, offset, length: 512 }, data);
  const r = await client.reply((h) => (h === handleLo && type === C.NBD_CMD_READ ? 512 : 0));
  assert.equal(r?.handleLo, handleLo);
  return r!.error;
}

Deno.test("nbd resize: a connected client keeps its size, a new one is told the LUN's grown size", async () => {
  const disk = new FakeDisk(2048);
  const fake = new FakeTarget(async (c) => disk.serve(c, await c.acceptLogin()));
  const t = await openTarget(fakeSessionConfig(fake.port), { log });
  const server = new NbdServer({
    exports: [{ name: "lun", device: t.device }],
    log,
    refreshSizeOnConnect: true,
  });
  try {
    const old = await connect(server);
    assert.equal(old.size, 2048n * 512n);
    disk.resize(4096, { unitAttention: false });
    const fresh = await connect(server);
    assert.equal(fresh.size, 4096n * 512n, "the new client is told the new size");
    assert.equal(t.device.size, 4096n * 512n);

    const oldEnd = 2048 * 512;
    // The connected client: the end it was told still holds, both ways.
    assert.equal(await errorOf(old.client, C.NBD_CMD_READ, oldEnd, 1), C.NBD_EINVAL);
    assert.equal(await errorOf(old.client, C.NBD_CMD_WRITE, oldEnd, 2), C.NBD_ENOSPC);
    assert.equal(await errorOf(old.client, C.NBD_CMD_READ, oldEnd - 512, 3), 0);
    // The new client reaches the new blocks.
    assert.equal(await errorOf(fresh.client, C.NBD_CMD_WRITE, oldEnd, 4), 0);
    assert.equal(await errorOf(fresh.client, C.NBD_CMD_READ, 4095 * 512, 5), 0);
    assert.equal(await errorOf(fresh.client, C.NBD_CMD_READ, 4096 * 512, 6), C.NBD_EINVAL);
    assert.deepEqual(disk.bytes.subarray(oldEnd, oldEnd + 512), new Uint8Array(512).fill(9));

    // A shrink on the target: new clients are still told the size served.
    disk.resize(1024, { unitAttention: false });
    assert.equal((await connect(server)).size, 4096n * 512n);
  } finally {
    await server.shutdown(1000);
    await t.close();
    await fake.close();
  }
  assert.deepEqual(fake.errors, []);
});

Deno.test("nbd resize: on the kernel path the shared exportSize is the end, grown in place", async () => {
  const device = new MemoryDevice({ size: 2n << 20n });
  const exportSize: ExportSize = { bytes: 1 << 20 };
  const [c, s] = memoryStreamPair();
  const done = serveTransmission(s, device, { log, exportSize });
  const client = new WireClient(c);
  assert.equal(await errorOf(client, C.NBD_CMD_READ, 1 << 20, 1), C.NBD_EINVAL);
  exportSize.bytes = 2 << 20;
  assert.equal(await errorOf(client, C.NBD_CMD_READ, 1 << 20, 2), 0);
  assert.equal(await errorOf(client, C.NBD_CMD_WRITE, (2 << 20) - 512, 3), 0);
  assert.equal(await errorOf(client, C.NBD_CMD_WRITE, 2 << 20, 4), C.NBD_ENOSPC);
  await client.request({ type: C.NBD_CMD_DISC });
  await done;
});
