/**
 * `make bench-boot`: boot time of isboot against Debian's open-iscsi, in the
 * e2e harness (tests/e2e/lib.ts): the same Debian 12 root (systemd, Debian's
 * kernel, initramfs-tools, open-iscsi) on the same tgtd LUN, BIOS + iPXE
 * sanhook writing the iBFT, qemu TCG in a private netns.
 *
 * - open-iscsi: /etc/iscsi/iscsi.initramfs with ISCSI_AUTO=true and
 *   `update-initramfs -u` in the root (its local-top script runs `iscsistart
 *   -N`, `-f` and `-b` from the iBFT). Kernel command line `ip=dhcp`: the
 *   script runs initramfs-tools' configure_networking after iscsistart, and
 *   `ip=ibft` would reach klibc ipconfig as a device name; with `ip=off` the
 *   script stops where it sources /run/net-*.conf, which iPXE's iBFT (origin
 *   DHCP) leaves unwritten.
 * - isboot: the user's install steps (as tests/e2e/user_path_test.ts): the
 *   source tree bind-mounted in the root, `make install`, `update-initramfs
 *   -u`. Kernel command line `ip=ibft` (the e2e one).
 *
 * Each is booted N times (BENCH_BOOT_N, default 3), alternating. Stages come
 * from the guest's kernel log (printk times), systemd's
 * UserspaceTimestampMonotonic, /proc/uptime at the check unit, and the host
 * clock for what iPXE does before the kernel prints. The check unit of this
 * bench also reads the `@isboot` daemon's memory and CPU time and counts its
 * context switches over 10 s once the root is up.
 *
 * BENCH_BOOT_VARIANT="WORDS" adds a third series in the same run: the isboot
 * image booted with WORDS added to its kernel command line (e.g.
 * `isboot.poll_us=0`), reported against the plain isboot boots.
 *
 * Output: docs/bench/boot.json, docs/bench/boot.md (BENCH_BOOT_OUT to write
 * elsewhere). Build products are cached in build/bench-boot keyed by inputs.
 *
 * Usage: deno run -A tests/e2e/boot_bench.ts [--render build/bench-boot/measured.json]
 */
import { ROOT } from "../helpers/cli.ts";
import { chroot } from "../helpers/chroot.ts";
import { exists } from "../helpers/fs.ts";
import {
  type BootCase,
  bootDisk,
  ensureRootfs,
  KERNEL_PACKAGES,
  makeDiskImage,
  prepareRootDir,
} from "./lib.ts";

const dec = new TextDecoder();
const WORK = `${ROOT}build/bench-boot`;
const N = Number(Deno.env.get("BENCH_BOOT_N") ?? "3");
const OUT = Deno.env.get("BENCH_BOOT_OUT") ?? `${ROOT}docs/bench`;
/** Kernel command line words of the optional third series (see the module doc). */
const VARIANT = (Deno.env.get("BENCH_BOOT_VARIANT") ?? "").trim();
/** The zstd level mkinitramfs uses by default (COMPRESS=zstd, no COMPRESSLEVEL). */
const ZSTD_LEVEL = 9;

async function ok(cmd: string, args: string[], cwd?: string): Promise<string> {
  const o = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  const out = dec.decode(o.stdout) + dec.decode(o.stderr);
  if (!o.success) throw new Error(`${cmd} ${args.join(" ")}: exit ${o.code}: ${out.slice(-3000)}`);
  return out;
}

async function inRoot(root: string, script: string, binds: [string, string][] = []) {
  const r = await chroot(root, script, { binds });
  if (r.code !== 0) {
    throw new Error(`in the root: ${script}: exit ${r.code}:\n${r.out.slice(-4000)}`);
  }
  return r.out;
}

/**
 * The check unit's script for this bench (replaces the e2e one): times,
 * the daemon's memory and CPU, its context switches (all threads) over 10 s
 * of an idle root, then poweroff.
 */
const BENCH_CHECK = `#!/bin/sh
say() { echo "ISBOOT-VM: $*" > /dev/ttyS0; }
say root_up_s=$(cut -d' ' -f1 /proc/uptime)
say userspace_us=$(systemctl show -P UserspaceTimestampMonotonic)
say root=$(findmnt -no SOURCE /)
pid=$(pgrep -f '^@isboot' | head -1)
if [ -n "$pid" ]; then
  for k in VmRSS RssAnon RssFile VmLck Threads; do
    say d_$k=$(awk -v k="$k:" '$1 == k { print $2 }' /proc/$pid/status)
  done
  say d_cpu_ticks=$(awk '{ print $14 + $15 }' /proc/$pid/stat)
  say d_clk_tck=$(getconf CLK_TCK)
  sw() { cat /proc/$pid/task/*/status | awk '/^(voluntary|nonvoluntary)_ctxt_switches/ { n += $2 } END { print n }'; }
  # Per thread (name:switches), and the root disk's completed requests: was the root idle?
  per() { for t in /proc/$pid/task/*; do echo "$(cat $t/comm | tr -d ' '):$(awk '/ctxt_switches/ { n += $2 } END { print n }' $t/status)"; done | tr '\n' ' '; }
  ios() { awk '{ print $1 + $5 }' /sys/block/nbd0/stat 2> /dev/null || echo 0; }
  a=$(sw); pa=$(per); ia=$(ios); t0=$(cut -d' ' -f1 /proc/uptime)
  sleep 10
  b=$(sw); pb=$(per); ib=$(ios); t1=$(cut -d' ' -f1 /proc/uptime)
  say d_idle_switches=$((b - a))
  say d_idle_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
  say d_idle_ios=$((ib - ia))
  say idle_threads=before $pa after $pb
fi
echo "ISBOOT-VM-RESULT: PASS" > /dev/ttyS0
systemctl poweroff --no-block
`;

type Kind = "open-iscsi" | "isboot";
/** A series of boots: an image, or the isboot image with BENCH_BOOT_VARIANT. */
type Series = Kind | "variant";

interface Image {
  kind: Kind;
  dir: string;
  vmlinuz: string;
  initrd: string;
  disk: string;
  /** The root's initrd before either change (Debian's stock one, same packages). */
  stockInitrd: string;
}

async function sha(parts: (string | Uint8Array)[]): Promise<string> {
  const enc = new TextEncoder();
  const bufs = parts.map((p) => (typeof p === "string" ? enc.encode(p) : p));
  const all = new Uint8Array(bufs.reduce((n, b) => n + b.length, 0));
  let o = 0;
  for (const b of bufs) {
    all.set(b, o);
    o += b.length;
  }
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
  return Array.from(h.slice(0, 8), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Build (or reuse) the kernel, initramfs and pristine disk of `kind`. */
async function buildImage(kind: Kind, tar: string): Promise<Image> {
  const inputs: (string | Uint8Array)[] = [kind, BENCH_CHECK, tar];
  if (kind === "isboot") {
    inputs.push(await Deno.readFile(`${ROOT}dist/isboot.js`).catch(() => "binary"));
    inputs.push(await Deno.readFile(`${ROOT}dist/isboot`));
    for (const f of ["hooks/isboot", "scripts/local-top/isboot"]) {
      inputs.push(await Deno.readFile(`${ROOT}initramfs-hook/initramfs-tools/${f}`));
    }
  }
  const dir = `${WORK}/${kind}-${await sha(inputs)}`;
  const img: Image = {
    kind,
    dir,
    vmlinuz: `${dir}/vmlinuz`,
    initrd: `${dir}/initrd.img`,
    disk: `${dir}/disk.img`,
    stockInitrd: `${dir}/initrd.stock.img`,
  };
  if (await exists(`${dir}/done`)) return img;
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  await Deno.mkdir(dir, { recursive: true });
  const root = `${dir}/root`;
  await Deno.mkdir(root);
  await ok("tar", ["-C", root, "--numeric-owner", "-xf", tar]);
  await prepareRootDir(root);
  await Deno.writeTextFile(`${root}/usr/local/sbin/isboot-e2e`, BENCH_CHECK, { mode: 0o755 });
  const kver = [...Deno.readDirSync(`${root}/lib/modules`)].map((e) => e.name)[0];
  await Deno.copyFile(`${root}/boot/initrd.img-${kver}`, img.stockInitrd);
  if (kind === "open-iscsi") {
    await Deno.writeTextFile(`${root}/etc/iscsi/iscsi.initramfs`, "ISCSI_AUTO=true\n");
    await inRoot(root, "update-initramfs -u");
  } else {
    const dl = `${dir}/make-deb`;
    await Deno.mkdir(dl);
    await ok("apt-get", ["download", "-q", "make"], dl);
    const makeDeb = [...Deno.readDirSync(dl)].find((e) => e.name.endsWith(".deb"))!.name;
    await Deno.copyFile(`${dl}/${makeDeb}`, `${root}/root/${makeDeb}`);
    await inRoot(root, `dpkg -i ./${makeDeb} && rm ./${makeDeb}`);
    await Deno.mkdir(`${root}/root/isboot`);
    // A worktree's .tools and node_modules may be links out of the tree: the
    // same paths inside the root, so `make install` finds the pinned deno.
    const binds: [string, string][] = [[ROOT, "/root/isboot"]];
    for (const l of [".tools", "node_modules"]) {
      const st = await Deno.lstat(`${ROOT}${l}`).catch(() => null);
      if (!st?.isSymlink) continue;
      const to = await Deno.realPath(`${ROOT}${l}`);
      await Deno.mkdir(`${root}${to}`, { recursive: true });
      binds.push([to, to]);
    }
    await inRoot(root, "cd /root/isboot && make install && update-initramfs -u", binds);
    await Deno.copyFile(`${root}/usr/local/lib/isboot/deno`, `${dir}/deno`).catch(() =>
      Deno.copyFile(`${root}/usr/local/bin/isboot`, `${dir}/deno`)
    );
  }
  await Deno.copyFile(`${root}/boot/vmlinuz-${kver}`, img.vmlinuz);
  await Deno.copyFile(`${root}/boot/initrd.img-${kver}`, img.initrd);
  const used = Number((await ok("du", ["-sb", root])).split("\t")[0]);
  const fsBytes = Math.ceil((used * 1.3 + (384 << 20)) / (1 << 20)) * (1 << 20);
  await makeDiskImage(root, img.disk, fsBytes);
  await Deno.remove(root, { recursive: true });
  await Deno.writeTextFile(`${dir}/done`, "");
  return img;
}

/** Unpacked size of an initramfs (all its cpio archives), bytes. */
async function unpackedBytes(initrd: string): Promise<number> {
  const d = await Deno.makeTempDir({ dir: WORK, prefix: "unpack-" });
  try {
    await ok("unmkinitramfs", [initrd, d]);
    return Number((await ok("du", ["-sb", d])).split("\t")[0]);
  } finally {
    await Deno.remove(d, { recursive: true }).catch(() => {});
  }
}

/** One boot's stages, seconds since the kernel started (host: since qemu started). */
interface Boot {
  kind: Series;
  run: number;
  ok: boolean;
  reason: string;
  /** Host clock: qemu start -> the kernel's first line on the serial console. */
  ipxeHostS: number | null;
  initS: number | null;
  /**
   * The iSCSI step of the initramfs starts: open-iscsi's local-top script
   * loads iscsi_ibft first ("iBFT detected"); isboot's start is its device
   * ready time less its own split.
   */
  scriptS?: number | null;
  deviceS: number | null;
  switchRootS: number | null;
  rootUpS: number | null;
  poweroffS: number | null;
  vmHostS: number;
  split: { startup: number; network: number; login: number; attach: number } | null;
  daemon: Record<string, number> | null;
  /** The daemon's threads (name:context switches) before and after the idle 10 s. */
  idleThreads?: string;
}

function kernelTime(serial: string, re: RegExp): number | null {
  for (const l of serial.split("\n")) {
    // Not only at the start of a line: a script's "Begin: ... " may precede the kernel's.
    const m = /\[\s*(\d+\.\d+)\]\s(.*)$/.exec(l);
    if (m && re.test(m[2])) return Number(m[1]);
  }
  return null;
}

async function bootOne(img: Image, run: number, series: Series = img.kind): Promise<Boot> {
  const dir = await Deno.makeTempDir({ dir: WORK, prefix: `run-${series}-` });
  try {
    const disk = `${dir}/disk.img`;
    await ok("cp", ["--sparse=always", img.disk, disk]);
    const c: BootCase = {
      firmware: "bios",
      initramfs: "initramfs-tools",
      chap: "none",
      // The last ip= wins in initramfs-tools' parsing of /proc/cmdline.
      append: img.kind === "open-iscsi" ? "ip=dhcp" : series === "variant" ? VARIANT : "",
    };
    const t0 = performance.now();
    let firstKernel: number | null = null;
    const r = await bootDisk(c, { vmlinuz: img.vmlinuz, initrd: img.initrd, disk, dir }, {
      timeoutMs: 600_000,
      onLine: (l) => {
        if (firstKernel === null && /^\[\s*\d+\.\d+\]/.test(l)) firstKernel = performance.now();
      },
    });
    const s = r.vm.serial;
    const kv = r.vm.kv;
    const num = (k: string) => (kv.has(k) && kv.get(k) !== "" ? Number(kv.get(k)) : null);
    const sp =
      /isboot: time: start-up ([\d.]+) s, network ([\d.]+) s, login ([\d.]+) s, attach \+ partition scan ([\d.]+) s/
        .exec(s);
    const daemon: Record<string, number> = {};
    for (const [k, v] of kv) if (k.startsWith("d_") && v !== "") daemon[k.slice(2)] = Number(v);
    const us = num("userspace_us");
    const root = kv.get("root") ?? "";
    const okBoot = r.vm.result === "PASS" && /^\/dev\/(nbd0p1|sd[a-z]1)$/.test(root);
    return {
      kind: series,
      run,
      ok: okBoot,
      reason: okBoot ? "" : `${r.vm.timedOut ? "timed out; " : ""}root=${root} ${r.vm.reason}`,
      ipxeHostS: firstKernel === null ? null : (firstKernel - t0) / 1000,
      initS: kernelTime(s, /Run \/init as init process/),
      scriptS: img.kind === "open-iscsi" ? kernelTime(s, /iBFT detected/) : null,
      deviceS: kernelTime(s, /^\s*(nbd0: p1|sd[a-z]: sd[a-z]1)\b/),
      switchRootS: us && us > 0 ? us / 1e6 : null,
      rootUpS: num("root_up_s"),
      poweroffS: kernelTime(s, /reboot: Power down/),
      vmHostS: r.vm.durationMs / 1000,
      split: sp
        ? {
          startup: Number(sp[1]),
          network: Number(sp[2]),
          login: Number(sp[3]),
          attach: Number(sp[4]),
        }
        : null,
      daemon: Object.keys(daemon).length ? daemon : null,
      idleThreads: kv.get("idle_threads") ?? "",
    };
  } finally {
    // The serial log of a failed boot stays for a look.
    const serial = `${dir}/serial.log`;
    if (await exists(serial)) await Deno.copyFile(serial, `${WORK}/last-${series}.serial.log`);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

function median(xs: (number | null | undefined)[]): number | null {
  const v = xs.filter((x): x is number => typeof x === "number" && Number.isFinite(x)).sort((
    a,
    b,
  ) => a - b);
  if (!v.length) return null;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

const f2 = (x: number | null, d = 2) => (x === null ? "–" : x.toFixed(d));
const ratio = (a: number | null, b: number | null) =>
  a === null || b === null || b === 0 ? "–" : `${(a / b).toFixed(2)}×`;
const mib = (b: number) => (b / 2 ** 20).toFixed(1);

/** Paired horizontal bars (open-iscsi, isboot) per guest-uptime stage, seconds. */
function svgChart(
  rows: { stage: string; openIscsi: number | null; isboot: number | null }[],
  title: string,
): string {
  const max = Math.max(1, ...rows.flatMap((r) => [r.openIscsi ?? 0, r.isboot ?? 0]));
  const W = 760, left = 250, barW = W - left - 70, rowH = 44;
  const esc = (t: string) => t.replace(/&/g, "&amp;").replace(/</g, "&lt;");
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${
      60 + rows.length * rowH
    }" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="20" font-size="14">${esc(title)}</text>`,
    `<rect x="${left}" y="30" width="12" height="10" fill="#888"/>` +
    `<text x="${left + 16}" y="39">open-iscsi</text>` +
    `<rect x="${left + 100}" y="30" width="12" height="10" fill="#2a7"/>` +
    `<text x="${left + 116}" y="39">isboot</text>`,
  ];
  rows.forEach((r, i) => {
    const y = 50 + i * rowH;
    out.push(`<text x="10" y="${y + 20}">${esc(r.stage.replace(/ \(.*$/, ""))}</text>`);
    for (const [j, v, color] of [[0, r.openIscsi, "#888"], [1, r.isboot, "#2a7"]] as const) {
      if (v === null) continue;
      const w = Math.max(1, (v / max) * barW);
      out.push(
        `<rect x="${left}" y="${y + 4 + j * 18}" width="${
          w.toFixed(1)
        }" height="15" fill="${color}"/>`,
        `<text x="${(left + w + 4).toFixed(1)}" y="${y + 16 + j * 18}">${v.toFixed(2)} s</text>`,
      );
    }
  });
  out.push("</svg>", "");
  return out.join("\n");
}

/**
 * "before A:1 B:2 after A:4 B:2" (thread name:context switches; a name may
 * repeat) as "A +3, B +0", threads in /proc order.
 */
function threadDeltas(s: string): string {
  const m = /^before (.*) after (.*)$/.exec(s.trim());
  if (!m) return "–";
  const parse = (x: string) => x.trim().split(/\s+/).filter(Boolean).map((t) => t.split(":"));
  const a = parse(m[1]), b = parse(m[2]);
  return b.map(([name, n], i) => {
    const before = a[i]?.[0] === name ? Number(a[i][1]) : 0;
    return `${name} +${Number(n) - before}`;
  }).join(", ");
}

/** What a run measured, before any summary (build/bench-boot/measured.json). */
interface Measured {
  sizes: Record<string, { compressed: number; unpacked: number }>;
  denoBytes: number;
  denoCompressed: number;
  boots: Boot[];
  runs: number;
  loadavg: string;
  /** BENCH_BOOT_VARIANT of the run ("" or absent: none). */
  variant?: string;
}

async function measure(): Promise<Measured> {
  if (!(await exists(`${ROOT}dist/isboot`))) throw new Error("build dist/isboot first (make)");
  await Deno.mkdir(WORK, { recursive: true });
  console.log("building the root (Debian kernel, initramfs-tools, open-iscsi) ...");
  const tar = await ensureRootfs([...KERNEL_PACKAGES, "open-iscsi"]);
  const images: Record<Kind, Image> = {
    "open-iscsi": await buildImage("open-iscsi", tar),
    isboot: await buildImage("isboot", tar),
  };
  const sizes: Record<string, { compressed: number; unpacked: number }> = {};
  for (
    const [name, path] of [
      ["stock", images.isboot.stockInitrd],
      ["open-iscsi", images["open-iscsi"].initrd],
      ["isboot", images.isboot.initrd],
    ]
  ) {
    sizes[name] = { compressed: (await Deno.stat(path)).size, unpacked: await unpackedBytes(path) };
  }
  const denoBin = `${images.isboot.dir}/deno`;
  const denoCompressed = Number(
    (await ok("sh", ["-c", `zstd -q -${ZSTD_LEVEL} -T0 -c '${denoBin}' | wc -c`])).trim(),
  );
  const denoBytes = (await Deno.stat(denoBin)).size;
  console.log(`initrd sizes: ${JSON.stringify(sizes)}; deno ${denoBytes} -> ${denoCompressed}`);

  const boots: Boot[] = [];
  for (let i = 0; i < N; i++) {
    for (const kind of ["open-iscsi", "isboot"] as Kind[]) {
      const b = await bootOne(images[kind], i + 1);
      boots.push(b);
      console.log(`${kind} #${i + 1}: ${JSON.stringify(b)}`);
    }
    if (VARIANT) {
      const b = await bootOne(images.isboot, i + 1, "variant");
      boots.push(b);
      console.log(`isboot ${VARIANT} #${i + 1}: ${JSON.stringify(b)}`);
    }
  }
  const m: Measured = {
    sizes,
    denoBytes,
    denoCompressed,
    boots,
    runs: N,
    loadavg: (await Deno.readTextFile("/proc/loadavg")).trim(),
    variant: VARIANT,
  };
  await Deno.writeTextFile(`${WORK}/measured.json`, JSON.stringify(m, null, 2) + "\n");
  return m;
}

/** Summaries from `m`: docs/bench/boot.json, boot.md, boot.svg. */
async function report(m: Measured): Promise<void> {
  const { sizes, denoBytes, denoCompressed, boots } = m;
  const N = m.runs;
  const good = (k: Series) => boots.filter((b) => b.kind === k && b.ok);
  const med = (k: Series, f: (b: Boot) => number | null | undefined) => median(good(k).map(f));
  const stages: [string, (b: Boot) => number | null | undefined][] = [
    [
      "kernel + initrd fetched by iPXE (host clock, qemu start → first kernel line)",
      (b) => b.ipxeHostS,
    ],
    ["/init starts (kernel log)", (b) => b.initS],
    [
      "iSCSI step starts (open-iscsi: iscsi_ibft loaded; isboot: its first JS line, ready − own split)",
      (b) =>
        b.kind !== "open-iscsi"
          ? (b.deviceS !== null && b.split
            ? b.deviceS - b.split.startup - b.split.network - b.split.login - b.split.attach
            : null)
          : b.scriptS,
    ],
    ["login done, device ready (kernel log: partition scan of sda / nbd0)", (b) => b.deviceS],
    ["switch_root (systemd UserspaceTimestampMonotonic)", (b) => b.switchRootS],
    ["root up (check unit's /proc/uptime)", (b) => b.rootUpS],
    ["poweroff (kernel log; isboot's after its daemon's 10 s idle sampling)", (b) => b.poweroffS],
    ["whole VM run (host clock; isboot's with the 10 s sampling)", (b) => b.vmHostS],
  ];
  const rows = stages.map(([name, f]) => {
    const o = med("open-iscsi", f);
    const s = med("isboot", f);
    return { stage: name, openIscsi: o, isboot: s, ratio: o && s ? s / o : null };
  });
  const split = {
    startup: med("isboot", (b) => b.split?.startup),
    network: med("isboot", (b) => b.split?.network),
    login: med("isboot", (b) => b.split?.login),
    attach: med("isboot", (b) => b.split?.attach),
  };
  const dkeys = ["VmRSS", "RssAnon", "RssFile", "VmLck", "Threads", "cpu_ticks", "clk_tck"];
  const daemon: Record<string, number | null> = {};
  for (const k of dkeys) daemon[k] = med("isboot", (b) => b.daemon?.[k]);
  const idleSwitches = med("isboot", (b) => b.daemon?.idle_switches);
  const idleS = med("isboot", (b) => b.daemon?.idle_s);
  const wakeups = idleSwitches !== null && idleS ? idleSwitches / idleS : null;
  const idleIos = med("isboot", (b) => b.daemon?.idle_ios);
  const threadLines = good("isboot").map((b) => `#${b.run}: ${threadDeltas(b.idleThreads ?? "")}`);

  // The third series (BENCH_BOOT_VARIANT), against the plain isboot boots.
  const cpuS = (k: Series) =>
    med(
      k,
      (b) => b.daemon?.cpu_ticks && b.daemon.clk_tck ? b.daemon.cpu_ticks / b.daemon.clk_tck : null,
    );
  const wakeS = (k: Series) =>
    med(k, (b) => b.daemon?.idle_s ? (b.daemon.idle_switches ?? NaN) / b.daemon.idle_s : null);
  const variantRows: [string, number | null, number | null][] = m.variant && good("variant").length
    ? [
      ...stages.map(([name, f]) =>
        [name, med("isboot", f), med("variant", f)] as [string, number | null, number | null]
      ),
      ["isboot's start-up (own split)", split.startup, med("variant", (b) => b.split?.startup)],
      ["daemon CPU time when the root is up (s)", cpuS("isboot"), cpuS("variant")],
      ["daemon context switches/s, root idle", wakeS("isboot"), wakeS("variant")],
    ]
    : [];
  const res = {
    meta: {
      date: new Date().toISOString(),
      runs: N,
      qemu: "TCG, 2048 MiB, BIOS + iPXE sanhook, virtio-net",
      loadavg: m.loadavg,
      note: "2-core host shared with other developers' VMs: absolute times are noisy",
    },
    sizes,
    deno: { bytes: denoBytes, zstdCompressed: denoCompressed, zstdLevel: ZSTD_LEVEL },
    rows,
    split,
    daemon,
    idle: { switches: idleSwitches, seconds: idleS, wakeupsPerS: wakeups },
    ...(variantRows.length
      ? {
        variant: {
          cmdline: m.variant,
          rows: variantRows.map(([stage, isboot, variant]) => ({ stage, isboot, variant })),
        },
      }
      : {}),
    boots,
  };
  await Deno.mkdir(OUT, { recursive: true });
  await Deno.writeTextFile(`${OUT}/boot.json`, JSON.stringify(res, null, 2) + "\n");
  await Deno.writeTextFile(
    `${OUT}/boot.svg`,
    svgChart(
      rows.filter((r) => !r.stage.startsWith("whole")),
      `isboot vs open-iscsi boot, ${res.meta.date.slice(0, 16)}Z: medians of ${N}, s`,
    ),
  );

  const o = (n: string) => rows.find((r) => r.stage.startsWith(n))!;
  const sw = o("switch_root");
  const ready = split.startup !== null
    ? split.startup + (split.network ?? 0) + (split.login ?? 0) + (split.attach ?? 0)
    : null;
  const added = sizes.isboot.compressed - sizes.stock.compressed;
  const anonMiB = daemon.RssAnon !== null ? daemon.RssAnon / 1024 : null;
  const met = (b: boolean | null) => (b === null ? "not measured" : b ? "met" : "NOT met");
  const targets = [
    [
      "switch_root ≤ 1.0× open-iscsi's (first milestone)",
      `${f2(sw.isboot)} s vs ${f2(sw.openIscsi)} s = ${ratio(sw.isboot, sw.openIscsi)}`,
      met(sw.ratio === null ? null : sw.ratio <= 1.0),
    ],
    [
      "switch_root ≤ 0.7× open-iscsi's",
      `${ratio(sw.isboot, sw.openIscsi)}`,
      met(sw.ratio === null ? null : sw.ratio <= 0.7),
    ],
    [
      "isboot start → /dev/nbd0 ready ≤ 1.5 s (TCG)",
      `${f2(ready)} s`,
      met(ready === null ? null : ready <= 1.5),
    ],
    [
      "Deno start-up part ≤ 0.8 s",
      `${f2(split.startup)} s`,
      met(split.startup === null ? null : split.startup <= 0.8),
    ],
    [
      "image adds ≤ the deno binary's compressed size",
      `+${mib(added)} MiB over the stock initrd; deno zstd -${ZSTD_LEVEL}: ${
        mib(denoCompressed)
      } MiB (${(added / denoCompressed).toFixed(2)}×)`,
      met(added <= denoCompressed),
    ],
    [
      "daemon idle ≤ 1 wake-up/s",
      `${f2(wakeups)} context switches/s (all threads, ${f2(idleS, 1)} s)`,
      met(wakeups === null ? null : wakeups <= 1),
    ],
    [
      "daemon anon ≤ 16 MiB",
      `RssAnon ${f2(anonMiB, 1)} MiB`,
      met(anonMiB === null ? null : anonMiB <= 16),
    ],
  ];
  const failed = boots.filter((b) => !b.ok);
  const md = [
    `<!-- written by tests/e2e/boot_bench.ts ${res.meta.date} -->`,
    `Medians of ${N} boots each (${good("open-iscsi").length} open-iscsi, ${
      good("isboot").length
    } isboot succeeded), alternating; seconds of guest uptime unless noted. ` +
    `Host load average at the end: ${res.meta.loadavg}.`,
    "",
    "| stage | open-iscsi | isboot | isboot / open-iscsi |",
    "|---|---:|---:|---:|",
    ...rows.map((r) =>
      `| ${r.stage} | ${f2(r.openIscsi)} | ${f2(r.isboot)} | ${ratio(r.isboot, r.openIscsi)} |`
    ),
    "",
    "| initramfs | compressed MiB | unpacked MiB |",
    "|---|---:|---:|",
    ...Object.entries(sizes).map(([k, v]) =>
      `| ${k === "stock" ? "Debian stock (same root, no iSCSI boot)" : k} | ${
        mib(v.compressed)
      } | ${mib(v.unpacked)} |`
    ),
    `| the deno binary alone (zstd -${ZSTD_LEVEL}) | ${mib(denoCompressed)} | ${mib(denoBytes)} |`,
    "",
    `isboot's own split (median): start-up ${f2(split.startup)} s, network ${
      f2(split.network)
    } s, login ${f2(split.login)} s, attach + partition scan ${f2(split.attach)} s.`,
    "",
    `The \`@isboot\` daemon once the root is up (median): VmRSS ${
      f2(daemon.VmRSS !== null ? daemon.VmRSS / 1024 : null, 1)
    } MiB, RssAnon ${f2(anonMiB, 1)} MiB, RssFile ${
      f2(daemon.RssFile !== null ? daemon.RssFile / 1024 : null, 1)
    } MiB, VmLck ${f2(daemon.VmLck !== null ? daemon.VmLck / 1024 : null, 1)} MiB, ${
      daemon.Threads ?? "–"
    } threads, CPU time ${
      f2(
        daemon.cpu_ticks !== null && daemon.clk_tck ? daemon.cpu_ticks / daemon.clk_tck : null,
      )
    } s; ${f2(idleSwitches, 0)} context switches in ${f2(idleS, 1)} s idle, while the root disk ` +
    `completed ${f2(idleIos, 0)} requests. Context switches per thread over those seconds: ${
      threadLines.join("; ") || "–"
    }.`,
    "",
    "| target | measured | met? |",
    "|---|---|---|",
    ...targets.map((t) => `| ${t.join(" | ")} |`),
    ...(variantRows.length
      ? [
        "",
        `isboot with \`${m.variant}\` added to its kernel command line, in the same run (${
          good("variant").length
        } boots, after each pair):`,
        "",
        `| stage | isboot | isboot, ${m.variant} | ratio |`,
        "|---|---:|---:|---:|",
        ...variantRows.map(([name, a, v]) => `| ${name} | ${f2(a)} | ${f2(v)} | ${ratio(v, a)} |`),
      ]
      : []),
    ...(failed.length
      ? ["", "Failed boots:", ...failed.map((b) => `- ${b.kind} #${b.run}: ${b.reason}`)]
      : []),
    "",
  ].join("\n");
  await Deno.writeTextFile(`${OUT}/boot.md`, md);
  console.log(md);
}

// `--render FILE`: the summaries again from a run's build/bench-boot/measured.json.
if (import.meta.main) {
  await report(
    Deno.args[0] === "--render"
      ? JSON.parse(await Deno.readTextFile(Deno.args[1])) as Measured
      : await measure(),
  );
}
