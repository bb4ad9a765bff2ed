/**
 * `isboot probe` as a user runs it, against a private tgtd: mutual CHAP with
 * CRC32C header and data digests prints the right size and identity (text
 * and --json); a wrong secret exits 4 with one line and no secret in it.
 */
import assert from "node:assert/strict";
import { runCli } from "../helpers/cli.ts";
import { withTgtd } from "../../peers/tgtd.ts";

const IQN = "iqn.2026-11.test.isboot:probe";
const MiB = 1024 * 1024;
const USER = "probe-user";
const SECRET = "s3cret-initiator-pw";
const TUSER = "probe-target";
const TSECRET = "s3cret-target-pw";

async function secretFile(dir: string, name: string, text: string): Promise<string> {
  const p = `${dir}/${name}`;
  await Deno.writeTextFile(p, text + "\n", { mode: 0o600 });
  return p;
}

Deno.test("probe: mutual CHAP + CRC32C digests prints the right size and identity (text and --json)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "isboot-probe-" });
  try {
    await withTgtd(async (tgt) => {
      const tid = await tgt.createTarget(IQN);
      await tgt.addLun(tid, { lun: 1, size: 48 * MiB, thin: true });
      await tgt.addLun(tid, { lun: 2, size: 16 * MiB, blockSize: 4096, readOnly: true });
      await tgt.addChap(tid, { user: USER, secret: SECRET }, { user: TUSER, secret: TSECRET });
      await tgt.setDigests(tid, "CRC32C", "CRC32C");
      const args = [
        "--chap-user",
        USER,
        "--chap-secret-file",
        await secretFile(dir, "chap", SECRET),
        "--mutual-user",
        TUSER,
        "--mutual-secret-file",
        await secretFile(dir, "mutual", TSECRET),
        "--header-digest",
        "crc32c",
        "--data-digest",
        "crc32c",
      ];
      const r = await runCli(["probe", `iscsi://${tgt.portal}/${IQN}/1`, ...args]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^target: +${IQN.replaceAll(".", "\\.")}$`, "m"));
      assert.match(r.stdout, /^vendor: +IET$/m);
      assert.match(r.stdout, /^product: +VIRTUAL-DISK$/m);
      assert.match(r.stdout, /^revision: +0001$/m);
      assert.match(r.stdout, new RegExp(`^serial: +beaf${tid}1$`, "m"));
      assert.match(r.stdout, /^size: +50331648 bytes \(48 MiB\), 98304 blocks$/m);
      assert.match(r.stdout, /^logical block: +512 bytes$/m);
      assert.match(r.stdout, /^write protect: +no$/m);
      assert.match(r.stdout, /^authentication: +CHAP \(.+\), mutual$/m);
      assert.match(r.stdout, /^ {2}HeaderDigest=CRC32C$/m);
      assert.match(r.stdout, /^ {2}DataDigest=CRC32C$/m);
      assert.match(r.stdout, /^ {2}MaxBurstLength=\d+$/m);
      assert.match(r.stdout, /^ {2}UNMAP: +yes$/m);
      assert.match(r.stdout, /^login time: +[\d.]+ ms$/m);
      assert.match(r.stdout, /^LUN: +1 \(target has LUNs 0, 1, 2\)$/m);
      for (const s of [SECRET, TSECRET]) assert.ok(!r.stdout.includes(s) && !r.stderr.includes(s));

      const j = await runCli(["probe", `iscsi://${tgt.portal}/${IQN}/2`, "--json", ...args]);
      assert.equal(j.code, 0, j.stderr);
      const doc = JSON.parse(j.stdout);
      assert.equal(doc.target, IQN);
      assert.equal(doc.lun, 2);
      assert.equal(doc.inventory.size, 16 * MiB);
      assert.equal(doc.inventory.logicalBlockSize, 4096);
      assert.equal(doc.inventory.writeProtect, true);
      assert.equal(doc.inventory.vendor, "IET");
      assert.equal(doc.session.auth, "mutual");
      assert.equal(doc.session.parameters.HeaderDigest, "CRC32C");
      assert.equal(doc.session.parameters.DataDigest, "CRC32C");
      assert.equal(typeof doc.session.loginMs, "number");
      for (const s of [SECRET, TSECRET]) assert.ok(!j.stdout.includes(s));
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("probe: a wrong secret exits 4 with one line that does not contain the secret", async () => {
  const dir = await Deno.makeTempDir({ prefix: "isboot-probe-" });
  try {
    await withTgtd(async (tgt) => {
      const tid = await tgt.createTarget(IQN);
      await tgt.addLun(tid, { lun: 1, size: 8 * MiB });
      await tgt.addChap(tid, { user: USER, secret: SECRET }, { user: TUSER, secret: TSECRET });
      const wrong = "wrong-secret-xyzzy";
      const cases: string[][] = [
        // wrong initiator secret, from a file
        ["--chap-user", USER, "--chap-secret-file", await secretFile(dir, "w", wrong)],
        // right initiator secret, wrong target secret: the target fails mutual auth
        [
          "--chap-user",
          USER,
          "--chap-secret-file",
          await secretFile(dir, "c", SECRET),
          "--mutual-user",
          TUSER,
          "--mutual-secret-file",
          await secretFile(dir, "m", wrong),
        ],
      ];
      // MD5 only: tgt's numbering quirk (CHAP_A=7 as SHA-1) does not come into play,
      // so stderr must be exactly one line.
      cases.push(["--chap-algorithms", "md5", ...cases[0]]);
      for (const [i, extra] of cases.entries()) {
        const r = await runCli(["probe", `iscsi://${tgt.portal}/${IQN}/1`, ...extra]);
        assert.equal(r.code, 4, r.stderr);
        assert.equal(r.stdout, "");
        const lines = r.stderr.trim().split("\n");
        assert.ok(lines.every((l) => l.startsWith("isboot: ")), r.stderr);
        // With the default algorithm list the iSCSI layer warns once before it retries
        // tgt's CHAP_A=7 as SHA-1; the error itself is always a single line.
        assert.equal(lines.filter((l) => !l.startsWith("isboot: warning:")).length, 1, r.stderr);
        if (i === 2) assert.equal(lines.length, 1, r.stderr);
        for (const s of [wrong, SECRET, TSECRET]) assert.ok(!r.stderr.includes(s), r.stderr);
      }
      // the secret from the environment is not echoed either
      const r = await runCli(["probe", `iscsi://${tgt.portal}/${IQN}/1`, "--chap-user", USER], {
        env: { ISBOOT_CHAP_SECRET: wrong },
      });
      assert.equal(r.code, 4, r.stderr);
      assert.ok(!r.stderr.includes(wrong));
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("probe: usage errors exit 2, a malformed TARGET exits 3", async () => {
  const r = await runCli(["probe"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /^isboot: probe takes one TARGET/);
  const bad = await runCli(["probe", "iscsi://[::1/iqn.x/1"]);
  assert.equal(bad.code, 3);
  assert.equal(bad.stderr.trim().split("\n").length, 1);
  const help = await runCli(["probe", "--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^usage: isboot probe TARGET/);
});
