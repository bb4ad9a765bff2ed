/**
 * Serve a `BlockDevice` to a kernel NBD device: make socketpairs, serve our
 * ends in transmission mode, and hand the kernel's ends over with
 * NBD_CMD_CONNECT (`attachDevice`) or, taking a live device over,
 * NBD_CMD_RECONFIGURE (`takeOverDevice`); `KernelAttachment.release` is the
 * drain and let-go of the takeover hand-over (docs/kernel.md);
 * `KernelAttachment.resize` and the device's own growth (BlockDevice.onResize)
 * grow the live device (NBD_CMD_RECONFIGURE with NBD_ATTR_SIZE_BYTES).
 */
import type { BlockDevice } from "../blockdev.ts";
import { OperationalError, UsageError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { FdStream } from "../sys/reactor.ts";
import { pageSize } from "../sys/process.ts";
import { closeFd, setSocketBuffers, socketPair } from "../sys/socket.ts";
import { SysError } from "../sys/errno.ts";
import { IoBudget, reserveIoBuffers } from "./buffers.ts";
import { transmissionFlags } from "./export.ts";
import { NBD_SOCKET_BUFFERS } from "./listen.ts";
import type { NbdKernel } from "./genl.ts";
import { nbdDevicePath, readNbdSysfs } from "./sysfs.ts";
import {
  type ExportSize,
  type NbdCounters,
  newCounters,
  serveTransmission,
} from "./transmission.ts";
import type { ByteStream } from "./stream.ts";

/**
 * Request timeout a takeover sets while the old daemon drains: the few
 * requests the kernel writes into the old socket after its last read are
 * resent this soon, not at the next 30 s re-arm.
 */
export const TAKEOVER_TIMEOUT_SEC = 3;
/** A draining daemon whose in-flight requests have not finished by then lets go anyway. */
export const RELEASE_FORCE_MS = 15_000;

/**
 * The block size to give the kernel for a device of `logical`-byte blocks:
 * at most the page size, because Linux 6.1 refuses an NBD block size above
 * PAGE_SIZE (nbd_set_size() → blk_validate_block_size()). A LUN with larger
 * blocks (8 KiB, 64 KiB on a 4 KiB-page machine) is still served: the kernel
 * then sends requests that cover part of a LUN block, and the NBD server
 * turns those into read-modify-writes of whole blocks, serialised per
 * export (docs/nbd.md), so the device is correct, only slower for small
 * writes. Clamping for every kernel, rather than asking which one refuses,
 * keeps the device the same wherever it boots.
 *
 * @example
 * ```ts
 * kernelBlockSize(8192, 4096); // 4096
 * kernelBlockSize(512, 4096); // 512
 * ```
 */
export function kernelBlockSize(logical: number, page: number): number {
  return Math.min(logical, page);
}

/**
 * Why this kernel cannot grow a live nbd device safely, or null when it
 * can. Linux 6.9 and later freeze the device's queue in nbd_set_size() while
 * NBD_CMD_RECONFIGURE sets a size: the netlink call then waits for every
 * request in flight, and the requests in flight wait for this process,
 * which is inside that call. Linux up to 6.8 (Debian 12: 6.1) sets the
 * capacity without a freeze.
 *
 * @example
 * ```ts
 * liveResizeHazard("6.1.0-57-amd64"); // null
 * liveResizeHazard("6.12.38+deb13-amd64"); // "Linux 6.12.38+deb13-amd64 freezes ..."
 * ```
 */
export function liveResizeHazard(release: string): string | null {
  const m = /^(\d+)\.(\d+)/.exec(release);
  if (!m) return null;
  const [major, minor] = [Number(m[1]), Number(m[2])];
  if (major < 6 || (major === 6 && minor < 9)) return null;
  return `Linux ${release} freezes the nbd queue while it sets a new size, and would wait ` +
    "for requests this process cannot answer during that call; not grown in place " +
    "(detach and attach again to see the new size)";
}

/**
 * What `resize` did (field names are part of `isboot resize --json`; sizes
 * are decimal strings, as in `status`).
 */
export interface ResizeReport {
  /** "/dev/nbdN" */
  device: string;
  /** The kernel device's size before and after, bytes. */
  oldSizeBytes: string;
  newSizeBytes: string;
  /** The size the backing store (the LUN) reports, bytes. */
  reportedSizeBytes: string;
  /** "refused": the LUN reports less than is served, which is never applied. */
  outcome: "grown" | "unchanged" | "refused";
  /** Why it was refused; null otherwise. */
  detail: string | null;
}

/** Options of {@link attachDevice}. */
export interface AttachOptions {
  log: Logger;
  /** /dev/nbdN to use; omitted: the first free device. */
  index?: number;
  /** Written to /sys/block/nbdN/backend; RECONFIGURE (takeover) must match it. */
  backendIdentifier: string;
  /** Sockets (kernel queues) to the same device, 1..16 (default 1). */
  connections?: number;
  timeoutSec?: number;
  deadConnTimeoutSec?: number;
  /** Counters the NBD server updates (for `isboot status`). */
  counters?: NbdCounters;
  /** Export the device read-only even if it is writable. */
  readOnly?: boolean;
  /** The running kernel's release, for {@link liveResizeHazard} (default: uname's; tests set it). */
  kernelRelease?: string;
}

/** A device attached by {@link attachDevice} and the server feeding it. */
export interface KernelAttachment {
  index: number;
  /** "/dev/nbdN" */
  device: string;
  /** NBD transmission flags given to the kernel. */
  flags: number;
  counters: NbdCounters;
  /** The size the kernel device has, bytes, as far as this attachment knows. */
  readonly sizeBytes: bigint;
  /**
   * Ask the device for its size again (BlockDevice.refreshSize: READ
   * CAPACITY) and grow the kernel device to it. Growth the device finds by
   * itself (a UNIT ATTENTION) is applied without being asked. A smaller size
   * is refused (outcome "refused"): the kernel device never shrinks under a
   * mounted filesystem. Throws when the re-read or the kernel call fails.
   */
  resize(): Promise<ResizeReport>;
  /** Resolves when every connection has ended (NBD_CMD_DISC, disconnect, or socket death). */
  done: Promise<void>;
  /** NBD_CMD_DISCONNECT through netlink; `done` resolves after. */
  disconnect(): void;
  /**
   * Let go of the device without disconnecting it (the takeover hand-over,
   * docs/kernel.md): drain — stop reading at a request boundary, answer every
   * request read — then shut our socket ends down; the kernel marks them
   * dead and holds requests for DEAD_CONN_TIMEOUT, waiting for a new
   * daemon's RECONFIGURE. `done` resolves after. Requests still unanswered
   * after RELEASE_FORCE_MS are abandoned (the kernel resends them).
   */
  release(): void;
}

/**
 * Serve `device` to a kernel NBD device: make a socketpair per connection,
 * serve our ends in transmission mode (no handshake), and give the other
 * ends to the kernel with NBD_CMD_CONNECT. Our copies of the kernel's ends
 * are closed once the kernel holds them.
 *
 * @example
 * ```ts
 * const nbd = await NbdKernel.open({ log });
 * const a = await attachDevice(nbd, device, { log, backendIdentifier: "iqn.2026-11.test:disk1/1" });
 * console.log(a.device);   // /dev/nbd0
 * await a.done;            // until `isboot detach /dev/nbd0`
 * ```
 */
export function attachDevice(
  nbd: NbdKernel,
  device: BlockDevice,
  o: AttachOptions,
): Promise<KernelAttachment> {
  const page = pageSize();
  const blockSize = kernelBlockSize(device.blockSize, page);
  if (blockSize !== device.blockSize) {
    o.log.warn(
      `block size ${device.blockSize} is larger than the page size (${page}), which Linux refuses` +
        ` for NBD: /dev/nbd uses ${blockSize}-byte blocks, and writes of less than` +
        ` ${device.blockSize} bytes become read-modify-writes`,
    );
  }
  return hookUp(nbd, device, o, device.size, (theirs, flags) =>
    nbd.connect({
      index: o.index,
      sockets: theirs,
      sizeBytes: device.size,
      blockSize,
      serverFlags: flags,
      timeoutSec: o.timeoutSec,
      deadConnTimeoutSec: o.deadConnTimeoutSec,
      backendIdentifier: o.backendIdentifier,
    }));
}

/**
 * Take over a live device whose previous server is gone (crashed, or told
 * to `release`): serve new socketpairs and hand them to the kernel with
 * NBD_CMD_RECONFIGURE, which puts them in place of the sockets it marked
 * dead. The backend identifier must match the device's. Call it only once
 * the old socket is dead (its NBD_CMD_LINK_DEAD was seen, or its process
 * died): with no dead socket, Linux 6.1 drops the new one and still answers
 * success. ENOSPC, should a kernel answer it, is retried for up to `waitDeadMs`.
 *
 * @example
 * ```ts
 * const a = await takeOverDevice(nbd, device, { log, index: 0, backendIdentifier: "iqn.2026-11.test:disk1/1" });
 * ```
 */
export function takeOverDevice(
  nbd: NbdKernel,
  device: BlockDevice,
  o: AttachOptions & { index: number; waitDeadMs?: number },
): Promise<KernelAttachment> {
  // The kernel keeps the size it had (a predecessor may have grown it).
  const kernelSize = readNbdSysfs(o.index).sizeBytes || device.size;
  return hookUp(nbd, device, o, kernelSize, async (theirs) => {
    const deadline = Date.now() + (o.waitDeadMs ?? 10_000);
    for (;;) {
      try {
        nbd.reconfigure(o.index, {
          sockets: theirs,
          backendIdentifier: o.backendIdentifier,
          timeoutSec: o.timeoutSec,
          deadConnTimeoutSec: o.deadConnTimeoutSec,
        });
        return o.index;
      } catch (e) {
        if (!(e instanceof SysError && e.is("ENOSPC")) || Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  });
}

/**
 * Make the socketpairs, let `kernelCall` hand the kernel's ends over (it
 * returns the device index), then serve our ends in transmission mode.
 */
async function hookUp(
  nbd: NbdKernel,
  device: BlockDevice,
  o: AttachOptions,
  initialKernelSize: bigint,
  kernelCall: (theirs: number[], flags: number) => number | Promise<number>,
): Promise<KernelAttachment> {
  const n = o.connections ?? 1;
  if (!Number.isInteger(n) || n < 1 || n > 16) {
    throw new UsageError(`connections ${n}: expected 1..16`);
  }
  const flags = transmissionFlags(device, { readOnly: o.readOnly });
  const counters = o.counters ?? newCounters();
  const ours: number[] = [];
  const theirs: number[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const [a, b] = socketPair();
      ours.push(a);
      theirs.push(b);
      setSocketBuffers(a, NBD_SOCKET_BUFFERS);
      setSocketBuffers(b, NBD_SOCKET_BUFFERS);
    }
  } catch (e) {
    for (const fd of [...ours, ...theirs]) closeFd(fd);
    throw e;
  }
  let index: number;
  try {
    index = await kernelCall(theirs, flags);
  } catch (e) {
    for (const fd of ours) closeFd(fd);
    throw e;
  } finally {
    // The kernel took its own references (sockfd_lookup); ours are not needed.
    for (const fd of theirs) closeFd(fd);
  }
  // One memory bound for all of the device's sockets, its buffers reserved
  // before the first request is read (docs/boot.md, "Memory"); not before the
  // kernel took the sockets, since a busy device is tried again (backend.ts).
  const budget = new IoBudget();
  reserveIoBuffers(budget, o.log);
  const drain = new AbortController();
  const finished = ours.map(() => false);
  const streams: ByteStream[] = [];
  const letGo: Promise<void>[] = [];
  for (const [i, fd] of ours.entries()) {
    const s = new FdStream(fd);
    let gone!: () => void;
    letGo.push(new Promise<void>((r) => (gone = r)));
    streams.push({
      read: (into) => s.read(into),
      write: (data) => s.write(data),
      close() {
        if (finished[i]) return;
        finished[i] = true;
        if (!drain.signal.aborted || s.closed) {
          s.close();
          gone();
          return;
        }
        // The end of a drain: half-close (shutdown SHUT_WR; the replies are
        // out, the server drained its writer before closing) and keep
        // reading, discarding, until the kernel shuts its end. So the
        // kernel's receiver, not a failed send, is what marks the socket
        // dead: a receiver still running after a new socket was put in place
        // would mark the NEW socket dead (6.1 recv_work() looks the socket up
        // by index). What we discard the kernel resends when it times out.
        s.cancelRead(); // the server's own read, if one is pending
        s.shutdownWrite();
        const force = setTimeout(() => s.close(), RELEASE_FORCE_MS);
        const scratch = new Uint8Array(65536);
        void (async () => {
          while ((await s.read(scratch)) !== null);
        })().finally(() => {
          clearTimeout(force);
          s.close();
          gone();
        });
      },
    });
  }
  const label = `nbd${index}`;
  const devPath = nbdDevicePath(index);
  let kernelSize = initialKernelSize;
  // The end requests are checked against: the kernel's, grown before the
  // kernel is told, so that the first request past the old end is taken.
  const exportSize: ExportSize = { bytes: Number(kernelSize) };
  /** Grow the kernel device to `to` bytes; never shrinks it. */
  const grow = (to: bigint): void => {
    if (to <= kernelSize) return;
    const hazard = liveResizeHazard(o.kernelRelease ?? Deno.osRelease());
    if (hazard) throw new OperationalError(`${devPath}: ${hazard}`);
    exportSize.bytes = Math.max(exportSize.bytes, Number(to));
    // 6.1 nbd_genl_reconfigure() refuses a device that has a backend
    // identifier unless the request names it ("must specify backend").
    nbd.reconfigure(index, { sizeBytes: to, backendIdentifier: o.backendIdentifier });
    o.log.info(`${devPath}: size ${kernelSize} -> ${to} bytes`);
    kernelSize = to;
  };
  const done = Promise.all(
    streams.map((s, i) =>
      serveTransmission(s, device, {
        log: o.log,
        counters,
        flags,
        label: n > 1 ? `${label}.${i}` : label,
        drain: drain.signal,
        budget,
        exportSize,
      })
    ),
  ).then(() => Promise.all(letGo)).then(() => {});
  // Growth the device found by itself (a LUN's UNIT ATTENTION 2A/09).
  const unlisten = device.onResize?.(() => {
    try {
      grow(device.size);
    } catch (e) {
      o.log.error(`${devPath}: not grown: ${e instanceof Error ? e.message : e}`);
    }
  });
  void done.finally(() => unlisten?.());
  return {
    index,
    device: devPath,
    flags,
    counters,
    done,
    get sizeBytes() {
      return kernelSize;
    },
    async resize(): Promise<ResizeReport> {
      const before = kernelSize;
      const r = await device.refreshSize?.();
      grow(device.size);
      return {
        device: devPath,
        oldSizeBytes: String(before),
        newSizeBytes: String(kernelSize),
        reportedSizeBytes: String(r?.reportedSize ?? device.size),
        outcome: r?.refused ? "refused" : kernelSize > before ? "grown" : "unchanged",
        detail: r?.refused ?? null,
      };
    },
    disconnect: () => nbd.disconnect(index),
    release: () => {
      if (drain.signal.aborted) return;
      drain.abort();
      const force = setTimeout(() => {
        o.log.warn(`${label}: requests still in flight after the drain: letting go anyway`);
        for (const s of streams) s.close();
      }, RELEASE_FORCE_MS);
      void done.finally(() => clearTimeout(force));
    },
  };
}
