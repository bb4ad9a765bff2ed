/**
 * The Debian package as a user gets it (no VM): `make deb`, lintian on the
 * result, then the package installed into a Debian 12 root (debootstrap with
 * Debian's kernel and initramfs-tools; tests/e2e/rootfs.sh "kernel", cached)
 * with Debian's own tools run in a chroot: the install command README shows,
 * `dpkg -r` and `dpkg --purge`. What is checked is what dpkg did by itself:
 * the update-initramfs trigger rebuilt /boot/initrd.img-KVER with isboot and
 * its local-top script in it, prerm refused a removal while isboot serves
 * the root, and purge left no file behind.
 *
 * The chroot (tests/helpers/chroot.ts) runs in a private mount namespace
 * with /proc and /dev mounted, so nothing of it outlives the command.
 */
import assert from "node:assert/strict";
import { ROOT } from "../helpers/cli.ts";
import { exists } from "../helpers/fs.ts";
import { resolveIn, unpackInitramfs } from "../helpers/initramfs.ts";
import { chroot } from "../helpers/chroot.ts";
import { E2E_DIR, ensureRootfs, KERNEL_PACKAGES } from "../e2e/lib.ts";
import { VERSION } from "../../src/version.ts";

const dec = new TextDecoder();
const DEB = `${ROOT}dist/isboot_${VERSION}_amd64.deb`;
/** README §2's install command, run exactly as written from the directory holding dist/. */
const README_INSTALL = "apt install ./dist/isboot_*_amd64.deb";

interface Ran {
  code: number;
  out: string;
}

async function run(cmd: string, args: string[], cwd?: string): Promise<Ran> {
  const o = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" }).output();
  return { code: o.code, out: dec.decode(o.stdout) + dec.decode(o.stderr) };
}

async function ok(cmd: string, args: string[], cwd?: string): Promise<string> {
  const r = await run(cmd, args, cwd);
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(" ")}: exit ${r.code}: ${r.out.slice(-3000)}`);
  }
  return r.out;
}

/** README's `make deb` in the source tree (rebuilds what changed: dist/isboot, the package). */
async function makeDeb(): Promise<string> {
  await ok("sh", ["-c", "make deb"], ROOT);
  assert.ok(await exists(DEB), `make deb made no ${DEB}`);
  return DEB;
}

/** The only kernel version in the root's /lib/modules. */
function kernelVersion(root: string): string {
  const k = [...Deno.readDirSync(`${root}/lib/modules`)].map((e) => e.name);
  assert.equal(k.length, 1, `one kernel in the root: ${k}`);
  return k[0];
}

/** What the image at `img` holds of isboot (unpacked under `work`). */
async function imageIsboot(img: string, work: string): Promise<{
  bin: string | null;
  localTop: string | null;
  version: string | null;
}> {
  await Deno.remove(work, { recursive: true }).catch(() => {});
  const root = await unpackInitramfs(img, work);
  const bin = (await exists(`${root}/usr/bin/isboot`))
    ? await resolveIn(root, "/usr/bin/isboot")
    : null;
  const localTop = (await exists(`${root}/scripts/local-top/isboot`))
    ? await Deno.readTextFile(`${root}/scripts/local-top/isboot`)
    : null;
  const version = bin ? (await ok("chroot", [root, "/usr/bin/isboot", "--version"])).trim() : null;
  await Deno.remove(work, { recursive: true }).catch(() => {});
  return { bin, localTop, version };
}

/**
 * Every path in the root, except what dpkg, apt and update-initramfs keep as
 * their own state (and the test's own files), for before/after comparison.
 */
async function snapshot(root: string): Promise<Set<string>> {
  const r = await chroot(root, "find / -xdev | sort");
  assert.equal(r.code, 0, r.out);
  const volatile =
    /^\/(proc|dev|sys|tmp|var\/tmp|run\/isboot|root\/dist|var\/lib\/dpkg|var\/lib\/apt|var\/cache|var\/log|var\/lib\/initramfs-tools|boot\/initrd\.img-)/;
  return new Set(r.out.split("\n").filter((p) => p && p !== "/" && !volatile.test(p)));
}

async function sha256(path: string): Promise<string> {
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", await Deno.readFile(path)));
  return Array.from(h, (b) => b.toString(16).padStart(2, "0")).join("");
}

Deno.test({
  name: "make deb: dist/isboot_VERSION_amd64.deb has the version, the files in their system " +
    "places, the control files, and lintian reports no errors",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const deb = await makeDeb();
    assert.equal((await ok("dpkg-deb", ["-f", deb, "Version"])).trim(), VERSION);
    assert.equal((await ok("dpkg-deb", ["-f", deb, "Package"])).trim(), "isboot");
    assert.match(await ok("dpkg-deb", ["-f", deb, "Depends"]), /\blibc6 \(>= /);
    const files = new Set(
      (await ok("dpkg-deb", ["-c", deb])).split("\n").map((l) =>
        l.replace(/^.*? \.\//, "/").replace(/ -> .*$/, "").replace(/\/$/, "")
      ),
    );
    const bundle = files.has("/usr/lib/isboot/isboot.js");
    for (
      const f of [
        "/usr/bin/isboot",
        ...(bundle ? ["/usr/lib/isboot/isboot", "/usr/lib/isboot/deno"] : []),
        "/usr/share/initramfs-tools/hooks/isboot",
        "/usr/share/initramfs-tools/scripts/local-top/isboot",
        "/usr/lib/dracut/modules.d/95isboot/module-setup.sh",
        "/usr/lib/dracut/modules.d/95isboot/isboot-parse.sh",
        "/usr/lib/dracut/modules.d/95isboot/isboot-run.sh",
        "/etc/network/if-down.d/isboot",
        "/etc/modprobe.d/isboot.conf",
        "/usr/share/man/man8/isboot.8.gz",
        "/usr/share/doc/isboot/copyright",
        "/usr/share/doc/isboot/changelog.gz",
        "/usr/share/doc/isboot/README.md.gz",
      ]
    ) assert.ok(files.has(f), `${f} in the package:\n${[...files].join("\n")}`);
    assert.ok(![...files].some((f) => f.startsWith("/usr/local")), "nothing under /usr/local");
    const ctl = await Deno.makeTempDir({ prefix: "isboot-deb-ctl-" });
    try {
      await ok("dpkg-deb", ["-e", deb, ctl]);
      assert.equal(
        (await Deno.readTextFile(`${ctl}/conffiles`)).trim().split("\n").sort().join("\n"),
        "/etc/modprobe.d/isboot.conf\n/etc/network/if-down.d/isboot",
      );
      assert.match(
        await Deno.readTextFile(`${ctl}/triggers`),
        /^activate-noawait update-initramfs$/m,
      );
    } finally {
      await Deno.remove(ctl, { recursive: true });
    }
    const l = await run("lintian", ["--tag-display-limit", "0", deb]);
    const errors = l.out.split("\n").filter((x) => /^E: /.test(x));
    assert.deepEqual(errors, [], `lintian errors:\n${l.out}`);
    assert.equal(l.code, 0, `lintian: exit ${l.code}:\n${l.out}`);
    console.log(
      `  lintian: ${l.out.split("\n").filter((x) => /^[WI]: /.test(x)).join("; ") || "clean"}`,
    );
  },
});

Deno.test({
  name: "deb in a Debian 12 root with initramfs-tools: README's apt install rebuilds the initrd " +
    "through the trigger (isboot + local-top in it); dpkg -r refused while isboot serves the " +
    "root, forced with ISBOOT_FORCE_REMOVE=1; purge leaves nothing behind",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async (t) => {
    const deb = await makeDeb();
    const tar = await ensureRootfs(KERNEL_PACKAGES);
    const root = await Deno.makeTempDir({ dir: E2E_DIR, prefix: "deb-root-" });
    const work = `${root}.img`;
    try {
      await ok("tar", ["-C", root, "--numeric-owner", "-xf", tar]);
      const kver = kernelVersion(root);
      const initrd = `${root}/boot/initrd.img-${kver}`;
      const before = await snapshot(root);
      assert.equal((await imageIsboot(initrd, work)).bin, null, "the stock initrd has no isboot");
      await Deno.mkdir(`${root}/root/dist`, { recursive: true });
      await Deno.copyFile(deb, `${root}/root/dist/${deb.split("/").pop()}`);

      await t.step(
        "install: dpkg's update-initramfs trigger rebuilds the initrd with isboot",
        async () => {
          const old = await sha256(initrd);
          const r = await chroot(root, README_INSTALL);
          assert.equal(r.code, 0, r.out);
          assert.match(r.out, /Processing triggers for initramfs-tools/, r.out);
          assert.match(
            r.out,
            new RegExp(`update-initramfs: Generating /boot/initrd\\.img-${kver}`),
            r.out,
          );
          assert.notEqual(await sha256(initrd), old, "the initrd was rebuilt");
          const img = await imageIsboot(initrd, work);
          const bundle = await exists(`${root}/usr/lib/isboot/isboot.js`);
          assert.equal(
            img.bin,
            bundle ? "/usr/lib/isboot/isboot" : "/usr/bin/isboot",
            "/usr/bin/isboot in the initrd",
          );
          assert.equal(img.version, `isboot ${VERSION}`, "the initrd's isboot runs");
          assert.match(
            img.localTop ?? "",
            /\/usr\/bin\/isboot boot/,
            "local-top/isboot in the initrd",
          );
          const status = await chroot(
            root,
            "dpkg-query -W -f='${Status} ${Version}' isboot && isboot --version && ls /usr/share/man/man8/isboot.8.gz",
          );
          assert.match(
            status.out,
            new RegExp(`install ok installed ${VERSION.replaceAll(".", "\\.")}`),
          );
          assert.match(status.out, new RegExp(`isboot ${VERSION.replaceAll(".", "\\.")}`));
        },
      );

      await t.step(
        "dpkg -r while isboot serves the root: prerm refuses, the package stays, the initrd " +
          "(rebuilt by the trigger the removal activated) still has isboot",
        async () => {
          await Deno.mkdir(`${root}/run/isboot`, { recursive: true });
          await Deno.writeTextFile(`${root}/run/isboot/boot.json`, "{}\n");
          await Deno.writeTextFile(`${root}/run/isboot/nbd0.ctl`, "");
          const r = await chroot(root, "dpkg -r isboot");
          assert.notEqual(r.code, 0, `removal went through:\n${r.out}`);
          const refusal = r.out.split("\n").filter((l) =>
            l.startsWith("isboot: refusing to remove isboot:")
          );
          assert.equal(refusal.length, 1, r.out);
          assert.match(refusal[0], /serves this system's root disk.*ISBOOT_FORCE_REMOVE=1/);
          assert.match(r.out, /pre-removal script subprocess returned error exit status 1/);
          // `dpkg -r` set the selection to deinstall; the state stays installed (configured).
          const s = await chroot(root, "dpkg-query -W -f='${db:Status-Status}' isboot");
          assert.equal(s.out.trim(), "installed", "still installed and configured");
          assert.ok(
            await exists(`${root}/usr/lib/isboot/isboot`) || await exists(`${root}/usr/bin/isboot`),
          );
          // dpkg activated the trigger when the removal began and still runs it; the hooks
          // are in place, so the image it builds has isboot.
          const img = await imageIsboot(initrd, work);
          assert.equal(img.version, `isboot ${VERSION}`, "isboot still in the initrd");
        },
      );

      await t.step(
        "ISBOOT_FORCE_REMOVE=1 dpkg -r: removed, the trigger rebuilds the initrd without isboot",
        async () => {
          const r = await chroot(root, "ISBOOT_FORCE_REMOVE=1 dpkg -r isboot");
          assert.equal(r.code, 0, r.out);
          assert.match(r.out, /removing isboot although it serves the root/);
          assert.match(r.out, /update-initramfs: Generating/, r.out);
          assert.equal(
            (await imageIsboot(initrd, work)).bin,
            null,
            "no isboot in the rebuilt initrd",
          );
          assert.equal(await exists(`${root}/usr/bin/isboot`), false);
          assert.ok(
            await exists(`${root}/etc/network/if-down.d/isboot`),
            "conffile kept until purge",
          );
        },
      );

      await t.step(
        "dpkg --purge of the removed package (its configuration files left): nothing of isboot is left",
        async () => {
          await Deno.remove(`${root}/run/isboot`, { recursive: true });
          const p = await chroot(root, "dpkg --purge isboot");
          assert.equal(p.code, 0, p.out);
          const s = await chroot(root, "dpkg-query -W -f='${Status}' isboot");
          assert.notEqual(s.out.trim(), "install ok installed");
          assert.equal((await imageIsboot(initrd, work)).bin, null);
          const after = await snapshot(root);
          const added = [...after].filter((p) => !before.has(p));
          const removed = [...before].filter((p) => !after.has(p));
          assert.deepEqual(added, [], "left behind by purge");
          assert.deepEqual(removed, [], "removed from the root by install + purge");
        },
      );
    } finally {
      await Deno.remove(root, { recursive: true }).catch(() => {});
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
});
