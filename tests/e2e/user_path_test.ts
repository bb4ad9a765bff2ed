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
 *   builds the image. BIOS, CHAP. Booted, the root disk moves to a new
 *   `@isboot` under a write loop with no failed write: by `isboot takeover
 *   --force` (what the package's postinst runs), and in `make soak` by `apt
 *   install` of the next version's package (the same tree built as
 *   VERSION+upgrade1), postinst and initramfs trigger included (the
 *   trigger alone takes minutes under TCG).
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
  return await bootDisk(c, { vmlinuz, initrd, disk, dir }, { timeoutMs: 1_500_000 });
}

/**
 * Build the next version's package: the source tree (tracked and new files)
 * copied to `dir`, its version bumped to VERSION+upgrade1 with a changelog
 * entry, and `make deb` there with this tree's deno. Returns the .deb path.
 */
async function buildNextDeb(dir: string): Promise<{ deb: string; version: string }> {
  const version = `${VERSION}+upgrade1`;
  const src = `${dir}/next-src`;
  await Deno.mkdir(src);
  await ok("sh", [
    "-c",
    `git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -C '${src}' -xf - && ` +
    `cp -a node_modules '${src}/'`,
  ], ROOT);
  await ok("sed", ["-i", `s/"version": "${VERSION}"/"version": "${version}"/`, `${src}/deno.json`]);
  await ok("sed", ["-i", `s/"${VERSION}"/"${version}"/`, `${src}/src/version.ts`]);
  const changelog = `${src}/packaging/deb/changelog`;
  await Deno.writeTextFile(
    changelog,
    `isboot (${version}) unstable; urgency=medium\n\n  * The next version, built by the upgrade test.\n\n` +
      ` -- isboot tests <isboot@localhost>  Mon, 07 Dec 2026 00:00:00 +0000\n\n` +
      await Deno.readTextFile(changelog),
  );
  await ok("make", ["deb", `DENO=${ROOT}.tools/node_modules/@deno/linux-x64-glibc/deno`], src);
  return { deb: `${src}/dist/isboot_${version}_amd64.deb`, version };
}

/** The unit that upgrades the booted root's isboot under writes, before the check unit. */
const UPGRADE_UNIT = `[Unit]
Description=isboot e2e: upgrade the package while writing to the root
Before=isboot-e2e.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/isboot-e2e-upgrade
TimeoutStartSec=1200
[Install]
WantedBy=multi-user.target
`;

/**
 * Writes 1 MiB with fsync, round after round, into eight files on the root
 * while `command` runs beside them (`apt install ./next/isboot_*_amd64.deb`
 * as README shows an install, or the `isboot takeover` its postinst runs);
 * ten rounds after the takeover the loop stops, the command finishes, the
 * caches are dropped and every file is compared with what was written.
 * Results go to the serial console.
 */
function upgradeScript(command: string): string {
  return `#!/bin/sh
say() { echo "ISBOOT-VM: $*" > /dev/ttyS0; }
field() { isboot status --json | grep -o "\\"$1\\": *[^,}]*" | head -1 | sed 's/^[^:]*: *//; s/"//g'; }
old_pid=$(field pid)
say upgrade_old="$(field version) $old_pid"
head -c 1048576 /dev/urandom > /run/isboot-e2e-block
mkdir -p /var/tmp/up
cd /root
writes=0; failed=0; after=0
t0=$(date +%s)
# The writes go on through the takeover and stop ten rounds after it (or
# after the command, should it end first); the command then finishes alone
# (apt's trigger rebuilds the initramfs: minutes under TCG). A hang shows
# as rc 124.
{ a0=$(date +%s)
  timeout 900 ${command} > /run/isboot-e2e-upgrade.log 2>&1
  echo $? > /run/isboot-e2e-upgrade.rc
  say upgrade_apt_done=$(cat /run/isboot-e2e-upgrade.rc) apt_sec=$(( $(date +%s) - a0 ))
} &
apt=$!
while [ $(( $(date +%s) - t0 )) -lt 300 ]; do
  if ! dd if=/run/isboot-e2e-block of=/var/tmp/up/f$((writes % 8)) bs=1M conv=fsync status=none; then
    failed=$((failed + 1))
  fi
  writes=$((writes + 1))
  if [ -e /run/isboot-e2e-upgrade.rc ] || grep -q 'now served by' /run/isboot-e2e-upgrade.log 2>/dev/null; then
    after=$((after + 1))
    [ "$after" -ge 10 ] && break
  fi
done
say upgrade_writes_sec=$(( $(date +%s) - t0 ))
wait
sync
echo 3 > /proc/sys/vm/drop_caches
bad=0
for f in /var/tmp/up/f*; do cmp -s "$f" /run/isboot-e2e-block || bad=$((bad + 1)); done
say upgrade_rc=$(cat /run/isboot-e2e-upgrade.rc 2>/dev/null)
ps -eo pid,ppid,args | grep -E 'apt|dpkg|isboot|initramfs|zstd' | grep -v grep | sed 's/^/ISBOOT-PS: /' > /dev/ttyS0
grep -E 'isboot|Setting up|update-initramfs' /run/isboot-e2e-upgrade.log | sed 's/^/ISBOOT-UPGRADE: /' > /dev/ttyS0
say upgrade_line=$(grep -o '/dev/nbd0: now served by .*' /run/isboot-e2e-upgrade.log | head -1 | tr ' ' '_')
say upgrade_writes=$writes upgrade_write_failures=$failed upgrade_bad_files=$bad
new_pid=$(field pid)
say upgrade_new="$(field version) $new_pid"
say upgrade_exe=$(field executable | tr ' ' '_')
say upgrade_argv0=$(tr '\\0' '\\n' < /proc/$new_pid/cmdline | head -1)
say upgrade_cgroup=$(cat /proc/$new_pid/cgroup)
say upgrade_old_alive=$([ -d /proc/$old_pid ] && echo yes || echo no)
say upgrade_io_errors=$(dmesg | grep -ci 'i/o error')
`;
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

/** The live upgrade inside the booted root: one takeover, no failed or lost write. */
function checkUpgrade(r: BootOutcome, next: string, what: string): void {
  const kv = r.vm.kv;
  const why = `\n--- serial tail ---\n${r.vm.tail}`;
  assert.equal(kv.get("upgrade_rc"), "0", `${what}${why}`);
  const [oldVersion, oldPid] = (kv.get("upgrade_old") ?? "").split(" ");
  const [newVersion, newPid] = (kv.get("upgrade_new") ?? "").split(" ");
  assert.equal(oldVersion, VERSION, why);
  assert.equal(newVersion, next, `isboot status after the upgrade${why}`);
  assert.notEqual(newPid, oldPid, why);
  assert.equal(
    kv.get("upgrade_line"),
    `/dev/nbd0:_now_served_by_isboot_${next}_(pid_${newPid});_was_${VERSION}_(pid_${oldPid})`,
    why,
  );
  assert.equal(kv.get("upgrade_old_alive"), "no", why);
  assert.equal(kv.get("upgrade_argv0"), "@isboot", why);
  // Its own cgroup, kept out of swap (docs/boot.md "Memory"): out of apt's.
  assert.equal(kv.get("upgrade_cgroup"), "0::/isboot", `the new daemon left apt's cgroup${why}`);
  assert.match(kv.get("upgrade_exe") ?? "", /^\/usr\/lib\/isboot\/deno$|^\/usr\/bin\/isboot$/, why);
  assert.equal(kv.get("upgrade_write_failures"), "0", why);
  assert.equal(kv.get("upgrade_bad_files"), "0", why);
  assert.ok(Number(kv.get("upgrade_writes")) >= 13, why);
  assert.equal(kv.get("upgrade_io_errors"), "0", why);
  console.log(
    `  ${what}, ${VERSION} -> ${next}: pid ${oldPid} -> ${newPid}, ` +
      `${kv.get("upgrade_writes")} fsync'd 1 MiB writes, none failed; the command took ${
        kv.get("apt_sec")
      } s`,
  );
}

async function withRunDir<T>(prefix: string, fn: (dir: string) => Promise<T>): Promise<T> {
  await Deno.mkdir(E2E_DIR, { recursive: true }); // a fresh clone running this file alone
  const dir = await Deno.makeTempDir({ dir: E2E_DIR, prefix });
  try {
    return await fn(dir);
  } finally {
    if (Deno.env.get("ISBOOT_E2E_KEEP") !== "1") {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  }
}

/**
 * The package path: `make deb`, README's `apt install` in the root (dpkg's
 * trigger builds the initrd), boot it (BIOS, CHAP); in the booted root a
 * unit upgrades isboot under fsync'd writes: `isboot takeover --force` (the
 * command the package's postinst runs, same version), or (`apt`) `apt
 * install` of the next version's package, trigger and all.
 */
async function packageBoot(upgrade: "takeover" | "apt"): Promise<void> {
  const c: BootCase = { firmware: "bios", initramfs: "initramfs-tools", chap: "chap" };
  await withRunDir(`user-deb-${upgrade}-`, async (dir) => {
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
    let next = VERSION;
    let command = "isboot takeover --force";
    if (upgrade === "apt") {
      // The next version's package, for the booted root to upgrade to.
      const built = await buildNextDeb(dir);
      await Deno.mkdir(`${root}/root/next`);
      await Deno.copyFile(built.deb, `${root}/root/next/${built.deb.split("/").pop()}`);
      next = built.version;
      command = "apt install ./next/isboot_*_amd64.deb";
    }
    await Deno.writeTextFile(`${root}/etc/systemd/system/isboot-e2e-upgrade.service`, UPGRADE_UNIT);
    await Deno.writeTextFile(`${root}/usr/local/sbin/isboot-e2e-upgrade`, upgradeScript(command), {
      mode: 0o755,
    });
    await Deno.symlink(
      "/etc/systemd/system/isboot-e2e-upgrade.service",
      `${root}/etc/systemd/system/multi-user.target.wants/isboot-e2e-upgrade.service`,
    );
    const r = await bootRoot(c, dir, root, kver);
    checkUpgrade(r, next, command);
    check(c, r);
  });
}

Deno.test({
  name: "user path, package: make deb; apt install ./dist/isboot_*_amd64.deb in a Debian 12 " +
    "root; its trigger-built initrd boots it (BIOS, CHAP); isboot takeover --force there " +
    "moves the root disk to a new daemon under fsync'd writes",
  ignore: !enabled,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () => packageBoot("takeover"),
});

/** `make soak` sets it: the runs kept out of `make test` for their time. */
const soak = Deno.env.get("ISBOOT_SOAK") === "1";

Deno.test({
  name: "user path, package upgrade (make soak): the package boot, then apt install of the next " +
    "version in the booted root (postinst takeover, initramfs trigger) moves the root disk to " +
    "the new version's daemon under fsync'd writes",
  ignore: !enabled || !soak,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () => packageBoot("apt"),
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
