/**
 * A private tgtd (peers/tgtd.ts) for tests that start one outside
 * `withTgtd`, retried: a start can still fail when a random control number
 * or port collides with another tgtd on a busy machine.
 *
 * @example
 * ```ts
 * const tgt = await startTgtd();
 * try { ... } finally { await tgt.stop(); }
 * ```
 */
import { Tgtd } from "../../peers/tgtd.ts";

/** Tgtd.start, up to five times. */
export async function startTgtd(): Promise<Tgtd> {
  for (let i = 0;; i++) {
    try {
      return await Tgtd.start();
    } catch (e) {
      if (i >= 4) throw e;
    }
  }
}
