/** node:assert/strict re-exported with the small helpers these tests use. */
import assert from "node:assert/strict";

export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  assert.deepStrictEqual(actual, expected, msg);
}

export function assertThrows<E extends Error>(
  fn: () => unknown,
  type: new (...a: never[]) => E,
  includes?: string,
  msg?: string,
): E {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof type)) throw new Error(`${msg ?? ""}: expected ${type.name}, got ${e}`);
    if (includes !== undefined && !e.message.includes(includes)) {
      throw new Error(`${msg ?? ""}: message '${e.message}' lacks '${includes}'`);
    }
    return e;
  }
  throw new Error(`${msg ?? "call"}: expected ${type.name}, nothing thrown`);
}
