/**
 * src/iscsi/config.ts: failover portals and the recovery timeout from the
 * shared target options, through sessionConfigFromUri and on their own.
 */
import assert from "node:assert/strict";
import { UsageError } from "../../src/errors.ts";
import {
  parseCommandTimeout,
  parsePortalOptions,
  parseRecoveryTimeout,
  sessionConfigFromUri,
} from "../../src/iscsi/config.ts";

const env = () => undefined;
const URI = "iscsi://192.0.2.1/iqn.2026-11.test.isboot:d/1";

Deno.test("config: --portal (repeatable) becomes SessionConfig.portals, in order", async () => {
  const cfg = await sessionConfigFromUri(URI, {
    initiator: "iqn.2026-11.test.isboot:i",
    portal: ["192.0.2.2", "[2001:db8::2]:3261"],
  }, env);
  assert.deepEqual(cfg.portal, { host: "192.0.2.1", port: 3260 });
  assert.deepEqual(cfg.portals, [
    { host: "192.0.2.2", port: 3260 },
    { host: "2001:db8::2", port: 3261 },
  ]);
  const one = await sessionConfigFromUri(URI, { portal: "192.0.2.3:3262" }, env);
  assert.deepEqual(one.portals, [{ host: "192.0.2.3", port: 3262 }]);
  const none = await sessionConfigFromUri(URI, {}, env);
  assert.equal(none.portals, undefined);
  assert.equal(none.recoveryTimeoutMs, undefined, "default: wait forever");
  assert.deepEqual(parsePortalOptions(undefined), []);
  for (const bad of ["", "host:99999", "[::1", "a b", true]) {
    assert.throws(() => parsePortalOptions([bad]), UsageError, String(bad));
  }
});

Deno.test("config: --recovery-timeout seconds, none, 0; junk is a UsageError", async () => {
  assert.equal(parseRecoveryTimeout(undefined), undefined);
  assert.equal(parseRecoveryTimeout("none"), Infinity);
  assert.equal(parseRecoveryTimeout("0"), 0);
  assert.equal(parseRecoveryTimeout("30"), 30_000);
  assert.equal(parseRecoveryTimeout("1.5"), 1_500);
  for (const bad of ["", "-1", "1e3", "ten", "1.2345", "99999999", true]) {
    assert.throws(() => parseRecoveryTimeout(bad), UsageError, String(bad));
  }
  const cfg = await sessionConfigFromUri(URI, { "recovery-timeout": "300" }, env);
  assert.equal(cfg.recoveryTimeoutMs, 300_000);
  // A caller's explicit setting wins over the option.
  const o = await sessionConfigFromUri(URI, { "recovery-timeout": "300" }, env, {
    recoveryTimeoutMs: 5,
  });
  assert.equal(o.recoveryTimeoutMs, 5);
});

Deno.test("config: --command-timeout seconds, none, 0; junk is a UsageError", async () => {
  assert.equal(parseCommandTimeout(undefined), undefined);
  assert.equal(parseCommandTimeout("none"), 0);
  assert.equal(parseCommandTimeout("0"), 0);
  assert.equal(parseCommandTimeout("30"), 30_000);
  assert.equal(parseCommandTimeout("0.25"), 250);
  for (const bad of ["", "-1", "1e3", "ten", "1.2345", "99999999", true]) {
    assert.throws(() => parseCommandTimeout(bad), UsageError, String(bad));
  }
  const cfg = await sessionConfigFromUri(URI, { "command-timeout": "45" }, env);
  assert.equal(cfg.commandTimeoutMs, 45_000);
  const none = await sessionConfigFromUri(URI, {}, env);
  assert.equal(none.commandTimeoutMs, undefined, "default: never");
});
