/**
 * Parameters of every property/fuzz test (fast-check), so that a failure
 * can be rerun exactly.
 *
 * @module
 */
import fc from "fast-check";

/** The seed of `make test` and of any run without ISBOOT_FUZZ_SEED: the same cases every time. */
export const DEFAULT_FUZZ_SEED = 20261101;

/**
 * `fc.assert` parameters for a property test:
 *
 * - `numRuns`: the test's own `defaultRuns`, or ISBOOT_FUZZ_RUNS (`make fuzz`
 *   sets it to 100,000);
 * - `seed`: ISBOOT_FUZZ_SEED, an integer or `random` (a fresh seed per
 *   call; scripts/run-tests.sh draws one for the whole run instead, and
 *   prints it); DEFAULT_FUZZ_SEED when unset;
 * - `path`: ISBOOT_FUZZ_PATH, the counterexample path of a failure, which
 *   makes fast-check start from that case. Every property of the run gets
 *   it, so rerun the failing test alone (`--filter`);
 * - `reporter`: on failure throws fast-check's report (seed, path,
 *   counterexample; the property's error as `cause`) followed by the
 *   environment that reruns the case.
 *
 * Other parameters may be spread over the result. A malformed
 * ISBOOT_FUZZ_SEED throws rather than silently testing something else.
 *
 * @example
 * ```ts
 * fc.assert(fc.property(fc.nat(), (n) => n >= 0), fuzzOptions(1000));
 * fc.assert(prop, { ...fuzzOptions(500), examples: [[0n, -0]] });
 * // a failure ends with a line such as
 * //   rerun: ISBOOT_FUZZ_SEED=-345574773 ISBOOT_FUZZ_PATH="58:3:3" (this test alone)
 * ```
 */
export function fuzzOptions<Ts>(defaultRuns: number): fc.Parameters<Ts> & {
  numRuns: number;
  seed: number;
} {
  const runs = Number.parseInt(Deno.env.get("ISBOOT_FUZZ_RUNS") ?? "", 10);
  const path = Deno.env.get("ISBOOT_FUZZ_PATH") || undefined;
  return {
    numRuns: Number.isFinite(runs) && runs > 0 ? runs : defaultRuns,
    seed: fuzzSeed(Deno.env.get("ISBOOT_FUZZ_SEED")),
    ...(path === undefined ? {} : { path }),
    reporter(out: fc.RunDetails<Ts>): void {
      if (!out.failed) return;
      const rerun = out.counterexamplePath === null
        ? `ISBOOT_FUZZ_SEED=${out.seed}`
        : `ISBOOT_FUZZ_SEED=${out.seed} ISBOOT_FUZZ_PATH="${out.counterexamplePath}"`;
      throw new Error(`${fc.defaultReportMessage(out)}\n\nrerun: ${rerun} (this test alone)`, {
        cause: out.errorInstance,
      });
    },
  };
}

/** The seed ISBOOT_FUZZ_SEED names (an int32, or `random`), DEFAULT_FUZZ_SEED when unset. */
function fuzzSeed(env: string | undefined): number {
  if (env === undefined || env === "") return DEFAULT_FUZZ_SEED;
  if (env === "random") return (Math.random() * 2 ** 32) | 0;
  const n = Number(env);
  if (!Number.isInteger(n) || (n | 0) !== n) {
    throw new Error(`ISBOOT_FUZZ_SEED=${env}: not a 32-bit integer or "random"`);
  }
  return n;
}
