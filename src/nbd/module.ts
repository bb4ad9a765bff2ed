/**
 * Loading and unloading kernel modules with the system's modprobe (the nbd
 * driver when its netlink family is missing, iscsi_ibft for the boot path).
 */
import { OperationalError } from "../errors.ts";

/** Runs `modprobe NAME`; injectable so tests and the boot path can choose. */
export type ModuleLoader = (name: string) => Promise<void>;

/**
 * Load (or, with `remove`, unload) a module with the system's modprobe (kmod or busybox).
 *
 * @example
 * ```ts
 * await modprobe("nbd");
 * await modprobe("iscsi_ibft", { remove: true });
 * ```
 */
export async function modprobe(name: string, o: { remove?: boolean } = {}): Promise<void> {
  let lastError = "";
  const args = o.remove ? ["-r", name] : [name];
  for (const cmd of ["modprobe", "/sbin/modprobe", "/usr/sbin/modprobe"]) {
    try {
      const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" })
        .output();
      if (out.success) return;
      lastError = new TextDecoder().decode(out.stderr).trim().split("\n")[0] ?? `exit ${out.code}`;
      break;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      lastError = "modprobe not found";
    }
  }
  throw new OperationalError(`modprobe ${args.join(" ")}: ${lastError}`);
}
