/**
 * The boot NIC guard in the root-storage daemon: started at READY with the
 * NICs the boot configured and every target of the plan, stopped when the
 * daemon ends. It also publishes `/run/isboot/boot-nics` (one interface name
 * a line, the VLAN link and its parent), which the real root's hooks read to
 * name those links when they are taken down (initramfs-hook/ifupdown/if-down.d).
 * The file exists only while the daemon serves the disk.
 *
 * @example
 * ```ts
 * const g = await startBootGuard(booted.nics, spec.targets, { log, root: "/" });
 * await booted.attached.done;
 * await g.stop();
 * ```
 */
import type { Logger } from "../log.ts";
import { parseIp } from "../net/addr.ts";
import type { ConfiguredNic } from "../net/configure.ts";
import { type GuardStatus, NicGuard } from "../net/guard.ts";
import type { BootTarget } from "./spec.ts";

/** Where the daemon lists the links that carry the root disk (relative to the root). */
export const BOOT_NICS_FILE = "/run/isboot/boot-nics";

/** The guard as the daemon holds it. */
export interface BootGuard {
  /** Per NIC, for `isboot status`; [] when the guard could not start. */
  status(): GuardStatus[];
  /** Stop guarding and remove the boot-nics file. */
  stop(): Promise<void>;
}

/** The boot-nics file's text: each link once, the address link first. */
export function bootNicsText(nics: readonly ConfiguredNic[]): string {
  const names = [...new Set(nics.flatMap((n) => [n.ifname, n.parentName]))];
  return names.map((n) => `${n}\n`).join("");
}

/**
 * Start the guard and write the boot-nics file under `root`. A guard that
 * cannot start (no netlink in a locked-down container) is logged, not fatal:
 * the disk is served either way.
 */
export async function startBootGuard(
  nics: readonly ConfiguredNic[],
  targets: readonly BootTarget[],
  o: { log: Logger; root: string },
): Promise<BootGuard> {
  const path = `${o.root.replace(/\/$/, "")}${BOOT_NICS_FILE}`;
  try {
    await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
    await Deno.writeTextFile(path, bootNicsText(nics));
  } catch (e) {
    // The hooks then cannot tell the boot NIC; the guard still keeps it.
    o.log.warn(`cannot write ${path}: ${e instanceof Error ? e.message : e}`);
  }
  const addresses = targets.map((t) => parseIp(t.host)).filter((a) => a !== null);
  let guard: NicGuard | null = null;
  try {
    guard = NicGuard.start(nics.filter((n) => n.config.address !== null), addresses, {
      log: o.log,
    });
  } catch (e) {
    o.log.warn(`boot NIC guard not started: ${e instanceof Error ? e.message : e}`);
  }
  return {
    status: () => guard?.status() ?? [],
    async stop() {
      guard?.stop();
      await Deno.remove(path).catch(() => {});
    },
  };
}
