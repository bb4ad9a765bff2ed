import assert from "node:assert/strict";
import { runCli } from "../helpers/cli.ts";
import { decodeIbft, ibftChecksum } from "../../src/ibft/decode.ts";
import { ibftToJson } from "../../src/ibft/json.ts";
import { asSysfsSees, EXPECTED, FIXTURES, SYSFS_OF } from "./expected.ts";

const SECRETS = /initsecret1234|targetsecret987/;

async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "isboot-ibft-cli-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Exit 3 (or `code`), nothing on stdout, exactly one `isboot: ` line on stderr, no stack trace. */
function assertOneLineError(
  r: { code: number; stdout: string; stderr: string },
  code: number,
  message: RegExp,
): void {
  assert.equal(r.code, code, r.stderr);
  assert.equal(r.stdout, "");
  const lines = r.stderr.split("\n").filter((l) => l !== "");
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], /^isboot: /);
  assert.match(lines[0], message);
  assert.doesNotMatch(r.stderr, /\bat .*\.ts:\d+|internal error/);
  assert.doesNotMatch(r.stderr, SECRETS);
}

Deno.test("ibft cli: --json --show-secrets on every fixture prints the pinned decode", async () => {
  await Promise.all(
    Object.entries(EXPECTED).map(async ([name, table]) => {
      const path = `${FIXTURES}ibft/${name}`;
      const r = await runCli(["ibft", "--source", path, "--json", "--show-secrets"]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, "");
      const want = ibftToJson({ source: `file:${path}`, table, warnings: [] }, {
        showSecrets: true,
      });
      assert.deepStrictEqual(JSON.parse(r.stdout), want);
    }),
  );
});

Deno.test("ibft cli: --json has the documented field names, in order, secrets redacted", async () => {
  const path = `${FIXTURES}ibft/ipxe-bios-mutual-chap.bin`;
  const r = await runCli(["ibft", "--source", path, "--json"]);
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stdout, SECRETS);
  const doc = JSON.parse(r.stdout);
  assert.deepStrictEqual(Object.keys(doc), [
    "source",
    "header",
    "control",
    "initiator",
    "nics",
    "targets",
  ]);
  assert.deepStrictEqual(Object.keys(doc.header), [
    "signature",
    "length",
    "revision",
    "checksumValid",
    "oemId",
    "oemTableId",
  ]);
  assert.deepStrictEqual(Object.keys(doc.initiator), [
    "name",
    "valid",
    "bootSelected",
    "isnsServer",
    "slpServer",
    "primaryRadius",
    "secondaryRadius",
  ]);
  assert.deepStrictEqual(Object.keys(doc.nics[0]), [
    "index",
    "valid",
    "bootSelected",
    "ip",
    "prefixLength",
    "origin",
    "gateway",
    "primaryDns",
    "secondaryDns",
    "dhcpServer",
    "vlan",
    "mac",
    "pciBdf",
    "hostname",
    "global",
  ]);
  assert.deepStrictEqual(Object.keys(doc.targets[0]), [
    "index",
    "valid",
    "bootSelected",
    "ip",
    "port",
    "lun",
    "lunRaw",
    "chap",
    "nicIndex",
    "name",
    "chapName",
    "chapSecret",
    "reverseChapName",
    "reverseChapSecret",
    "radiusChap",
    "radiusReverseChap",
  ]);
  assert.equal(doc.targets[0].chapSecret, "<redacted>");
  assert.equal(doc.targets[0].reverseChapSecret, "<redacted>");
  assert.equal(doc.targets[0].chapName, "ibft-initiator");
  assert.equal(doc.targets[0].lunRaw, "0001000000000000");
});

Deno.test("ibft cli: the sysfs fixture trees print the binary's decode, less what sysfs hides", async () => {
  await Promise.all(
    Object.entries(SYSFS_OF).map(async ([dir, bin]) => {
      const path = `${FIXTURES}ibft-sysfs/${dir}`;
      const r = await runCli(["ibft", "--source", path, "--json", "--show-secrets"]);
      assert.equal(r.code, 0, r.stderr);
      const table = asSysfsSees(EXPECTED[bin]);
      const want = ibftToJson({ source: `sysfs:${path}`, table, warnings: [] }, {
        showSecrets: true,
      });
      assert.deepStrictEqual(JSON.parse(r.stdout), want);
    }),
  );
});

const README_EXAMPLE = `iBFT from file:tests/fixtures/ibft/ipxe-bios-mutual-chap.bin
  header     signature iBFT, 617 bytes, revision 1, checksum ok, OEM FENSYS / iPXE
  control    boot failover off
  initiator  iqn.2026-11.test:client  [valid, boot-selected]
  nic 0      52:54:00:12:34:56  PCI 00:03.0  [valid, boot-selected]
             10.0.2.15/24 (origin dhcp), gateway 10.0.2.2, DNS 10.0.2.3, DHCP server 10.0.2.2
  target 0   iqn.2026-11.test:disk1  LUN 1  [valid, boot-selected]
             10.0.2.2:3260 via nic 0, CHAP mutual: user ibft-initiator, secret <redacted>; target user ibft-target, secret <redacted>
`;

Deno.test("ibft cli: readable summary of the mutual-CHAP fixture (the README example)", async () => {
  const r = await runCli(["ibft", "--source", "tests/fixtures/ibft/ipxe-bios-mutual-chap.bin"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, README_EXAMPLE);
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  assert.ok(readme.includes(README_EXAMPLE), "README.md shows this exact output");
});

Deno.test("ibft cli: readable summary of every fixture, secrets only with --show-secrets", async () => {
  const paths = [
    ...Object.keys(EXPECTED).map((n) => `${FIXTURES}ibft/${n}`),
    ...Object.keys(SYSFS_OF).map((d) => `${FIXTURES}ibft-sysfs/${d}`),
  ];
  await Promise.all(paths.map(async (path) => {
    const r = await runCli(["ibft", "--source", path]);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, SECRETS);
    assert.match(r.stdout, /^iBFT from (file|sysfs):/);
    assert.match(r.stdout, /initiator {2}iqn\.2026-11\.test:client/);
    assert.match(r.stdout, /nic 0 {6}52:54:00:12:34:56/);
    assert.match(r.stdout, /target 0 {3}iqn\.2026-11\.test:disk1 {2}LUN 1/);
    if (path.includes("two-targets")) {
      assert.match(r.stdout, /target 1 {3}iqn\.2026-11\.test:disk2/);
    }
  }));
  const r = await runCli([
    "ibft",
    "--source",
    `${FIXTURES}ibft/ipxe-bios-mutual-chap.bin`,
    "--show-secrets",
  ]);
  assert.match(r.stdout, /secret initsecret1234; target user ibft-target, secret targetsecret987/);
});

Deno.test("ibft cli: corrupted tables exit 3 with one line naming structure and field", () =>
  withTemp(async (dir) => {
    const good = await Deno.readFile(`${FIXTURES}ibft/ipxe-bios-mutual-chap.bin`);
    const fix = (b: Uint8Array) => {
      b[9] = 0;
      b[9] = (0x100 - ibftChecksum(b)) & 0xff;
      return b;
    };
    const cases: [string, Uint8Array, RegExp][] = [
      [
        "checksum",
        (() => {
          const b = good.slice();
          b[0x24] ^= 1;
          return b;
        })(),
        /iBFT header: checksum: bytes do not sum to 0 \(use --ignore-checksum/,
      ],
      [
        "truncated",
        good.subarray(0, 400),
        /iBFT header: length: 617, but only 400 bytes .*truncated/,
      ],
      [
        "target-length",
        fix((() => {
          const b = good.slice();
          b[0x182] = 53;
          return b;
        })()),
        /iBFT target 0: length: 53, expected 54/,
      ],
      [
        "offset-past-end",
        fix((() => {
          const b = good.slice();
          new DataView(b.buffer).setUint16(0x1a4, 0x300, true);
          return b;
        })()),
        /iBFT target 0: name: string at 0x300 length 22 runs past the end of the table/,
      ],
      [
        "bad-string",
        fix((() => {
          const b = good.slice();
          b[0x240] = 0x07;
          return b;
        })()),
        /iBFT target 0: chapSecret: string at 0x23e contains a control character/,
      ],
      ["empty", new Uint8Array(0), /iBFT header: length: only 0 bytes/],
    ];
    await Promise.all(cases.map(async ([name, bytes, message]) => {
      const path = `${dir}/${name}.bin`;
      await Deno.writeFile(path, bytes);
      for (const json of [[], ["--json"]]) {
        const r = await runCli(["ibft", "--source", path, ...json]);
        assertOneLineError(r, 3, message);
        assert.ok(r.stderr.includes(path), "the error names the file");
      }
    }));
    const r = await runCli([
      "ibft",
      "--source",
      `${dir}/checksum.bin`,
      "--ignore-checksum",
      "--json",
    ]);
    assert.equal(r.code, 0);
    assert.match(r.stderr, /^isboot: warning: iBFT checksum is wrong .*--ignore-checksum\n$/);
    assert.equal(JSON.parse(r.stdout).header.checksumValid, false);
  }));

Deno.test("ibft cli: sources by name with --sys-root and --mem-path; nothing found is exit 1", () =>
  withTemp(async (dir) => {
    const mem = `${dir}/mem`;
    const img = new Uint8Array(0x100000);
    img.set(await Deno.readFile(`${FIXTURES}ibft/ipxe-bios-plain.bin`), 0x9e620);
    await Deno.writeFile(mem, img);
    const found = await runCli(["ibft", "--source", "mem", "--mem-path", mem, "--json"]);
    assert.equal(found.code, 0, found.stderr);
    assert.equal(JSON.parse(found.stdout).source, `mem:${mem}@0x9e620`);
    const auto = await runCli(["ibft", "--sys-root", dir, "--mem-path", mem, "--json"]);
    assert.equal(JSON.parse(auto.stdout).source, `mem:${mem}@0x9e620`);
    await Deno.writeFile(mem, new Uint8Array(0x100000));
    const none = await runCli(["ibft", "--sys-root", dir, "--mem-path", mem]);
    assertOneLineError(
      none,
      1,
      /no iBFT found \(tried acpi: .*sysfs: .*mem: .*kernels since 4\.11.*modprobe iscsi_ibft/,
    );
    const acpi = await runCli(["ibft", "--source", "acpi", "--sys-root", dir]);
    assertOneLineError(acpi, 1, /no ACPI table IBFT\/iBFT\/BIFT/);
  }));

Deno.test("ibft cli: usage errors exit 2; --help exits 0", async () => {
  const [bad, pos, help, enc] = await Promise.all([
    runCli(["ibft", "--no-such-option"]),
    runCli(["ibft", "extra-positional"]),
    runCli(["ibft", "--help"]),
    runCli(["ibft", "encode", "x.json"]),
  ]);
  assertOneLineError(bad, 2, /no-such-option/);
  assertOneLineError(pos, 2, /extra-positional|positional/);
  assertOneLineError(enc, 2, /encode needs --output TABLE/);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^usage: isboot ibft \[--source auto\|acpi\|sysfs\|mem\|FILE\]/);
});

Deno.test("ibft cli: encode turns --json --show-secrets output back into an equal table", () =>
  withTemp(async (dir) => {
    for (const name of ["ipxe-bios-mutual-chap.bin", "ipxe-bios-two-targets.bin"]) {
      const src = `${FIXTURES}ibft/${name}`;
      const shown = await runCli(["ibft", "--source", src, "--json", "--show-secrets"]);
      await Deno.writeTextFile(`${dir}/model.json`, shown.stdout);
      const out = `${dir}/table.bin`;
      const r = await runCli(["ibft", "encode", `${dir}/model.json`, "--output", out]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "");
      const bytes = await Deno.readFile(out);
      assert.equal(ibftChecksum(bytes), 0);
      const back = decodeIbft(bytes);
      back.header.length = EXPECTED[name].header.length;
      assert.deepStrictEqual(back, EXPECTED[name]);
    }
  }));

Deno.test("ibft cli: encode refuses redacted secrets and malformed JSON with exit 3", () =>
  withTemp(async (dir) => {
    const src = `${FIXTURES}ibft/ipxe-bios-mutual-chap.bin`;
    const redacted = await runCli(["ibft", "--source", src, "--json"]);
    await Deno.writeTextFile(`${dir}/redacted.json`, redacted.stdout);
    await Deno.writeTextFile(`${dir}/broken.json`, "{ not json");
    const doc = JSON.parse(redacted.stdout);
    doc.targets[0].chapSecret = "x";
    doc.targets[0].reverseChapSecret = "y";
    doc.nics[0].mac = "52:54:00:12:34";
    await Deno.writeTextFile(`${dir}/badmac.json`, JSON.stringify(doc));
    const [a, b, c] = await Promise.all(
      ["redacted", "broken", "badmac"].map((n) =>
        runCli(["ibft", "encode", `${dir}/${n}.json`, "--output", `${dir}/${n}.bin`])
      ),
    );
    assertOneLineError(
      a,
      3,
      /targets\[0\]\.chapSecret: is "<redacted>"; print the JSON with --show-secrets/,
    );
    assertOneLineError(b, 3, /broken\.json: not JSON/);
    assertOneLineError(c, 3, /nic 0: mac: must look like 52:54:00:12:34:56/);
  }));
