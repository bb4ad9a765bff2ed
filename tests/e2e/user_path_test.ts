/**
 * Boots built from a user's own install steps, nothing injected: no
 * ISBOOT_BIN, no initramfs built by the harness. The root is Debian 12 with
 * its own kernel and initramfs-tools (debootstrap, tests/e2e/rootfs.sh
 * "kernel"); the user's commands run inside it (chroot), exactly as README
 * §2 shows them; the VM boots the kernel and the initramfs the root's own
 * tools left in its /boot. Then as in tests/e2e/boot_test.ts: iPXE writes
 * the iBFT, isboot serves /dev/nbd0, systemd on /dev/nbd0p1 runs the check
 * unit (marker, `@isboot`, poweroff), the host finds the marker and runs
 * `e2fsck -fn`.
 *
 * - package: `make deb` in the source tree, `apt install
 *   ./dist/isboot_*_amd64.deb` in the root; dpkg's update-initramfs trigger
 *   builds the image. BIOS, CHAP.
 * - make install: the source tree bind-mounted in the root, `make install`
 *   (default PREFIX=/usr/local) there, then `update-initramfs -u`. UEFI.
 * - dracut: `apt install dracut` (replacing initramfs-tools), the package,
 *   whose postinst says to run `dracut -a isboot --force --regenerate-all`,
 *   and that command. BIOS, mutual CHAP.
 *
 * ISBOOT_E2E=0 skips these.
 */
import assert from "node:assert/strict";
import { ROOT } from "../helpers/cli.ts";
import { chroot } from "../helpers/chroot.ts";
import { exists } from "../helpers/fs.ts";
import { VERSION } from "../../src/version.ts";
import {
  type BootCase,
  bootDisk,
  type BootOutcome,
  E2E_DIR,
  ensureRootfs,
  KERNEL_PACKAGES,
  makeDiskImage,
  prepareRootDir,
} from "./lib.ts";

const enabled = Deno.env.get("ISBOOT_E2E") !== "0";
const dec = new TextDecoder();

async function ok(cmd: string, args: string[], cwd?: string): Promise<string> {
  const o = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  const out = dec.decode(o.stdout) + dec.decode(o.stderr);
  if (!o.success) throw new Error(`${cmd} ${args.join(" ")}: exit ${o.code}: ${out.slice(-3000)}`);
  return out;
}

async function inRoot(root: string, script: string): Promise<string> {
  const r = await chroot(root, script);
  if (r.code !== 0) {
    throw new Error(`in the root: ${script}: exit ${r.code}:\n${r.out.slice(-4000)}`);
  }
  return r.out;
}

/** A fresh copy of the Debian root with a kernel, made an e2e root (check unit, fstab). */
async function userRoot(dir: string): Promise<{ root: string; kver: string }> {
  const tar = await ensureRootfs(KERNEL_PACKAGES);
  const root = `${dir}/root`;
  await Deno.mkdir(root);
  await ok("tar", ["-C", root, "--numeric-owner", "-xf", tar]);
  await prepareRootDir(root);
  const kvers = [...Deno.readDirSync(`${root}/lib/modules`)].map((e) => e.name);
  assert.equal(kvers.length, 1, `one kernel in the root: ${kvers}`);
  return { root, kver: kvers[0] };
}

/** Boot the root at `root` with the kernel and initramfs in its own /boot. */
async function bootRoot(c: BootCase, dir: string, root: string, kver: string) {
  const vmlinuz = `${dir}/vmlinuz`;
  const initrd = `${dir}/initrd.img`;
  await Deno.copyFile(`${root}/boot/vmlinuz-${kver}`, vmlinuz);
  await Deno.copyFile(`${root}/boot/initrd.img-${kver}`, initrd);
  const used = Number((await ok("du", ["-sb", root])).split("\t")[0]);
  const fsBytes = Math.ceil((used * 1.3 + (384 << 20)) / (1 << 20)) * (1 << 20);
  const disk = `${dir}/disk.img`;
  await makeDiskImage(root, disk, fsBytes);
  await Deno.remove(root, { recursive: true });
  return await bootDisk(c, { vmlinuz, initrd, disk, dir }, { timeoutMs: 900_000 });
}

function check(c: BootCase, r: BootOutcome): void {
  const why = `\n--- serial tail ---\n${r.vm.tail}`;
  assert.equal(r.vm.timedOut, false, `VM timed out${why}`);
  assert.equal(r.vm.result, "PASS", `guest: ${r.vm.reason}${why}`);
  // The root disk is /dev/nbd0 on every boot, even when udev's probe holds it
  // open for a moment as isboot attaches (the boot waits for it).
  assert.equal(r.vm.kv.get("root"), "/dev/nbd0p1", why);
  const dev = "nbd0";
  assert.ok(Number(r.vm.kv.get("daemons")) >= 1, why);
  assert.equal(r.vm.kv.get("oom"), "-1000", why);
  assert.match(r.vm.kv.get("control") ?? "", new RegExp(`\\b${dev}\\.ctl\\b`), why);
  // The host cut the connection once after switch_root: the daemon recovered it and says so.
  assert.deepEqual(r.cutCodes, [0], `the host cut no iSCSI connection${why}`);
  assert.ok(Number(r.vm.kv.get("status_reconnects")) >= 1, `isboot status: reconnects${why}`);
  assert.match(r.vm.serial, /reboot: Power down/, `poweroff did not complete${why}`);
  assert.ok(r.marker, `marker not found in the image${why}`);
  assert.equal(r.fsck.code, 0, `e2fsck -fn: ${r.fsck.output}`);
  console.log(
    `  ${c.firmware}/${c.initramfs}/${c.chap}: root /dev/${dev}p1; kernel start -> switch_root ${
      r.switchRootMs !== null ? (r.switchRootMs / 1000).toFixed(2) : "?"
    } s; isboot start -> /dev/${dev} ready ${
      r.isbootReadyMs !== null ? (r.isbootReadyMs / 1000).toFixed(2) : "?"
    } s; VM total ${(r.vm.durationMs / 1000).toFixed(1)} s`,
  );
}

async function withRunDir<T>(prefix: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ dir: E2E_DIR, prefix });
  try {
    return await fn(dir);
  } finally {
    if (Deno.env.get("ISBOOT_E2E_KEEP") !== "1") {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  }
}

Deno.test({
  name: "user path, package: make deb; apt install ./dist/isboot_*_amd64.deb in a Debian 12 " +
    "root; its trigger-built initrd boots it (BIOS, CHAP)",
  ignore: !enabled,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const c: BootCase = { firmware: "bios", initramfs: "initramfs-tools", chap: "chap" };
    await withRunDir("user-deb-", async (dir) => {
      await ok("sh", ["-c", "make deb"], ROOT);
      const deb = `isboot_${VERSION}_amd64.deb`;
      const { root, kver } = await userRoot(dir);
      const before = await Deno.readFile(`${root}/boot/initrd.img-${kver}`);
      await Deno.mkdir(`${root}/root/dist`);
      await Deno.copyFile(`${ROOT}dist/${deb}`, `${root}/root/dist/${deb}`);
      const out = await inRoot(root, "apt install ./dist/isboot_*_amd64.deb");
      assert.match(out, /Processing triggers for initramfs-tools/, out);
      assert.match(out, new RegExp(`update-initramfs: Generating /boot/initrd\\.img-${kver}`), out);
      const after = await Deno.readFile(`${root}/boot/initrd.img-${kver}`);
      assert.notDeepEqual(after, before, "dpkg's trigger rebuilt the initrd");
      check(c, await bootRoot(c, dir, root, kver));
    });
  },
});

Deno.test({
  name: "user path, make install: make install (PREFIX=/usr/local) and update-initramfs -u in " +
    "a Debian 12 root; that initrd boots it (UEFI)",
  ignore: !enabled,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const c: BootCase = { firmware: "uefi", initramfs: "initramfs-tools", chap: "none" };
    await withRunDir("user-install-", async (dir) => {
      await ok("sh", ["-c", "make"], ROOT);
      const { root, kver } = await userRoot(dir);
      // The user has make (apt install make); the root has no package lists, so from the host's.
      const dl = `${dir}/make-deb`;
      await Deno.mkdir(dl);
      await ok("apt-get", ["download", "-q", "make"], dl);
      const makeDeb = [...Deno.readDirSync(dl)].find((e) => e.name.endsWith(".deb"))!.name;
      await Deno.copyFile(`${dl}/${makeDeb}`, `${root}/root/${makeDeb}`);
      await inRoot(root, `dpkg -i ./${makeDeb} && rm ./${makeDeb}`);
      // The source tree where the user ran `make`, seen inside the root.
      await Deno.mkdir(`${root}/root/isboot`);
      const before = await Deno.readFile(`${root}/boot/initrd.img-${kver}`);
      const r = await chroot(root, "cd /root/isboot && make install && update-initramfs -u", {
        binds: [[ROOT, "/root/isboot"]],
      });
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, new RegExp(`update-initramfs: Generating /boot/initrd\\.img-${kver}`));
      assert.ok(await exists(`${root}/usr/local/bin/isboot`), r.out);
      const after = await Deno.readFile(`${root}/boot/initrd.img-${kver}`);
      assert.notDeepEqual(after, before, "update-initramfs rebuilt the initrd");
      check(c, await bootRoot(c, dir, root, kver));
    });
  },
});

Deno.test({
  name: "user path, dracut: apt install dracut, then apt install ./dist/isboot_*_amd64.deb and " +
    "dracut -a isboot --force --regenerate-all in a Debian 12 root; that initrd boots it " +
    "(BIOS, mutual CHAP)",
  ignore: !enabled,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const c: BootCase = { firmware: "bios", initramfs: "dracut", chap: "mutual" };
    await withRunDir("user-dracut-", async (dir) => {
      await ok("sh", ["-c", "make deb"], ROOT);
      const deb = `isboot_${VERSION}_amd64.deb`;
      const { root, kver } = await userRoot(dir);
      // `apt install dracut` (it replaces initramfs-tools); the root has no package lists,
      // so the packages come from the host's apt.
      await Deno.mkdir(`${root}/root/dracut`);
      await ok(
        "apt-get",
        ["download", "-q", "dracut", "dracut-core", "kpartx"],
        `${root}/root/dracut`,
      );
      await inRoot(root, "apt install -y ./dracut/*.deb && rm -r ./dracut");
      await Deno.mkdir(`${root}/root/dist`);
      await Deno.copyFile(`${ROOT}dist/${deb}`, `${root}/root/dist/${deb}`);
      const out = await inRoot(root, "apt install ./dist/isboot_*_amd64.deb");
      assert.match(out, /dracut -a isboot --force --regenerate-all/, "postinst says what to run");
      const before = await Deno.readFile(`${root}/boot/initrd.img-${kver}`).catch(() => null);
      await inRoot(root, "dracut -a isboot --force --regenerate-all");
      const after = await Deno.readFile(`${root}/boot/initrd.img-${kver}`);
      assert.notDeepEqual(after, before, "dracut rebuilt the initrd");
      check(c, await bootRoot(c, dir, root, kver));
    });
  },
});
