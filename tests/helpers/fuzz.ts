/**
 * How many cases a property/fuzz test runs: the test's own default for
 * `make test`, or ISBOOT_FUZZ_RUNS (set by `make fuzz` to 100,000).
 */
export function fuzzRuns(defaultRuns: number): number {
  const env = Deno.env.get("ISBOOT_FUZZ_RUNS");
  const n = env ? Number.parseInt(env, 10) : NaN;
  return Number.isFinite(n) && n > 0 ? n : defaultRuns;
}
