/**
 * The initramfs sequence after the plan: network, login (targets in order,
 * retried with backoff inside `isboot.timeout`), NBD attach, partition scan,
 * hand-off files. The iSCSI login and the kernel attach come in through
 * `BootBackend` (src/boot/backend.ts wires the real ones), so the order,
 * retries and timeouts here are testable on their own.
 *
 * @example
 * ```ts
 * const booted = await runBoot(spec, cmdline, realBackend(), { log, root: "/" });
 * log.info(`${booted.device} ready`);
 * ```
 */
import type { BlockDevice } from "../blockdev.ts";
import { AuthError, IsbootError, OperationalError } from "../errors.ts";
import type { Logger } from "../log.ts";
import {
  adoptNic,
  type ConfiguredNic,
  configureNic,
  OPTIONAL_CARRIER_MS,
  writeResolver,
} from "../net/configure.ts";
import { writeHandoff } from "../net/handoff.ts";
import { Rtnetlink } from "../net/rtnetlink.ts";
import type { MultipathPolicy } from "../scsi/multipath.ts";
import type { PathReport } from "../iscsi/open_target.ts";
import type { ResizeReport } from "../nbd/attach.ts";
import type { BootCmdline } from "./cmdline.ts";
import { type BootSpec, type BootTarget, portal } from "./spec.ts";
import { dhcpNetwork, type DhcpResult, targetFromLease } from "./dhcp.ts";

/** Login parameters common to every target. */
export interface LoginOptions {
  readonly initiator: string;
  readonly headerDigest?: "crc32c" | "none";
  readonly dataDigest?: "crc32c" | "none";
  readonly recoveryTimeoutMs: number;
  /** isboot.command_timeout= (0: never); absent: none. */
  readonly commandTimeoutMs?: number;
  /** isboot.multipath=: the target's other portals in the plan as paths; absent or off: for recovery only. */
  readonly multipath?: MultipathPolicy | "off";
  /**
   * Every target of the plan: the session fails over to the others that
   * name the same IQN and LUN when its portal is unreachable (docs/iscsi.md, "Recovery").
   */
  readonly targets?: readonly BootTarget[];
  readonly log: Logger;
}

/** A device the kernel sees, fed by this process. */
export interface Attached {
  /** "/dev/nbd0" */
  readonly device: string;
  readonly index: number;
  /** Resolves when the kernel device goes away. */
  readonly done: Promise<void>;
  /** Request/byte/error counters of the NBD server feeding the device (for `isboot status`). */
  readonly counters: {
    readonly activeConnections: number;
    readonly requests: number;
    readonly bytesRead: number;
    readonly bytesWritten: number;
    readonly errors: number;
  };
  /** Shut our sockets without disconnecting: a new daemon takes over (`attach --takeover`). */
  release(): void;
  /** Disconnect the kernel device (NBD_CMD_DISCONNECT); `done` resolves after. */
  disconnect(): void;
  /** Re-read the LUN's size and grow the kernel device to it (`isboot resize`). */
  resize(): Promise<ResizeReport>;
}

/** The two steps that need a real target and a real kernel. */
export interface BootBackend {
  /** Log in to `t` and return its LUN. AuthError when CHAP is refused. */
  login(t: BootTarget, o: LoginOptions): Promise<BlockDevice>;
  /** Connections the session of the last login has recovered (for `isboot status`). */
  reconnects?(): number;
  /** With multipath: each path of the last login now (for `isboot status`). */
  paths?(): PathReport[] | null;
  /**
   * The last login's target's other LUNs (`isboot.luns=`), opened over the
   * same session(s): REPORT LUNS, less `bootLun`, filtered by `want`. A LUN
   * that is not a disk (tgt's controller LUN 0) is left out with a line.
   */
  openLuns?(
    bootLun: number,
    want: "all" | readonly number[],
    log: Logger,
  ): Promise<{ lun: number; device: BlockDevice }[]>;
  /** Serve `dev` to a kernel NBD device (`device` names one, else the first free). */
  attach(
    dev: BlockDevice,
    o: { device?: string; backendIdentifier: string; log: Logger },
  ): Promise<Attached>;
}

/** What a finished boot sequence holds. */
export interface Booted {
  readonly device: string;
  readonly target: BootTarget;
  readonly blockDevice: BlockDevice;
  readonly attached: Attached;
  readonly nics: readonly ConfiguredNic[];
  readonly partitions: readonly string[];
  /** Files written for the real root's network stack. */
  readonly handoff: readonly string[];
  /**
   * Where the time went, ms: from the launcher's start to this sequence (process
   * start-up, plan), network, login, attach + partition scan.
   */
  readonly timing: { startMs: number; networkMs: number; loginMs: number; attachMs: number };
  /** Connections the root disk's session has recovered since the boot. */
  reconnects(): number;
  /** With multipath: the root disk's paths now; null with one path. */
  paths(): PathReport[] | null;
  /** The target's other LUNs attached too (`isboot.luns=`), each its own device. */
  readonly luns: readonly { lun: number; blockDevice: BlockDevice; attached: Attached }[];
  /** The plan's targets, with the DHCP root path's first when there is one. */
  readonly targets: readonly BootTarget[];
  /** The DHCP lease the network came from (`ip=dhcp`); null otherwise. */
  readonly dhcp: DhcpResult | null;
}

export interface RunOptions {
  readonly log: Logger;
  /** Where /etc and /run are written ("/" in the initramfs). */
  readonly root: string;
  /** Set /proc/sys/kernel/hostname too (only in the initramfs). */
  readonly kernelHostname: boolean;
  /** Milliseconds since the epoch at which the boot's clock started (for the timeout). */
  readonly startedAt: number;
  /** Backoff schedule override (tests). */
  readonly backoffMs?: readonly number[];
  /**
   * Take the NICs as they are (a live upgrade: the daemon being replaced
   * configured them): no address, route, resolver or hand-off is written.
   */
  readonly adoptNics?: boolean;
}

const BACKOFF_MS = [500, 1000, 2000, 4000, 8000] as const;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 0)} s`;
}

/**
 * Log in to the targets in order until one answers. Each round tries every
 * target not yet refused for authentication; rounds are separated by a
 * growing backoff; all of it ends at `deadline`.
 */
export async function loginWithRetry(
  targets: readonly BootTarget[],
  backend: BootBackend,
  login: LoginOptions,
  deadline: number,
  backoff: readonly number[] = BACKOFF_MS,
): Promise<{ target: BootTarget; device: BlockDevice }> {
  const refused = new Set<BootTarget>();
  let last = "";
  for (let round = 0;; round++) {
    for (const t of targets) {
      if (refused.has(t)) continue;
      const what = `${t.label} (${t.targetName} at ${portal(t)})`;
      try {
        const device = await backend.login(t, login);
        login.log.info(`logged in to ${what}`);
        return { target: t, device };
      } catch (e) {
        if (!(e instanceof IsbootError)) throw e;
        last = `${what}: ${e.message}`;
        if (e instanceof AuthError) {
          refused.add(t);
          login.log.error(`${last} (not retried: fix the CHAP settings)`);
        } else login.log.warn(last);
      }
    }
    if (refused.size === targets.length) {
      throw new AuthError(`every target refused authentication; last: ${last}`);
    }
    const wait = backoff[Math.min(round, backoff.length - 1)];
    if (Date.now() + wait >= deadline) {
      throw new OperationalError(`no target answered within the boot timeout; last: ${last}`);
    }
    login.log.info(`retrying in ${seconds(wait)}`);
    await sleep(wait);
  }
}

/**
 * Open the device once so the kernel scans its partition table (nbd
 * defers the scan to the next open), then list the partitions. The open is
 * asynchronous: this process serves the reads it causes.
 */
export async function scanPartitions(
  device: string,
  index: number,
  sysRoot = "/sys",
): Promise<string[]> {
  const f = await Deno.open(device, { read: true });
  f.close();
  const parts: string[] = [];
  try {
    for await (const e of Deno.readDir(`${sysRoot}/block/nbd${index}`)) {
      if (new RegExp(`^nbd${index}p\\d+$`).test(e.name)) parts.push(e.name);
    }
  } catch { /* no sysfs: no partitions to report */ }
  return parts.sort((a, b) => Number(a.split("p").pop()) - Number(b.split("p").pop()));
}

/**
 * Run the sequence for `spec`. Throws a typed error (exit code mapped by the
 * CLI) when the network, every target, or the attach fails within
 * `cmd.timeoutMs`.
 */
export async function runBoot(
  spec: BootSpec,
  cmd: BootCmdline,
  backend: BootBackend,
  o: RunOptions,
): Promise<Booted> {
  const { log } = o;
  const deadline = o.startedAt + cmd.timeoutMs;
  const t0 = Date.now();
  const rt = Rtnetlink.open();
  const nics: ConfiguredNic[] = [];
  let dhcp: DhcpResult | null = null;
  let targets = spec.targets;
  const configs = [...spec.nics];
  try {
    if (spec.dhcp) {
      if (o.adoptNics) {
        throw new OperationalError(
          "a live upgrade of a boot whose network came from DHCP is not supported",
        );
      }
      dhcp = await dhcpNetwork(rt, spec.dhcp.requests, {
        log,
        deadline,
        vlans: spec.dhcp.vlans,
      });
      configs.unshift({ ...dhcp.nic, dns: [...dhcp.nic.dns, ...cmd.nameservers] });
      if (spec.dhcp.rootPath) targets = [targetFromLease(dhcp.lease), ...targets];
      for (const t of targets) {
        log.info(`${t.label}: ${t.targetName} LUN ${t.lun} at ${portal(t)}`);
      }
    }
    for (const nic of configs) {
      try {
        nics.push(
          o.adoptNics ? adoptNic(rt, nic) : await configureNic(rt, nic, {
            linkTimeoutMs: Math.max(
              0,
              Math.min(
                nic.optional ? OPTIONAL_CARRIER_MS : cmd.linkTimeoutMs,
                deadline - Date.now(),
              ),
            ),
            log,
          }),
        );
      } catch (e) {
        // A second path's NIC that is not there: the boot goes on over the others.
        if (!nic.optional || !(e instanceof IsbootError)) throw e;
        log.warn(`${e.message}; its path is left out`);
      }
    }
  } finally {
    rt.close();
  }
  let handoff: readonly string[] = [];
  if (!o.adoptNics) {
    const dns = nics.flatMap((n) => n.config.dns);
    const hostname = nics.find((n) => n.config.hostname)?.config.hostname ?? null;
    await writeResolver(`${o.root.replace(/\/$/, "")}/etc`, dns, hostname, o.kernelHostname);
    handoff = await writeHandoff(o.root, nics, cmd.handoff);
  }

  const t1 = Date.now();
  const { target, device } = await loginWithRetry(
    targets,
    backend,
    {
      initiator: spec.initiator,
      ...(cmd.headerDigest ? { headerDigest: cmd.headerDigest } : {}),
      ...(cmd.dataDigest ? { dataDigest: cmd.dataDigest } : {}),
      recoveryTimeoutMs: cmd.recoveryTimeoutMs,
      commandTimeoutMs: cmd.commandTimeoutMs,
      multipath: cmd.multipath,
      targets,
      log,
    },
    deadline,
    o.backoffMs,
  );
  const t2 = Date.now();
  const attached = await backend.attach(device, {
    ...(cmd.device ? { device: cmd.device } : {}),
    backendIdentifier: `${target.targetName}/${target.lun}`,
    log,
  });
  const partitions = await scanPartitions(attached.device, attached.index);
  // The target's other LUNs; not on a takeover (the previous daemon keeps serving them).
  const luns: { lun: number; blockDevice: BlockDevice; attached: Attached }[] = [];
  if (cmd.luns && backend.openLuns && !o.adoptNics) {
    for (const x of await backend.openLuns(target.lun, cmd.luns, log)) {
      try {
        const a = await backend.attach(x.device, {
          backendIdentifier: `${target.targetName}/${x.lun}`,
          log,
        });
        log.info(`LUN ${x.lun}: ${a.device}, ${x.device.size} bytes`);
        luns.push({ lun: x.lun, blockDevice: x.device, attached: a });
      } catch (e) {
        if (!(e instanceof IsbootError)) throw e;
        log.error(`LUN ${x.lun}: not attached: ${e.message}`);
        await x.device.close().catch(() => {});
      }
    }
  }
  const t3 = Date.now();
  const timing = {
    startMs: t0 - o.startedAt,
    networkMs: t1 - t0,
    loginMs: t2 - t1,
    attachMs: t3 - t2,
  };
  return {
    device: attached.device,
    target,
    blockDevice: device,
    attached,
    nics,
    partitions,
    handoff,
    timing,
    reconnects: () => backend.reconnects?.() ?? 0,
    paths: () => backend.paths?.() ?? null,
    luns,
    targets,
    dhcp,
  };
}
