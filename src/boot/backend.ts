/**
 * The real BootBackend: iSCSI login through the initiator (src/iscsi/open_target.ts)
 * and the kernel attach through nbd generic netlink (src/nbd/attach.ts, src/nbd/genl.ts).
 */
import type { BlockDevice } from "../blockdev.ts";
import type { Logger } from "../log.ts";
import { attachDevice } from "../nbd/attach.ts";
import { NbdKernel } from "../nbd/genl.ts";
import { parseNbdDevice, readNbdSysfs } from "../nbd/sysfs.ts";
import { SysError } from "../sys/errno.ts";
import type { Attached, BootBackend, LoginOptions } from "./sequence.ts";
import type { BootTarget } from "./spec.ts";
import { openBootTarget } from "./login.ts";
import { type OpenedTarget, openOtherLuns } from "../iscsi/open_target.ts";

/** The backend `isboot boot` uses in the initramfs. */
export function realBackend(): BootBackend {
  let opened: OpenedTarget | null = null;
  return {
    async login(t: BootTarget, o: LoginOptions): Promise<BlockDevice> {
      opened = await openBootTarget(t, o);
      return opened.device;
    },
    reconnects: () => opened?.reconnects() ?? 0,
    paths: () => opened?.paths?.() ?? null,
    openLuns: (bootLun, want, log) =>
      opened
        ? openOtherLuns(opened.multipath ?? opened.transport, bootLun, want, log)
        : Promise.resolve([]),
    async attach(dev, o): Promise<Attached> {
      const nbd = await NbdKernel.open({ log: o.log });
      const at = (index?: number) =>
        attachDevice(nbd, dev, {
          log: o.log,
          backendIdentifier: o.backendIdentifier,
          ...(index !== undefined ? { index } : {}),
        });
      return o.device
        ? await at(parseNbdDevice(o.device))
        : await attachFirstDevice(at, { log: o.log });
    },
  };
}

/** How long the boot waits for a prober to let go of /dev/nbd0. */
export const NBD0_BUSY_WAIT_MS = 5_000;

/**
 * Attach the root disk as /dev/nbd0 when no device was asked for, so that
 * it has the same name on every boot (`root=/dev/nbd0p1` works). The kernel's
 * "first free device" counts a device that anything holds open as taken, and
 * udev's probe (blkid) of the unconfigured nbd0 holds it open for a moment:
 * the root then landed on nbd1 now and then. So nbd0 is asked for by index;
 * while it is busy and connected to nobody it is tried again every 100 ms for
 * up to {@link NBD0_BUSY_WAIT_MS}, then the first free device is taken with a
 * warning. A connected nbd0 (another disk) goes to the first free at once.
 *
 * @example
 * ```ts
 * const a = await attachFirstDevice((index) => attachDevice(nbd, dev, { ...o, index }), { log });
 * ```
 */
export async function attachFirstDevice<T>(
  at: (index?: number) => Promise<T>,
  o: {
    log: Logger;
    waitMs?: number;
    /** Whether nbd0 is connected (has a pid in sysfs); injectable for tests. */
    connected?: () => boolean;
    sleep?: (ms: number) => Promise<void>;
  },
): Promise<T> {
  const connected = o.connected ?? (() => readNbdSysfs(0).pid !== undefined);
  const sleep = o.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const waitMs = o.waitMs ?? NBD0_BUSY_WAIT_MS;
  let waited = 0;
  for (;;) {
    try {
      return await at(0);
    } catch (e) {
      if (!(e instanceof SysError && e.is("EBUSY"))) throw e;
      if (connected()) {
        o.log.info("/dev/nbd0 serves another disk; taking the first free device");
        return await at();
      }
      if (waited >= waitMs) {
        o.log.warn(
          `/dev/nbd0 is still held open by another process after ${waitMs} ms; taking the first free device`,
        );
        return await at();
      }
    }
    await sleep(100);
    waited += 100;
  }
}
