/**
 * `make install` as a user runs it, then a real initramfs build with the
 * installed hooks (no VM): PREFIX is the default /usr/local, and the hooks
 * must find isboot where it was installed, not through PATH (mkinitramfs
 * runs hooks with PATH=/usr/bin:/sbin:/bin, dracut with /sbin:/bin:/usr/sbin:/usr/bin).
 * A build that cannot put isboot in must fail with one line naming the path.
 *
 * The install goes to DESTDIR (this host's system places stay untouched), so
 * each build runs in a private mount namespace with DESTDIR/usr/local
 * bind-mounted on /usr/local (what the installed hooks expect), and is
 * pointed at DESTDIR's hook directories: mkinitramfs through a private
 * CONFDIR whose hooks/ and scripts/ are DESTDIR's, dracut through a private
 * dracutbasedir holding DESTDIR's 95isboot. The builders get only
 * PATH=/usr/bin:/sbin:/bin (no ISBOOT_BIN). Kernel: Debian's, unpacked
 * (tests/vm/lib.ts ensureKernel).
 */
import assert from "node:assert/strict";
import { ROOT } from "../helpers/cli.ts";
import { ensureKernel, type Kernel } from "../vm/lib.ts";
import {
  type BuilderOptions,
  type BuilderResult,
  dracutBaseDir,
  initramfsToolsConf,
  runDracut,
  runMkinitramfs,
} from "../e2e/lib.ts";
import { exists } from "../helpers/fs.ts";
import { resolveIn, unpackInitramfs } from "../helpers/initramfs.ts";

const dec = new TextDecoder();
/** Where isboot goes with the default PREFIX, as the hooks record it. */
const INSTALLED = "/usr/local/bin/isboot";
const ENV = { PATH: "/usr/bin:/sbin:/bin" };
const FAILURE = new RegExp(
  `isboot: cannot add isboot to the initramfs: ${INSTALLED} is missing or not executable`,
);

async function run(cmd: string, args: string[], cwd?: string): Promise<string> {
  const o = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  if (!o.success) {
    throw new Error(
      `${cmd} ${args.join(" ")}: exit ${o.code}: ${dec.decode(o.stderr).slice(-2000)}`,
    );
  }
  return dec.decode(o.stdout);
}

/** A fresh `make install DESTDIR=...` (default PREFIX); `removeExecutable` then deletes isboot. */
async function install(removeExecutable: boolean): Promise<{ destdir: string; bundle: boolean }> {
  const destdir = await Deno.makeTempDir({ prefix: "isboot-install-" });
  await run("make", ["--no-print-directory", "install", `DESTDIR=${destdir}`], ROOT);
  const bundle = await exists(`${destdir}/usr/local/lib/isboot/isboot.js`);
  if (removeExecutable) {
    await Deno.remove(`${destdir}${INSTALLED}`);
    await Deno.remove(`${destdir}/usr/local/lib/isboot`, { recursive: true }).catch(() => {});
  }
  return { destdir, bundle };
}

type Kind = "mkinitramfs" | "dracut";

/** Build an image of `kind` with DESTDIR's installed hooks; see the header. */
async function build(
  kind: Kind,
  kernel: Kernel,
  destdir: string,
  out: string,
): Promise<BuilderResult> {
  const work = await Deno.makeTempDir({ prefix: `isboot-${kind}-` });
  const opts: BuilderOptions = {
    env: ENV,
    clearEnv: true,
    binds: [[`${destdir}/usr/local`, "/usr/local"]],
  };
  try {
    if (kind === "dracut") {
      const base = await dracutBaseDir(work, `${destdir}/usr/lib/dracut/modules.d/95isboot`);
      return await runDracut(kernel, base, work, out, opts);
    }
    const conf = `${work}/conf`;
    await initramfsToolsConf(conf, "list");
    await Deno.symlink(`${destdir}/usr/share/initramfs-tools/hooks`, `${conf}/hooks`);
    await Deno.symlink(`${destdir}/usr/share/initramfs-tools/scripts`, `${conf}/scripts`);
    return await runMkinitramfs(kernel, conf, out, opts);
  } finally {
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

for (const kind of ["mkinitramfs", "dracut"] as const) {
  Deno.test({
    name: `make install (default PREFIX, DESTDIR): ${kind} with DESTDIR's installed hooks, ` +
      `PATH=/usr/bin:/sbin:/bin, no ISBOOT_BIN, puts the installed isboot in the image and it runs`,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const kernel = await ensureKernel();
      const { destdir, bundle } = await install(false);
      try {
        const img = `${destdir}/initrd.img`;
        const r = await build(kind, kernel, destdir, img);
        assert.equal(r.code, 0, `${kind} failed:\n${(r.stdout + r.stderr).slice(-3000)}`);
        assert.doesNotMatch(r.stderr, /isboot: cannot add/);
        const root = await unpackInitramfs(img, `${destdir}/unpacked`);
        const bin = await resolveIn(root, "/usr/bin/isboot");
        const st = await Deno.stat(`${root}${bin}`);
        assert.ok(st.isFile && (st.mode! & 0o111) !== 0, "/usr/bin/isboot is an executable");
        if (bundle) {
          assert.equal(bin, "/usr/lib/isboot/isboot", "/usr/bin/isboot leads to the launcher");
          for (const f of ["isboot", "isboot.js", "deno"]) {
            assert.ok(
              await exists(`${root}/usr/lib/isboot/${f}`),
              `/usr/lib/isboot/${f} in the image`,
            );
          }
          assert.equal(
            (await Deno.stat(`${root}/usr/lib/isboot/isboot.js`)).size,
            (await Deno.stat(`${destdir}/usr/local/lib/isboot/isboot.js`)).size,
          );
          assert.match(
            await Deno.readTextFile(`${root}/usr/lib/isboot/isboot`),
            /^here=\/usr\/lib\/isboot$/m,
            "the launcher in the image has fixed paths",
          );
          // The V8 code cache made in the image for the bundle at its boot path.
          assert.doesNotMatch(r.stderr, /no V8 code cache/);
          const cache = `${root}/usr/lib/isboot/deno-cache`;
          let cached = false;
          for await (const e of Deno.readDir(cache)) {
            if (!e.name.startsWith("v8_code_cache")) continue;
            const bytes = await Deno.readFile(`${cache}/${e.name}`);
            cached ||= new TextDecoder("latin1").decode(bytes).includes(
              "file:///usr/lib/isboot/isboot.js",
            );
          }
          assert.ok(cached, "the image's code cache holds the bundle at /usr/lib/isboot/isboot.js");
          assert.ok(!(await exists(`${cache}/cmdline`)), "the warm-up's command line is gone");
        }
        // The image's own isboot, with the libraries the hook copied, inside the image.
        const version = (await run("chroot", [root, "/usr/bin/isboot", "--version"])).trim();
        const want = (await run(`${destdir}${INSTALLED}`, ["--version"])).trim();
        assert.equal(version, want);
        // The script that starts it at boot is in the image too.
        const script = kind === "dracut" ? "sbin/isboot-run" : "scripts/local-top/isboot";
        assert.match(await Deno.readTextFile(`${root}/${script}`), /\/usr\/bin\/isboot boot/);
      } finally {
        await Deno.remove(destdir, { recursive: true }).catch(() => {});
      }
    },
  });

  Deno.test({
    name: `make install (default PREFIX, DESTDIR), executable removed: ${kind} with DESTDIR's ` +
      `installed hooks fails, exit non-zero, one line naming ${INSTALLED}, no image`,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const kernel = await ensureKernel();
      const { destdir } = await install(true);
      try {
        const img = `${destdir}/initrd.img`;
        const r = await build(kind, kernel, destdir, img);
        const all = `${r.stdout}\n${r.stderr}`;
        assert.notEqual(r.code, 0, `${kind} succeeded without isboot:\n${all.slice(-3000)}`);
        const lines = r.stderr.split("\n").filter((l) => FAILURE.test(l));
        assert.equal(lines.length, 1, `one failure line on stderr:\n${r.stderr.slice(-3000)}`);
        if (kind === "dracut") {
          assert.match(lines[0], /^dracut: isboot: /, "dfatal's line");
          assert.equal(r.code, 1);
          assert.equal(await exists(img), false, "no image written");
        } else {
          assert.match(lines[0], /^E: isboot: /);
          assert.match(r.stderr, /hooks\/isboot failed with return 1\./);
          // mkinitramfs creates -o FILE first; update-initramfs builds into FILE.new and
          // deletes it on failure, keeping the old image.
          assert.equal((await Deno.stat(img)).size, 0, "nothing written to the image");
        }
      } finally {
        await Deno.remove(destdir, { recursive: true }).catch(() => {});
      }
    },
  });
}

Deno.test({
  name: "make install (default PREFIX, DESTDIR), bundle form with deno removed: dracut with " +
    "DESTDIR's installed hooks fails, exit 1, one line naming the missing piece, no image",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async (t) => {
    const kernel = await ensureKernel();
    const { destdir, bundle } = await install(false);
    try {
      if (!bundle) {
        await t.step({
          name: "single executable built: no bundle to break",
          ignore: true,
          fn() {},
        });
        return;
      }
      await Deno.remove(`${destdir}/usr/local/lib/isboot/deno`);
      const img = `${destdir}/initrd.img`;
      const r = await build("dracut", kernel, destdir, img);
      assert.equal(r.code, 1, r.stderr.slice(-3000));
      const lines = r.stderr.split("\n").filter((l) => /cannot add isboot/.test(l));
      assert.equal(lines.length, 1, r.stderr.slice(-3000));
      assert.match(
        lines[0],
        /isboot: cannot add isboot to the initramfs: \/usr\/local\/lib\/isboot\/isboot is the bundle launcher, but \/usr\/local\/lib\/isboot\/isboot\.js or \/usr\/local\/lib\/isboot\/deno is missing$/,
      );
      assert.equal(await exists(img), false, "no image written");
    } finally {
      await Deno.remove(destdir, { recursive: true }).catch(() => {});
    }
  },
});
