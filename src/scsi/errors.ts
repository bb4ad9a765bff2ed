/**
 * Typed errors for requests the Lun refuses before sending anything. Each
 * carries `errno` (like SenseError) so that the NBD server can answer with
 * the matching NBD error without knowing about SCSI.
 */
import { InvalidInputError, OperationalError } from "../errors.ts";
import type { BlockErrno } from "./sense.ts";

/**
 * A request whose offset or length is not a multiple of the logical block
 * size, or that reaches past the end of the device (exit 3 / EINVAL).
 *
 * @example
 * ```ts
 * await lun.read(1n, 512); // throws BlockRequestError: offset 1 is not a multiple of 512
 * ```
 */
export class BlockRequestError extends InvalidInputError {
  readonly errno: BlockErrno = "EINVAL";
}

/** A write, trim or write-zeroes to a write-protected LUN (EPERM). */
export class ReadOnlyError extends OperationalError {
  readonly errno: BlockErrno = "EPERM";
}

/** The LUN does not support the operation (e.g. trim without UNMAP) (EOPNOTSUPP). */
export class UnsupportedError extends OperationalError {
  readonly errno: BlockErrno = "EOPNOTSUPP";
}

/** The device is closed (EIO). */
export class ClosedError extends OperationalError {
  readonly errno: BlockErrno = "EIO";
}

/**
 * A target's response to a SCSI command is malformed (too short, wrong page
 * code, impossible values): a target bug or corruption (exit 3 / EIO).
 */
export class ScsiDataError extends InvalidInputError {
  readonly errno: BlockErrno = "EIO";
}
