/** The root disk's device choice: /dev/nbd0 by index, waiting out a prober that holds it open. */
import assert from "node:assert/strict";
import { attachFirstDevice } from "../../src/boot/backend.ts";
import { Logger } from "../../src/log.ts";
import { ERRNO, SysError } from "../../src/sys/errno.ts";

function logger(lines: string[]): Logger {
  return new Logger({ sink: (level, line) => lines.push(`${level}: ${line}`) });
}

/** An attach that answers EBUSY for nbd0 `busy` times, then attaches whatever it is asked. */
function fakeAttach(busy: number) {
  const calls: (number | undefined)[] = [];
  return {
    calls,
    at: (index?: number) => {
      calls.push(index);
      if (index === 0 && busy-- > 0) {
        return Promise.reject(new SysError("connect nbd0", ERRNO.EBUSY));
      }
      return Promise.resolve(index ?? 1);
    },
  };
}

const noSleep = () => Promise.resolve();

Deno.test("boot attach: nbd0 by index when it is free", async () => {
  const f = fakeAttach(0);
  const lines: string[] = [];
  assert.equal(await attachFirstDevice(f.at, { log: logger(lines), sleep: noSleep }), 0);
  assert.deepEqual(f.calls, [0]);
  assert.deepEqual(lines, []);
});

Deno.test("boot attach: nbd0 held open by a prober for a while is waited for, and still used", async () => {
  const f = fakeAttach(7);
  const lines: string[] = [];
  const got = await attachFirstDevice(f.at, {
    log: logger(lines),
    sleep: noSleep,
    connected: () => false,
  });
  assert.equal(got, 0);
  assert.deepEqual(f.calls, [0, 0, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual(lines, []);
});

Deno.test("boot attach: nbd0 busy past the wait -> the first free device, with a warning", async () => {
  const f = fakeAttach(1000);
  const lines: string[] = [];
  const got = await attachFirstDevice(f.at, {
    log: logger(lines),
    sleep: noSleep,
    connected: () => false,
    waitMs: 500,
  });
  assert.equal(got, 1);
  assert.equal(f.calls.filter((c) => c === 0).length, 6); // at 0, 100, ..., 500 ms
  assert.equal(f.calls.at(-1), undefined);
  assert.equal(lines.length, 1);
  assert.match(
    lines[0],
    /^warn: warning: \/dev\/nbd0 is still held open by another process after 500 ms/,
  );
});

Deno.test("boot attach: a connected nbd0 (another disk) -> the first free device at once", async () => {
  const f = fakeAttach(1000);
  const lines: string[] = [];
  const got = await attachFirstDevice(f.at, {
    log: logger(lines),
    sleep: noSleep,
    connected: () => true,
  });
  assert.equal(got, 1);
  assert.deepEqual(f.calls, [0, undefined]);
  assert.match(lines[0], /^info: \/dev\/nbd0 serves another disk/);
});

Deno.test("boot attach: errors other than EBUSY are not retried", async () => {
  const at = () => Promise.reject(new SysError("connect nbd0", ERRNO.EPERM));
  await assert.rejects(attachFirstDevice(at, { log: logger([]), sleep: noSleep }), /connect nbd0/);
});

Deno.test({
  name:
    "boot luns: the real backend opens the target's other LUNs over the root disk's session; the controller LUN and LUNs not reported are left out with a line",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { realBackend } = await import("../../src/boot/backend.ts");
    const { withTgtd } = await import("../../peers/tgtd.ts");
    await withTgtd(async (tgt) => {
      const iqn = "iqn.2026-12.test.isboot:luns";
      const tid = await tgt.createTarget(iqn);
      for (const [lun, mib] of [[1, 4], [2, 8], [3, 2]]) {
        await tgt.addLun(tid, { lun, size: mib << 20 });
      }
      const lines: string[] = [];
      const log = logger(lines);
      const backend = realBackend();
      const root = await backend.login(
        { label: "netroot 0", host: "127.0.0.1", port: tgt.port, lun: 1, targetName: iqn },
        { initiator: "iqn.2026-12.test.isboot:luns-init", recoveryTimeoutMs: 0, log },
      );
      try {
        const all = await backend.openLuns!(1, "all", log);
        assert.deepEqual(all.map((x) => [x.lun, x.device.size]), [[2, 8n << 20n], [3, 2n << 20n]]);
        assert.ok(
          lines.some((l) => /^info: LUN 0 is a .*, not a disk; skipped/.test(l)),
          lines.join("\n"),
        );
        // The other LUNs move data over the same session as the root disk.
        const data = new Uint8Array(4096).fill(0x5a);
        await all[1].device.write(0n, data);
        assert.deepEqual(await all[1].device.read(0n, 4096), data);
        for (const x of all) await x.device.close();
        const some = await backend.openLuns!(1, [3, 9, 1], log);
        assert.deepEqual(some.map((x) => x.lun), [3]);
        assert.ok(
          lines.some((l) =>
            /^warn: warning: LUN 9: the target does not report it; skipped/.test(l)
          ),
          lines.join("\n"),
        );
        for (const x of some) await x.device.close();
        // The root disk still works after the other LUNs closed.
        assert.equal((await root.read(0n, 512)).length, 512);
      } finally {
        await root.close();
      }
    });
  },
});
