/**
 * The kernel attachment's half of a resize, with the kernel replaced by a
 * recorder (the real one is in tests/vm/resize_test.ts) and the LUN by the
 * fake target's RAM disk: `resize()` re-reads the LUN and sends
 * NBD_CMD_RECONFIGURE with the new size and the backend identifier; growth
 * the LUN finds by itself (UNIT ATTENTION 2A/09) is sent without being
 * asked; a shrink is never sent; on a kernel that freezes the queue in
 * nbd_set_size (6.9+) nothing is sent and resize() fails.
 */
import assert from "node:assert/strict";
import { Logger } from "../../src/log.ts";
import { openTarget } from "../../src/iscsi/open_target.ts";
import { attachDevice } from "../../src/nbd/attach.ts";
import type { ConnectOptions, NbdKernel, ReconfigureOptions } from "../../src/nbd/genl.ts";
import { libc } from "../../src/sys/libc.ts";
import { closeFd } from "../../src/sys/socket.ts";
import { FakeDisk, fakeSessionConfig, FakeTarget } from "../helpers/fake_target/mod.ts";
import { until } from "../helpers/wait.ts";

const log = new Logger({ quiet: true, sink: () => {} });
const BACKEND = "iqn.2026-11.test.isboot:fake/1";

async function setUp(kernelRelease: string) {
  const disk = new FakeDisk(2048);
  const fake = new FakeTarget(async (c) => disk.serve(c, await c.acceptLogin()));
  const t = await openTarget(fakeSessionConfig(fake.port), { log });
  const reconfigures: { index: number; o: ReconfigureOptions }[] = [];
  // The kernel's ends of the socketpairs, held open as the kernel would.
  const held: number[] = [];
  const nbd = {
    connect(o: ConnectOptions) {
      for (const fd of o.sockets) held.push(libc().dup(fd));
      return 7;
    },
    reconfigure(index: number, o: ReconfigureOptions) {
      reconfigures.push({ index, o });
    },
    disconnect() {},
  } as unknown as NbdKernel;
  const a = await attachDevice(nbd, t.device, { log, backendIdentifier: BACKEND, kernelRelease });
  return {
    disk,
    t,
    a,
    reconfigures,
    async [Symbol.asyncDispose]() {
      for (const fd of held) closeFd(fd);
      await a.done;
      await t.close();
      await fake.close();
    },
  };
}

Deno.test("attach resize: resize() and a UNIT ATTENTION both grow the kernel device; a shrink is never sent", async () => {
  await using s = await setUp("6.1.0-57-amd64");
  assert.equal(s.a.sizeBytes, 2048n * 512n);
  s.disk.resize(3072, { unitAttention: false });
  assert.deepEqual(await s.a.resize(), {
    device: "/dev/nbd7",
    oldSizeBytes: String(2048 * 512),
    newSizeBytes: String(3072 * 512),
    reportedSizeBytes: String(3072 * 512),
    outcome: "grown",
    detail: null,
  });
  assert.deepEqual(s.reconfigures, [
    { index: 7, o: { sizeBytes: 3072n * 512n, backendIdentifier: BACKEND } },
  ]);
  assert.equal((await s.a.resize()).outcome, "unchanged");
  assert.equal(s.reconfigures.length, 1);

  // The target announces the next growth: the kernel hears of it unasked.
  s.disk.resize(4096);
  await s.t.device.read(0n, 512);
  await until("the kernel to be told", () => s.reconfigures.length === 2);
  assert.deepEqual(s.reconfigures[1].o, { sizeBytes: 4096n * 512n, backendIdentifier: BACKEND });
  assert.equal(s.a.sizeBytes, 4096n * 512n);

  s.disk.resize(1024, { unitAttention: false });
  const r = await s.a.resize();
  assert.equal(r.outcome, "refused");
  assert.equal(r.newSizeBytes, String(4096 * 512));
  assert.match(r.detail ?? "", /never shrunk/);
  assert.equal(s.reconfigures.length, 2, "a smaller size never reaches the kernel");
});

Deno.test("attach resize: on Linux 6.9+ nothing is sent and resize() says why", async () => {
  await using s = await setUp("6.12.38+deb13-amd64");
  s.disk.resize(3072, { unitAttention: false });
  await assert.rejects(
    s.a.resize(),
    /\/dev\/nbd7: Linux 6\.12\.38\+deb13-amd64 freezes the nbd queue/,
  );
  assert.deepEqual(s.reconfigures, []);
  assert.equal(s.a.sizeBytes, 2048n * 512n);
});
