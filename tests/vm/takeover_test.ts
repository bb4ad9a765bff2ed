/**
 * `isboot attach --takeover` in Debian's kernel (issue 5's mechanism): a
 * second isboot replaces the one serving /dev/nbd0 while an ext2 file
 * system on it stays mounted. The old daemon releases its socket, the new
 * one hands the kernel a fresh one with NBD_CMD_RECONFIGURE; files written
 * before and after are intact, and the host's e2fsck finds the image clean.
 * Then the new daemon is killed with SIGKILL: status shows the device with
 * no daemon, and a third isboot takes the crashed one's device over.
 * (No I/O runs during the hand-overs themselves: see docs/kernel.md, "Takeover".)
 */
import assert from "node:assert/strict";
import { buildInitramfs, ensureKernel, NetNs, NsTgtd, runDir, runVm } from "./lib.ts";

const IQN = "iqn.2026-11.test:vm-takeover";
const SIZE = 64 << 20;

const GUEST = `
wait_for() { i=0; while ! eval "$1" && [ $i -lt $2 ]; do sleep 0.1; i=$((i+1)); done; eval "$1"; }
T=iscsi://10.0.2.100/${IQN}/1
vm_net_up || vm_fail network
isboot attach $T --device /dev/nbd0 >/tmp/a1.out 2>/tmp/a1.err &
a1=$!
wait_for '[ -s /tmp/a1.out ]' 600 || { cat /tmp/a1.err; vm_fail "first attach"; vm_end; }
mke2fs -q /dev/nbd0 >/dev/null 2>&1 || vm_fail mke2fs
mkdir -p /mnt && mount -t ext2 /dev/nbd0 /mnt || { dmesg | tail -5; vm_fail mount; vm_end; }
echo "written before the takeover" >/mnt/before && sync
isboot attach $T --device /dev/nbd0 --takeover >/tmp/a2.out 2>/tmp/a2.err &
a2=$!
wait $a1
vm_kv old_exit $?
wait_for '[ -s /tmp/a2.out ]' 600 || { cat /tmp/a2.err; vm_fail "takeover did not attach"; vm_end; }
vm_kv takeover_printed "$(cat /tmp/a2.out)"
vm_kv new_alive "$([ -d /proc/$a2 ] && echo yes || echo no)"
dd if=/pattern.bin of=/mnt/after bs=65536 2>/dev/null && sync || vm_fail "write after takeover"
echo 3 >/proc/sys/vm/drop_caches
vm_kv before "$(cat /mnt/before)"
vm_kv after "$(cmp /pattern.bin /mnt/after >/dev/null 2>&1 && echo same || echo differs)"
isboot status --json >/tmp/status.json 2>&1
vm_kv status "$(tr -d '\\n' </tmp/status.json | tr -s ' ')"
vm_kv a2pid $a2
# A crashed daemon: SIGKILL leaves a stale control socket and a dead kernel
# socket; status shows the device without a daemon; a takeover revives it.
kill -9 $a2
wait $a2
isboot status --json >/tmp/status2.json 2>&1
vm_kv status_crashed "$(tr -d '\n' </tmp/status2.json | tr -s ' ')"
isboot attach $T --device /dev/nbd0 --takeover >/tmp/a3.out 2>/tmp/a3.err &
a3=$!
wait_for '[ -s /tmp/a3.out ]' 600 || { cat /tmp/a3.err; vm_fail "takeover after a crash"; vm_end; }
echo "written after the crash" >/mnt/crash && sync || vm_fail "write after crash takeover"
echo 3 >/proc/sys/vm/drop_caches
vm_kv after_crash "$(cat /mnt/crash) / $(cmp /pattern.bin /mnt/after >/dev/null 2>&1 && echo same || echo differs)"
umount /mnt || vm_fail umount
isboot detach /dev/nbd0 && vm_kv detach ok
wait $a3
vm_kv new_exit $?
sed 's/^/crash-log: /' /tmp/a3.err
sed 's/^/old-log: /' /tmp/a1.err
sed 's/^/new-log: /' /tmp/a2.err
vm_pass
`;

Deno.test({
  name:
    "vm: attach --takeover replaces a live, then a killed isboot under a mounted ext2; files intact, fsck clean",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const kernel = await ensureKernel();
    const pattern = crypto.getRandomValues(new Uint8Array(65536));
    const ns = await NetNs.create();
    const dir = await runDir("takeover-");
    let tgt: NsTgtd | undefined;
    let initrd: string | undefined;
    try {
      const lunPath = `${dir}/lun1.img`;
      const f = await Deno.open(lunPath, { create: true, write: true });
      await f.truncate(SIZE);
      f.close();
      tgt = await NsTgtd.start(ns);
      await tgt.addTarget(1, IQN, [{ lun: 1, path: lunPath }]);
      initrd = await buildInitramfs({
        kernel,
        modules: ["nbd", "virtio_net", "virtio_pci", "ext4", "crc32c_generic"],
        loadModules: ["virtio_pci"],
        isboot: true,
        files: { "/pattern.bin": pattern },
        init: GUEST,
      });
      const t0 = Date.now();
      const r = await runVm({
        kernel,
        initrd,
        netns: ns,
        timeoutMs: 300_000,
        forwards: [{ guestAddr: "10.0.2.100", guestPort: 3260, hostPort: tgt.port }],
      });
      const ctx = `\n--- serial tail ---\n${r.tail}`;
      console.log(`VM takeover: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      assert.equal(r.timedOut, false, `VM timed out${ctx}`);
      assert.equal(r.result, "PASS", `guest result ${r.result} ${r.reason}${ctx}`);
      const kv = r.kv;
      assert.equal(kv.get("old_exit"), "0", ctx);
      assert.equal(kv.get("takeover_printed"), "/dev/nbd0", ctx);
      assert.equal(kv.get("new_alive"), "yes", ctx);
      assert.equal(kv.get("before"), "written before the takeover", ctx);
      assert.equal(kv.get("after"), "same", ctx);
      const status = JSON.parse(kv.get("status") ?? "null");
      assert.equal(status?.sessions?.length, 1, ctx);
      assert.equal(
        String(status.sessions[0].pid),
        kv.get("a2pid"),
        "status answers from the new daemon",
      );
      assert.equal(status.sessions[0].backend, `${IQN}/1`);
      const crashed = JSON.parse(kv.get("status_crashed") ?? "null");
      assert.deepEqual(crashed?.sessions, [], ctx);
      assert.deepEqual(
        crashed?.devices?.map((d: { device: string; daemon: boolean }) => [d.device, d.daemon]),
        [["/dev/nbd0", false]],
        ctx,
      );
      assert.equal(kv.get("after_crash"), "written after the crash / same", ctx);
      assert.equal(kv.get("detach"), "ok", ctx);
      assert.equal(kv.get("new_exit"), "0", ctx);
      // The host's view of the LUN: a clean file system holding both files.
      const fsck = await new Deno.Command("e2fsck", {
        args: ["-f", "-n", lunPath],
        stdout: "piped",
        stderr: "piped",
      })
        .output();
      assert.equal(
        fsck.code,
        0,
        new TextDecoder().decode(fsck.stdout) + new TextDecoder().decode(fsck.stderr),
      );
      const crash = await new Deno.Command("debugfs", {
        args: ["-R", "cat /crash", lunPath],
        stdout: "piped",
        stderr: "null",
      }).output();
      assert.equal(new TextDecoder().decode(crash.stdout), "written after the crash\n");
      const cat = await new Deno.Command("debugfs", {
        args: ["-R", "cat /after", lunPath],
        stdout: "piped",
        stderr: "null",
      })
        .output();
      assert.deepEqual(cat.stdout, pattern);
    } finally {
      await tgt?.stop();
      await ns.delete();
      if (initrd) await Deno.remove(initrd).catch(() => {});
      if (initrd) await Deno.remove(initrd.replace(/\.cpio$/, ".serial.log")).catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

const HEAL_GUEST = `
wait_for() { i=0; while ! eval "$1" && [ $i -lt $2 ]; do sleep 0.1; i=$((i+1)); done; eval "$1"; }
isboot --debug attach memory:64M --device /dev/nbd0 --timeout 2 >/tmp/a.out 2>/tmp/a.err &
apid=$!
wait_for '[ -s /tmp/a.out ]' 600 || { cat /tmp/a.err; vm_fail attach; vm_end; }
sleep 1
# Freeze the server: the kernel's 2 s request timeout fires, it drops the
# socket and announces NBD_CMD_LINK_DEAD; I/O waits for a new socket.
kill -STOP $apid
dd if=/pattern.bin of=/dev/nbd0 bs=65536 conv=fsync 2>/tmp/dd.err &
ddpid=$!
sleep 6
kill -CONT $apid
wait $ddpid
vm_kv dd_exit $?
echo 3 >/proc/sys/vm/drop_caches
dd if=/dev/nbd0 of=/tmp/back.bin bs=65536 count=1 2>/dev/null
vm_kv readback "$(cmp /pattern.bin /tmp/back.bin >/dev/null 2>&1 && echo same || echo differs)"
vm_kv healed "$(grep -c 'reconnecting it' /tmp/a.err)"
vm_kv timeouts "$(dmesg | grep -c 'nbd0: Connection timed out')"
isboot detach /dev/nbd0 && vm_kv detach ok
wait $apid
vm_kv attach_exit $?
sed 's/^/attach-log: /' /tmp/a.err
dmesg | grep nbd | grep -v 'I/O error' | tail -12 | sed 's/^/dmesg: /'
vm_pass
`;

Deno.test({
  name:
    "vm: with --timeout, a frozen server's socket dropped by the kernel is replaced (LINK_DEAD heal)",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const kernel = await ensureKernel();
    const pattern = crypto.getRandomValues(new Uint8Array(65536));
    const ns = await NetNs.create();
    let initrd: string | undefined;
    try {
      initrd = await buildInitramfs({
        kernel,
        modules: ["nbd"],
        isboot: true,
        files: { "/pattern.bin": pattern },
        init: HEAL_GUEST,
      });
      const t0 = Date.now();
      const r = await runVm({ kernel, initrd, netns: ns, nic: false, timeoutMs: 240_000 });
      const ctx = `\n--- serial tail ---\n${r.tail}`;
      console.log(`VM heal: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      console.log(
        r.serial.split("\n").filter((l) => /^(attach-log|dmesg|ISBOOT-VM)/.test(l)).join("\n"),
      );
      assert.equal(r.result, "PASS", `guest result ${r.result} ${r.reason}${ctx}`);
      assert.equal(r.kv.get("dd_exit"), "0", ctx);
      assert.equal(r.kv.get("readback"), "same", ctx);
      assert.equal(r.kv.get("healed"), "1", ctx);
      assert.ok(Number(r.kv.get("timeouts")) >= 1, ctx);
      assert.equal(r.kv.get("detach"), "ok", ctx);
      assert.equal(r.kv.get("attach_exit"), "0", ctx);
    } finally {
      await ns.delete();
      if (initrd) await Deno.remove(initrd).catch(() => {});
      if (initrd) await Deno.remove(initrd.replace(/\.cpio$/, ".serial.log")).catch(() => {});
    }
  },
});
