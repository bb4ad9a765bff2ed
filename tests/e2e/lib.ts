/**
 * The real boot: a minimal Debian with systemd on a
 * partitioned disk image exported by tgtd as LUN 1; qemu (TCG) with its
 * iPXE option ROM does dhcp, sanhook (writing the iBFT: low memory under
 * BIOS, an ACPI table under UEFI), loads kernel and initramfs, and boots.
 * The initramfs is built by real dracut or real initramfs-tools with our
 * hooks; isboot brings up the NIC, logs in, attaches /dev/nbd0 and stays.
 * A unit in the real root writes a marker, checks `@isboot` in ps, and
 * powers off; the host then finds the marker and runs `e2fsck -n`.
 *
 * Everything runs in a private network namespace (tests/vm/lib.ts): qemu's
 * user network has restrict=on; the guest reaches only the target
 * (10.0.2.100:3260) and a one-shot `busybox httpd -i` serving the kernel,
 * initramfs and iPXE script (10.0.2.101:80). HTTP instead of TFTP: the
 * initramfs is ~100 MB (deno), which TFTP's lock-step blocks make slow.
 *
 * Cached under build/e2e (git-ignored): the debootstrap tarball, the base
 * disk image, and each initramfs keyed by the hash of what went into it.
 */
import { ROOT } from "../helpers/cli.ts";
import {
  ensureKernel,
  isbootBuildDir,
  type Kernel,
  NetNs,
  runVm,
  startNsTgtd,
  type VmResult,
} from "../vm/lib.ts";
import type { Tgtd } from "../../peers/tgtd.ts";
import { exists } from "../helpers/fs.ts";
import { pattern } from "../helpers/bytes.ts";

export const E2E_DIR = `${ROOT}build/e2e`;
export const TARGET_IQN = "iqn.2026-11.test:root";
export const INITIATOR_IQN = "iqn.2026-11.test:client";
/** The root filesystem's UUID and label (root=UUID=... on the kernel command line). */
export const ROOT_UUID = "5e1f0a2b-7c3d-4e8f-9a01-b2c3d4e5f607";
export const ROOT_LABEL = "isboot-root";
/** Partition 1 starts at 1 MiB. */
export const PART_OFFSET = 1 << 20;
const FS_BYTES = 640 * (1 << 20);

const dec = new TextDecoder();

async function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: Record<string, string> } = {},
): Promise<string> {
  const o = await new Deno.Command(cmd, {
    args,
    cwd: opts.cwd,
    env: opts.env,
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  if (!o.success) {
    throw new Error(
      `${cmd} ${args.join(" ")}: exit ${o.code}: ${dec.decode(o.stderr).trim().slice(-3000)}`,
    );
  }
  return dec.decode(o.stdout) + dec.decode(o.stderr);
}

/** Remove older cached builds `PREFIX*SUFFIX` in E2E_DIR other than `keep`. */
async function pruneCache(prefix: string, suffix: string, keep: string): Promise<void> {
  for await (const e of Deno.readDir(E2E_DIR)) {
    const p = `${E2E_DIR}/${e.name}`;
    if (e.name.startsWith(prefix) && e.name.endsWith(suffix) && p !== keep) {
      await Deno.remove(p).catch(() => {});
    }
  }
}

async function sha256(parts: (string | Uint8Array)[]): Promise<string> {
  const chunks = parts.map((p) => (typeof p === "string" ? new TextEncoder().encode(p) : p));
  const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let off = 0;
  for (const c of chunks) {
    all.set(c, off);
    off += c.length;
  }
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
  return Array.from(h.slice(0, 8), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The script the unit in the real root runs: marker, checks, result line, poweroff. */
const CHECK_SCRIPT = `#!/bin/sh
# isboot e2e: runs once in the real root, reports on the serial console, powers off.
say() { echo "ISBOOT-VM: $*" > /dev/ttyS0; }
root=$(findmnt -no SOURCE /)
daemons=$(ps -eo args | grep -c '^@isboot')
say root=$root daemons=$daemons
say userspace_us=$(systemctl show -P UserspaceTimestampMonotonic)
say isboot_ready_ms=$(grep -o '"readyMs":[0-9]*' /run/isboot/boot.json | head -1 | cut -d: -f2)
say handoff=$(ls -d /run/net-*.conf /run/systemd/network/*.network /run/NetworkManager/conf.d/*.conf 2>/dev/null | tr '\\n' ' ')
say control=$(ls /run/isboot/ | tr '\\n' ' ')
say oom=$(cat /proc/$(pgrep -f '^@isboot' | head -1)/oom_score_adj)
{
  echo "isboot e2e marker"
  cat /proc/sys/kernel/random/boot_id
  echo "root=$root daemons=$daemons"
  ps -eo pid,args | grep '[@]isboot'
} > /isboot-e2e.marker
sync
# A forced reconnect: the host cuts the iSCSI connection when it reads the
# next line; the daemon's messages reach the journal as SYSLOG_IDENTIFIER=isboot.
say reconnect=now
i=0
until journalctl -q -t isboot -o cat | grep -q 'session recovered' || [ $i -ge 120 ]; do
  sleep 1; i=$((i + 1))
done
say journal_serving=$(journalctl -q -t isboot -o cat | grep -c 'as the root-storage daemon')
say journal_lost=$(journalctl -q -t isboot -o cat | grep -c 'connection to .* lost')
say journal_recovered=$(journalctl -q -t isboot -o cat | grep -c 'session recovered')
# Where isboot is installed in the root, the daemon's own count of recoveries.
if command -v isboot >/dev/null; then
  say status_reconnects=$(isboot status --json | sed -n 's/.*"reconnects": *\\([0-9]*\\).*/\\1/p' | head -1)
fi
echo "after the reconnect" >> /isboot-e2e.marker
sync
case "$root" in
/dev/nbd0p1) [ "$daemons" -ge 1 ] && echo "ISBOOT-VM-RESULT: PASS" > /dev/ttyS0 ||
  echo "ISBOOT-VM-RESULT: FAIL no @isboot process" > /dev/ttyS0 ;;
*) echo "ISBOOT-VM-RESULT: FAIL root is $root, not /dev/nbd0p1" > /dev/ttyS0 ;;
esac
systemctl poweroff --no-block
`;

const CHECK_UNIT = `[Unit]
Description=isboot e2e check: marker, @isboot in ps, poweroff
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/isboot-e2e
[Install]
WantedBy=multi-user.target
`;

/**
 * build/e2e/rootfs.tar: debootstrap of bookworm minbase + systemd (cached);
 * with `packages`, that root plus them (apt-get install in a chroot of it),
 * cached as its own tarball keyed by the set (tests/e2e/rootfs.sh).
 */
/** What a user's root that builds its own initramfs carries besides the stock root. */
export const KERNEL_PACKAGES = ["linux-image-amd64", "initramfs-tools", "zstd"];

export async function ensureRootfs(packages: readonly string[] = []): Promise<string> {
  const out = await run(`${ROOT}tests/e2e/rootfs.sh`, [E2E_DIR, packages.join(",")]);
  const tar = /(\S+\.tar)( \(cached\))?\s*$/.exec(out)?.[1];
  if (!tar) throw new Error(`tests/e2e/rootfs.sh printed no tarball: ${out.slice(-500)}`);
  return tar.startsWith("/") ? tar : `${E2E_DIR}/${tar.replace(/^.*\//, "")}`;
}

/**
 * A root that carries more than the stock one: what a real install adds
 * (a network stack and its configuration), and isboot itself where the test
 * runs `isboot status` or needs the hooks `make install` puts in the root.
 */
export interface RootVariant {
  /** Short name; the disk image is cached as root-NAME-HASH.img. */
  name: string;
  /** Debian packages added by debootstrap (the tarball is cached per set). */
  packages: string[];
  /** Files to write: absolute path in the root -> text (0644) or text and mode. */
  files?: Record<string, string | { text: string; mode: number }>;
  /** Symbolic links to make (enabling or masking units): path -> target. */
  links?: Record<string, string>;
  /**
   * Install the isboot under test as `make install PREFIX=/usr` lays it out
   * (/usr/bin/isboot; the bundle under /usr/lib/isboot) with the ifupdown
   * hook in /etc/network/if-down.d and /etc/modprobe.d/isboot.conf.
   */
  installIsboot?: boolean;
}

/** The isboot build in `dir` into the root `root`, laid out as `make install PREFIX=/usr` does. */
async function installIsbootInto(root: string, dir: string): Promise<void> {
  await Deno.mkdir(`${root}/usr/bin`, { recursive: true });
  if (await exists(`${dir}/isboot.js`)) {
    await Deno.mkdir(`${root}/usr/lib/isboot`, { recursive: true });
    for (const f of ["isboot", "isboot.js", "deno"]) {
      await Deno.copyFile(`${dir}/${f}`, `${root}/usr/lib/isboot/${f}`);
      await Deno.chmod(`${root}/usr/lib/isboot/${f}`, f === "isboot.js" ? 0o644 : 0o755);
    }
    await Deno.symlink("../lib/isboot/isboot", `${root}/usr/bin/isboot`);
  } else {
    await Deno.copyFile(`${dir}/isboot`, `${root}/usr/bin/isboot`);
    await Deno.chmod(`${root}/usr/bin/isboot`, 0o755);
  }
  const hook = `${root}/etc/network/if-down.d/isboot`;
  await Deno.mkdir(hook.slice(0, hook.lastIndexOf("/")), { recursive: true });
  await Deno.copyFile(`${ROOT}initramfs-hook/ifupdown/if-down.d/isboot`, hook);
  await Deno.chmod(hook, 0o755);
  const conf = `${root}/etc/modprobe.d/isboot.conf`;
  await Deno.mkdir(`${root}/etc/modprobe.d`, { recursive: true });
  await Deno.copyFile(`${ROOT}initramfs-hook/modprobe.d/isboot.conf`, conf);
}

/** Write a one-partition MBR (type 0x83 from PART_OFFSET, `sectors` long) into `disk`. */
export function mbr(sectors: number): Uint8Array {
  const b = new Uint8Array(512);
  const dv = new DataView(b.buffer);
  const e = 446;
  b[e] = 0x00; // not active
  b.set([0xfe, 0xff, 0xff], e + 1); // CHS: use LBA
  b[e + 4] = 0x83;
  b.set([0xfe, 0xff, 0xff], e + 5);
  dv.setUint32(e + 8, PART_OFFSET / 512, true);
  dv.setUint32(e + 12, sectors, true);
  b[510] = 0x55;
  b[511] = 0xaa;
  return b;
}

/**
 * build/e2e/root-base.img: MBR + ext4 (fixed UUID/label) made by
 * `mke2fs -d` from the rootfs with the check unit enabled. Cached.
 */
export async function ensureBaseImage(variant?: RootVariant, isbootDir?: string): Promise<string> {
  const tar = await ensureRootfs(variant?.packages);
  const parts: (string | Uint8Array)[] = [
    CHECK_SCRIPT,
    CHECK_UNIT,
    String((await Deno.stat(tar)).size),
    ROOT_UUID,
  ];
  if (variant) {
    parts.push(JSON.stringify([variant.files ?? {}, variant.links ?? {}]));
    if (variant.installIsboot) {
      if (!isbootDir) throw new Error(`root ${variant.name}: installIsboot needs the isboot build`);
      parts.push(
        (await exists(`${isbootDir}/isboot.js`))
          ? await Deno.readFile(`${isbootDir}/isboot.js`)
          : String((await Deno.stat(`${isbootDir}/isboot`)).mtime?.getTime()),
        await Deno.readFile(`${ROOT}initramfs-hook/ifupdown/if-down.d/isboot`),
        await Deno.readFile(`${ROOT}initramfs-hook/modprobe.d/isboot.conf`),
      );
    }
  }
  const prefix = `root-${variant ? variant.name : "base"}-`;
  const img = `${E2E_DIR}/${prefix}${await sha256(parts)}.img`;
  if (await exists(img)) return img;
  const dir = await Deno.makeTempDir({ dir: E2E_DIR, prefix: "rootdir-" });
  try {
    await run("tar", ["-C", dir, "--numeric-owner", "-xf", tar]);
    if (variant?.installIsboot) await installIsbootInto(dir, isbootDir!);
    for (const [path, f] of Object.entries(variant?.files ?? {})) {
      const p = `${dir}${path}`;
      await Deno.mkdir(p.slice(0, p.lastIndexOf("/")), { recursive: true });
      const { text, mode } = typeof f === "string" ? { text: f, mode: 0o644 } : f;
      await Deno.writeTextFile(p, text);
      await Deno.chmod(p, mode);
    }
    for (const [path, to] of Object.entries(variant?.links ?? {})) {
      const p = `${dir}${path}`;
      await Deno.mkdir(p.slice(0, p.lastIndexOf("/")), { recursive: true });
      await Deno.remove(p).catch(() => {});
      await Deno.symlink(to, p);
    }
    await prepareRootDir(dir);
    await makeDiskImage(dir, img);
    await pruneCache(prefix, ".img", img);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  return img;
}

/**
 * Make the unpacked root at `dir` an e2e root: the check unit (marker,
 * `@isboot` in ps, result line, poweroff) enabled, fstab with ROOT_UUID, no
 * serial getty.
 */
export async function prepareRootDir(dir: string): Promise<void> {
  await Deno.writeTextFile(`${dir}/usr/local/sbin/isboot-e2e`, CHECK_SCRIPT, { mode: 0o755 });
  await Deno.writeTextFile(`${dir}/etc/systemd/system/isboot-e2e.service`, CHECK_UNIT);
  await Deno.mkdir(`${dir}/etc/systemd/system/multi-user.target.wants`, { recursive: true });
  await Deno.symlink(
    "/etc/systemd/system/isboot-e2e.service",
    `${dir}/etc/systemd/system/multi-user.target.wants/isboot-e2e.service`,
  );
  await Deno.writeTextFile(
    `${dir}/etc/fstab`,
    `UUID=${ROOT_UUID} / ext4 rw,errors=remount-ro 0 1\n`,
  );
  await Deno.writeTextFile(`${dir}/etc/hostname`, "isboot-e2e\n");
  // No login prompt on the serial line: the check unit owns it.
  await Deno.symlink("/dev/null", `${dir}/etc/systemd/system/serial-getty@ttyS0.service`);
}

/**
 * Write `img`: MBR + one ext4 partition (ROOT_UUID, ROOT_LABEL) of
 * `fsBytes` made by `mke2fs -d` from the tree at `dir`; sparse.
 */
export async function makeDiskImage(dir: string, img: string, fsBytes = FS_BYTES): Promise<void> {
  const fs = `${img}.fs`;
  await run("mke2fs", [
    "-q",
    "-F",
    "-t",
    "ext4",
    "-L",
    ROOT_LABEL,
    "-U",
    ROOT_UUID,
    "-d",
    dir,
    fs,
    `${Math.floor(fsBytes / 1024)}k`,
  ]);
  const tmp = `${img}.tmp`;
  const f = await Deno.open(tmp, { write: true, create: true, truncate: true });
  await f.write(mbr(Math.floor(fsBytes / 512)));
  await f.truncate(PART_OFFSET + fsBytes);
  f.close();
  await run("dd", [
    `if=${fs}`,
    `of=${tmp}`,
    "bs=1M",
    `seek=${PART_OFFSET >> 20}`,
    "conv=sparse,notrunc",
    "status=none",
  ]);
  await Deno.remove(fs);
  await Deno.rename(tmp, img);
}

export type InitramfsKind = "dracut" | "initramfs-tools";

/** Hash of the isboot build and the hook files, for caching an initramfs. */
async function inputsKey(isbootDir: string, kind: InitramfsKind, kernel: Kernel): Promise<string> {
  const parts: (string | Uint8Array)[] = [
    kind,
    kernel.kver,
    await Deno.readFile(`${isbootDir}/isboot.js`),
  ];
  parts.push(String((await Deno.stat(`${isbootDir}/deno`)).size));
  for (
    const f of [
      "initramfs-hook/dracut/95isboot/module-setup.sh",
      "initramfs-hook/dracut/95isboot/isboot-parse.sh",
      "initramfs-hook/dracut/95isboot/isboot-run.sh",
      "initramfs-hook/initramfs-tools/hooks/isboot",
      "initramfs-hook/initramfs-tools/scripts/local-top/isboot",
    ]
  ) parts.push(await Deno.readFile(`${ROOT}${f}`));
  return await sha256(parts);
}

/** How a real initramfs builder ended: exit status and what it printed. */
export interface BuilderResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Environment and extra mounts for {@link runMkinitramfs} and {@link runDracut}. */
export interface BuilderOptions {
  /** Variables for the builder; with `clearEnv` the only ones it gets. */
  env?: Record<string, string>;
  clearEnv?: boolean;
  /** `[from, to]` bind mounts made first in the private mount namespace (`to` must exist). */
  binds?: [string, string][];
}

/**
 * Run `cmd args` in a private mount namespace after the bind mounts `binds`,
 * so the host sees none of them.
 */
async function inPrivateMounts(
  binds: [string, string][],
  cmd: string,
  args: string[],
  opts: BuilderOptions,
): Promise<BuilderResult> {
  const script =
    binds.map((_, i) => `mount --bind "\${${2 * i + 1}}" "\${${2 * i + 2}}" && `).join("") +
    `shift ${2 * binds.length} && exec "$@"`;
  const o = await new Deno.Command("unshare", {
    args: [
      "--mount",
      "--propagation",
      "private",
      "sh",
      "-c",
      script,
      "sh",
      ...binds.flat(),
      cmd,
      ...args,
    ],
    env: opts.env,
    clearEnv: opts.clearEnv,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: o.code, stdout: dec.decode(o.stdout), stderr: dec.decode(o.stderr) };
}

/**
 * Write a private initramfs-tools CONFDIR at `conf`: initramfs.conf with
 * `MODULES=modules` and zstd, an empty conf.d. The caller adds hooks/ and
 * scripts/ (mkinitramfs runs CONFDIR/hooks after the system's hooks and
 * copies CONFDIR/scripts into the image).
 */
export async function initramfsToolsConf(conf: string, modules = "most"): Promise<void> {
  await Deno.mkdir(`${conf}/conf.d`, { recursive: true });
  await Deno.writeTextFile(
    `${conf}/initramfs.conf`,
    `MODULES=${modules}\nBUSYBOX=auto\nCOMPRESS=zstd\nCOMPRESSLEVEL=3\n`,
  );
}

/**
 * Real `mkinitramfs -d CONF -o OUT KVER` for the unpacked kernel, touching
 * neither /etc/initramfs-tools nor the host's kernels: mkinitramfs reads
 * /usr/lib/modules/KVER and /boot/config-KVER, so the kernel's are
 * bind-mounted over those in a private mount namespace (with `opts.binds`).
 */
export async function runMkinitramfs(
  kernel: Kernel,
  conf: string,
  out: string,
  opts: BuilderOptions = {},
): Promise<BuilderResult> {
  // The mount point must exist. An empty one made here stays: removing it
  // would detach the bind mount of a build running at the same time (the
  // kernel drops mounts on a removed directory in every namespace), and that
  // build would make an image without modules.
  if (!(await exists("/usr/lib/modules"))) await Deno.mkdir("/usr/lib/modules").catch(() => {});
  return await inPrivateMounts(
    [
      [`${kernel.root}/lib/modules`, "/usr/lib/modules"],
      [`${kernel.root}/boot`, "/boot"],
      ...(opts.binds ?? []),
    ],
    "mkinitramfs",
    ["-d", conf, "-o", out, kernel.kver],
    opts,
  );
}

/**
 * A private dracutbasedir under `work`: a copy of /usr/lib/dracut with the
 * 95isboot module from `moduleDir` linked in (the host's stays untouched).
 */
export async function dracutBaseDir(work: string, moduleDir: string): Promise<string> {
  const base = `${work}/dracut`;
  await run("cp", ["-a", "/usr/lib/dracut", base]);
  await Deno.symlink(moduleDir, `${base}/modules.d/95isboot`);
  return base;
}

/**
 * Real `dracut -a isboot` (no host-only) for the unpacked kernel with the
 * private `basedir` and an empty confdir under `work`, in a private mount
 * namespace (with `opts.binds`). Modules this boot has no use for are left
 * out; dracut's own iSCSI module is not installed here.
 */
export async function runDracut(
  kernel: Kernel,
  basedir: string,
  work: string,
  out: string,
  opts: BuilderOptions = {},
): Promise<BuilderResult> {
  await Deno.mkdir(`${work}/conf.d`, { recursive: true });
  return await inPrivateMounts(opts.binds ?? [], "dracut", [
    "--force",
    "--no-hostonly",
    "--kver",
    kernel.kver,
    "--kmoddir",
    `${kernel.root}/lib/modules/${kernel.kver}`,
    "--conf",
    "/dev/null",
    "--confdir",
    `${work}/conf.d`,
    "-a",
    "isboot",
    "-o",
    "crypt dm nvdimm lunmask resume virtiofs",
    "--compress",
    "zstd -3 -T0",
    out,
  ], { ...opts, env: { ...opts.env, dracutbasedir: basedir } });
}

function check(what: string, r: BuilderResult): void {
  if (r.code !== 0) {
    throw new Error(`${what}: exit ${r.code}: ${(r.stdout + r.stderr).trim().slice(-3000)}`);
  }
}

/**
 * Build an initramfs with real dracut or real mkinitramfs and our hooks from
 * the source tree, for the unpacked Debian kernel; ISBOOT_BIN names the
 * isboot in `isbootDir` (see {@link runMkinitramfs}, {@link runDracut}).
 */
export async function buildInitrd(
  kind: InitramfsKind,
  kernel: Kernel,
  isbootDir: string,
): Promise<string> {
  const key = await inputsKey(isbootDir, kind, kernel);
  const out = `${E2E_DIR}/initrd-${kind}-${key}.img`;
  if (await exists(out)) return out;
  const env = { ...Deno.env.toObject(), ISBOOT_BIN: `${isbootDir}/isboot` };
  const work = await Deno.makeTempDir({ dir: E2E_DIR, prefix: `${kind}-` });
  try {
    if (kind === "dracut") {
      const base = await dracutBaseDir(work, `${ROOT}initramfs-hook/dracut/95isboot`);
      check("dracut", await runDracut(kernel, base, work, `${out}.tmp`, { env }));
    } else {
      const conf = `${work}/conf`;
      await initramfsToolsConf(conf);
      for (const f of ["hooks/isboot", "scripts/local-top/isboot"]) {
        await Deno.mkdir(`${conf}/${f.replace(/\/[^/]*$/, "")}`, { recursive: true });
        await Deno.copyFile(`${ROOT}initramfs-hook/initramfs-tools/${f}`, `${conf}/${f}`);
        await Deno.chmod(`${conf}/${f}`, 0o755);
      }
      check("mkinitramfs", await runMkinitramfs(kernel, conf, `${out}.tmp`, { env }));
    }
    await Deno.rename(`${out}.tmp`, out);
    await pruneCache(`initrd-${kind}-`, ".img", out);
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
    await Deno.remove(`${out}.tmp`).catch(() => {});
  }
  return out;
}

/**
 * startNsTgtd, retried: a start can still fail when a random control number
 * or port collides with another tgtd on a busy machine.
 */
export async function startTgtd(ns: NetNs): Promise<Tgtd> {
  for (let i = 0;; i++) {
    try {
      return await startNsTgtd(ns);
    } catch (e) {
      if (i >= 11) throw e;
    }
  }
}

/**
 * End the iSCSI connection the guest has through a relay to tgtd's `port`
 * (a guestfwd's, or the DHCP boot's `busybox nc -e`): kill the relay, one
 * process a connection. Resolves with pkill's status: 0 when it ended one.
 */
export async function cutRelay(port: number): Promise<number> {
  const o = await new Deno.Command("pkill", {
    args: ["-f", `^/bin/busybox nc 127\\.0\\.0\\.1 ${port}$`],
  }).output();
  return o.code;
}

/** One boot to run. */
export interface BootCase {
  firmware: "bios" | "uefi";
  initramfs: InitramfsKind;
  chap: "none" | "chap" | "mutual";
  /** Extra kernel command line. */
  append?: string;
  /** The root to boot (default: the stock minimal root). */
  root?: RootVariant;
  /**
   * A second NIC on its own network (10.0.3.0/24) reaching the same target
   * at 10.0.3.100: iPXE brings up both and hooks the disk over both portals
   * (two targets in the iBFT, one a NIC). The guest can ask the host to
   * pull a NIC's cable: `ISBOOT-VM: link=n0:off` (or `n1`, `on`).
   */
  secondPath?: boolean;
  /**
   * More LUNs of the same target (2, 3, ...), MiB each, filled with
   * {@link lunPattern} of their number.
   */
  extraLunsMiB?: number[];
  /** Guest RAM, MiB (default 2048). */
  memoryMiB?: number;
  /**
   * A blank local disk of this many MiB on virtio-blk (the guest's
   * `/dev/vda`), beside the network boot: swap or scratch space that does
   * not go through isboot.
   */
  localDiskMiB?: number;
}

/** The content of the extra LUN `lun` of {@link BootCase.extraLunsMiB}. */
export function lunPattern(lun: number, bytes: number): Uint8Array {
  return pattern(bytes, lun * 7919);
}

/** The second path's portal (see {@link BootCase.secondPath}). */
export const SECOND_PORTAL = "10.0.3.100";

const CHAP = {
  user: "isboot-init",
  secret: "e2e-init-secret1",
  mutualUser: "isboot-tgt",
  mutualSecret: "e2e-tgt-secret99",
};

/** The iPXE script: dhcp, initiator name, CHAP, sanhook (writes the iBFT), kernel, initrd, boot. */
export function ipxeScript(c: BootCase): string {
  const cmdline = [
    "initrd=initrd.img",
    `root=UUID=${ROOT_UUID}`,
    "rw",
    "console=ttyS0,115200",
    "panic=-1",
    "rd.iscsi.firmware",
    "ip=ibft",
    "isboot.timeout=120",
    "rd.shell=0",
    "rd.emergency=poweroff",
    "systemd.show_status=1",
    c.append ?? "",
  ].join(" ").trim();
  return [
    "#!ipxe",
    ...(c.secondPath ? ["dhcp net0 || goto failed", "dhcp net1 || goto failed"] : ["dhcp"]),
    `set initiator-iqn ${INITIATOR_IQN}`,
    ...(c.chap !== "none" ? [`set username ${CHAP.user}`, `set password ${CHAP.secret}`] : []),
    ...(c.chap === "mutual"
      ? [`set reverse-username ${CHAP.mutualUser}`, `set reverse-password ${CHAP.mutualSecret}`]
      : []),
    `sanhook --drive 0x80 iscsi:10.0.2.100::3260:1:${TARGET_IQN}${
      c.secondPath ? ` iscsi:${SECOND_PORTAL}::3260:1:${TARGET_IQN}` : ""
    } || goto failed`,
    `kernel http://10.0.2.101/vmlinuz ${cmdline} || goto failed`,
    "initrd http://10.0.2.101/initrd.img || goto failed",
    "boot || goto failed",
    ":failed",
    "echo ISBOOT-VM-RESULT: FAIL iPXE could not boot",
    "poweroff",
    "",
  ].join("\n");
}

/** What a boot produced, with the host-side checks. */
/**
 * One QMP command to the qemu listening on `socket`: the greeting,
 * qmp_capabilities, then `execute` with `args`; resolves with the reply's
 * JSON text (an error reply too: the caller asserts on it).
 */
export async function qmp(
  socket: string,
  execute: string,
  args: Record<string, unknown> = {},
): Promise<string> {
  const conn = await Deno.connect({ transport: "unix", path: socket });
  try {
    const lines = conn.readable.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    const line = async (): Promise<string> => {
      while (!buf.includes("\n")) {
        const r = await lines.read();
        if (r.done) throw new Error(`QMP: closed; got ${buf}`);
        buf += r.value;
      }
      const i = buf.indexOf("\n");
      const out = buf.slice(0, i).replace(/\r$/, ""); // QMP ends its lines with CRLF
      buf = buf.slice(i + 1);
      return out;
    };
    /** The next reply (return or error), skipping events. */
    const reply = async (): Promise<string> => {
      for (;;) {
        const l = await line();
        if (!l.includes('"event"')) return l;
      }
    };
    const send = (o: unknown) => conn.write(new TextEncoder().encode(JSON.stringify(o) + "\n"));
    await line(); // greeting
    await send({ execute: "qmp_capabilities" });
    await reply();
    await send({ execute, arguments: args });
    return await reply();
  } finally {
    conn.close();
  }
}

export interface BootOutcome {
  vm: VmResult;
  marker: string | null;
  fsck: { code: number; output: string };
  /** Kernel start -> systemd in the real root (switch_root), ms. */
  switchRootMs: number | null;
  /** isboot's own start -> /dev/nbd0 ready, ms. */
  isbootReadyMs: number | null;
  /** pkill's exit code for each forced reconnect the guest asked for (0: a relay was cut). */
  cutCodes: number[];
  /** QMP's reply to each cable pull or plug the guest asked for (`{"return": {}}` when done). */
  linkReplies: string[];
}

/**
 * Boot `c` and check it: tgtd + httpd + qemu in a fresh netns, then the
 * marker and e2fsck on the image. Everything started is stopped; the run
 * directory is removed unless ISBOOT_E2E_KEEP=1.
 */
export async function bootOnce(
  c: BootCase,
  opts: { onLine?: (l: string) => void; timeoutMs?: number } = {},
): Promise<BootOutcome> {
  const kernel = await ensureKernel();
  const isboot = await isbootBuildDir();
  await Deno.mkdir(E2E_DIR, { recursive: true });
  const dir = await Deno.makeTempDir({ dir: E2E_DIR, prefix: `run-${c.firmware}-${c.initramfs}-` });
  try {
    const base = await ensureBaseImage(c.root, isboot.dir);
    const initrd = await buildInitrd(c.initramfs, kernel, isboot.dir);
    const disk = `${dir}/disk.img`;
    await run("cp", ["--sparse=always", base, disk]);
    return await bootDisk(c, { vmlinuz: kernel.vmlinuz, initrd, disk, dir }, opts);
  } finally {
    await isboot.cleanup();
    if (Deno.env.get("ISBOOT_E2E_KEEP") !== "1") {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  }
}

/** What {@link bootDisk} boots: kernel and initramfs served to iPXE, the disk tgtd exports. */
export interface BootFiles {
  vmlinuz: string;
  initrd: string;
  /** The partitioned disk image (see {@link makeDiskImage}); the boot writes to it. */
  disk: string;
  /** Where the serial log and the HTTP root go (the caller removes it). */
  dir: string;
}

/**
 * Boot `c` from `files` and check it: tgtd exporting its disk as LUN 1,
 * httpd serving its kernel and initramfs to iPXE, qemu, all in a fresh netns;
 * then the marker and e2fsck on the disk. Everything started is stopped.
 */
export async function bootDisk(
  c: BootCase,
  files: BootFiles,
  opts: { onLine?: (l: string) => void; timeoutMs?: number } = {},
): Promise<BootOutcome> {
  const { vmlinuz, initrd, disk, dir } = files;
  const ns = await NetNs.create();
  let tgtd: Tgtd | undefined;
  try {
    const www = `${dir}/www`;
    await Deno.mkdir(www);
    await Deno.link(vmlinuz, `${www}/vmlinuz`).catch(() =>
      Deno.copyFile(vmlinuz, `${www}/vmlinuz`)
    );
    await Deno.link(initrd, `${www}/initrd.img`).catch(() =>
      Deno.copyFile(initrd, `${www}/initrd.img`)
    );
    await Deno.writeTextFile(`${www}/boot.ipxe`, ipxeScript(c));

    tgtd = await startTgtd(ns);
    const tid = await tgtd.createTarget(TARGET_IQN);
    await tgtd.addLun(tid, { lun: 1, path: disk });
    for (const [i, mib] of (c.extraLunsMiB ?? []).entries()) {
      const lun = 2 + i;
      const path = `${dir}/lun${lun}.img`;
      await Deno.writeFile(path, lunPattern(lun, mib << 20));
      await tgtd.addLun(tid, { lun, path });
    }
    const localDisk = `${dir}/local.img`;
    if (c.localDiskMiB) {
      const f = await Deno.open(localDisk, { write: true, create: true, truncate: true });
      await f.truncate(c.localDiskMiB << 20);
      f.close();
    }
    if (c.chap !== "none") {
      await tgtd.addChap(
        tid,
        { user: CHAP.user, secret: CHAP.secret },
        c.chap === "mutual" ? { user: CHAP.mutualUser, secret: CHAP.mutualSecret } : undefined,
      );
    }
    const netdev = [
      "user,id=n0,restrict=on",
      "bootfile=http://10.0.2.101/boot.ipxe",
      `guestfwd=tcp:10.0.2.100:3260-cmd:/bin/busybox nc 127.0.0.1 ${tgtd.port}`,
      `guestfwd=tcp:10.0.2.101:80-cmd:/bin/busybox httpd -i -h ${www}`,
    ].join(",");
    const cuts: Promise<number>[] = [];
    const links: Promise<string>[] = [];
    const qmpSocket = `${dir}/qmp.sock`;
    const vm = await runVm({
      // iPXE loads the kernel over HTTP (directBoot): runVm does not use this one.
      kernel: { kver: "", vmlinuz, root: "" },
      initrd,
      netns: ns,
      directBoot: true,
      nic: false,
      memoryMiB: c.memoryMiB ?? 2048,
      timeoutMs: opts.timeoutMs ?? 480_000,
      serialLog: `${dir}/serial.log`,
      onLine: (l) => {
        // The check script asks for a forced reconnect: end the iSCSI
        // connection by killing its guestfwd relay (qemu starts one a connection).
        if (l.includes("ISBOOT-VM: reconnect=now") && tgtd) cuts.push(cutRelay(tgtd.port));
        // A cable pull the guest asks for: qemu's set_link on that NIC.
        const link = /ISBOOT-VM: link=(n[01]):(on|off)\b/.exec(l);
        if (link) links.push(qmp(qmpSocket, "set_link", { name: link[1], up: link[2] === "on" }));
        opts.onLine?.(l);
      },
      qemuArgs: [
        ...(c.firmware === "uefi" ? ["-bios", "/usr/share/ovmf/OVMF.fd"] : []),
        "-qmp",
        `unix:${qmpSocket},server=on,wait=off`,
        "-netdev",
        netdev,
        "-device",
        "virtio-net-pci,netdev=n0,bootindex=1",
        ...(c.localDiskMiB
          ? [
            "-drive",
            `file=${localDisk},if=none,id=local,format=raw,cache=unsafe`,
            "-device",
            "virtio-blk-pci,drive=local",
          ]
          : []),
        ...(c.secondPath
          ? [
            "-netdev",
            [
              "user,id=n1,restrict=on,net=10.0.3.0/24",
              `guestfwd=tcp:${SECOND_PORTAL}:3260-cmd:/bin/busybox nc 127.0.0.1 ${tgtd.port}`,
            ].join(","),
            "-device",
            "virtio-net-pci,netdev=n1",
          ]
          : []),
      ],
    });
    const linkReplies = await Promise.all(links);
    await tgtd.stop();
    tgtd = undefined;
    // pkill's status: 0 when it ended a relay, 1 when none matched.
    const cutCodes = await Promise.all(cuts);
    const img = `${disk}?offset=${PART_OFFSET}`;
    let marker: string | null = null;
    try {
      const out = await run("debugfs", ["-R", "cat /isboot-e2e.marker", img]);
      marker = out.includes("isboot e2e marker") ? out : null;
    } catch { /* no marker */ }
    const f = await new Deno.Command("e2fsck", {
      args: ["-fn", img],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const fsck = { code: f.code, output: dec.decode(f.stdout) + dec.decode(f.stderr) };
    const us = Number(vm.kv.get("userspace_us"));
    const ready = Number(vm.kv.get("isboot_ready_ms"));
    return {
      vm,
      marker,
      fsck,
      switchRootMs: Number.isFinite(us) && us > 0 ? us / 1000 : null,
      isbootReadyMs: Number.isFinite(ready) && ready > 0 ? ready : null,
      cutCodes,
      linkReplies,
    };
  } finally {
    await tgtd?.stop();
    await ns.delete();
  }
}
