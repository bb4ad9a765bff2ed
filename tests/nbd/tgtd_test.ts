/**
 * `isboot serve` as an iSCSI→NBD gateway over a private tgtd: the same real
 * clients as clients_test.ts, and the data checked in the target's backing
 * files (on /dev/shm).
 */
import { assert_, assertEquals } from "../helpers/assert.ts";
import { mustRun, startServe, tool } from "./serve_helper.ts";
import { withTgtd } from "../../peers/tgtd.ts";
import { writeRandomFile } from "../helpers/fs.ts";
import { NBDSH_PREAMBLE } from "../helpers/nbdsh.ts";

const IQN = "iqn.2026-11.test.isboot:nbd";
const MiB = 1024 * 1024;

async function shmFile(dir: string, name: string, size: number): Promise<string> {
  const path = `${dir}/${name}`;
  const f = await Deno.open(path, { create: true, write: true, truncate: true });
  await f.truncate(size);
  f.close();
  return path;
}

const NBDSH = NBDSH_PREAMBLE + `
size = h.get_size()
pat = bytes(range(256)) * 64
h.pwrite(pat, 1048576, nbd.CMD_FLAG_FUA)
assert h.pread(len(pat), 1048576) == pat
h.flush()
h.zero(8192, 1048576)
assert h.pread(8192, 1048576) == bytes(8192)
h.zero(4096, 1048576 + 8192, nbd.CMD_FLAG_NO_HOLE)
assert h.pread(4096, 1048576 + 8192) == bytes(4096)
h.trim(65536, 2097152)
h.set_strict_mode(0)
expect(errno.EINVAL, lambda: h.pread(4096, size))
expect(errno.ENOSPC, lambda: h.pwrite(b"x" * 4096, size - 2048))
expect(errno.EOVERFLOW, lambda: h.pread(32 * 1024 * 1024 + 4096, 0))
before = h.pread(5, 3 * 1048576)
h.pwrite(b"odd", 3 * 1048576 + 1)
assert h.pread(5, 3 * 1048576) == before[:1] + b"odd" + before[4:]
h.pwrite(b"end!" * 128, size - 512)
assert h.pread(512, size - 512) == b"end!" * 128
print("ok")
`;

Deno.test("nbd+tgtd: nbdinfo, nbdcopy 256 MiB, qemu-img compare, nbdsh, fio over an iSCSI LUN", async () => {
  const dir = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "isboot-nbd-tgt-" });
  try {
    const backing = await shmFile(dir, "lun1.img", 256 * MiB);
    await withTgtd(async (tgt) => {
      const tid = await tgt.createTarget(IQN);
      await tgt.addLun(tid, { lun: 1, size: 256 * MiB, path: backing, thin: true });
      await using s = await startServe(`iscsi://${tgt.portal}/${IQN}/1`);
      const e = JSON.parse((await mustRun("nbdinfo", ["--json", s.uri])).stdout).exports[0];
      assertEquals(e["export-name"], `${IQN}/1`);
      assertEquals(e["export-size"], 256 * MiB);
      assertEquals(e.block_size_minimum, 512);
      assertEquals(e.block_size_maximum, 32 * MiB);
      assertEquals([e.can_trim, e.can_zero, e.can_fua, e.can_flush, e.can_multi_conn], [
        true,
        true,
        true,
        true,
        true,
      ]);
      assertEquals(e.is_read_only, false);
      assert_(/IET VIRTUAL-DISK/.test(e.description), e.description);

      const src = `${dir}/random.bin`;
      await writeRandomFile(src, 256 * MiB);
      let t = performance.now();
      await mustRun("nbdcopy", [src, s.uri]);
      const wMs = performance.now() - t;
      t = performance.now();
      await mustRun("nbdcopy", [s.uri, `${dir}/back.bin`]);
      const rMs = performance.now() - t;
      assertEquals((await tool("cmp", ["-s", src, `${dir}/back.bin`])).code, 0, "read back");
      assertEquals((await tool("cmp", ["-s", src, backing])).code, 0, "target's backing file");
      await mustRun("qemu-img", ["compare", "-f", "raw", "-F", "raw", src, s.uri]);
      console.log(
        `nbdcopy 256 MiB via tgtd: write ${(256 / (wMs / 1000)).toFixed(0)} MiB/s, ` +
          `read ${(256 / (rMs / 1000)).toFixed(0)} MiB/s (informational)`,
      );
      await Deno.remove(`${dir}/back.bin`);

      assertEquals((await mustRun("nbdsh", ["-u", s.uri, "-c", NBDSH])).stdout.trim(), "ok");
      const tail = new Uint8Array(512);
      const f = await Deno.open(backing);
      await f.seek(256 * MiB - 512, Deno.SeekMode.Start);
      await f.read(tail);
      f.close();
      assertEquals(new TextDecoder().decode(tail.subarray(0, 8)), "end!end!");

      const r = await mustRun("fio", [
        "--name=v",
        "--ioengine=nbd",
        `--uri=${s.uri}`,
        "--rw=randwrite",
        "--bs=4k",
        "--iodepth=32",
        "--size=32M",
        "--verify=crc32c",
        "--do_verify=1",
        "--verify_fatal=1",
        "--output-format=json",
      ]);
      const job = JSON.parse(r.stdout.slice(r.stdout.indexOf("{"))).jobs[0];
      assertEquals(job.error, 0);
      assert_(job.read.io_bytes >= 32 * MiB, "verified");
    });
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("nbd+tgtd: a 4096-byte LUN takes unaligned I/O (read-modify-write); a read-only LUN gets EPERM", async () => {
  const dir = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "isboot-nbd-tgt-" });
  try {
    const b2 = await shmFile(dir, "lun2.img", 16 * MiB);
    const b3 = await shmFile(dir, "lun3.img", MiB);
    await withTgtd(async (tgt) => {
      const tid = await tgt.createTarget(IQN);
      await tgt.addLun(tid, { lun: 2, size: 16 * MiB, path: b2, blockSize: 4096 });
      await tgt.addLun(tid, { lun: 3, size: MiB, path: b3, readOnly: true });
      {
        await using s = await startServe(`iscsi://${tgt.portal}/${IQN}/2`, [
          "--export-name",
          "disk2",
        ]);
        const e = JSON.parse((await mustRun("nbdinfo", ["--json", s.uri])).stdout).exports[0];
        assertEquals(e["export-name"], "disk2");
        assertEquals(e.block_size_minimum, 4096);
        const script = `
h.set_strict_mode(0)
h.pwrite(b"x" * 1000, 5000)
h.pwrite(b"y" * 10, 8190)
assert h.pread(1002, 4999) == b"\\0" + b"x" * 1000 + b"\\0"
assert h.pread(12, 8189) == b"\\0" + b"y" * 10 + b"\\0"
print("ok")
`;
        assertEquals((await mustRun("nbdsh", ["-u", s.uri, "-c", script])).stdout.trim(), "ok");
      }
      const f = await Deno.readFile(b2);
      assertEquals(f.subarray(5000, 6000).every((b) => b === 0x78), true);
      assertEquals(f.subarray(8190, 8200).every((b) => b === 0x79), true);
      assertEquals(f[4999] + f[6000] + f[8189] + f[8200], 0);

      await using r = await startServe(`iscsi://${tgt.portal}/${IQN}/3`);
      const e = JSON.parse((await mustRun("nbdinfo", ["--json", r.uri])).stdout).exports[0];
      assertEquals(e.is_read_only, true);
      const script = `
h.set_strict_mode(0)
try:
    h.pwrite(b"x" * 512, 0)
    raise AssertionError("no error")
except nbd.Error as e:
    assert e.errno == "EPERM", e.errno
assert h.pread(4096, 0) == bytes(4096)
print("ok")
`;
      assertEquals((await mustRun("nbdsh", ["-u", r.uri, "-c", script])).stdout.trim(), "ok");
    });
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
