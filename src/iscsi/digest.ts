/**
 * CRC32C (Castagnoli) for iSCSI header and data digests (RFC 7143 §13.1,
 * RFC 3720 Appendix B.4 for test vectors).
 *
 * The implementation is pluggable: {@link Crc32c} is all the connection
 * needs. {@link defaultCrc32c} picks Intel ISA-L's `crc32_iscsi` through FFI
 * (src/sys/crc32c.ts) when the library is there and correct; hash-wasm is
 * the fallback that always works (docs/performance.md).
 *
 * Byte order: the digest is the CRC value sent least significant byte first
 * (RFC 3720 B.4 lists 32 zero bytes -> `aa 36 91 8a`), while hash-wasm's
 * binary digest is big-endian, so we turn it into a number and let the
 * connection write it little-endian.
 */
import { createCRC32 } from "hash-wasm";
import { type Crc32c, isalCrc32c } from "../sys/crc32c.ts";

export type { Crc32c };

/** The CRC32C polynomial, bit-reversed, as hash-wasm wants it. */
const CASTAGNOLI_REVERSED = 0x82f63b78;

/**
 * CRC32C through hash-wasm's WebAssembly CRC-32 with the Castagnoli
 * polynomial (~2.5 GB/s on these machines).
 *
 * @example
 * ```ts
 * const crc = await hashWasmCrc32c();
 * crc.digest(new Uint8Array(32)); // 0x8a9136aa
 * ```
 */
export async function hashWasmCrc32c(): Promise<Crc32c> {
  const h = await createCRC32(CASTAGNOLI_REVERSED);
  return {
    name: "hash-wasm",
    digest(a: Uint8Array, b?: Uint8Array): number {
      h.init();
      h.update(a);
      if (b && b.length) h.update(b);
      const out = h.digest("binary");
      return ((out[0] << 24) | (out[1] << 16) | (out[2] << 8) | out[3]) >>> 0;
    },
  };
}

/**
 * The default CRC32C for this process. Callers pass the result down (no
 * global state). Intel ISA-L's `crc32_iscsi` (src/sys/crc32c.ts, ~25x
 * hash-wasm's speed) when `libisal.so.2` loads and passes the RFC 3720 B.4
 * self-check, else hash-wasm. `isalPath` names another library file (tests
 * pass a missing one to see the fallback).
 *
 * @example
 * ```ts
 * const crc = await defaultCrc32c();
 * crc.name; // "isa-l" where libisal2 is installed, else "hash-wasm"
 * ```
 */
export async function defaultCrc32c(opts: { isalPath?: string } = {}): Promise<Crc32c> {
  return isalCrc32c(opts.isalPath) ?? await hashWasmCrc32c();
}
