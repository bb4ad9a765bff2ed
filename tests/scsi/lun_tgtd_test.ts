/**
 * The SCSI layer through the real iSCSI session against a private tgtd
 * (peers/tgtd.ts): identity and size on 512- and 4096-byte LUNs, a
 * read-only LUN, UNMAP and WRITE SAME checked in the backing file, flush,
 * and the criterion: 256 MiB of random writes at random aligned
 * offsets, then reads, with 32+ requests in flight, byte for byte against
 * tgtd's backing file, without and with CRC32C header and data digests.
 *
 * Backing files live on /dev/shm (tmpfs) so that the test measures our code
 * and not the disk.
 */
import assert from "node:assert/strict";
import { type OpenedTarget, openTarget } from "../../src/iscsi/open_target.ts";
import { Logger } from "../../src/log.ts";
import { ReadOnlyError } from "../../src/scsi/errors.ts";
import { rw16 } from "../../src/scsi/cdb.ts";
import { executeWithRetry, type RetryEvent } from "../../src/scsi/retry.ts";
import { SenseError } from "../../src/scsi/sense.ts";
import { type Tgtd, withTgtd } from "../../peers/tgtd.ts";
import { sessionConfigFromUri, type TargetOptionValues } from "../../src/cli/target_options.ts";
import { fillRandom } from "../helpers/bytes.ts";

const IQN = "iqn.2026-11.test.isboot:scsi";
const MiB = 1024 * 1024;
const quiet = new Logger({ quiet: true });

/** Free bytes on the file system holding `dir` (df), or 0 if unknown. */
async function freeBytes(dir: string): Promise<number> {
  try {
    const o = await new Deno.Command("df", {
      args: ["-B1", "--output=avail", dir],
      stdout: "piped",
      stderr: "null",
    })
      .output();
    const n = Number(new TextDecoder().decode(o.stdout).trim().split("\n").at(-1));
    return Number.isFinite(n) ? n : 0;
  } catch {
    return 0;
  }
}

/**
 * A backing file on tmpfs (/dev/shm) when it has room (a container's 64 MiB
 * /dev/shm does not), else in the temp directory. Removed by the caller.
 */
async function shmFile(size: number): Promise<string> {
  const dir = (await freeBytes("/dev/shm")) >= size + 64 * MiB ? "/dev/shm" : undefined;
  const path = await Deno.makeTempFile({ dir, prefix: "isboot-scsi-", suffix: ".img" });
  await Deno.truncate(path, size);
  return path;
}

async function open(
  tgt: Tgtd,
  lun: number,
  values: TargetOptionValues = {},
  onRetry?: (e: RetryEvent) => void,
): Promise<OpenedTarget> {
  const cfg = await sessionConfigFromUri(
    `iscsi://${tgt.portal}/${IQN}/${lun}`,
    values,
    () => undefined,
  );
  return await openTarget(cfg, { log: quiet, lun: { retryHooks: { onRetry } } });
}

async function readAt(path: string, offset: number, length: number): Promise<Uint8Array> {
  const f = await Deno.open(path);
  try {
    await f.seek(offset, Deno.SeekMode.Start);
    const out = new Uint8Array(length);
    let got = 0;
    while (got < length) {
      const n = await f.read(out.subarray(got));
      if (n === null) break;
      got += n;
    }
    return out.subarray(0, got);
  } finally {
    f.close();
  }
}

Deno.test("scsi+tgtd: identity and size of a 512-byte and a 4096-byte LUN; LUN 0 is refused", async () => {
  const files = [await shmFile(64 * MiB), await shmFile(32 * MiB)];
  try {
    await withTgtd(async (tgt) => {
      const tid = await tgt.createTarget(IQN);
      await tgt.addLun(tid, { lun: 1, size: 64 * MiB, path: files[0] });
      await tgt.addLun(tid, { lun: 2, size: 32 * MiB, path: files[1], blockSize: 4096 });
      const retries: RetryEvent[] = [];
      const t1 = await open(tgt, 1, {}, (e) => retries.push(e));
      try {
        // a new I_T nexus gets UNIT ATTENTION 29/00 (power on/reset); open() rides it out
        assert.ok(
          retries.some((e) => e.reason === "unit-attention" && e.sense?.asc === 0x29),
          JSON.stringify(retries),
        );
        const inv = t1.inventory;
        assert.equal(inv.vendor, "IET");
        assert.equal(inv.product, "VIRTUAL-DISK");
        assert.equal(inv.revision, "0001");
        assert.equal(inv.serial, `beaf${tid}1`);
        assert.ok(inv.identifiers.length > 0);
        assert.equal(t1.device.size, BigInt(64 * MiB));
        assert.equal(t1.device.blockSize, 512);
        assert.equal(inv.logicalBlockSize, 512);
        assert.equal(t1.device.readOnly, false);
        assert.equal(inv.commandSize, 16);
        assert.ok(inv.vpdPages.includes(0xb0));
        assert.equal(t1.session.targetName, IQN);
      } finally {
        await t1.close();
      }
      const t2 = await open(tgt, 2);
      try {
        assert.equal(t2.device.size, BigInt(32 * MiB));
        assert.equal(t2.device.blockSize, 4096);
        assert.equal(t2.inventory.blocks, 8192);
        // 4096-byte LUN: 512-byte-aligned requests are refused, 4 KiB ones work
        await assert.rejects(t2.device.read(512n, 4096), /not a multiple of the block size 4096/);
        const d = new Uint8Array(8192);
        fillRandom(d, 4);
        await t2.device.write(4096n * 100n, d);
        assert.deepEqual(await t2.device.read(4096n * 100n, 8192), d);
        assert.deepEqual(await readAt(files[1], 4096 * 100, 8192), d);
      } finally {
        await t2.close();
      }
      await assert.rejects(open(tgt, 0), /LUN 0 is a storage array controller, not a disk/);
    });
  } finally {
    for (const f of files) await Deno.remove(f).catch(() => {});
  }
});

Deno.test("scsi+tgtd: a read-only LUN over IPv6: write protect, writes refused; tgt's own sense decoded", async () => {
  const file = await shmFile(8 * MiB);
  try {
    await withTgtd(async (tgt) => {
      const tid = await tgt.createTarget(IQN);
      await tgt.addLun(tid, { lun: 1, size: 8 * MiB, path: file, readOnly: true });
      const t = await open(tgt, 1);
      try {
        assert.equal(t.session.portal, tgt.portal);
        assert.equal(t.device.readOnly, true);
        assert.equal(t.inventory.writeProtect, true);
        await assert.rejects(t.device.write(0n, new Uint8Array(512)), ReadOnlyError);
        await assert.rejects(t.device.writeZeroes(0n, 512), ReadOnlyError);
        assert.equal((await t.device.read(0n, 4096)).length, 4096);
        // Past the Lun's own checks, straight to the target: tgt answers with
        // CHECK CONDITION and sense that must decode to the right errors.
        await assert.rejects(
          executeWithRetry(t.transport, {
            lun: 1,
            cdb: rw16(true, 0, 1),
            dataOut: new Uint8Array(512),
          }),
          (e) => e instanceof SenseError && e.sense?.senseKey === 0x07 && e.errno === "EPERM",
        );
        await assert.rejects(
          executeWithRetry(t.transport, { lun: 1, cdb: rw16(false, 16384, 1), dataInLength: 512 }),
          (e) =>
            e instanceof SenseError && e.errno === "EINVAL" &&
            /ILLEGAL REQUEST: Logical block address out of range \(21\/00\)/.test(e.message),
        );
      } finally {
        await t.close();
      }
    }, { host: "::1" });
  } finally {
    await Deno.remove(file).catch(() => {});
  }
});

Deno.test("scsi+tgtd: UNMAP on a thin LUN and WRITE SAME leave zeros in the backing file; flush", async () => {
  const files = [await shmFile(16 * MiB), await shmFile(16 * MiB)];
  try {
    await withTgtd(async (tgt) => {
      const tid = await tgt.createTarget(IQN);
      await tgt.addLun(tid, { lun: 1, size: 16 * MiB, path: files[0], thin: true });
      await tgt.addLun(tid, { lun: 2, size: 16 * MiB, path: files[1] });
      const thin = await open(tgt, 1);
      const thick = await open(tgt, 2);
      try {
        assert.equal(thin.inventory.thinProvisioning.lbpu, true);
        assert.equal(thin.device.limits.canUnmap, true);
        assert.equal(thick.device.limits.canUnmap, false);
        for (const t of [thin, thick]) {
          const data = new Uint8Array(4 * MiB);
          fillRandom(data, 9);
          await t.device.write(0n, data);
          await t.device.flush();
        }
        // UNMAP 1 MiB in the middle (tgt punches a hole in the file)
        await thin.device.trim(BigInt(MiB), MiB);
        const f0 = await readAt(files[0], 0, 4 * MiB);
        assert.ok(
          f0.subarray(MiB, 2 * MiB).every((x) => x === 0),
          "unmapped range reads zero in the file",
        );
        assert.ok(
          f0.subarray(0, MiB).some((x) => x !== 0) && f0.subarray(2 * MiB).some((x) => x !== 0),
        );
        // WRITE SAME, plain and with UNMAP allowed
        await thick.device.writeZeroes(BigInt(512 * 3), 512 * 1000);
        await thin.device.writeZeroes(BigInt(3 * MiB), 512 * 7, { mayTrim: true });
        const f1 = await readAt(files[1], 0, 4 * MiB);
        assert.ok(f1.subarray(512 * 3, 512 * 1003).every((x) => x === 0));
        assert.ok(f1.subarray(512 * 2, 512 * 3).some((x) => x !== 0), "block before untouched");
        assert.ok(
          f1.subarray(512 * 1003, 512 * 1004).some((x) => x !== 0),
          "block after untouched",
        );
        const f2 = await readAt(files[0], 3 * MiB, 512 * 8);
        assert.ok(f2.subarray(0, 512 * 7).every((x) => x === 0));
        assert.ok(f2.subarray(512 * 7).some((x) => x !== 0));
        assert.ok((await thick.device.read(BigInt(512 * 3), 512 * 1000)).every((x) => x === 0));
        await thin.device.flush();
        await thick.device.flush();
      } finally {
        await thin.close();
        await thick.close();
      }
    });
  } finally {
    for (const f of files) await Deno.remove(f).catch(() => {});
  }
});

/**
 * 256 MiB of writes of random aligned lengths (4 KiB .. 1 MiB) at random
 * aligned offsets, `depth` at a time (in-flight writes never overlap, so the
 * model stays exact), then every byte read back through the Lun in shuffled
 * 1 MiB reads, `depth` at a time, and compared with the model and with the
 * backing file.
 */
async function stress(digests: boolean): Promise<void> {
  const size = 256 * MiB;
  const depth = 48;
  const file = await shmFile(size);
  try {
    await withTgtd(async (tgt) => {
      const tid = await tgt.createTarget(IQN);
      await tgt.addLun(tid, { lun: 1, size, path: file });
      if (digests) await tgt.setDigests(tid, "CRC32C", "CRC32C");
      const t = await open(
        tgt,
        1,
        digests ? { "header-digest": "crc32c", "data-digest": "crc32c" } : {},
      );
      try {
        if (digests) {
          assert.equal(t.session.parameters.HeaderDigest, "CRC32C");
          assert.equal(t.session.parameters.DataDigest, "CRC32C");
        }
        const dev = t.device;
        const model = new Uint8Array(size);
        const bs = dev.blockSize;
        let seed = digests ? 77 : 55;
        const rnd = () => {
          seed ^= seed << 13;
          seed ^= seed >>> 17;
          seed ^= seed << 5;
          return (seed >>> 0) / 0x1_0000_0000;
        };
        const busy: Array<[number, number]> = [];
        let written = 0;
        let inFlight = 0;
        let maxInFlight = 0;
        let onWire = 0; // SCSI commands the iSCSI session has sent and not yet seen answered
        const pool = new Set<Promise<void>>();
        while (written < size) {
          const len = Math.max(1, Math.floor(rnd() * (MiB / 4096))) * 4096;
          const off = Math.floor(rnd() * ((size - len) / bs)) * bs;
          if (busy.some(([a, b]) => off < b && a < off + len)) continue;
          const data = new Uint8Array(len);
          fillRandom(data, (rnd() * 0xffffffff) | 0);
          model.set(data, off);
          const span: [number, number] = [off, off + len];
          busy.push(span);
          written += len;
          inFlight++;
          maxInFlight = Math.max(maxInFlight, inFlight);
          const p: Promise<void> = dev.write(BigInt(off), data).finally(() => {
            inFlight--;
            busy.splice(busy.indexOf(span), 1);
            pool.delete(p);
          });
          pool.add(p);
          onWire = Math.max(onWire, t.transport.outstanding.inFlight);
          if (pool.size >= depth) await Promise.race(pool);
        }
        await Promise.all(pool);
        assert.ok(maxInFlight >= 32, `max in flight ${maxInFlight}`);
        assert.ok(onWire >= 32, `max commands on the wire ${onWire}`);
        await dev.flush();

        const order = Array.from({ length: size / MiB }, (_, i) => i);
        for (let i = order.length - 1; i > 0; i--) {
          const j = Math.floor(rnd() * (i + 1));
          [order[i], order[j]] = [order[j], order[i]];
        }
        let next = 0;
        let readInFlight = 0;
        let maxReadInFlight = 0;
        const worker = async () => {
          while (next < order.length) {
            const off = order[next++] * MiB;
            readInFlight++;
            maxReadInFlight = Math.max(maxReadInFlight, readInFlight);
            const got = await dev.read(BigInt(off), MiB);
            readInFlight--;
            if (!equal(got, model.subarray(off, off + MiB))) {
              throw new Error(`read at ${off} differs from what was written`);
            }
          }
        };
        await Promise.all(Array.from({ length: depth }, worker));
        assert.ok(maxReadInFlight >= 32, `max reads in flight ${maxReadInFlight}`);
        const backing = await Deno.readFile(file);
        assert.ok(equal(backing, model), "backing file equals what was written");
      } finally {
        await t.close();
      }
    });
  } finally {
    await Deno.remove(file).catch(() => {});
  }
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  const n = a.length & ~3;
  if ((a.byteOffset & 3) === 0 && (b.byteOffset & 3) === 0) {
    const x = new Uint32Array(a.buffer, a.byteOffset, n / 4);
    const y = new Uint32Array(b.buffer, b.byteOffset, n / 4);
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  } else {
    for (let i = 0; i < n; i++) if (a[i] !== b[i]) return false;
  }
  for (let i = n; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

Deno.test("scsi+tgtd: 256 MiB random writes then reads, 32+ in flight, match the backing file", () =>
  stress(false));

Deno.test("scsi+tgtd: the same 256 MiB with CRC32C header and data digests", () => stress(true));
