/**
 * The kernel path for real: Debian's kernel in qemu (TCG) boots a
 * busybox initramfs holding isboot and nbd.ko; the guest runs
 * `isboot attach`, checks /dev/nbd0's size and sysfs backend, writes and
 * reads a pattern through it, reads `isboot status --json`, runs
 * `isboot detach` and checks the device is gone. The VM runs in a private
 * network namespace with restrict=on (tests/vm/lib.ts).
 */
import assert from "node:assert/strict";
import {
  buildInitramfs,
  ensureKernel,
  type Kernel,
  NetNs,
  runDir,
  runVm,
  startNsTgtd,
  type VmResult,
} from "./lib.ts";
import type { Tgtd } from "../../peers/tgtd.ts";

const PATTERN_OFFSET = 1 << 20;
const PATTERN_BYTES = 1 << 20;

/** The guest's side: attach TARGET, check it, detach. Prints kv facts. */
function guestScript(target: string, daemon: boolean): string {
  const start = daemon
    // --daemon returns once the device is up; the server is the process in sysfs pid.
    ? `isboot attach '${target}' --device /dev/nbd0 --daemon --connections 2 >/tmp/attach.out 2>/tmp/attach.err
vm_kv daemon_parent_exit $?
apid=$(cat /sys/block/nbd0/pid 2>/dev/null)
vm_kv daemon_alive "$([ -n "$apid" ] && [ -d /proc/$apid ] && echo yes || echo no)"`
    : `isboot attach '${target}' --device /dev/nbd0 >/tmp/attach.out 2>/tmp/attach.err &
apid=$!`;
  const reap = daemon
    ? `wait_for '[ ! -d /proc/$apid ]' 100
vm_kv attach_exit "$([ -d /proc/$apid ] && echo running || echo 0)"`
    : `wait $apid
vm_kv attach_exit $?`;
  return `
wait_for() { i=0; while ! eval "$1" && [ $i -lt $2 ]; do sleep 0.1; i=$((i+1)); done; eval "$1"; }
show_log() { sed 's/^/attach-log: /' /tmp/attach.err; }
${start}
if ! wait_for '[ -e /sys/block/nbd0/pid ] && [ -s /tmp/attach.out ]' 600; then
  show_log; vm_fail "attach did not bring up /dev/nbd0"; vm_end
fi
vm_kv attach_printed "$(cat /tmp/attach.out)"
vm_kv t_attached "$(cut -d' ' -f1 /proc/uptime)"
vm_kv size "$(blockdev --getsize64 /dev/nbd0)"
vm_kv sysfs_size "$(( $(cat /sys/block/nbd0/size) * 512 ))"
vm_kv backend "$(cat /sys/block/nbd0/backend)"
vm_kv pid_matches "$([ "$(cat /sys/block/nbd0/pid)" = "$apid" ] && echo yes || echo "no: $(cat /sys/block/nbd0/pid) vs $apid")"
dd if=/pattern.bin of=/dev/nbd0 bs=65536 seek=${
    PATTERN_OFFSET / 65536
  } conv=fsync 2>/tmp/dd.err || { cat /tmp/dd.err; vm_fail "write through /dev/nbd0 failed"; }
echo 3 > /proc/sys/vm/drop_caches
dd if=/dev/nbd0 of=/tmp/back.bin bs=65536 skip=${PATTERN_OFFSET / 65536} count=${
    PATTERN_BYTES / 65536
  } 2>/dev/null
vm_kv readback "$(cmp /pattern.bin /tmp/back.bin >/dev/null 2>&1 && echo same || echo differs)"
vm_kv zeroes_before "$(dd if=/dev/nbd0 bs=65536 count=1 2>/dev/null | tr -d '\\000' | wc -c)"
isboot status --json >/tmp/status.json 2>/tmp/status.err || cat /tmp/status.err
vm_kv status "$(tr -d '\\n' </tmp/status.json | tr -s ' ')"
isboot detach /dev/nbd0 2>/tmp/detach.err && vm_kv detach ok || vm_kv detach "failed: $(cat /tmp/detach.err)"
${reap}
vm_kv t_detached "$(cut -d' ' -f1 /proc/uptime)"
wait_for '[ ! -e /sys/block/nbd0/pid ]' 100
vm_kv after_detach "$([ -e /sys/block/nbd0/pid ] && echo still-connected || echo gone)"
vm_kv blockdev_after "$(blockdev --getsize64 /dev/nbd0 2>/dev/null || echo none)"
show_log
vm_pass
`;
}

async function bootAttach(kernel: Kernel, target: string, pattern: Uint8Array, ns: NetNs, extra: {
  forwards?: { guestAddr: string; guestPort: number; hostPort: number }[];
  daemon?: boolean;
} = {}): Promise<VmResult> {
  const initrd = await buildInitramfs({
    kernel,
    modules: ["nbd", "virtio_net", "virtio_pci"],
    loadModules: extra.forwards ? ["virtio_pci"] : [],
    isboot: true,
    files: { "/pattern.bin": pattern },
    init: (extra.forwards ? "vm_net_up || vm_fail network\n" : "") +
      guestScript(target, extra.daemon ?? false),
  });
  try {
    return await runVm({ kernel, initrd, netns: ns, timeoutMs: 240_000, forwards: extra.forwards });
  } finally {
    await Deno.remove(initrd).catch(() => {});
    await Deno.remove(initrd.replace(/\.cpio$/, ".serial.log")).catch(() => {});
  }
}

function checkGuest(r: VmResult, size: number, backend: RegExp): void {
  const ctx = `\n--- serial tail ---\n${r.tail}`;
  assert.equal(r.timedOut, false, `VM timed out${ctx}`);
  assert.equal(r.result, "PASS", `guest result ${r.result} ${r.reason}${ctx}`);
  const kv = r.kv;
  assert.equal(kv.get("attach_printed"), "/dev/nbd0", ctx);
  assert.equal(kv.get("size"), String(size), ctx);
  assert.equal(kv.get("sysfs_size"), String(size), ctx);
  assert.match(kv.get("backend") ?? "", backend, ctx);
  assert.equal(kv.get("pid_matches"), "yes", ctx);
  assert.equal(kv.get("readback"), "same", ctx);
  const status = JSON.parse(kv.get("status") ?? "null");
  assert.equal(status.sessions.length, 1, ctx);
  const s = status.sessions[0];
  assert.equal(s.device, "/dev/nbd0");
  assert.equal(s.sizeBytes, String(size));
  assert.ok(s.bytesWritten >= PATTERN_BYTES, `status bytesWritten ${s.bytesWritten}`);
  assert.ok(s.requests > 0 && s.errors === 0, JSON.stringify(s));
  assert.deepEqual(
    status.devices.map((d: { device: string; daemon: boolean }) => [d.device, d.daemon]),
    [[
      "/dev/nbd0",
      true,
    ]],
  );
  assert.equal(kv.get("detach"), "ok", ctx);
  assert.equal(kv.get("attach_exit"), "0", ctx);
  assert.equal(kv.get("after_detach"), "gone", ctx);
}

Deno.test({
  name:
    "vm: isboot attach --daemon --connections 2 memory:64M makes /dev/nbd0 in Debian's kernel; I/O, status, detach",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const kernel = await ensureKernel();
    const pattern = crypto.getRandomValues(new Uint8Array(65536));
    const big = new Uint8Array(PATTERN_BYTES);
    for (let o = 0; o < big.length; o += pattern.length) {
      big.set(pattern.map((b) => b ^ (o >> 16)), o);
    }
    const ns = await NetNs.create();
    try {
      const t0 = Date.now();
      const r = await bootAttach(kernel, "memory:64M", big, ns, { daemon: true });
      console.log(
        `VM attach memory: ${((Date.now() - t0) / 1000).toFixed(1)} s; guest: ${
          [...r.kv].map(([k, v]) => `${k}=${v}`).join(" ").slice(0, 1500)
        }`,
      );
      checkGuest(r, 64 << 20, /^memory:64M:\d+$/);
      assert.equal(r.kv.get("daemon_parent_exit"), "0", r.tail);
      assert.equal(r.kv.get("daemon_alive"), "yes", r.tail);
      // Two sockets, two kernel queues, both served.
      assert.equal(JSON.parse(r.kv.get("status")!).sessions[0].connections, 2);
    } finally {
      await ns.delete();
    }
  },
});

Deno.test({
  name: "vm: isboot attach of a tgtd LUN over iSCSI; the pattern lands in the backing file; detach",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const kernel = await ensureKernel();
    const iqn = "iqn.2026-11.test:vm-attach";
    const size = 64 << 20;
    const big = crypto.getRandomValues(new Uint8Array(65536));
    const pattern = new Uint8Array(PATTERN_BYTES);
    for (let o = 0; o < pattern.length; o += big.length) {
      pattern.set(big.map((b) => b ^ (o >> 16)), o);
    }
    const ns = await NetNs.create();
    const dir = await runDir("lun-");
    let tgt: Tgtd | undefined;
    try {
      const lunPath = `${dir}/lun1.img`;
      const f = await Deno.open(lunPath, { create: true, write: true });
      await f.truncate(size);
      f.close();
      tgt = await startNsTgtd(ns);
      await tgt.addLun(await tgt.createTarget(iqn), { lun: 1, path: lunPath });
      const t0 = Date.now();
      const r = await bootAttach(kernel, `iscsi://10.0.2.100/${iqn}/1`, pattern, ns, {
        forwards: [{ guestAddr: "10.0.2.100", guestPort: 3260, hostPort: tgt.port }],
      });
      console.log(
        `VM attach iSCSI: ${((Date.now() - t0) / 1000).toFixed(1)} s; guest: ${
          [...r.kv].map(([k, v]) => `${k}=${v}`).join(" ").slice(0, 2000)
        }`,
      );
      checkGuest(r, size, new RegExp(`^${iqn.replaceAll(".", "\\.")}/1$`));
      const s = JSON.parse(r.kv.get("status")!).sessions[0];
      assert.equal(s.target, `iscsi://10.0.2.100/${iqn}/1`);
      assert.equal(s.session.targetName, iqn);
      // What the guest wrote through /dev/nbd0 is in tgtd's backing file.
      const backing = await Deno.readFile(lunPath);
      assert.equal(backing.length, size);
      assert.deepEqual(backing.subarray(PATTERN_OFFSET, PATTERN_OFFSET + PATTERN_BYTES), pattern);
      assert.ok(
        backing.subarray(0, PATTERN_OFFSET).every((b) => b === 0),
        "nothing written before the pattern",
      );
    } finally {
      await tgt?.stop();
      await ns.delete();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  name:
    "vm: isboot attach --luns all: the target's other LUNs as /dev/nbd1 and /dev/nbd2 over the same session; detach of one leaves the others; detach of the first ends all",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const kernel = await ensureKernel();
    const iqn = "iqn.2026-12.test:vm-luns";
    const ns = await NetNs.create();
    const dir = await runDir("luns-");
    let tgt: Tgtd | undefined;
    try {
      const sizes = [16 << 20, 8 << 20, 4 << 20];
      const lun2 = crypto.getRandomValues(new Uint8Array(65536));
      tgt = await startNsTgtd(ns);
      const tid = await tgt.createTarget(iqn);
      for (const [i, size] of sizes.entries()) {
        const path = `${dir}/lun${i + 1}.img`;
        const f = await Deno.open(path, { create: true, write: true });
        await f.truncate(size);
        if (i === 1) await f.write(lun2);
        f.close();
        await tgt.addLun(tid, { lun: i + 1, path });
      }
      const script = `
wait_for() { i=0; while ! eval "$1" && [ $i -lt $2 ]; do sleep 0.1; i=$((i+1)); done; eval "$1"; }
isboot attach 'iscsi://10.0.2.100/${iqn}/1' --luns all >/tmp/attach.out 2>/tmp/attach.err &
apid=$!
wait_for '[ -e /sys/block/nbd2/pid ] && [ $(wc -l </tmp/attach.out) -ge 3 ]' 600 || { sed 's/^/attach-log: /' /tmp/attach.err; vm_fail "no three devices"; vm_end; }
vm_kv printed "$(tr '\\n' ' ' </tmp/attach.out)"
for n in 0 1 2; do vm_kv dev$n "$(( $(cat /sys/block/nbd$n/size) * 512 ))/$(cat /sys/block/nbd$n/backend)"; done
vm_kv lun2_head "$(dd if=/dev/nbd1 bs=65536 count=1 2>/dev/null | sha256sum | cut -c1-16)"
dd if=/pattern.bin of=/dev/nbd2 bs=65536 count=1 conv=fsync 2>/dev/null || vm_fail "write to nbd2"
isboot status --json >/tmp/status.json 2>&1
vm_kv sessions "$(tr -d '\\n' </tmp/status.json | tr -s ' ' | grep -o '"device": "/dev/nbd[0-9]"' | sort -u | tr '\\n' ' ')"
isboot takeover --force /dev/nbd0 >/tmp/take.out 2>&1; vm_kv takeover_rc $?
vm_kv takeover "$(tr '\\n' ' ' </tmp/take.out)"
isboot detach /dev/nbd1 && vm_kv detach1 ok
wait_for '[ ! -e /sys/block/nbd1/pid ]' 100
vm_kv after1 "$([ -e /sys/block/nbd1/pid ] && echo nbd1-still || echo nbd1-gone) $([ -e /sys/block/nbd0/pid ] && echo nbd0-up || echo nbd0-gone) $([ -e /sys/block/nbd2/pid ] && echo nbd2-up || echo nbd2-gone)"
isboot detach /dev/nbd0 && vm_kv detach0 ok
wait $apid; vm_kv attach_exit $?
wait_for '[ ! -e /sys/block/nbd2/pid ]' 100
vm_kv after0 "$([ -e /sys/block/nbd0/pid ] && echo nbd0-still || echo nbd0-gone) $([ -e /sys/block/nbd2/pid ] && echo nbd2-still || echo nbd2-gone)"
sed 's/^/attach-log: /' /tmp/attach.err
vm_pass
`;
      const pattern = crypto.getRandomValues(new Uint8Array(65536));
      const initrd = await buildInitramfs({
        kernel,
        modules: ["nbd", "virtio_net", "virtio_pci"],
        loadModules: ["virtio_pci"],
        isboot: true,
        files: { "/pattern.bin": pattern },
        init: "vm_net_up || vm_fail network\n" + script,
      });
      let r: VmResult;
      try {
        r = await runVm({
          kernel,
          initrd,
          netns: ns,
          timeoutMs: 240_000,
          forwards: [{ guestAddr: "10.0.2.100", guestPort: 3260, hostPort: tgt.port }],
        });
      } finally {
        await Deno.remove(initrd).catch(() => {});
        await Deno.remove(initrd.replace(/\.cpio$/, ".serial.log")).catch(() => {});
      }
      const ctx = `\n--- serial tail ---\n${r.tail}`;
      const kv = r.kv;
      assert.equal(r.result, "PASS", `guest ${r.reason}${ctx}`);
      assert.equal(kv.get("printed"), "/dev/nbd0 /dev/nbd1 /dev/nbd2", ctx);
      assert.deepEqual(
        [0, 1, 2].map((n) => kv.get(`dev${n}`)),
        sizes.map((s, i) => `${s}/${iqn}/${i + 1}`),
        ctx,
      );
      const want = new Uint8Array(await crypto.subtle.digest("SHA-256", lun2));
      assert.equal(
        kv.get("lun2_head"),
        Array.from(want.slice(0, 8), (b) => b.toString(16).padStart(2, "0")).join(""),
        ctx,
      );
      assert.deepEqual(
        (await Deno.readFile(`${dir}/lun3.img`)).subarray(0, 65536),
        pattern,
        "what the guest wrote to /dev/nbd2 is not in LUN 3",
      );
      assert.equal(
        kv.get("sessions"),
        '"device": "/dev/nbd0" "device": "/dev/nbd1" "device": "/dev/nbd2"',
        ctx,
      );
      assert.equal(kv.get("takeover_rc"), "1", ctx);
      assert.match(
        kv.get("takeover") ?? "",
        /also serves \/dev\/nbd1, \/dev\/nbd2 \(--luns\)/,
        ctx,
      );
      assert.equal(kv.get("after1"), "nbd1-gone nbd0-up nbd2-up", ctx);
      assert.equal(kv.get("attach_exit"), "0", ctx);
      assert.equal(kv.get("after0"), "nbd0-gone nbd2-gone", ctx);
    } finally {
      await tgt?.stop();
      await ns.delete();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
