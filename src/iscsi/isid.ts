/**
 * Which ISID a session of this host uses (RFC 7143 §4.2.7, §11.12.5).
 *
 * The target tells sessions apart by (InitiatorName, ISID). Two concurrent
 * sessions of one initiator name with one ISID are one session to the
 * target: each login reinstates (ends) the other (§6.3.5), and they take
 * turns recovering. A restarted isboot, on the other hand, should use the
 * ISID of the session it replaces, so that its login ends the stale one at
 * once instead of leaving it to time out.
 *
 * Both hold with numbered slots: a session's purpose ("serve tcp:0",
 * "attach /dev/nbd0", "boot iqn...") names slot 0; the session claims the
 * lowest slot that no live process of this host holds, by an flock(2) on a
 * file named after the ISID under the run directory. The kernel drops the
 * lock when its holder exits, so a restart finds slot 0 free again and
 * reinstates its own session; a second concurrent session with the same
 * purpose gets slot 1, another ISID.
 *
 * @example
 * ```ts
 * const claim = claimIsid("iqn.2026-11.org.isboot:host1", "serve tcp:0");
 * // claim.isid: 6 bytes; claim.release() when the session ends
 * ```
 * @module
 */
import type { Logger } from "../log.ts";
import { type HeldLock, tryLock } from "../sys/lockfile.ts";
import { randomIsid, stableIsid } from "./login.ts";

/** Where the slot locks live unless ISBOOT_RUN_DIR says otherwise. */
export const DEFAULT_RUN_DIR = "/run/isboot";
/** Slots tried before falling back to a random ISID. */
const MAX_SLOTS = 256;

/** An ISID held for one session; `release()` when it ends (idempotent). */
export interface IsidClaim {
  isid: Uint8Array;
  /** 0 for the purpose's own ISID, more when others of this host held it. */
  slot: number;
  release(): void;
}

function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

function lockDir(runDir: string): string | null {
  for (const d of [`${runDir}/isid`, `/tmp/isboot-isid-${Deno.uid() ?? "0"}`]) {
    try {
      Deno.mkdirSync(d, { recursive: true, mode: 0o700 });
      return d;
    } catch {
      // not writable here (a user without /run/isboot): try the next
    }
  }
  return null;
}

/**
 * Claim the ISID for a session with this purpose: slot 0's when no live
 * process of this host holds it, else the next free slot's. Where no lock
 * can be taken at all, a random ISID (unique, but not stable across
 * restarts) and a warning.
 *
 * @example
 * ```ts
 * const a = claimIsid(iqn, "serve tcp:0"); // slot 0
 * const b = claimIsid(iqn, "serve tcp:0"); // slot 1 while `a` is held
 * ```
 */
export function claimIsid(
  initiatorName: string,
  purpose: string,
  opts: { runDir?: string; log?: Logger } = {},
): IsidClaim {
  let runDir = opts.runDir;
  if (runDir === undefined) {
    try {
      runDir = Deno.env.get("ISBOOT_RUN_DIR") ?? DEFAULT_RUN_DIR;
    } catch {
      runDir = DEFAULT_RUN_DIR;
    }
  }
  const dir = lockDir(runDir);
  if (dir !== null) {
    for (let slot = 0; slot < MAX_SLOTS; slot++) {
      const isid = stableIsid(initiatorName, slot === 0 ? purpose : `${purpose}#${slot}`);
      let lock: HeldLock | null;
      try {
        lock = tryLock(`${dir}/${hex(isid)}.lock`);
      } catch {
        break;
      }
      if (lock) return { isid, slot, release: () => lock.release() };
    }
  }
  opts.log?.warn(
    `no ISID lock could be taken under ${runDir}; using a random ISID (a restart will not reinstate this session)`,
  );
  return { isid: randomIsid(), slot: -1, release: () => {} };
}
