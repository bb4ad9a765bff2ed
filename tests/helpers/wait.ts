/**
 * Polling waits for tests: check a condition every 10 ms until it holds or a
 * limit passes.
 *
 * @example
 * ```ts
 * await until("the session to reconnect", () => s.state === "full-feature", 5000);
 * ```
 */

/** Resolve once `ok()` holds; throw naming `what` after `ms` (default 5 s). */
export async function until(what: string, ok: () => boolean, ms = 5000): Promise<void> {
  const end = performance.now() + ms;
  while (!ok()) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what} (${ms} ms)`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
