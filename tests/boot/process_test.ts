import assert from "node:assert/strict";
import { assertEquals } from "../helpers/assert.ts";
import { cgroup2Mount } from "../../src/sys/cgroup.ts";
import { parseFileMappings, parseProcStatusMemory, processMemory } from "../../src/sys/process.ts";

const HELPER = new URL("./process_helper.ts", import.meta.url).pathname;

Deno.test("process: memory fields of /proc/PID/status, in bytes", () => {
  const text = [
    "Name:\tdeno",
    "VmLck:\t   96972 kB",
    "VmRSS:\t  117600 kB",
    "RssAnon:\t   24820 kB",
    "RssFile:\t   92768 kB",
    "RssShmem:\t      12 kB",
    "VmSwap:\t       0 kB",
  ].join("\n");
  assertEquals(parseProcStatusMemory(text), {
    rssBytes: 117600 * 1024,
    anonBytes: 24820 * 1024,
    fileBytes: 92768 * 1024,
    lockedBytes: 96972 * 1024,
    swapBytes: 0,
  });
  // A kernel without RssAnon (before 4.5): no partial answer.
  assert.equal(parseProcStatusMemory(text.replace(/^RssAnon.*$/m, "")), null);
  const self = processMemory();
  assert.ok(self && self.rssBytes > 0 && self.anonBytes > 0 && self.anonBytes <= self.rssBytes);
});

Deno.test("process: the cgroup2 hierarchy's root from /proc/self/mountinfo", () => {
  const mountinfo = [
    "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/vda1 rw",
    // A bind of a sub-cgroup (a container's view) does not see the whole tree.
    "30 22 0:26 /system.slice /mnt/sub rw - cgroup2 cgroup2 rw",
    "31 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec shared:9 - cgroup2 cgroup2 rw,nsdelegate",
  ].join("\n");
  assert.equal(cgroup2Mount(mountinfo), "/sys/fs/cgroup");
  assert.equal(cgroup2Mount("40 22 0:26 / /run/my\\040cg rw - cgroup2 none rw\n"), "/run/my cg");
  assert.equal(cgroup2Mount(mountinfo.split("\n").slice(0, 2).join("\n")), null);
  assert.equal(cgroup2Mount(""), null);
});

Deno.test("process: file-backed mappings from /proc/self/maps text", () => {
  const maps = [
    "55d0c0a00000-55d0c0a42000 r--p 00000000 fe:01 1234   /usr/bin/deno",
    "7f0000000000-7f0000021000 rw-p 00000000 00:00 0 ",
    "7f1000000000-7f1000001000 ---p 00000000 00:00 0        [stack guard]",
    "7f2000000000-7f2000002000 r-xp 00001000 fe:01 99 /lib/x86_64-linux-gnu/libc.so.6 (deleted)",
    "7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0        [stack]",
  ].join("\n");
  assertEquals(parseFileMappings(maps).map((m) => [m.start, m.end - m.start, m.perms, m.path]), [
    [0x55d0c0a00000n, 0x42000n, "r--p", "/usr/bin/deno"],
    [0x7f2000000000n, 0x2000n, "r-xp", "/lib/x86_64-linux-gnu/libc.so.6 (deleted)"],
  ]);
});

Deno.test("process: IO_FLUSHER then re-exec keeps the PID, sets argv[0], locks file mappings without breaking V8", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", HELPER],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(out.stderr);
  assertEquals(out.code, 0, err);
  const r = JSON.parse(new TextDecoder().decode(out.stdout));
  assertEquals(r.argv0, "@isboot-test");
  assertEquals(r.pid, r.pidBefore);
  // Either the kernel let us (then the mark survived execve) or it said why (no CAP_SYS_RESOURCE here).
  if (r.flusher.ok) assertEquals(r.flusherNow, true);
  else assert.match(r.flusher.error, /^prctl\(PR_SET_IO_FLUSHER\): E(PERM|INVAL)/);
  // -1000 takes CAP_SYS_RESOURCE: either the kernel took it (and reads it
  // back), or it refused with EACCES (proc(5): a value below
  // oom_score_adj_min without the capability) and the value is unchanged.
  if (r.oom.ok) assertEquals(r.oomNow, "-1000");
  else {
    assert.match(r.oom.error, /^oom_score_adj -1000: Permission denied \(os error 13\)/);
    assert.notEqual(r.oomNow, "-1000");
  }
  assert.ok(r.locked.ok, JSON.stringify(r.locked));
  assert.match(r.locked.detail, /^\d+ mappings, \d+ MiB/);
  assert.ok(r.bufLocked.ok, JSON.stringify(r.bufLocked));
  // deno's own text alone is tens of MiB; all of it is resident and locked now.
  assert.ok(Number(r.vmLck) > 20_000, `VmLck ${r.vmLck} kB`);
});

Deno.test("process: closeInheritedOnExec keeps an inherited descriptor (apt's pipe) from the daemons it starts", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const script = `${dir}/fds.ts`;
    const mod = new URL("../../src/sys/process.ts", import.meta.url).href;
    await Deno.writeTextFile(
      script,
      `import { closeInheritedOnExec } from "${mod}";
const child = async () => new TextDecoder().decode((await new Deno.Command("sh", {
  args: ["-c", "[ -e /proc/self/fd/7 ] && echo has7 || echo no7"], stdout: "piped" }).output()).stdout).trim();
const before = await child();
const marked = closeInheritedOnExec();
console.log(JSON.stringify({ before, marked, after: await child() }));
`,
    );
    // fd 7 as a shell leaves it to its children: not close-on-exec.
    const out = await new Deno.Command("sh", {
      args: ["-c", `exec 7</dev/null; exec "$0" run -A --quiet "$1"`, Deno.execPath(), script],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const r = JSON.parse(new TextDecoder().decode(out.stdout));
    assert.equal(r.before, "has7");
    assert.ok(r.marked >= 1, JSON.stringify(r));
    assert.equal(r.after, "no7");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("process: startDaemon hands back the daemon's first line and leaves it running; a silent exit is null and its status", async () => {
  const { startDaemon } = await import("../../src/sys/process.ts");
  const ready = await startDaemon(
    [
      "eval",
      `const argv0 = Deno.readTextFileSync("/proc/self/cmdline").split("\\0")[0];
       console.log("READY " + Deno.pid + " " + argv0 + " " + Deno.env.get("ISBOOT_TEST_X"));
       console.log("second line");
       setTimeout(() => {}, 60_000);`,
    ],
    { argv0: "@isboot-test", env: { ...Deno.env.toObject(), ISBOOT_TEST_X: "carried" } },
  );
  assert.equal(ready.spawnError, null);
  const m = /^READY (\d+) (\S+) (\S+)$/.exec(ready.line ?? "");
  assert.ok(m, `first line: ${ready.line}`);
  assert.equal(m[2], "@isboot-test");
  assert.equal(m[3], "carried");
  const pid = Number(m[1]);
  try {
    // Still running after we stopped listening: a daemon, not a child we wait on.
    await new Promise((r) => setTimeout(r, 200));
    assert.ok((await Deno.readTextFile(`/proc/${pid}/stat`)).length > 0);
    // A new session: it leads its own (setsid), away from our terminal.
    const stat = (await Deno.readTextFile(`/proc/${pid}/stat`)).split(") ")[1].split(" ");
    assert.equal(Number(stat[3]), pid, "session id is its own pid");
  } finally {
    Deno.kill(pid, "SIGKILL");
  }
  const silent = await startDaemon(["eval", "Deno.exit(7)"]);
  assert.equal(silent.line, null);
  assert.equal(await silent.exited, 7);
});
