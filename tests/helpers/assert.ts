/**
 * Small assertion helpers over node:assert/strict (JSR's @std/assert is
 * unreachable here), shared by the test folders.
 */
import assert from "node:assert/strict";

/** Deep strict equality. */
export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  assert.deepStrictEqual(actual, expected, msg);
}

/** `cond` holds (narrows its type). */
export function assert_(cond: unknown, msg?: string): asserts cond {
  assert.ok(cond, msg);
}

/**
 * `fn` throws an instance of `type` (any Error when omitted) whose message
 * includes `includes`; returns what it threw.
 */
export function assertThrows<E extends Error = Error>(
  fn: () => unknown,
  type?: abstract new (...a: never[]) => E,
  includes?: string,
  msg?: string,
): E {
  const what = type?.name ?? "an Error";
  try {
    fn();
  } catch (e) {
    if (!(e instanceof (type ?? Error))) {
      throw new Error(`${msg ?? "call"}: expected ${what}, got ${e}`);
    }
    if (includes !== undefined && !e.message.includes(includes)) {
      throw new Error(`${msg ?? "call"}: message '${e.message}' lacks '${includes}'`);
    }
    return e as E;
  }
  throw new Error(`${msg ?? "call"}: expected ${what}, nothing thrown`);
}
