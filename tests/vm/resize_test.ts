/**
 * A LUN that grows while mounted, in Debian's kernel: the guest attaches a
 * tgtd LUN of 64 MiB, makes ext4 on /dev/nbd0 and mounts it; the host then
 * grows the backing file to 128 MiB and has tgtd reopen it (tgt raises no
 * UNIT ATTENTION, so nothing tells isboot); the guest runs `isboot resize
 * /dev/nbd0` until it reports growth, sees the new size in blockdev and
 * sysfs, grows the mounted file system with resize2fs, writes a file larger
 * than the old device, unmounts and finds it clean with e2fsck; the host's
 * e2fsck of the backing file agrees (docs/kernel.md, "Growing a live device").
 */
import assert from "node:assert/strict";
import {
  buildInitramfs,
  ensureKernel,
  type GuestFile,
  NetNs,
  runDir,
  runVm,
  sharedLibraries,
  startNsTgtd,
} from "./lib.ts";
import type { Tgtd } from "../../peers/tgtd.ts";

const IQN = "iqn.2026-12.test:vm-resize";
const OLD = 64 << 20;
const NEW = 128 << 20;
/** e2fsprogs from the host, out of busybox's way. */
const E2 = ["mke2fs", "resize2fs", "e2fsck"];

const GUEST = `
wait_for() { i=0; while ! eval "$1" && [ $i -lt $2 ]; do sleep 0.1; i=$((i+1)); done; eval "$1"; }
vm_net_up || vm_fail network
isboot attach iscsi://10.0.2.100/${IQN}/1 --device /dev/nbd0 >/tmp/a.out 2>/tmp/a.err &
apid=$!
wait_for '[ -s /tmp/a.out ]' 600 || { cat /tmp/a.err; vm_fail attach; vm_end; }
/e2/mke2fs -q -F -t ext4 /dev/nbd0 || vm_fail mke2fs
mkdir -p /mnt && mount -t ext4 /dev/nbd0 /mnt || { dmesg | tail -5; vm_fail mount; vm_end; }
echo "before the resize" >/mnt/before && sync
vm_kv size_before "$(blockdev --getsize64 /dev/nbd0)"
vm_kv fs_before "$(df -k /mnt | awk 'NR==2{print $2}')"
isboot resize /dev/nbd0 >/tmp/r0.out 2>&1; vm_kv unchanged_rc $?
vm_kv unchanged "$(cat /tmp/r0.out)"
echo "ISBOOT-VM: mounted=yes"
# The host grows the LUN now; nothing tells isboot, so ask until it sees it.
i=0
while [ $i -lt 30 ]; do
  isboot resize /dev/nbd0 --json >/tmp/r.json 2>/tmp/r.err; rc=$?
  grep -q '"grown"' /tmp/r.json && break
  sed 's/^/resize-err: /' /tmp/r.err
  sleep 0.5; i=$((i+1))
done
vm_kv resize_tries $((i + 1))
vm_kv resize_rc $rc
vm_kv resize "$(tr -d '\\n ' </tmp/r.json)"
vm_kv size_after "$(blockdev --getsize64 /dev/nbd0)"
vm_kv sysfs_after "$(( $(cat /sys/block/nbd0/size) * 512 ))"
vm_kv capacity_log "$(dmesg | grep -o 'nbd0: detected capacity change.*' | tail -1)"
/e2/resize2fs /dev/nbd0 >/tmp/rs.out 2>&1; vm_kv resize2fs_rc $?
sed 's/^/resize2fs: /' /tmp/rs.out
vm_kv fs_after "$(df -k /mnt | awk 'NR==2{print $2}')"
# More than the old device holds: blocks past its end are in use.
dd if=/dev/zero of=/mnt/big bs=1048576 count=80 conv=fsync 2>/tmp/dd.err; vm_kv dd_rc $?
vm_kv big "$(stat -c %s /mnt/big)"
isboot status --json >/tmp/status.json 2>&1
vm_kv status_size "$(tr -d '\\n ' </tmp/status.json | grep -o '"sizeBytes":"[0-9]*"' | head -1)"
vm_kv io_errors "$(dmesg | grep -ci 'i/o error')"
vm_kv fs_errors "$(dmesg | grep -c 'EXT[0-9]-fs error')"
umount /mnt || vm_fail umount
/e2/e2fsck -fn /dev/nbd0 >/tmp/fsck.out 2>&1; vm_kv fsck_rc $?
sed 's/^/fsck: /' /tmp/fsck.out
isboot detach /dev/nbd0 && vm_kv detach ok
wait $apid; vm_kv attach_exit $?
sed 's/^/attach-log: /' /tmp/a.err
dmesg | grep -iE 'nbd|i/o error|EXT4' | tail -12 | sed 's/^/dmesg: /'
vm_pass
`;

Deno.test({
  name:
    "vm: a tgtd LUN grown under a mounted ext4: isboot resize grows /dev/nbd0 in place, resize2fs online, written past the old end, fsck clean",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const kernel = await ensureKernel();
    const ns = await NetNs.create();
    const dir = await runDir("resize-");
    let tgt: Tgtd | undefined;
    let initrd: string | undefined;
    try {
      const lunPath = `${dir}/lun1.img`;
      const f = await Deno.open(lunPath, { create: true, write: true });
      await f.truncate(OLD);
      f.close();
      tgt = await startNsTgtd(ns);
      const tid = await tgt.createTarget(IQN);
      await tgt.addLun(tid, { lun: 1, path: lunPath });
      const files: Record<string, GuestFile> = {};
      for (const name of E2) {
        files[`/e2/${name}`] = { from: `/sbin/${name}`, mode: 0o755 };
        for (const lib of await sharedLibraries(`/sbin/${name}`)) {
          files[lib] = { from: lib, mode: 0o755 };
        }
      }
      files["/etc/mke2fs.conf"] = { from: "/etc/mke2fs.conf" };
      initrd = await buildInitramfs({
        kernel,
        modules: ["nbd", "virtio_net", "virtio_pci", "ext4", "crc32c_generic"],
        loadModules: ["virtio_pci"],
        isboot: true,
        files,
        init: GUEST,
      });
      // Grow the LUN on the host once the guest has its file system mounted.
      let grown: Promise<void> | undefined;
      const t = tgt;
      const t0 = Date.now();
      const r = await runVm({
        kernel,
        initrd,
        netns: ns,
        timeoutMs: 360_000,
        forwards: [{ guestAddr: "10.0.2.100", guestPort: 3260, hostPort: tgt.port }],
        onLine: (line) => {
          if (grown || !line.includes("ISBOOT-VM: mounted=yes")) return;
          grown = (async () => {
            await Deno.truncate(lunPath, NEW);
            await t.tgtadm([
              "--lld",
              "iscsi",
              "--op",
              "update",
              "--mode",
              "logicalunit",
              "--tid",
              String(tid),
              "--lun",
              "1",
              "--params",
              `online=0,path=${lunPath}`,
            ]);
          })();
        },
      });
      await grown;
      const ctx = `\n--- serial tail ---\n${r.tail}`;
      const kv = r.kv;
      console.log(
        `VM resize: ${((Date.now() - t0) / 1000).toFixed(1)} s; ${
          r.serial.split("\n").filter((l) => /^(ISBOOT-VM|resize2fs|fsck|dmesg)/.test(l)).join("\n")
        }`,
      );
      assert.equal(r.timedOut, false, `VM timed out${ctx}`);
      assert.equal(r.result, "PASS", `guest result ${r.result} ${r.reason}${ctx}`);
      assert.ok(grown, `the guest never said it had mounted${ctx}`);
      assert.equal(kv.get("size_before"), String(OLD), ctx);
      assert.equal(kv.get("unchanged_rc"), "0", ctx);
      assert.equal(kv.get("unchanged"), `/dev/nbd0: ${OLD} bytes (unchanged)`, ctx);
      assert.equal(kv.get("resize_rc"), "0", ctx);
      assert.deepEqual(JSON.parse(kv.get("resize") ?? "null"), {
        device: "/dev/nbd0",
        oldSizeBytes: String(OLD),
        newSizeBytes: String(NEW),
        reportedSizeBytes: String(NEW),
        outcome: "grown",
        detail: null,
      }, ctx);
      assert.equal(kv.get("size_after"), String(NEW), ctx);
      assert.equal(kv.get("sysfs_after"), String(NEW), ctx);
      // set_capacity_and_notify(), in 512-byte sectors.
      assert.equal(
        kv.get("capacity_log"),
        `nbd0: detected capacity change from ${OLD / 512} to ${NEW / 512}`,
        ctx,
      );
      assert.equal(kv.get("status_size"), `"sizeBytes":"${NEW}"`, ctx);
      assert.equal(kv.get("resize2fs_rc"), "0", ctx);
      const [before, after] = [Number(kv.get("fs_before")), Number(kv.get("fs_after"))];
      assert.ok(after > before * 1.8, `file system ${before} -> ${after} KiB${ctx}`);
      assert.equal(kv.get("dd_rc"), "0", ctx);
      assert.equal(kv.get("big"), String(80 << 20), ctx);
      assert.equal(kv.get("io_errors"), "0", ctx);
      assert.equal(kv.get("fs_errors"), "0", ctx);
      assert.equal(kv.get("fsck_rc"), "0", ctx);
      assert.equal(kv.get("detach"), "ok", ctx);
      assert.equal(kv.get("attach_exit"), "0", ctx);
      // The host's view of the backing file: grown, and a clean ext4 that fills it.
      assert.equal((await Deno.stat(lunPath)).size, NEW);
      const fsck = await new Deno.Command("/sbin/e2fsck", {
        args: ["-fn", lunPath],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(fsck.code, 0, new TextDecoder().decode(fsck.stdout) + ctx);
    } finally {
      await tgt?.stop();
      await ns.delete();
      if (initrd) {
        await Deno.remove(initrd).catch(() => {});
        await Deno.remove(initrd.replace(/\.cpio$/, ".serial.log")).catch(() => {});
      }
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
