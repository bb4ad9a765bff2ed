/**
 * Kernel NBD devices by name and through sysfs, without netlink: parse
 * `/dev/nbdN` arguments, name the device of an index, and read what
 * /sys/block/nbdN says (size, backend identifier, connecting pid).
 */
import { UsageError } from "../errors.ts";

/**
 * Parse a device argument: `/dev/nbd3`, `nbd3` or `3` to 3.
 *
 * @example
 * ```ts
 * parseNbdDevice("/dev/nbd0"); // 0
 * ```
 */
export function parseNbdDevice(dev: string): number {
  const m = /^(?:\/dev\/)?(?:nbd)?(\d{1,6})$/.exec(dev);
  if (!m || (!dev.includes("nbd") && dev.startsWith("/"))) {
    throw new UsageError(`'${dev}' is not an NBD device (expected /dev/nbdN)`);
  }
  return Number.parseInt(m[1], 10);
}

/**
 * /dev/nbdN for an index.
 *
 * @example
 * ```ts
 * nbdDevicePath(0); // "/dev/nbd0"
 * ```
 */
export function nbdDevicePath(index: number): string {
  return `/dev/nbd${index}`;
}

/** What sysfs says about /sys/block/nbdN. */
export interface NbdSysfsInfo {
  index: number;
  /** False when /sys/block/nbdN does not exist. */
  exists: boolean;
  sizeBytes: bigint;
  /** /sys/block/nbdN/backend, when set at connect. */
  backend?: string;
  /** /sys/block/nbdN/pid: the process that connected it, when connected. */
  pid?: number;
}

function readText(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path).trim();
  } catch {
    return undefined;
  }
}

/**
 * Read /sys/block/nbdN: size, backend identifier, connecting pid.
 *
 * @example
 * ```ts
 * const info = readNbdSysfs(0);
 * if (info.backend === wanted) ...
 * ```
 */
export function readNbdSysfs(index: number, sysRoot = "/sys"): NbdSysfsInfo {
  const dir = `${sysRoot}/block/nbd${index}`;
  const size = readText(`${dir}/size`);
  if (size === undefined) return { index, exists: false, sizeBytes: 0n };
  const pid = readText(`${dir}/pid`);
  const backend = readText(`${dir}/backend`);
  return {
    index,
    exists: true,
    sizeBytes: /^\d+$/.test(size) ? BigInt(size) * 512n : 0n,
    backend: backend === undefined || backend === "" ? undefined : backend,
    pid: pid !== undefined && /^\d+$/.test(pid) ? Number(pid) : undefined,
  };
}
