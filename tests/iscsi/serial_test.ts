/** Serial number arithmetic (RFC 1982) on 32-bit iSCSI sequence numbers. */
import assert from "node:assert/strict";
import { serialLe, serialLt } from "../../src/iscsi/serial.ts";

Deno.test("serial number arithmetic (RFC 1982) across the 32-bit wrap", () => {
  assert.ok(serialLt(1, 2));
  assert.ok(!serialLt(2, 1));
  assert.ok(serialLt(0xffffffff, 0));
  assert.ok(serialLt(0xfffffff0, 5));
  assert.ok(!serialLt(5, 0xfffffff0));
  assert.ok(serialLe(7, 7));
  assert.ok(serialLe(0xffffffff, 0xffffffff));
  assert.ok(!serialLe(1, 0xffffffff));
});
