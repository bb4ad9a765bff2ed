/**
 * Deterministic pseudo-random bytes for tests: the same `seed` always gives
 * the same bytes, so a mismatch is reproducible.
 *
 * @example
 * ```ts
 * const data = pattern(4096, 7);
 * fillRandom(data, 9); // the same buffer, new contents, 4 bytes a step
 * ```
 */

/** `n` bytes from an LCG started at `seed`. */
export function pattern(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

/**
 * Fill `b` (its whole 4-byte words; any tail is left as is) from xorshift32
 * started at `seed`: fast enough for the hundreds of MiB the tgtd tests write.
 */
export function fillRandom(b: Uint8Array, seed: number): void {
  const w = new Uint32Array(b.buffer, b.byteOffset, b.byteLength >>> 2);
  let x = seed | 1;
  for (let i = 0; i < w.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    w[i] = x;
  }
}
