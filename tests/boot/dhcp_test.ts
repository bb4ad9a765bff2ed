/**
 * The target a DHCP lease's root path names (option 17, RFC 4173 form).
 */
import assert from "node:assert/strict";
import { assertEquals, assertThrows } from "../helpers/assert.ts";
import { targetFromLease } from "../../src/boot/dhcp.ts";
import { InvalidInputError } from "../../src/errors.ts";
import { parseIp } from "../../src/net/addr.ts";
import type { Lease } from "../../src/net/dhcp/message.ts";

function lease(rootPath?: string): Lease {
  return {
    address: parseIp("10.9.0.55")!,
    prefixLength: 24,
    dns: [],
    leaseSeconds: 120,
    t1Seconds: 60,
    t2Seconds: 105,
    serverId: parseIp("10.9.0.1")!,
    obtainedAt: 0,
    ...(rootPath !== undefined ? { rootPath } : {}),
  };
}

Deno.test("dhcp boot: the root path's target, with the server's address when its field is empty", () => {
  const t = targetFromLease(lease("iscsi:10.9.0.7::3261:2:iqn.2026-12.test:root"));
  assertEquals([t.label, t.host, t.port, t.lun, t.targetName], [
    "DHCP root path",
    "10.9.0.7",
    3261,
    2,
    "iqn.2026-12.test:root",
  ]);
  const empty = targetFromLease(lease("iscsi:::::iqn.2026-12.test:root"));
  assertEquals([empty.host, empty.port, empty.lun], ["10.9.0.1", 3260, 0]);
  const chap = targetFromLease(lease("iscsi:u:s3cret@::3260:1:iqn.2026-12.test:root"));
  assertEquals([chap.host, chap.chapUser, chap.chapSecret], ["10.9.0.1", "u", "s3cret"]);
});

Deno.test("dhcp boot: no root path, or a malformed one: InvalidInputError without the secret", () => {
  assertThrows(() => targetFromLease(lease()), InvalidInputError, "sent no root path");
  assertThrows(() => targetFromLease(lease("")), InvalidInputError, "sent no root path");
  try {
    targetFromLease(lease("iscsi:u:s3cret@10.9.0.1:17:3260:1:iqn.x"));
    assert.fail("accepted");
  } catch (e) {
    assert.ok(e instanceof InvalidInputError);
    assert.match(e.message, /iscsi:<redacted>@/);
    assert.doesNotMatch(e.message, /s3cret/);
  }
  assertThrows(
    () => targetFromLease(lease("nfs:10.9.0.1:/root")),
    InvalidInputError,
    "DHCP root path",
  );
});
