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
