/**
 * Deterministic pseudo-random bytes for tests (an LCG): the same `seed`
 * always gives the same bytes, so a mismatch is reproducible.
 *
 * @example
 * ```ts
 * const data = pattern(4096, 7);
 * ```
 */
export function pattern(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}
