/**
 * NBD error values for failures: of a request the server refuses itself
 * ({@link RequestError}), and of a BlockDevice ({@link nbdErrnoOf}).
 *
 * @example
 * ```ts
 * nbdErrnoOf(new RequestError(NBD_EINVAL, "zero length")); // 22
 * ```
 * @module
 */
import {
  NBD_EINVAL,
  NBD_EIO,
  NBD_ENOMEM,
  NBD_ENOSPC,
  NBD_ENOTSUP,
  NBD_EOVERFLOW,
  NBD_EPERM,
  NBD_ERRORS,
  NBD_ESHUTDOWN,
} from "./constants.ts";

/** A failure that maps to one NBD error value. */
export class RequestError extends Error {
  constructor(readonly errno: number, message: string) {
    super(message);
  }
}

/** Errno names a BlockDevice may put in an error's `errno` (src/scsi does), as NBD values. */
const ERRNO_NAMES: Readonly<Record<string, number>> = {
  EPERM: NBD_EPERM,
  EIO: NBD_EIO,
  ENOMEM: NBD_ENOMEM,
  EINVAL: NBD_EINVAL,
  ENOSPC: NBD_ENOSPC,
  EDQUOT: NBD_ENOSPC, // proto.md: map EDQUOT and EFBIG to ENOSPC
  EFBIG: NBD_ENOSPC,
  EOVERFLOW: NBD_EOVERFLOW,
  EOPNOTSUPP: NBD_ENOTSUP,
  ENOTSUP: NBD_ENOTSUP,
  ESHUTDOWN: NBD_ESHUTDOWN,
  EROFS: NBD_EPERM,
};

/**
 * The NBD error for a device failure. A BlockDevice says what went wrong
 * through an `errno` property on the error it throws: a name such as
 * "EPERM" (write-protect), "ENOSPC" (out of space), "EINVAL", "EOPNOTSUPP"
 * (the SCSI layer's SenseError and request errors carry one), or an NBD
 * error number. Anything else is EIO.
 *
 * @example
 * ```ts
 * nbdErrnoOf(Object.assign(new Error("write protected"), { errno: "EPERM" })); // 1
 * ```
 */
export function nbdErrnoOf(e: unknown): number {
  if (e instanceof RequestError) return e.errno;
  if (typeof e === "object" && e !== null && "errno" in e) {
    const n = (e as { errno: unknown }).errno;
    if (typeof n === "string" && Object.hasOwn(ERRNO_NAMES, n)) return ERRNO_NAMES[n];
    if (typeof n === "number" && NBD_ERRORS.has(n)) return n;
  }
  return NBD_EIO;
}
