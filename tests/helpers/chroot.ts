/**
 * Run a shell command in a chroot of an unpacked root, as a user there
 * would: /bin/sh of the root, cwd /root, /proc and /dev mounted in a private
 * mount namespace (gone when the command ends), a clean environment.
 *
 * @example
 * ```ts
 * const r = await chroot("/tmp/root", "dpkg -i ./dist/isboot_0.1.0_amd64.deb");
 * if (r.code !== 0) console.log(r.out);
 * ```
 */

const dec = new TextDecoder();

/** How a chrooted command ended: exit status, stdout and stderr together. */
export interface ChrootResult {
  code: number;
  out: string;
}

/** Options of {@link chroot}. */
export interface ChrootOptions {
  /** Variables added to the clean environment. */
  env?: Record<string, string>;
  /** `[hostPath, pathInRoot]` bind mounts (the directory in the root must exist). */
  binds?: [string, string][];
}

/** `script` by /bin/sh in a chroot of `root` (cwd /root). */
export async function chroot(
  root: string,
  script: string,
  opts: ChrootOptions = {},
): Promise<ChrootResult> {
  const binds = opts.binds ?? [];
  const mounts = binds.map((_, i) => `mount --bind "\${${2 * i + 3}}" "$1\${${2 * i + 4}}" && `)
    .join("");
  const o = await new Deno.Command("unshare", {
    args: [
      "--mount",
      "--propagation",
      "private",
      "sh",
      "-c",
      'mount -t proc proc "$1/proc" && mount --rbind /dev "$1/dev" && ' + mounts +
      'exec chroot "$1" /bin/sh -c "cd /root && $2" 2>&1',
      "sh",
      root,
      script,
      ...binds.flat(),
    ],
    clearEnv: true,
    env: {
      PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      HOME: "/root",
      LC_ALL: "C",
      DEBIAN_FRONTEND: "noninteractive",
      ...opts.env,
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: o.code, out: dec.decode(o.stdout) + dec.decode(o.stderr) };
}
