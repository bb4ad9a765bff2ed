/**
 * A LUN grown on a real tgtd while `isboot serve` serves it. tgt has no
 * resize operation and raises no UNIT ATTENTION for it: the backing file is
 * grown, then tgtd is told to open it again (`tgtadm --op update --mode
 * logicalunit --params online=0,path=FILE`, which re-reads its size), and
 * READ CAPACITY reports the new size from then on. isboot serve reads the
 * capacity before each handshake, so the next client is told the new size;
 * a client connected before keeps the size it was told.
 */
import { assert_, assertEquals } from "../helpers/assert.ts";
import { mustRun, startServe } from "./serve_helper.ts";
import { withTgtd } from "../../peers/tgtd.ts";
import { NBDSH_PREAMBLE } from "../helpers/nbdsh.ts";

const IQN = "iqn.2026-11.test.isboot:grow";
const MiB = 1024 * 1024;

Deno.test("nbd+tgtd: a LUN grown on tgt reaches the next client; a connected one keeps its size; a shrink is refused", async () => {
  const dir = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "isboot-nbd-grow-" });
  try {
    const backing = `${dir}/lun1.img`;
    await Deno.writeFile(backing, new Uint8Array(0));
    await Deno.truncate(backing, 64 * MiB);
    await withTgtd(async (tgt) => {
      const tid = await tgt.createTarget(IQN);
      await tgt.addLun(tid, { lun: 1, size: 64 * MiB, path: backing, thin: true });
      await using s = await startServe(`iscsi://${tgt.portal}/${IQN}/1`);
      const reopen = `["tgtadm", "-C", "${tgt.control}", "--lld", "iscsi", "--op", "update", ` +
        `"--mode", "logicalunit", "--tid", "${tid}", "--lun", "1", ` +
        `"--params", "online=0,path=${backing}"]`;
      const script = NBDSH_PREAMBLE + `
import os, subprocess
old = h.get_size()
assert old == ${64 * MiB}, old
os.truncate("${backing}", ${96 * MiB})
subprocess.run(${reopen}, check=True)
h2 = nbd.NBD()
h2.connect_uri("${s.uri}")
assert h2.get_size() == ${96 * MiB}, h2.get_size()
pat = b"grown!" * 1024
h2.pwrite(pat, old)
assert h2.pread(len(pat), old) == pat
h2.pwrite(b"e" * 512, ${96 * MiB} - 512)
h2.flush()
with open("${backing}", "rb") as f:
    f.seek(old)
    assert f.read(len(pat)) == pat, "in tgt's backing file"
h.set_strict_mode(0)
h2.set_strict_mode(0)
expect(errno.EINVAL, lambda: h.pread(512, old))
expect(errno.ENOSPC, lambda: h.pwrite(b"x" * 512, old))
assert h.pread(512, old - 512) == bytes(512)
expect(errno.EINVAL, lambda: h2.pread(512, ${96 * MiB}))
os.truncate("${backing}", ${32 * MiB})
subprocess.run(${reopen}, check=True)
h3 = nbd.NBD()
h3.connect_uri("${s.uri}")
assert h3.get_size() == ${96 * MiB}, h3.get_size()
print("ok")
`;
      assertEquals((await mustRun("nbdsh", ["-u", s.uri, "-c", script])).stdout.trim(), "ok");
      assert_(/capacity grew from 67108864 to 100663296 bytes/.test(s.stderr()), s.stderr());
      // Measured: tgt raises no UNIT ATTENTION for a reopened, grown LU (the
      // Lun would log it); the growth came from the re-read at h2's handshake.
      assert_(!/reports that its capacity changed/.test(s.stderr()), s.stderr());
      assert_(
        /reports 33554432 bytes, less than the 100663296 served/.test(s.stderr()),
        s.stderr(),
      );
    });
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
