/**
 * Real NBD clients (libnbd's nbdinfo, nbdcopy, nbdsh; qemu-img; fio's nbd
 * engine) against `isboot serve memory:...`. Data lives on /dev/shm.
 */
import { assert_, assertEquals } from "../helpers/assert.ts";
import { mustRun, startServe, tool } from "./serve_helper.ts";
import { runCli } from "../helpers/cli.ts";
import { writeRandomFile } from "../helpers/fs.ts";
import { NBDSH_PREAMBLE } from "../helpers/nbdsh.ts";

const MiB = 1024 * 1024;

async function randomFile(dir: string, bytes: number): Promise<string> {
  const path = `${dir}/random.bin`;
  await writeRandomFile(path, bytes);
  return path;
}

async function sameFiles(a: string, b: string): Promise<boolean> {
  const r = await tool("cmp", ["-s", a, b]);
  return r.code === 0;
}

Deno.test("nbd clients: nbdinfo --json reports size, block sizes and flags", async () => {
  await using s = await startServe("memory:64M");
  const info = JSON.parse((await mustRun("nbdinfo", ["--json", s.uri])).stdout);
  assertEquals(info.protocol, "newstyle-fixed");
  assertEquals(info.structured, true);
  const e = info.exports[0];
  assertEquals(e["export-name"], "memory");
  assertEquals(e["export-size"], 64 * MiB);
  assertEquals(e.block_size_minimum, 512);
  assertEquals(e.block_size_preferred, 4096);
  assertEquals(e.block_size_maximum, 32 * MiB);
  for (
    const f of [
      "can_flush",
      "can_fua",
      "can_trim",
      "can_zero",
      "can_fast_zero",
      "can_multi_conn",
      "can_df",
    ]
  ) {
    assertEquals(e[f], true, f);
  }
  assertEquals(e.is_read_only, false);
  assertEquals(e.is_rotational, false);
  // Asking for the export by name works too; an unknown name is refused (NBD_REP_ERR_UNKNOWN).
  const named = s.uri.replace("nbd+unix:///", "nbd+unix:///memory");
  assertEquals((await mustRun("nbdinfo", ["--size", named])).stdout.trim(), String(64 * MiB));
  const bad = await tool("nbdinfo", ["--size", s.uri.replace("nbd+unix:///", "nbd+unix:///nope")]);
  assert_(bad.code !== 0 && /export|nope/i.test(bad.stderr), bad.stderr);
});

Deno.test("nbd clients: --read-only and 4096-byte blocks show in nbdinfo", async () => {
  await using s = await startServe("memory:8M", ["--read-only", "--block-size", "4096"]);
  const e = JSON.parse((await mustRun("nbdinfo", ["--json", s.uri])).stdout).exports[0];
  assertEquals(e.is_read_only, true);
  assertEquals(e.can_trim, false);
  assertEquals(e.can_zero, false);
  assertEquals(e.block_size_minimum, 4096);
});

Deno.test("nbd clients: nbdcopy round trip of 256 MiB random data, qemu-img compare", async () => {
  await using s = await startServe("memory:256M");
  const src = await randomFile(s.dir, 256 * MiB);
  const back = `${s.dir}/back.bin`;
  let t = performance.now();
  await mustRun("nbdcopy", [src, s.uri]);
  const wMs = performance.now() - t;
  t = performance.now();
  await mustRun("nbdcopy", [s.uri, back]);
  const rMs = performance.now() - t;
  assert_(await sameFiles(src, back), "data read back differs");
  await mustRun("qemu-img", ["compare", "-f", "raw", "-F", "raw", src, s.uri]);
  // And a one-byte difference is seen: qemu-img compare exits 1.
  const sh = `h.pwrite(b"\\xff" * 512, 200 * 1024 * 1024)`;
  await mustRun("nbdsh", ["-u", s.uri, "-c", sh]);
  const diff = await tool("qemu-img", ["compare", "-f", "raw", "-F", "raw", src, s.uri]);
  assertEquals(diff.code, 1, diff.stdout + diff.stderr);
  console.log(
    `nbdcopy 256 MiB: write ${(256 / (wMs / 1000)).toFixed(0)} MiB/s, ` +
      `read ${(256 / (rMs / 1000)).toFixed(0)} MiB/s (informational)`,
  );
});

const NBDSH_SCRIPT = NBDSH_PREAMBLE + `
size = h.get_size()
assert size == 64 * 1024 * 1024
pat = bytes(range(256)) * 64
h.pwrite(pat, 0)
assert h.pread(len(pat), 0) == pat
h.pwrite(pat, 8192, nbd.CMD_FLAG_FUA)
assert h.pread(len(pat), 8192) == pat
h.flush()
h.trim(4096, 0)
assert h.pread(4096, 0) == bytes(4096)
assert h.pread(4096, 4096) == pat[4096:8192]
h.zero(4096, 8192)
assert h.pread(4096, 8192) == bytes(4096)
h.zero(4096, 12288, nbd.CMD_FLAG_NO_HOLE)
assert h.pread(4096, 12288) == bytes(4096)
h.zero(4096, 16384, nbd.CMD_FLAG_FAST_ZERO)
h.pwrite(b"z" * 512, size - 512)
assert h.pread(512, size - 512) == b"z" * 512
# beyond the end and oversized: the server's own errors, libnbd's checks off
h.set_strict_mode(0)
expect(errno.EINVAL, lambda: h.pread(512, size))
expect(errno.EINVAL, lambda: h.pread(1024, size - 512))
expect(errno.ENOSPC, lambda: h.pwrite(b"x" * 512, size))
expect(errno.ENOSPC, lambda: h.zero(1024, size - 512))
expect(errno.EINVAL, lambda: h.trim(1024, size - 512))
expect(errno.EOVERFLOW, lambda: h.pread(32 * 1024 * 1024 + 512, 0))
expect(errno.EOVERFLOW, lambda: h.pwrite(b"y" * (32 * 1024 * 1024 + 512), 0))
# unaligned requests work (read-modify-write of the partial 512-byte blocks)
base = 131072
h.pwrite(b"a" * 8192, base)
h.pwrite(b"u" * 1000, base + 100)
h.zero(300, base + 4000)
h.trim(700, base + 6000)
want = bytearray(b"a" * 8192)
want[100:1100] = b"u" * 1000
want[4000:4300] = bytes(300)
want[6144:6656] = bytes(512)
assert h.pread(8192, base) == want
assert h.pread(3, base + 99) == b"auu"
expect(errno.ENOTSUP, lambda: h.zero(100, base, nbd.CMD_FLAG_FAST_ZERO))
# the connection is still good after every error
h.pwrite(pat, 65536)
assert h.pread(len(pat), 65536) == pat
h.pread(32 * 1024 * 1024, 0)
print("ok")
`;

Deno.test("nbd clients: nbdsh pread/pwrite/flush/trim/zero and error values", async () => {
  await using s = await startServe("memory:64M");
  const r = await mustRun("nbdsh", ["-u", s.uri, "-c", NBDSH_SCRIPT]);
  assertEquals(r.stdout.trim(), "ok");
});

Deno.test("nbd clients: nbdsh on a read-only export gets EPERM for writes", async () => {
  await using s = await startServe("memory:1M", ["--read-only"]);
  const script = `
import errno
h.set_strict_mode(0)
for f in (lambda: h.pwrite(b"x" * 512, 0), lambda: h.zero(512, 0), lambda: h.trim(512, 0)):
    try:
        f()
        raise AssertionError("write allowed")
    except nbd.Error as e:
        assert e.errno == "EPERM", e.errno
assert h.pread(512, 0) == bytes(512)
print("ok")
`;
  assertEquals((await mustRun("nbdsh", ["-u", s.uri, "-c", script])).stdout.trim(), "ok");
});

Deno.test("nbd clients: fio --ioengine=nbd --verify=crc32c at iodepth 32", async () => {
  await using s = await startServe("memory:128M");
  const common = [
    `--ioengine=nbd`,
    `--uri=${s.uri}`,
    "--iodepth=32",
    "--verify=crc32c",
    "--do_verify=1",
    "--verify_fatal=1",
    "--output-format=json",
  ];
  const jobs = [
    ["--name=rand4k", "--rw=randwrite", "--bs=4k", "--size=64M"],
    ["--name=seq1m", "--rw=write", "--bs=1M", "--size=128M", "--iodepth=8"],
    ["--name=mixed", "--rw=randrw", "--bsrange=4k-256k", "--size=64M", "--offset=64M"],
  ];
  for (const job of jobs) {
    const r = await mustRun("fio", [...common, ...job]);
    const out = JSON.parse(r.stdout.slice(r.stdout.indexOf("{")));
    const j = out.jobs[0];
    assertEquals(j.error, 0, `${job[0]}: ${r.stderr}`);
    assert_(j.write.io_bytes > 0 && j.read.io_bytes > 0, `${job[0]}: wrote and verified`);
  }
});

Deno.test("nbd clients: several clients at once, nbdcopy with 4 connections", async () => {
  await using s = await startServe("memory:64M");
  const src = await randomFile(s.dir, 64 * MiB);
  // Four separate processes each write their own quarter at the same time.
  const quarter = 16 * MiB;
  await Promise.all([0, 1, 2, 3].map((i) =>
    mustRun("nbdsh", [
      "-u",
      s.uri,
      "-c",
      `
data = open("${src}", "rb").read()[${i * quarter}:${(i + 1) * quarter}]
for o in range(0, len(data), 1048576):
    h.pwrite(data[o:o + 1048576], ${i * quarter} + o)
`,
    ])
  ));
  const back = `${s.dir}/back.bin`;
  await mustRun("nbdcopy", ["--connections=4", "--requests=16", s.uri, back]);
  assert_(await sameFiles(src, back), "concurrent writers: data differs");
  // multi-conn write through nbdcopy, read back with a single connection
  await mustRun("nbdsh", ["-u", s.uri, "-c", "h.zero(64 * 1024 * 1024, 0)"]);
  await mustRun("nbdcopy", ["--connections=4", src, s.uri]);
  await mustRun("qemu-img", ["compare", "-f", "raw", "-F", "raw", src, s.uri]);
});

Deno.test("nbd clients: unix socket is 0600; TCP on loopback; SIGTERM exits 0", async () => {
  const s = await startServe("memory:4M");
  try {
    const st = await Deno.stat(s.socketPath!);
    assertEquals(st.mode! & 0o777, 0o600);
  } finally {
    assertEquals(await s.stop(), 0);
  }
  assert_(/stopped: 0 connections/.test(s.stderr()), s.stderr());

  // a missing parent directory is created, mode 0700
  const dir = await Deno.makeTempDir({ dir: "/dev/shm" });
  try {
    const u = await startServe("memory:4M", [], `unix:${dir}/sub/x.sock`);
    assertEquals((await Deno.stat(`${dir}/sub`)).mode! & 0o777, 0o700);
    assertEquals((await mustRun("nbdinfo", ["--size", u.uri])).stdout.trim(), String(4 * MiB));
    assertEquals(await u.stop(), 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }

  const t = await startServe("memory:4M", [], "tcp:0");
  try {
    assert_(t.where.startsWith("tcp:127.0.0.1:"), t.where);
    assertEquals((await mustRun("nbdinfo", ["--size", t.uri])).stdout.trim(), String(4 * MiB));
    // nbd-client can list exports without the kernel driver (NBD_OPT_LIST)
    const port = t.where.slice(t.where.lastIndexOf(":") + 1);
    const list = await mustRun("nbd-client", ["-l", "127.0.0.1", port]);
    assert_(/^memory: in-memory disk/m.test(list.stdout), list.stdout);
    await mustRun("qemu-img", ["info", "-f", "raw", t.uri]);
  } finally {
    assertEquals(await t.stop(), 0);
  }
});

Deno.test("nbd clients: serve usage errors", async () => {
  let r = await runCli(["serve", "memory:1M"]);
  assertEquals(r.code, 2);
  assert_(/--listen/.test(r.stderr), r.stderr);
  r = await runCli(["serve", "disk.img", "--listen", "unix:/dev/shm/x.sock"]);
  assertEquals(r.code, 3);
  r = await runCli(["serve", "memory:12Q", "--listen", "tcp:0"]);
  assertEquals(r.code, 3);
  r = await runCli(["serve", "memory:1M", "--listen", "tcp:99999"]);
  assertEquals(r.code, 2);
  r = await runCli(["serve", "memory:1M", "--listen", "/x"]);
  assertEquals(r.code, 2);
  r = await runCli(["serve", "--help"]);
  assertEquals(r.code, 0);
  assert_(r.stdout.includes("--listen"));
});
