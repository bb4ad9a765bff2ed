/**
 * CRC32C (Castagnoli) through Intel ISA-L's `crc32_iscsi` (Debian package
 * libisal2, `libisal.so.2`) via `Deno.dlopen`: ~30 ns for a 48-byte iSCSI
 * header and ~35-60 GB/s on data here, against ~0.4-0.8 µs and 1.3-2.5 GB/s
 * for hash-wasm (docs/performance.md, bench/crc32c.ts).
 *
 * Why this shape:
 * - One synchronous FFI call per part with `"buffer"` parameters: Deno
 *   passes the typed array's own memory (subarrays of a receive buffer too),
 *   so nothing is copied. Never `nonblocking`: that would move each call to
 *   a pool thread at ~11 µs apiece (deno-notes).
 * - `crc32_iscsi(buf, len, init)` neither inverts on entry nor on exit, so
 *   parts chain by passing the running register as `init`; the iSCSI value is
 *   `~register` (RFC 3720 B.4). The wire form is that value least
 *   significant byte first, which the PDU layer writes with
 *   `setUint32(off, crc, true)`.
 * - The library is checked against the RFC 3720 B.4 vectors before use: a
 *   wrong or broken library gives null here and the caller falls back to
 *   hash-wasm, which is always correct. AF_ALG (the kernel's crc32c) is not
 *   offered: it costs a few µs of syscalls per digest and is compiled out of
 *   some kernels (docs/performance.md).
 *
 * @example
 * ```ts
 * const crc = isalCrc32c() ?? await hashWasmCrc32c();
 * crc.digest(new Uint8Array(32)); // 0x8a9136aa
 * ```
 * @module
 */

/**
 * A CRC32C implementation: this one, or the hash-wasm fallback of the iSCSI
 * layer (src/iscsi/digest.ts, which re-exports this type for its users).
 * `digest` covers `a` followed by `b` (either may be empty).
 */
export interface Crc32c {
  readonly name: string;
  /** CRC32C of the concatenation of the parts, as an unsigned 32-bit number. */
  digest(a: Uint8Array, b?: Uint8Array): number;
}

/** The soname of ISA-L in Debian 12's libisal2. */
export const ISAL_LIBRARY = "libisal.so.2";

const SYMBOLS = {
  // unsigned int crc32_iscsi(unsigned char *buffer, int len, unsigned int init_crc)
  crc32_iscsi: { parameters: ["buffer", "i32", "u32"], result: "u32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** Largest part handed to one call: `len` is a C int. */
const MAX_CALL_BYTES = 0x4000_0000;

/**
 * RFC 3720 Appendix B.4 test vectors (CRC values, as numbers), used as the
 * self-check of a loaded library.
 */
function selfCheckVectors(): [Uint8Array, number][] {
  // The 48-byte READ(10) SCSI Command PDU of B.4.
  const read = new Uint8Array(48);
  read.set([0x01, 0xc0], 0);
  read.set([0x14], 16);
  read.set([0x04, 0x00], 22);
  read.set([0x14], 27);
  read.set([0x18], 31);
  read.set([0x28], 32);
  read.set([0x02], 40);
  return [
    [new Uint8Array(32), 0x8a9136aa],
    [new Uint8Array(32).fill(0xff), 0x62a8ab43],
    [Uint8Array.from({ length: 32 }, (_, i) => i), 0x46dd794e],
    [Uint8Array.from({ length: 32 }, (_, i) => 31 - i), 0x113fdb5c],
    [read, 0xd9963a56],
  ];
}

/**
 * CRC32C through ISA-L, or null when the library cannot be loaded (not
 * installed, no FFI permission) or fails the RFC 3720 B.4 self-check.
 * `path` is a soname or file path (tests pass a bad one to see the fallback).
 *
 * @example
 * ```ts
 * const crc = isalCrc32c();
 * if (crc) crc.digest(header, data); // one CRC over header then data
 * ```
 */
export function isalCrc32c(path: string = ISAL_LIBRARY): Crc32c | null {
  let lib: Deno.DynamicLibrary<typeof SYMBOLS>;
  try {
    lib = Deno.dlopen(path, SYMBOLS);
  } catch {
    return null;
  }
  const f = lib.symbols.crc32_iscsi;
  const update = (reg: number, b: Uint8Array): number => {
    for (let off = 0; off < b.length; off += MAX_CALL_BYTES) {
      const part = b.length - off > MAX_CALL_BYTES
        ? b.subarray(off, off + MAX_CALL_BYTES)
        : (off === 0 ? b : b.subarray(off));
      reg = f(part, part.length, reg);
    }
    return reg;
  };
  const crc: Crc32c = {
    name: "isa-l",
    digest(a: Uint8Array, b?: Uint8Array): number {
      let reg = a.length > 0 ? update(0xffffffff, a) : 0xffffffff;
      if (b && b.length > 0) reg = update(reg, b);
      return ~reg >>> 0;
    },
  };
  try {
    for (const [data, want] of selfCheckVectors()) {
      if (crc.digest(data) !== want) throw new Error("self-check");
      // Split at an odd point: chaining must give the same value.
      if (crc.digest(data.subarray(0, 13), data.subarray(13)) !== want) {
        throw new Error("self-check");
      }
    }
  } catch {
    lib.close();
    return null;
  }
  return crc;
}
