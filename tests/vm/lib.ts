/**
 * VM harness: boot Debian's kernel (unpacked, never installed) in
 * qemu-system-x86_64 (TCG) with a busybox initramfs that holds isboot in its
 * built form, inside a private network namespace with its own tgtd.
 *
 * Isolation: qemu's user network forwards guest traffic to real
 * networks, so every VM runs in a fresh netns (loopback only) and gets
 * `restrict=on` plus `guestfwd` forwards: the guest reaches nothing but the
 * ports the test names. tgtd runs in the same netns; tgtadm talks to it over
 * its filesystem socket, so it works from the host side.
 *
 * Pieces, each usable alone:
 * - {@link ensureKernel}: `apt-get download` + `dpkg -x` + `depmod`, cached in build/vm/.
 * - {@link buildInitramfs}: busybox-static, modules with dependencies and
 *   modules.dep (so the guest's `modprobe` works), isboot (+ deno + its glibc
 *   libraries), extra files, and an /init made from a shell body.
 * - {@link NetNs}: `ip netns add`, lo up, `exec()` a command inside, delete.
 * - {@link startNsTgtd}: a private tgtd (peers/tgtd.ts) inside a NetNs.
 * - {@link runVm}: qemu with serial to a log, a timeout, and result markers.
 *
 * Guest protocol: the init body prints `ISBOOT-VM: key=value` lines for data
 * and ends with `ISBOOT-VM-RESULT: PASS` or `ISBOOT-VM-RESULT: FAIL reason`
 * (helpers `vm_kv`, `vm_pass`, `vm_fail` are defined in /init's preamble).
 *
 * @example
 * ```ts
 * const kernel = await ensureKernel();
 * const initrd = await buildInitramfs({ kernel, modules: ["nbd", "virtio_net"], isboot: true,
 *   init: "isboot --version && vm_pass || vm_fail version" });
 * const ns = await NetNs.create();
 * try {
 *   const r = await runVm({ kernel, initrd, netns: ns, timeoutMs: 120_000 });
 *   assert.equal(r.result, "PASS", r.tail);
 * } finally { await ns.delete(); }
 * ```
 */
import { ROOT } from "../helpers/cli.ts";
import { Tgtd } from "../../peers/tgtd.ts";
import { exists } from "../helpers/fs.ts";

/** Where downloaded kernels and per-run files live (git-ignored). */
export const VM_DIR = `${ROOT}build/vm`;

const decoder = new TextDecoder();

async function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; stdin?: Uint8Array } = {},
): Promise<string> {
  const child = new Deno.Command(cmd, {
    args,
    cwd: opts.cwd,
    stdin: opts.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (opts.stdin) {
    const w = child.stdin.getWriter();
    await w.write(opts.stdin);
    await w.close();
  }
  const o = await child.output();
  if (!o.success) {
    throw new Error(
      `${cmd} ${args.join(" ")}: exit ${o.code}: ${decoder.decode(o.stderr).trim().slice(0, 2000)}`,
    );
  }
  return decoder.decode(o.stdout);
}

/** An unpacked Debian kernel. */
export interface Kernel {
  /** e.g. "6.1.0-56-amd64" */
  kver: string;
  /** Path of the bzImage. */
  vmlinuz: string;
  /** Root of the unpacked package (holds lib/modules/KVER). */
  root: string;
}

/**
 * The Debian kernel that `linux-image-amd64` depends on, downloaded and
 * unpacked once into build/vm/kernel/PKG (kept across runs).
 */
export async function ensureKernel(): Promise<Kernel> {
  const deps = await run("apt-cache", ["depends", "linux-image-amd64"]);
  const pkg = /Depends:\s*(linux-image-\d[^\s]*-amd64)\b/.exec(deps)?.[1];
  if (!pkg) throw new Error(`apt-cache depends linux-image-amd64 names no kernel:\n${deps}`);
  const kver = pkg.replace(/^linux-image-/, "");
  const root = `${VM_DIR}/kernel/${pkg}`;
  const kernel = { kver, vmlinuz: `${root}/boot/vmlinuz-${kver}`, root };
  if (await exists(`${root}/.complete`)) return kernel;
  await Deno.mkdir(`${VM_DIR}/kernel`, { recursive: true });
  const tmp = await Deno.makeTempDir({ dir: `${VM_DIR}/kernel`, prefix: "dl-" });
  try {
    await run("apt-get", ["download", "-q", pkg], { cwd: tmp });
    const deb = [...Deno.readDirSync(tmp)].find((e) => e.name.endsWith(".deb"));
    if (!deb) throw new Error(`apt-get download ${pkg} left no .deb`);
    const unpacked = `${tmp}/root`;
    await run("dpkg", ["-x", `${tmp}/${deb.name}`, unpacked]);
    await run("depmod", ["-b", unpacked, kver]);
    await Deno.remove(root, { recursive: true }).catch(() => {});
    await Deno.rename(unpacked, root);
    await Deno.writeTextFile(`${root}/.complete`, `${pkg}\n`);
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
  return kernel;
}

/**
 * The .ko files (relative to the kernel root) that loading `names` needs,
 * dependencies first, from `modprobe -d ROOT -S KVER --show-depends`.
 * Built-in modules contribute nothing.
 */
export async function moduleFiles(kernel: Kernel, names: string[]): Promise<string[]> {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const name of names) {
    const text = await run("modprobe", [
      "-d",
      kernel.root,
      "-S",
      kernel.kver,
      "--show-depends",
      name,
    ]);
    for (const line of text.split("\n")) {
      const m = /^insmod\s+(\S+)/.exec(line);
      if (!m) continue;
      const rel = m[1].startsWith(kernel.root)
        ? m[1].slice(kernel.root.length).replace(/^\/+/, "")
        : m[1];
      if (!seen.has(rel)) {
        seen.add(rel);
        out.push(rel);
      }
    }
  }
  return out;
}

/** A file to put in the initramfs: text/bytes, or a host file to copy. */
export type GuestFile = string | Uint8Array | { from: string; mode?: number };

/** What {@link buildInitramfs} puts in the image. */
export interface InitramfsSpec {
  kernel: Kernel;
  /** Module names; loaded by the guest's `modprobe` (modules.dep is generated). */
  modules?: string[];
  /** Modules /init loads before the body runs (default: none). */
  loadModules?: string[];
  /** Include isboot in its built form as /bin/isboot (+ deno and its libraries). */
  isboot?: boolean;
  /** Extra files by guest path. */
  files?: Record<string, GuestFile>;
  /** Shell body of /init (busybox sh), run after the preamble. */
  init: string;
  /** Output path (default: a new file under build/vm/run/). */
  output?: string;
}

/**
 * Where the built isboot lives: the directory of $ISBOOT_BIN (`make test`
 * built dist/), else a private bundle of the working tree made now, in the
 * same form scripts/build.sh gives (launcher + isboot.js + deno).
 */
export async function isbootBuildDir(): Promise<{ dir: string; cleanup(): Promise<void> }> {
  const bin = Deno.env.get("ISBOOT_BIN");
  if (bin) return { dir: bin.replace(/\/[^/]*$/, ""), cleanup: () => Promise.resolve() };
  const dir = await runDir("isboot-");
  const cleanup = () => Deno.remove(dir, { recursive: true }).catch(() => {});
  try {
    const deno = Deno.execPath();
    await run(deno, [
      "bundle",
      "--quiet",
      "--platform",
      "deno",
      "--output",
      `${dir}/isboot.js`,
      `${ROOT}main.ts`,
    ], {
      cwd: ROOT,
    });
    await Deno.copyFile(deno, `${dir}/deno`);
    await Deno.chmod(`${dir}/deno`, 0o755);
    // The launcher exactly as scripts/build.sh writes it.
    const build = await Deno.readTextFile(`${ROOT}scripts/build.sh`);
    const launcher = /<<'LAUNCHER'\n([\s\S]*?)\nLAUNCHER\n/.exec(build)?.[1];
    if (!launcher) throw new Error("scripts/build.sh: launcher heredoc not found");
    await Deno.writeTextFile(`${dir}/isboot`, launcher + "\n", { mode: 0o755 });
  } catch (e) {
    await cleanup();
    throw e;
  }
  return { dir, cleanup };
}

/** A fresh directory under build/vm/run/ (removed by the caller or `make clean`). */
export async function runDir(prefix = "vm-"): Promise<string> {
  await Deno.mkdir(`${VM_DIR}/run`, { recursive: true });
  return await Deno.makeTempDir({ dir: `${VM_DIR}/run`, prefix });
}

/** Shared libraries an ELF needs, by absolute path, from ldd. */
export async function sharedLibraries(elf: string): Promise<string[]> {
  const text = await run("ldd", [elf]);
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) out.push(m[1]);
  }
  return out;
}

/** The /init preamble: mounts, PATH, result helpers, modules. */
function preamble(loadModules: string[]): string {
  return `#!/bin/busybox sh
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /run /tmp
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs tmpfs /tmp
vm_kv() { echo "ISBOOT-VM: $1=$2"; }
vm_pass() { echo "ISBOOT-VM-RESULT: PASS"; }
vm_fail() { echo "ISBOOT-VM-RESULT: FAIL $*"; }
vm_end() { sync; poweroff -f; }
# The guest's NIC, when there is one: qemu user networking's fixed addresses.
vm_net_up() {
  modprobe virtio_pci 2>/dev/null; modprobe virtio_net 2>/dev/null
  for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /sys/class/net/eth0 ] && break; sleep 0.2; done
  ip link set lo up && ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0
}
${loadModules.map((m) => `modprobe ${m} || vm_fail "modprobe ${m}"`).join("\n")}
echo "ISBOOT-VM: init=start uptime=$(cut -d' ' -f1 /proc/uptime)"
`;
}

/**
 * Build a cpio (newc, uncompressed: TCG decompresses slowly) initramfs.
 * Returns its path.
 */
export async function buildInitramfs(spec: InitramfsSpec): Promise<string> {
  const stage = await runDir("initramfs-");
  try {
    const put = async (guest: string, f: GuestFile) => {
      const dst = `${stage}/${guest.replace(/^\/+/, "")}`;
      await Deno.mkdir(dst.replace(/\/[^/]*$/, ""), { recursive: true });
      if (typeof f === "string") await Deno.writeTextFile(dst, f);
      else if (f instanceof Uint8Array) await Deno.writeFile(dst, f);
      else {
        await Deno.copyFile(f.from, dst);
        if (f.mode !== undefined) await Deno.chmod(dst, f.mode);
      }
    };
    await put("/bin/busybox", { from: "/bin/busybox", mode: 0o755 });
    const { kernel } = spec;
    const mods = await moduleFiles(kernel, spec.modules ?? []);
    for (const rel of mods) await put(rel, { from: `${kernel.root}/${rel}` });
    for (const f of ["modules.order", "modules.builtin", "modules.builtin.modinfo"]) {
      const p = `${kernel.root}/lib/modules/${kernel.kver}/${f}`;
      if (await exists(p)) await put(`/lib/modules/${kernel.kver}/${f}`, { from: p });
    }
    if (mods.length) await run("depmod", ["-b", stage, kernel.kver]);
    if (spec.isboot) {
      const { dir, cleanup } = await isbootBuildDir();
      try {
        const names = (await exists(`${dir}/isboot.js`))
          ? ["isboot", "isboot.js", "deno"]
          : ["isboot"];
        for (const n of names) {
          await put(`/usr/lib/isboot/${n}`, { from: `${dir}/${n}`, mode: 0o755 });
        }
        const elf = (await exists(`${dir}/deno`)) ? `${dir}/deno` : `${dir}/isboot`;
        for (const lib of await sharedLibraries(elf)) await put(lib, { from: lib, mode: 0o755 });
      } finally {
        await cleanup();
      }
      await Deno.mkdir(`${stage}/bin`, { recursive: true });
      await Deno.symlink("/usr/lib/isboot/isboot", `${stage}/bin/isboot`);
    }
    for (const [guest, f] of Object.entries(spec.files ?? {})) await put(guest, f);
    await Deno.writeTextFile(
      `${stage}/init`,
      preamble(spec.loadModules ?? []) + spec.init + "\nvm_end\n",
      { mode: 0o755 },
    );
    await Deno.chmod(`${stage}/init`, 0o755);
    const output = spec.output ?? `${stage}.cpio`;
    const list = await run("sh", ["-c", "find . -mindepth 1 | sort"], { cwd: stage });
    const cpio = new Deno.Command("cpio", {
      args: ["--quiet", "-o", "-H", "newc", "-R", "0:0", "-O", output],
      cwd: stage,
      stdin: "piped",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const w = cpio.stdin.getWriter();
    await w.write(new TextEncoder().encode(list));
    await w.close();
    const o = await cpio.output();
    if (!o.success) throw new Error(`cpio: ${decoder.decode(o.stderr)}`);
    return output;
  } finally {
    await Deno.remove(stage, { recursive: true }).catch(() => {});
  }
}

/**
 * A private network namespace (`ip netns add`), loopback up, nothing else.
 * Commands run inside with {@link NetNs.command}; delete() removes it.
 */
export class NetNs {
  readonly name: string;
  private constructor(name: string) {
    this.name = name;
  }

  static async create(): Promise<NetNs> {
    const name = `isboot-vm-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
    await run("ip", ["netns", "add", name]);
    const ns = new NetNs(name);
    try {
      await run("ip", ["-n", name, "link", "set", "lo", "up"]);
    } catch (e) {
      await ns.delete();
      throw e;
    }
    return ns;
  }

  /** A Deno.Command running `cmd args` inside the namespace. */
  command(cmd: string, args: string[], opts: Omit<Deno.CommandOptions, "args"> = {}): Deno.Command {
    return new Deno.Command("ip", { ...opts, args: ["netns", "exec", this.name, cmd, ...args] });
  }

  async delete(): Promise<void> {
    await run("ip", ["netns", "delete", this.name]).catch(() => {});
  }
}

/**
 * A private tgtd ({@link Tgtd}, peers/tgtd.ts) inside a NetNs,
 * listening on 127.0.0.1:3260 there (the namespace is private). This process
 * cannot reach that portal, so it counts as up once tgtadm says so (tgtadm
 * talks to it over its filesystem socket, which the host shares).
 *
 * @example
 * ```ts
 * const tgt = await startNsTgtd(ns);
 * try {
 *   await tgt.addLun(await tgt.createTarget("iqn.2026-11.test:vm"), { lun: 1, path: lunPath });
 * } finally { await tgt.stop(); }
 * ```
 */
export function startNsTgtd(ns: NetNs): Promise<Tgtd> {
  return Tgtd.start({
    port: 3260,
    tcpProbe: false,
    launch: (line) =>
      ns.command("sh", ["-c", line], { stdin: "null", stdout: "null", stderr: "null" }),
  });
}

/** A guest TCP address forwarded to a host-side (in-namespace) port. */
export interface GuestForward {
  /** Guest-visible address, e.g. "10.0.2.100". */
  guestAddr: string;
  guestPort: number;
  /** Where the connection goes, inside the netns: 127.0.0.1:hostPort. */
  hostPort: number;
}

/** Options of {@link runVm}. */
export interface VmOptions {
  kernel: Kernel;
  initrd: string;
  /** The namespace qemu runs in (required: never on the host's network). */
  netns: NetNs;
  /** Extra kernel command line. */
  append?: string;
  memoryMiB?: number;
  /** Kill qemu after this long (default 180 s). */
  timeoutMs?: number;
  forwards?: GuestForward[];
  /** Give the guest a virtio NIC on qemu user networking (default true). */
  nic?: boolean;
  /** More `-netdev user` options, e.g. `,tftp=DIR,bootfile=boot.ipxe` for iPXE. */
  netdevExtra?: string;
  /** The NIC's `-device` (default `virtio-net-pci,netdev=n0`). */
  nicDevice?: string;
  /** Where the serial log goes (default: a file beside the initrd). */
  serialLog?: string;
  /** Extra qemu arguments (e.g. iPXE/BIOS options for the boot tests). */
  qemuArgs?: string[];
  /** Replace the default -kernel/-initrd/-append boot (e.g. network boot). */
  directBoot?: boolean;
  /** Called with each serial line as it arrives (e.g. to echo it). */
  onLine?: (line: string) => void;
}

/** What a VM run produced. */
export interface VmResult {
  /** "PASS", "FAIL", or "NONE" when the guest printed no result. */
  result: "PASS" | "FAIL" | "NONE";
  /** The text after FAIL. */
  reason: string;
  /** `ISBOOT-VM: key=value` lines, last one wins. */
  kv: Map<string, string>;
  /** The whole serial log (CR stripped). */
  serial: string;
  /** The last 60 lines, for assertion messages. */
  tail: string;
  timedOut: boolean;
  durationMs: number;
}

/** Parse the guest protocol out of a serial log. */
export function parseSerial(serial: string): Pick<VmResult, "result" | "reason" | "kv"> {
  const kv = new Map<string, string>();
  let result: VmResult["result"] = "NONE";
  let reason = "";
  for (const line of serial.split("\n")) {
    const r = /ISBOOT-VM-RESULT: (PASS|FAIL)\s*(.*)$/.exec(line);
    if (r) {
      if (result !== "FAIL") {
        result = r[1] as "PASS" | "FAIL";
        reason = r[2].trim();
      }
      continue;
    }
    const m = /ISBOOT-VM: ([A-Za-z0-9_.-]+)=(.*)$/.exec(line);
    if (m) {
      for (const part of `${m[1]}=${m[2]}`.split(/ (?=[A-Za-z0-9_.-]+=)/)) {
        const eq = part.indexOf("=");
        kv.set(part.slice(0, eq), part.slice(eq + 1).trim());
      }
    }
  }
  return { result, reason, kv };
}

/**
 * Boot the VM and wait until it powers off or the timeout ends. The guest
 * reaches only `forwards` (restrict=on), from inside `netns`.
 */
export async function runVm(o: VmOptions): Promise<VmResult> {
  const serialLog = o.serialLog ?? o.initrd.replace(/(\.cpio)?$/, ".serial.log");
  await Deno.writeTextFile(serialLog, "");
  const args = [
    "-accel",
    "tcg",
    "-cpu",
    "max",
    "-smp",
    "2",
    "-m",
    String(o.memoryMiB ?? 1024),
    "-nographic",
    "-monitor",
    "none",
    "-no-reboot",
    "-chardev",
    `stdio,id=s0,signal=off,logfile=${serialLog}`,
    "-serial",
    "chardev:s0",
  ];
  if (!o.directBoot) {
    args.push(
      "-kernel",
      o.kernel.vmlinuz,
      "-initrd",
      o.initrd,
      "-append",
      `console=ttyS0,115200 panic=-1 quiet loglevel=4 ${o.append ?? ""}`.trim(),
    );
  }
  if (o.nic ?? true) {
    const fwd = (o.forwards ?? []).map((f) =>
      `,guestfwd=tcp:${f.guestAddr}:${f.guestPort}-cmd:/bin/busybox nc 127.0.0.1 ${f.hostPort}`
    ).join("");
    args.push(
      "-netdev",
      `user,id=n0,restrict=on${fwd}${o.netdevExtra ?? ""}`,
      "-device",
      o.nicDevice ?? "virtio-net-pci,netdev=n0",
    );
  } else {
    args.push("-nic", "none");
  }
  args.push(...(o.qemuArgs ?? []));
  const started = Date.now();
  const child = o.netns.command("qemu-system-x86_64", args, {
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  }, o.timeoutMs ?? 180_000);
  const pump = async (s: ReadableStream<Uint8Array>, sink: (line: string) => void) => {
    let pending = "";
    for await (const chunk of s.pipeThrough(new TextDecoderStream())) {
      pending += chunk;
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      for (const l of lines) sink(l.replace(/\r$/, ""));
    }
    if (pending) sink(pending);
  };
  const stderr: string[] = [];
  await Promise.all([
    pump(child.stdout, (l) => o.onLine?.(l)),
    pump(child.stderr, (l) => stderr.push(l)),
    child.status,
  ]);
  clearTimeout(timer);
  const serial = (await Deno.readTextFile(serialLog)).replaceAll("\r", "");
  const parsed = parseSerial(serial);
  const tailLines = serial.split("\n").slice(-60);
  if (stderr.length) tailLines.push("--- qemu stderr ---", ...stderr.slice(-10));
  return {
    ...parsed,
    serial,
    tail: tailLines.join("\n"),
    timedOut,
    durationMs: Date.now() - started,
  };
}
