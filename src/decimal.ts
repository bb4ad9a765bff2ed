/**
 * Decimal integers from text that users write (kernel arguments, URIs),
 * strictly: digits only, no sign, no exponent, within bounds.
 * @module
 */

/**
 * `text` as an integer in [min, max], or null: 1 to 9 decimal digits and nothing else.
 *
 * @example
 * ```ts
 * boundedInt("3260", 1, 65535); // 3260
 * boundedInt("0x10", 0, 99);    // null
 * ```
 */
export function boundedInt(text: string, min: number, max: number): number | null {
  if (!/^\d{1,9}$/.test(text)) return null;
  const n = Number(text);
  return n >= min && n <= max ? n : null;
}
