/** Target names: iscsi:// URIs and RFC 4173 names, their errors, and that passwords are never echoed. */
import assert from "node:assert/strict";
import fc from "fast-check";
import { InvalidInputError } from "../../src/errors.ts";
import { formatTargetUri, parsePortal, parseTargetUri, redactUri } from "../../src/iscsi/uri.ts";
import { parseTargetAddress } from "../../src/iscsi/login.ts";
import { sendTargetsRecords } from "../../src/iscsi/discovery.ts";
import { IscsiProtocolError } from "../../src/iscsi/errors.ts";
import { fuzzOptions } from "../helpers/fuzz.ts";

Deno.test("iscsi:// URIs", () => {
  assert.deepEqual(parseTargetUri("iscsi://192.0.2.1/iqn.2026-11.test:disk1/1"), {
    host: "192.0.2.1",
    port: 3260,
    targetName: "iqn.2026-11.test:disk1",
    lun: 1,
  });
  assert.deepEqual(parseTargetUri("iscsi://alice%s3cr%40t@[fd00::1]:3261/iqn.2026-11.test:d/0"), {
    host: "fd00::1",
    port: 3261,
    targetName: "iqn.2026-11.test:d",
    lun: 0,
    user: "alice",
    password: "s3cr@t",
  });
  assert.deepEqual(
    parseTargetUri("iscsi://bob@host.example:3260/iqn.2026-11.test:d/300").user,
    "bob",
  );
  assert.equal(
    formatTargetUri(parseTargetUri("iscsi://bob%pw@[::1]:5/iqn.2026-11.test:d/2")),
    "iscsi://bob@[::1]:5/iqn.2026-11.test:d/2",
  );
});

Deno.test("RFC 4173 names as iPXE and dracut write them", () => {
  assert.deepEqual(parseTargetUri("iscsi:10.0.2.2::3260:1:iqn.2026-11.test:disk1"), {
    host: "10.0.2.2",
    port: 3260,
    targetName: "iqn.2026-11.test:disk1",
    lun: 1,
  });
  const d = parseTargetUri("iscsi:10.0.2.2::::iqn.2026-11.test:disk1");
  assert.equal(d.port, 3260);
  assert.equal(d.lun, 0);
  assert.equal(parseTargetUri("iscsi:[fd00::2]:6:3261:1f:iqn.2026-11.test:x").lun, 0x1f);
  assert.equal(parseTargetUri("iscsi:[fd00::2]:6:3261:1f:iqn.2026-11.test:x").host, "fd00::2");
  const c = parseTargetUri("iscsi:user:pa55@10.0.0.1::3260:0:iqn.2026-11.test:x");
  assert.equal(c.user, "user");
  assert.equal(c.password, "pa55");
});

Deno.test("malformed names are exit-3 errors that never echo a password", () => {
  const bad = [
    "",
    "http://x/iqn.a/1",
    "iscsi://",
    "iscsi://host",
    "iscsi://host/iqn.2026-11.test:d",
    "iscsi://host/iqn.2026-11.test:d/x",
    "iscsi://host/iqn.2026-11.test:d/99999",
    "iscsi://host:0/iqn.2026-11.test:d/1",
    "iscsi://host:70000/iqn.2026-11.test:d/1",
    "iscsi://host:/iqn.2026-11.test:d/1",
    "iscsi://fd00::1/iqn.2026-11.test:d/1",
    "iscsi://[fd00::1/iqn.2026-11.test:d/1",
    "iscsi://u%topsecretpw@host/iqn.2026-11.test:d/zz",
    "iscsi://host//1",
    "iscsi:host:17:3260:1:iqn.2026-11.test:d",
    "iscsi:host::3260:zz:iqn.2026-11.test:d",
    "iscsi:host::3260:1:",
    "iscsi:u:topsecretpw@host::x:1:iqn.2026-11.test:d",
  ];
  for (const b of bad) {
    assert.throws(() => parseTargetUri(b), (e) => {
      assert.ok(e instanceof InvalidInputError, `${b}: ${e}`);
      assert.equal(e.exitCode, 3);
      assert.ok(!e.message.includes("topsecretpw"), e.message);
      return true;
    }, b);
  }
  assert.equal(redactUri("iscsi://u%pw@h/iqn.a:b/1"), "iscsi://u%***@h/iqn.a:b/1");
  assert.equal(redactUri("iscsi:u:pw@h::::iqn.a:b"), "iscsi:u:***@h::::iqn.a:b");
});

Deno.test("portals and TargetAddress values", () => {
  assert.deepEqual(parsePortal("[::1]:3261"), { host: "::1", port: 3261 });
  assert.deepEqual(parsePortal("example.org"), { host: "example.org", port: 3260 });
  assert.throws(() => parsePortal("::1"), InvalidInputError);
  assert.deepEqual(parseTargetAddress("[fd00::5]:3262,7"), {
    host: "fd00::5",
    port: 3262,
    tpgt: 7,
  });
  assert.deepEqual(parseTargetAddress("10.1.1.1:3260,1"), {
    host: "10.1.1.1",
    port: 3260,
    tpgt: 1,
  });
  assert.deepEqual(parseTargetAddress("10.1.1.1"), { host: "10.1.1.1", port: 3260 });
  assert.throws(() => parseTargetAddress("10.1.1.1:3260,x"), IscsiProtocolError);
  assert.throws(() => parseTargetAddress("[::1:3260,1"), IscsiProtocolError);
  const recs = sendTargetsRecords([
    ["TargetName", "iqn.2026-11.test:a"],
    ["TargetAddress", "[::1]:3260,1"],
    ["TargetAddress", "192.0.2.1:3260,2"],
    ["TargetName", "iqn.2026-11.test:b"],
  ], { host: "::1", port: 3260 });
  assert.deepEqual(recs, [
    {
      name: "iqn.2026-11.test:a",
      portals: [{ host: "::1", port: 3260, tpgt: 1 }, { host: "192.0.2.1", port: 3260, tpgt: 2 }],
    },
    { name: "iqn.2026-11.test:b", portals: [{ host: "::1", port: 3260, tpgt: null }] },
  ]);
  assert.throws(
    () => sendTargetsRecords([["TargetAddress", "h:1,1"]], { host: "h", port: 1 }),
    IscsiProtocolError,
  );
});

Deno.test("property: URI parser fed arbitrary text raises only InvalidInputError", () => {
  const piece = fc.constantFrom(
    "iscsi:",
    "iscsi://",
    "[",
    "]",
    ":",
    "/",
    "@",
    "%",
    "::1",
    "3260",
    "iqn.2026-11.a:b",
    "1",
    "",
    "zz",
    "%41",
    "%",
  );
  fc.assert(
    fc.property(
      fc.oneof(
        fc.string({ maxLength: 80 }),
        fc.array(piece, { maxLength: 12 }).map((a) => a.join("")),
      ),
      (s) => {
        try {
          const u = parseTargetUri(s);
          assert.ok(
            u.port >= 1 && u.port <= 65535 && u.lun >= 0 && u.lun <= 16383 &&
              u.targetName.length > 0,
          );
        } catch (e) {
          if (!(e instanceof InvalidInputError)) throw e;
        }
      },
    ),
    fuzzOptions(3000),
  );
});
