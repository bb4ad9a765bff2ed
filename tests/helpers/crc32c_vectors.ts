/**
 * The CRC32C test vectors of RFC 3720 appendix B.4, and the digest as it
 * goes on the wire, for every test of a CRC32C implementation.
 *
 * @example
 * ```ts
 * for (const [data, want] of RFC3720_B4) assert.equal(wireHex(crc.digest(data)), want);
 * ```
 */

/** The iSCSI READ command PDU of B.4 (48 bytes). */
export function b4ReadPdu(): Uint8Array {
  const read = new Uint8Array(48);
  read.set([0x01, 0xc0], 0);
  read.set([0x14], 16);
  read.set([0x04, 0x00], 22);
  read.set([0x14], 27);
  read.set([0x18], 31);
  read.set([0x28], 32);
  read.set([0x02], 40);
  return read;
}

/** [input, digest in wire byte order as hex], as B.4 lists them. */
export const RFC3720_B4: readonly (readonly [Uint8Array, string])[] = [
  [new Uint8Array(32), "aa36918a"],
  [new Uint8Array(32).fill(0xff), "43aba862"],
  [Uint8Array.from({ length: 32 }, (_, i) => i), "4e79dd46"],
  [Uint8Array.from({ length: 32 }, (_, i) => 31 - i), "5cdb3f11"],
  [b4ReadPdu(), "563a96d9"],
];

/** A digest as it goes on the wire (least significant byte first), in hex. */
export function wireHex(n: number): string {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}
