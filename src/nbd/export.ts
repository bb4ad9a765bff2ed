/**
 * An NBD export and what it advertises: the transmission flags
 * (proto.md "Transmission flags") and the block size constraints
 * (NBD_INFO_BLOCK_SIZE) a device gets, in the handshake and on the kernel
 * path alike.
 *
 * @example
 * ```ts
 * const flags = transmissionFlags(device, { readOnly: true });
 * const sizes = blockSizes(device); // { minimum, preferred, maximum }
 * ```
 * @module
 */
import type { BlockDevice } from "../blockdev.ts";
import {
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FAST_ZERO,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_MAX_PAYLOAD,
} from "./constants.ts";
import type { BlockSizes } from "./protocol.ts";

/** One export: a name clients ask for and the device behind it. */
export interface NbdExport {
  /** Export name, e.g. `iqn.2026-11.test:disk1/0`; the first export is also the default (""). */
  name: string;
  /** Shown to clients that ask (NBD_INFO_DESCRIPTION, NBD_OPT_LIST). */
  description?: string;
  device: BlockDevice;
  /** Export read-only even if the device is writable. */
  readOnly?: boolean;
}

/**
 * Transmission flags for a device (proto.md "Transmission flags"):
 * HAS_FLAGS always; READ_ONLY when write-protected; FLUSH; and for writable
 * devices FUA, WRITE_ZEROES, FAST_ZERO, and TRIM only when the device can
 * unmap. CAN_MULTI_CONN: every connection reaches the same device, which
 * has no per-connection cache, so a flush on one covers writes of all.
 * SEND_DF only with structured replies (we always send one data chunk).
 *
 * @example
 * ```ts
 * const flags = transmissionFlags(device); // pass to NBD_ATTR_SERVER_FLAGS and serveTransmission
 * ```
 */
export function transmissionFlags(
  device: BlockDevice,
  opts: { readOnly?: boolean; structuredReplies?: boolean } = {},
): number {
  let f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_CAN_MULTI_CONN;
  if (device.readOnly || opts.readOnly) {
    f |= NBD_FLAG_READ_ONLY;
  } else {
    f |= NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
    if (device.limits.canUnmap) f |= NBD_FLAG_SEND_TRIM;
  }
  if (opts.structuredReplies) f |= NBD_FLAG_SEND_DF;
  return f;
}

/**
 * Block size constraints advertised in NBD_INFO_BLOCK_SIZE: the minimum is
 * the device's logical block (requests not aligned to it still work, by
 * read-modify-write, but cost more), the
 * preferred is at least 4 KiB, the maximum payload is 32 MiB (larger device
 * limits are split internally, so clients never need to know them).
 *
 * @example
 * ```ts
 * blockSizes(device); // { minimum: 512, preferred: 4096, maximum: 33554432 }
 * ```
 */
export function blockSizes(device: BlockDevice): BlockSizes {
  const min = validBlockSize(device.blockSize) ? device.blockSize : 1;
  let preferred = Math.max(min, 4096);
  const opt = device.limits.optimalTransfer;
  if (opt && validPowerOfTwo(opt) && opt >= preferred && opt <= 65536) preferred = opt;
  return { minimum: min, preferred, maximum: NBD_MAX_PAYLOAD };
}

function validPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

/** A block size NBD can advertise: a power of two up to 64 KiB. */
export function validBlockSize(n: number): boolean {
  return validPowerOfTwo(n) && n <= 65536;
}
