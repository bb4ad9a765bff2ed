/**
 * Looking into a built initramfs from the host: unpack it, and follow
 * symbolic links the way the image's own root would.
 *
 * @example
 * ```ts
 * const root = await unpackInitramfs("/boot/initrd.img-6.1.0-57-amd64", "/tmp/x");
 * console.log(await resolveIn(root, "/usr/bin/isboot")); // "/usr/lib/isboot/isboot"
 * ```
 */
import { exists } from "./fs.ts";

const dec = new TextDecoder();

/** Unpack `img` (dracut's or initramfs-tools'; an early microcode archive is skipped) into `dir`; returns the main root. */
export async function unpackInitramfs(img: string, dir: string): Promise<string> {
  const o = await new Deno.Command("unmkinitramfs", {
    args: [img, dir],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!o.success) {
    throw new Error(`unmkinitramfs ${img}: exit ${o.code}: ${dec.decode(o.stderr).slice(-2000)}`);
  }
  return (await exists(`${dir}/main`)) ? `${dir}/main` : dir;
}

/** `path` inside the image at `root` with its symbolic links followed there, not on the host. */
export async function resolveIn(root: string, path: string): Promise<string> {
  const todo = path.split("/").filter((c) => c);
  const done: string[] = [];
  for (let links = 0; todo.length > 0;) {
    const c = todo.shift()!;
    if (c === ".") continue;
    if (c === "..") {
      done.pop();
      continue;
    }
    const p = `${root}/${[...done, c].join("/")}`;
    if (!(await Deno.lstat(p)).isSymlink) {
      done.push(c);
      continue;
    }
    if (++links > 40) throw new Error(`${path}: too many links in the image`);
    const t = await Deno.readLink(p);
    if (t.startsWith("/")) done.length = 0;
    todo.unshift(...t.split("/").filter((x) => x));
  }
  return `/${done.join("/")}`;
}
