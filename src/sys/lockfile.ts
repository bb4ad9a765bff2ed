/**
 * Advisory lock files (flock(2)) that live as long as the process holds
 * them: the kernel drops the lock when the holder exits or dies, so a lock
 * never outlives its owner and needs no clean-up after a crash. isboot uses
 * them to give each concurrent iSCSI session of this host its own ISID
 * (src/iscsi/isid.ts).
 *
 * @example
 * ```ts
 * const lock = tryLock("/run/isboot/isid/80aabbcc0001.lock");
 * if (lock) { ...; lock.release(); }
 * ```
 * @module
 */
import { ERRNO, SysError } from "./errno.ts";
import { errno, libc } from "./libc.ts";

const O_RDWR = 0o2;
const O_CREAT = 0o100;
const O_CLOEXEC = 0o2000000;
const LOCK_EX = 2;
const LOCK_NB = 4;

/** A held lock; `release()` (idempotent) drops it and closes the file. */
export interface HeldLock {
  readonly path: string;
  release(): void;
}

/**
 * Take an exclusive lock on `path` (created with mode 0600 if missing)
 * without waiting: the lock, or null when another open file holds it (in
 * this process or another). Other failures (no such directory, no
 * permission) throw SysError.
 *
 * @example
 * ```ts
 * const a = tryLock("/tmp/x.lock"); // HeldLock
 * const b = tryLock("/tmp/x.lock"); // null while `a` is held
 * ```
 */
export function tryLock(path: string): HeldLock | null {
  const name = new TextEncoder().encode(`${path}\0`);
  const fd = libc().open(name, O_RDWR | O_CREAT | O_CLOEXEC, 0o600);
  if (fd < 0) throw new SysError("open", errno(), path);
  if (libc().flock(fd, LOCK_EX | LOCK_NB) < 0) {
    const e = errno();
    libc().close(fd);
    if (e === ERRNO.EAGAIN) return null; // EWOULDBLOCK
    throw new SysError("flock", e, path);
  }
  let held = true;
  return {
    path,
    release() {
      if (!held) return;
      held = false;
      libc().close(fd);
    },
  };
}
