/**
 * Serial number arithmetic (RFC 1982) on the 32-bit sequence numbers of
 * iSCSI (CmdSN, StatSN, DataSN, R2TSN; RFC 7143 §4.2.2.1): plain numbers,
 * compared through their signed 32-bit difference.
 */

/**
 * a < b in serial arithmetic.
 *
 * @example
 * ```ts
 * serialLt(0xffffffff, 0); // true: 0 comes after the wrap
 * ```
 */
export function serialLt(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}

/**
 * a <= b in serial arithmetic.
 *
 * @example
 * ```ts
 * serialLe(5, 5); // true
 * ```
 */
export function serialLe(a: number, b: number): boolean {
  return ((a - b) | 0) <= 0;
}
