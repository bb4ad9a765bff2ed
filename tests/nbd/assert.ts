/**
 * Small assertion helpers over node:assert/strict (JSR's @std/assert is
 * unreachable here).
 */
import assert from "node:assert/strict";

export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  assert.deepStrictEqual(actual, expected, msg);
}

export function assert_(cond: unknown, msg?: string): asserts cond {
  assert.ok(cond, msg);
}

export function assertThrows(
  fn: () => unknown,
  cls?: abstract new (...args: never[]) => Error,
  includes?: string,
): void {
  assert.throws(fn, (e: unknown) => {
    if (cls && !(e instanceof cls)) return false;
    if (includes && !(e instanceof Error && e.message.includes(includes))) return false;
    return true;
  });
}
