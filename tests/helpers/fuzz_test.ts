/** The property-test parameters: seed and path from the environment, a failure's rerun line. */
import assert from "node:assert/strict";
import fc from "fast-check";
import { DEFAULT_FUZZ_SEED, fuzzOptions } from "./fuzz.ts";

const VARS = ["ISBOOT_FUZZ_RUNS", "ISBOOT_FUZZ_SEED", "ISBOOT_FUZZ_PATH"];

/** Run `fn` with exactly `env` of the ISBOOT_FUZZ_* variables set, then restore them. */
function withEnv<T>(env: Record<string, string>, fn: () => T): T {
  const saved = VARS.map((k) => [k, Deno.env.get(k)] as const);
  for (const k of VARS) {
    if (k in env) Deno.env.set(k, env[k]);
    else Deno.env.delete(k);
  }
  try {
    return fn();
  } finally {
    for (const [k, v] of saved) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
  }
}

/** The report of a property that fails for every n >= 1000 (thrown by fuzzOptions' reporter). */
function failure(env: Record<string, string>): string {
  return withEnv(env, () => {
    try {
      fc.assert(
        fc.property(fc.nat(), (n) => n < 1000),
        fuzzOptions(100),
      );
    } catch (e) {
      assert.ok(e instanceof Error);
      return e.message;
    }
    assert.fail("the property did not fail");
  });
}

Deno.test("fuzzOptions: runs and seed from the environment, the fixed seed by default", () => {
  withEnv({}, () => {
    const o = fuzzOptions(123);
    assert.deepEqual([o.numRuns, o.seed, o.path], [123, DEFAULT_FUZZ_SEED, undefined]);
  });
  withEnv({ ISBOOT_FUZZ_RUNS: "7", ISBOOT_FUZZ_SEED: "-5", ISBOOT_FUZZ_PATH: "3:1" }, () => {
    const o = fuzzOptions(123);
    assert.deepEqual([o.numRuns, o.seed, o.path], [7, -5, "3:1"]);
  });
  withEnv({ ISBOOT_FUZZ_SEED: "random" }, () => {
    assert.ok(Number.isInteger(fuzzOptions(1).seed));
  });
  for (const bad of ["1.5", "x", "4294967296"]) {
    withEnv(
      { ISBOOT_FUZZ_SEED: bad },
      () => assert.throws(() => fuzzOptions(1), /ISBOOT_FUZZ_SEED/),
    );
  }
});

Deno.test("fuzzOptions: a failure prints the rerun line, and the line reproduces it", () => {
  const first = failure({ ISBOOT_FUZZ_SEED: "random" });
  const rerun = first.match(/rerun: ISBOOT_FUZZ_SEED=(-?\d+) ISBOOT_FUZZ_PATH="([\d:]+)"/);
  assert.ok(rerun, first);
  const counterexample = (m: string) => m.match(/Counterexample: (.*)/)?.[1];
  const again = failure({ ISBOOT_FUZZ_SEED: rerun[1], ISBOOT_FUZZ_PATH: rerun[2] });
  assert.ok(counterexample(first));
  assert.equal(counterexample(again), counterexample(first));
  assert.match(again, new RegExp(`seed: ${rerun[1]}, path: "${rerun[2]}"`));
});
