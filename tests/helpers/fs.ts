/**
 * File-system checks the test helpers share.
 *
 * @example
 * ```ts
 * if (!(await exists("/sys/firmware/ibft"))) console.log("no iBFT");
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
