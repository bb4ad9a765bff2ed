/**
 * The root-storage daemon's own cgroup, kept out of swap (docs/boot.md,
 * "Memory"). Anonymous memory swapped out to a swap area on the disk the
 * daemon serves comes back only through the daemon: the thread that faults
 * on such a page waits on a read that only it can answer, and the root disk
 * stops for good. mlockall would prevent it but breaks V8 (its madvise on
 * locked pages fails); cgroup v2's `memory.swap.max` of 0 keeps every page
 * of the cgroup out of swap instead, heap included, while the kernel may
 * still swap everything else.
 *
 * The cgroup is `isboot` under the cgroup2 root, beside systemd's slices
 * (which, like other managers' top-level cgroups, systemd leaves alone), so
 * no unit's stop ends the daemon either. An initramfs without systemd has no
 * cgroup2 mounted: the hierarchy is mounted privately for the step and
 * unmounted after it (the cgroup stays; systemd mounts the same hierarchy).
 * Memory stays charged to the cgroup that allocated it when a process moves
 * (cgroup v2 moves no charges), so the launcher enters the cgroup before it
 * spawns the daemon: pages the daemon had before a move would still go to
 * swap (measured: 5.6 MiB of them, moved at READY).
 *
 * @example
 * ```ts
 * const r = enterNoSwapCgroup();
 * if (!r.ok) log.warn(`no-swap cgroup: ${r.error}`);
 * ```
 */
import { SysError } from "./errno.ts";
import { errno, libc } from "./libc.ts";
import type { StepResult } from "./process.ts";

/** The daemon's cgroup, under the cgroup2 root. */
export const DAEMON_CGROUP = "isboot";
/** Where the hierarchy is mounted for the step when nothing has it mounted. */
export const PRIVATE_CGROUP2_MOUNT = "/run/isboot/cgroup2";

const MS_NOSUID = 2n;
const MS_NODEV = 4n;
const MS_NOEXEC = 8n;
const MNT_DETACH = 2;

const enc = new TextEncoder();
const cstr = (s: string) => enc.encode(s + "\0");

/**
 * The mount point of the cgroup2 hierarchy's root in /proc/self/mountinfo
 * text, or null (fields: ID PARENT MAJ:MIN ROOT MOUNTPOINT ... - FSTYPE ...).
 *
 * @example
 * ```ts
 * cgroup2Mount("30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw\n"); // "/sys/fs/cgroup"
 * ```
 */
export function cgroup2Mount(mountinfo: string): string | null {
  for (const line of mountinfo.split("\n")) {
    const [head, tail] = line.split(" - ");
    if (!tail?.startsWith("cgroup2 ")) continue;
    const f = head.split(" ");
    // Only a mount of the hierarchy's root sees every cgroup.
    if (f[3] === "/" && f[4]) {
      return f[4].replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
    }
  }
  return null;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Move this process into the cgroup `DAEMON_CGROUP` with `memory.swap.max`
 * 0 (made if needed, the memory controller enabled for it). Returns what
 * happened, for the log; never throws. Refused where cgroup v2 has no memory
 * controller (a v1 or hybrid hierarchy holds it) or swap accounting is off.
 */
export function enterNoSwapCgroup(): StepResult {
  let root: string | null;
  try {
    root = cgroup2Mount(Deno.readTextFileSync("/proc/self/mountinfo"));
  } catch (e) {
    return { ok: false, error: `/proc/self/mountinfo: ${message(e)}` };
  }
  let mounted = false;
  if (root === null) {
    try {
      Deno.mkdirSync(PRIVATE_CGROUP2_MOUNT, { recursive: true });
    } catch (e) {
      return { ok: false, error: `mkdir ${PRIVATE_CGROUP2_MOUNT}: ${message(e)}` };
    }
    const r = libc().mount(
      cstr("cgroup2"),
      cstr(PRIVATE_CGROUP2_MOUNT),
      cstr("cgroup2"),
      MS_NOSUID | MS_NODEV | MS_NOEXEC,
      null,
    );
    if (r !== 0) {
      const err = new SysError(`mount cgroup2 on ${PRIVATE_CGROUP2_MOUNT}`, errno()).message;
      try {
        Deno.removeSync(PRIVATE_CGROUP2_MOUNT);
      } catch { /* left behind: empty */ }
      return { ok: false, error: err };
    }
    root = PRIVATE_CGROUP2_MOUNT;
    mounted = true;
  }
  try {
    return enter(root, mounted);
  } finally {
    if (mounted) {
      libc().umount2(cstr(PRIVATE_CGROUP2_MOUNT), MNT_DETACH);
      try {
        Deno.removeSync(PRIVATE_CGROUP2_MOUNT);
      } catch { /* busy or gone: an empty directory under /run */ }
    }
  }
}

function enter(root: string, mounted: boolean): StepResult {
  const dir = `${root}/${DAEMON_CGROUP}`;
  try {
    const controllers = Deno.readTextFileSync(`${root}/cgroup.controllers`).split(/\s+/);
    if (!controllers.includes("memory")) {
      return { ok: false, error: "cgroup v2 has no memory controller (cgroup v1 holds it?)" };
    }
    const enabled = Deno.readTextFileSync(`${root}/cgroup.subtree_control`).split(/\s+/);
    if (!enabled.includes("memory")) {
      Deno.writeTextFileSync(`${root}/cgroup.subtree_control`, "+memory");
    }
    Deno.mkdirSync(dir, { recursive: true });
    try {
      Deno.writeTextFileSync(`${dir}/memory.swap.max`, "0");
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        return { ok: false, error: "no memory.swap.max (swap accounting off: swapaccount=0?)" };
      }
      throw e;
    }
    Deno.writeTextFileSync(`${dir}/cgroup.procs`, `${Deno.pid}\n`);
  } catch (e) {
    return { ok: false, error: `${dir}: ${message(e)}` };
  }
  return {
    ok: true,
    detail: `/${DAEMON_CGROUP}, memory.swap.max 0${
      mounted ? "; cgroup2 mounted for the step" : ""
    }`,
  };
}
