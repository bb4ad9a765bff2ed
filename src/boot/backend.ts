/**
 * The real BootBackend: iSCSI login through the initiator (src/iscsi/open_target.ts)
 * and the kernel attach through nbd generic netlink (src/nbd/kernel.ts).
 */
import type { BlockDevice } from "../blockdev.ts";
import { attachDevice, NbdKernel, parseNbdDevice } from "../nbd/kernel.ts";
import type { Attached, BootBackend, LoginOptions } from "./sequence.ts";
import type { BootTarget } from "./spec.ts";
import { loginTarget } from "./login.ts";

/** The backend `isboot boot` uses in the initramfs. */
export function realBackend(): BootBackend {
  return {
    login: (t: BootTarget, o: LoginOptions): Promise<BlockDevice> => loginTarget(t, o),
    async attach(dev, o): Promise<Attached> {
      const nbd = await NbdKernel.open({ log: o.log });
      const a = await attachDevice(nbd, dev, {
        log: o.log,
        backendIdentifier: o.backendIdentifier,
        ...(o.device ? { index: parseNbdDevice(o.device) } : {}),
      });
      return {
        device: a.device,
        index: a.index,
        done: a.done,
        counters: a.counters,
        release: a.release,
      };
    },
  };
}
