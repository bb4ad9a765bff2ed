/**
 * Take a live /dev/nbdN over from the isboot serving it (docs/kernel.md
 * "Takeover under I/O"), for `attach --takeover` and for the boot daemon's
 * live upgrade (`boot --takeover`, docs/boot.md "Live upgrade"): check the
 * kernel's backend identifier and size, lock our file mappings (for the root
 * disk), shorten the
 * kernel's request timeout, ask the old daemon to drain and release over
 * its control socket, wait for the kernel to mark its socket dead, hand the
 * kernel our socket (NBD_CMD_RECONFIGURE) with the configured timeout, then
 * wait for the old daemon to exit.
 *
 * @example
 * ```ts
 * const a = await takeOverServed(nbd, lun, { log, index: 0, backendIdentifier: "iqn.2026-11.test:root/1" }, watch);
 * await a.done;
 * ```
 */
import type { BlockDevice } from "../blockdev.ts";
import { OperationalError } from "../errors.ts";
import type { Logger } from "../log.ts";
import {
  type AttachOptions,
  type KernelAttachment,
  RELEASE_FORCE_MS,
  TAKEOVER_TIMEOUT_SEC,
  takeOverDevice,
} from "../nbd/attach.ts";
import { DEFAULT_TIMEOUT_SEC, type NbdKernel, type NbdLinkWatch } from "../nbd/genl.ts";
import { nbdDevicePath, readNbdSysfs } from "../nbd/sysfs.ts";
import { lockFileMappings } from "../sys/process.ts";
import { controlPath, controlRequest } from "./control.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Replace the daemon serving `/dev/nbd{o.index}` with this process serving
 * `device`. Until the old daemon agreed to let go, any failure leaves it
 * serving; after that, a failed RECONFIGURE leaves the kernel holding I/O
 * for its dead-connection timeout.
 */
export async function takeOverServed(
  nbd: NbdKernel,
  device: BlockDevice,
  o: AttachOptions & {
    index: number;
    /** mlock our file mappings first: the device is the root disk (it holds our executable). */
    lockMappings?: boolean;
  },
  watch: NbdLinkWatch | undefined,
): Promise<KernelAttachment> {
  const { log } = o;
  const dev = nbdDevicePath(o.index);
  const sys = readNbdSysfs(o.index);
  const live = nbd.status(o.index).find((d) => d.index === o.index)?.connected ?? false;
  if (!sys.exists || !live) {
    throw new OperationalError(`${dev} is not connected: nothing to take over`);
  }
  if (sys.backend !== o.backendIdentifier) {
    throw new OperationalError(
      `${dev} serves '${sys.backend ?? "(no backend)"}', not '${o.backendIdentifier}'`,
    );
  }
  if (sys.sizeBytes !== device.size) {
    throw new OperationalError(`${dev} has ${sys.sizeBytes} bytes, the target ${device.size}`);
  }
  // Between the old daemon's release and our RECONFIGURE the device answers
  // nobody: a page fault of ours on a file that lives on it (the new
  // executable, when the device is the root disk) would wait for ever.
  if (o.lockMappings) {
    const locked = lockFileMappings();
    if (!locked.ok) log.warn(`mlock file mappings before the takeover: ${locked.error}`);
  }
  const timeoutSec = o.timeoutSec ?? DEFAULT_TIMEOUT_SEC;
  // Requests the kernel writes into the old socket after the old daemon's
  // last read are lost with it; the kernel resends them when they time out.
  // A short timeout for requests started from now on makes that quick.
  nbd.reconfigure(o.index, {
    backendIdentifier: o.backendIdentifier,
    timeoutSec: Math.min(TAKEOVER_TIMEOUT_SEC, timeoutSec || TAKEOVER_TIMEOUT_SEC),
  });
  const path = controlPath(o.index);
  let oldDaemon = false;
  watch?.deadIndexes(); // only notifications from now on count
  try {
    // Its pid, to wait for its exit: its control socket's path is no sign of
    // life, since a boot daemon resolves paths in the initramfs it started
    // in and cannot remove its socket from the real root's /run.
    const oldPid = await controlRequest(path, { cmd: "status" }).then(
      (r) => (r.ok ? r.status?.pid : undefined),
      () => undefined,
    );
    const oldGone = () => (oldPid !== undefined ? processGone(oldPid) : !pathExists(path));
    try {
      const r = await controlRequest(path, { cmd: "release" });
      if (!r.ok) throw new OperationalError(`the isboot serving ${dev} refused: ${r.error}`);
      oldDaemon = true;
      log.info(`${dev}: the previous isboot is draining its requests`);
    } catch (e) {
      if (e instanceof OperationalError && /^control socket/.test(e.message)) {
        log.info(`${dev}: no isboot answers for it (crashed?): taking it over`);
      } else throw e;
    }
    // The old daemon half-closes its socket once its last reply is written;
    // the kernel's receiver then marks it dead and multicasts LINK_DEAD. Only
    // then may RECONFIGURE come: with no dead socket to replace, 6.1 drops
    // the new socket and still answers 0 (nbd_genl_reconfigure turns
    // nbd_reconnect_socket's ENOSPC into success).
    if (oldDaemon) await waitLinkDead(watch, o.index, oldGone, log);
    const { lockMappings: _, ...attach } = o;
    const a = await takeOverDevice(nbd, device, {
      ...attach,
      timeoutSec,
      waitDeadMs: RELEASE_FORCE_MS + 5_000,
    });
    if (oldDaemon) {
      // It logs out and exits; our control socket takes the place of its.
      const deadline = Date.now() + 30_000;
      while (!oldGone() && Date.now() < deadline) await sleep(100);
    }
    return a;
  } catch (e) {
    try {
      nbd.reconfigure(o.index, { backendIdentifier: o.backendIdentifier, timeoutSec });
    } catch { /* the device may be gone */ }
    throw e;
  }
}

/**
 * Wait until the kernel marked the old socket of /dev/nbdN dead: its
 * NBD_CMD_LINK_DEAD, or (no multicast watch) the old daemon's exit plus 1 s.
 */
async function waitLinkDead(
  watch: NbdLinkWatch | undefined,
  index: number,
  oldGone: () => boolean,
  log: Logger,
): Promise<void> {
  const deadline = Date.now() + RELEASE_FORCE_MS + 5_000;
  if (watch) {
    while (!watch.deadIndexes().has(index)) {
      if (Date.now() > deadline) {
        throw new OperationalError(`${nbdDevicePath(index)}: the previous isboot did not let go`);
      }
      await sleep(20);
    }
    log.debug(`${nbdDevicePath(index)}: the kernel marked the old socket dead`);
    return;
  }
  while (!oldGone() && Date.now() < deadline) await sleep(100);
  await sleep(1000);
}

function pathExists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Whether process `pid` has exited (gone, or a zombie not yet reaped). */
export function processGone(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return true;
  }
}
