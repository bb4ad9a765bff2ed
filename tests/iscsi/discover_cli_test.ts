/**
 * `isboot discover` end to end against a private tgtd, and the shared target
 * options (src/cli/target_options.ts): text and JSON output, IPv6 portals,
 * CHAP from a file and from the environment, exit codes 2/3/4 with one line
 * and no secret in any output.
 */
import assert from "node:assert/strict";
import { runCli } from "../helpers/cli.ts";
import { withTgtd } from "../../peers/tgtd.ts";
import {
  defaultInitiatorName,
  parseTargetOptions,
  sessionConfigFromUri,
} from "../../src/cli/target_options.ts";
import { InvalidInputError, OperationalError, UsageError } from "../../src/errors.ts";

const SECRET = "discovery-secret-77";

Deno.test("isboot discover: text and --json, several targets, IPv6, CHAP options, mutual CHAP refused without target auth", async () => {
  await withTgtd(async (tgt) => {
    for (const n of ["disk1", "disk2"]) {
      const tid = await tgt.createTarget(`iqn.2026-11.test:${n}`);
      await tgt.addLun(tid, { lun: 1, size: 1 << 20 });
    }
    let r = await runCli(["discover", tgt.portal]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      r.stdout,
      `iqn.2026-11.test:disk1\n  ${tgt.portal}  portal group 1\niqn.2026-11.test:disk2\n  ${tgt.portal}  portal group 1\n`,
    );
    r = await runCli(["discover", tgt.portal, "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const doc = JSON.parse(r.stdout);
    assert.equal(doc.portal, tgt.portal);
    assert.deepEqual(doc.targets[1], {
      name: "iqn.2026-11.test:disk2",
      portals: [{ host: "::1", port: tgt.port, tpgt: 1 }],
    });

    // tgt has no discovery authentication, so it answers AuthMethod=None:
    // fine for one-way CHAP; offering only CHAP (mutual) it refuses us: exit 4.
    const file = await Deno.makeTempFile();
    try {
      await Deno.writeTextFile(file, SECRET + "\n");
      r = await runCli([
        "discover",
        tgt.portal,
        "--chap-user",
        "disco",
        "--chap-secret-file",
        file,
        "--debug",
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /disk1/);
      assert.ok(!r.stderr.includes(SECRET) && !r.stdout.includes(SECRET));
      r = await runCli(
        [
          "discover",
          tgt.portal,
          "--chap-user",
          "disco",
          "--chap-secret-file",
          file,
          "--mutual-user",
          "tgt",
        ],
        { env: { ISBOOT_MUTUAL_SECRET: "mutual-" + SECRET } },
      );
      assert.equal(r.code, 4, r.stderr);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.match(r.stderr, /^isboot: target refused login: authentication failure/);
      assert.ok(!r.stderr.includes(SECRET));
    } finally {
      await Deno.remove(file);
    }
  }, { host: "::1" });
});

Deno.test("isboot discover: usage and input errors", async () => {
  let r = await runCli(["discover"]);
  assert.equal(r.code, 2);
  r = await runCli(["discover", "::1"]);
  assert.equal(r.code, 3);
  assert.match(r.stderr, /^isboot: .*brackets/);
  r = await runCli(["discover", "127.0.0.1:1", "--header-digest", "md5"]);
  assert.equal(r.code, 2);
  r = await runCli(["discover", "--help"]);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /--chap-secret-file/);
  // Nothing listens on port 1.
  r = await runCli(["discover", "127.0.0.1:1"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^isboot: cannot connect to 127\.0\.0\.1:1/);
});

Deno.test("target options: defaults, precedence, consistency, secrets never in messages", async () => {
  const none = () => undefined;
  assert.equal(defaultInitiatorName("Host_1.Example"), "iqn.2026-11.org.isboot:host-1.example");
  const d = await parseTargetOptions({}, none);
  assert.equal(d.chap, undefined);
  assert.deepEqual(d.chapAlgorithms, ["sha3-256", "sha256", "sha1", "md5"]);
  assert.equal(d.headerDigest, "prefer-none");
  const env = (n: string) =>
    ({ ISBOOT_CHAP_SECRET: "env-secret-1234", ISBOOT_MUTUAL_SECRET: "env-mutual-5678" } as Record<
      string,
      string
    >)[n];
  const o = await parseTargetOptions({
    "chap-user": "u",
    "mutual-user": "t",
    "header-digest": "CRC32C",
    "data-digest": "none",
    "chap-algorithms": "md5",
  }, env);
  assert.equal(new TextDecoder().decode(o.chap?.secret), "env-secret-1234");
  assert.equal(new TextDecoder().decode(o.mutual?.secret), "env-mutual-5678");
  assert.equal(o.headerDigest, "crc32c");
  assert.equal(o.dataDigest, "none");
  assert.deepEqual(o.chapAlgorithms, ["md5"]);
  // URI credentials are used when no option or environment gives them.
  const c = await sessionConfigFromUri(
    "iscsi://bob%uri-secret-999@[::1]:3261/iqn.2026-11.test:d/2",
    {},
    none,
    { isidPurpose: "serve" },
  );
  assert.equal(c.chap?.user, "bob");
  assert.equal(new TextDecoder().decode(c.chap?.secret), "uri-secret-999");
  assert.deepEqual(c.portal, { host: "::1", port: 3261 });
  assert.equal(c.lun, 2);
  assert.equal(c.isidPurpose, "serve");
  const bad: [Record<string, string>, (n: string) => string | undefined, unknown][] = [
    [{ "chap-user": "u" }, none, UsageError],
    [{ "mutual-user": "t" }, env, UsageError],
    [{ "chap-algorithms": "sha512" }, none, UsageError],
    [{ "header-digest": "adler" }, none, UsageError],
    [{ initiator: "not-an-iqn" }, none, InvalidInputError],
    [{ "chap-user": "u", "chap-secret-file": "/nonexistent/secret" }, none, OperationalError],
  ];
  for (const [v, e, cls] of bad) {
    await assert.rejects(parseTargetOptions(v, e), (err) => {
      assert.ok(err instanceof (cls as typeof Error), `${JSON.stringify(v)}: ${err}`);
      assert.ok(!String(err).includes("env-secret-1234"));
      return true;
    });
  }
  const empty = await Deno.makeTempFile();
  try {
    await assert.rejects(
      parseTargetOptions({ "chap-user": "u", "chap-secret-file": empty }, none),
      InvalidInputError,
    );
  } finally {
    await Deno.remove(empty);
  }
});
