/**
 * File-system checks and files the test helpers share.
 *
 * @example
 * ```ts
 * if (!(await exists("/sys/firmware/ibft"))) console.log("no iBFT");
 * const up = await waitForPath(`${dir}/nbd.sock`, { gaveUp: () => exited });
 * await writeRandomFile(`${dir}/random.bin`, 8 << 20);
 * ```
 */

/** Whether `path` names anything, a dangling symlink included (lstat). */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Whether this host's kernel has the nbd driver loaded (tests that need /dev/nbdN skip without). */
export const haveNbd: boolean = (() => {
  try {
    Deno.statSync("/sys/module/nbd");
    return true;
  } catch {
    return false;
  }
})();

/**
 * Wait until `path` exists (a server's socket): true once it does; false as
 * soon as `gaveUp()` says so (the server exited), or after `ms`.
 */
export async function waitForPath(
  path: string,
  o: { ms?: number; gaveUp?: () => boolean } = {},
): Promise<boolean> {
  const deadline = Date.now() + (o.ms ?? 20_000);
  for (;;) {
    if (o.gaveUp?.()) return false;
    try {
      await Deno.stat(path);
      return true;
    } catch { /* not yet */ }
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Write `bytes` (a whole number of MiB) of random data to `path`. */
export async function writeRandomFile(path: string, bytes: number): Promise<void> {
  const MiB = 1 << 20;
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  const chunk = new Uint8Array(MiB);
  for (let i = 0; i < bytes / MiB; i++) {
    for (let o = 0; o < MiB; o += 65536) crypto.getRandomValues(chunk.subarray(o, o + 65536));
    let off = 0;
    while (off < chunk.length) off += await f.write(chunk.subarray(off));
  }
  f.close();
}
