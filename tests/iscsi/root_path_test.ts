/** parseNetRoot (src/iscsi/root_path.ts): RFC 4173 root paths with dracut's credentials. */
import assert from "node:assert/strict";
import fc from "fast-check";
import { fuzzOptions } from "../helpers/fuzz.ts";
import { parseNetRoot } from "../../src/iscsi/root_path.ts";
import { InvalidInputError } from "../../src/errors.ts";

Deno.test("root path: RFC 4173 netroot with credentials, IPv6 and hex LUN", () => {
  assert.deepEqual(parseNetRoot("iscsi:10.0.2.2::3260:1:iqn.2026-11.test:disk1"), {
    server: "10.0.2.2",
    port: 3260,
    lun: 1,
    targetName: "iqn.2026-11.test:disk1",
  });
  assert.deepEqual(parseNetRoot("iscsi:u:p:ru:rp@[fd00::2]:6::0001000000000000:iqn.x:y"), {
    server: "fd00::2",
    port: 3260,
    lun: 1,
    targetName: "iqn.x:y",
    chapUser: "u",
    chapSecret: "p",
    mutualUser: "ru",
    mutualSecret: "rp",
  });
  assert.deepEqual(parseNetRoot("iscsi:host.example::::iqn").lun, 0);
  assert.deepEqual(parseNetRoot("iscsi:h:::10:iqn").lun, 16);
  assert.deepEqual(parseNetRoot("iscsi:h:::0002-0000:iqn").lun, 2);
  for (
    const bad of [
      "nfs:1.2.3.4:/x",
      "iscsi:1.2.3.4",
      "iscsi::::1:iqn.x",
      "iscsi:1.2.3.4:17::1:iqn.x",
      "iscsi:1.2.3.4::70000:1:iqn.x",
      "iscsi:1.2.3.4::3260:1:",
      "iscsi:[1.2.3.4]::3260:1:iqn.x",
      "iscsi:u@1.2.3.4::3260:1:iqn.x",
    ]
  ) assert.throws(() => parseNetRoot(bad), InvalidInputError, bad);
});

Deno.test("root path property: netroot format/parse round trip", () => {
  const ipv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((t) => t.join("."));
  const iqn = fc.stringMatching(/^iqn\.20[0-9]{2}-[01][0-9]\.[a-z]{1,8}(:[a-z0-9.:-]{1,20})?$/);
  fc.assert(
    fc.property(
      ipv4,
      fc.integer({ min: 1, max: 65535 }),
      fc.nat(16383),
      iqn,
      (ip, port, lun, name) => {
        const n = parseNetRoot(`iscsi:${ip}::${port}:${lun.toString(16)}:${name}`);
        assert.deepEqual(n, { server: ip, port, lun, targetName: name });
      },
    ),
    fuzzOptions(300),
  );
});
