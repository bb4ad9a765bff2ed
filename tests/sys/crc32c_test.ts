/**
 * CRC32C implementations agree: ISA-L through FFI (src/sys/crc32c.ts) and
 * hash-wasm, on the RFC 3720 B.4 vectors and on random buffers split at
 * random points; defaultCrc32c() falls back to hash-wasm when ISA-L is
 * missing. Needs libisal2 (tests/deps/perf.apt). Correctness only, no timing.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { type Crc32c, defaultCrc32c, hashWasmCrc32c } from "../../src/iscsi/digest.ts";
import { isalCrc32c } from "../../src/sys/crc32c.ts";
import { decodePdu } from "../../src/iscsi/pdu.ts";
import { fuzzOptions } from "../helpers/fuzz.ts";
import { RFC3720_B4, wireHex } from "../helpers/crc32c_vectors.ts";

async function implementations(): Promise<Crc32c[]> {
  const isal = isalCrc32c();
  assert.ok(isal, "libisal.so.2 must load (Debian libisal2, tests/deps/perf.apt)");
  return [isal, await hashWasmCrc32c()];
}

Deno.test("crc32c: ISA-L and hash-wasm give the RFC 3720 B.4 vectors, whole and split", async () => {
  for (const crc of await implementations()) {
    for (const [data, want] of RFC3720_B4) {
      assert.equal(wireHex(crc.digest(data)), want, `${crc.name} whole`);
      for (const cut of [0, 1, 7, 31, data.length]) {
        assert.equal(
          wireHex(crc.digest(data.subarray(0, cut), data.subarray(cut))),
          want,
          `${crc.name} split at ${cut}`,
        );
      }
    }
    // Empty input: CRC32C of nothing is 0.
    assert.equal(crc.digest(new Uint8Array(0)), 0, crc.name);
    assert.equal(crc.digest(new Uint8Array(0), new Uint8Array(0)), 0, crc.name);
  }
});

Deno.test("crc32c property: ISA-L equals hash-wasm on random split buffers and subarrays", async () => {
  const [isal, wasm] = await implementations();
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 20_000 }),
      fc.nat(),
      fc.nat(64),
      (bytes, cutSeed, lead) => {
        // A view that does not start at its buffer's start, as receive buffers are.
        const backing = new Uint8Array(lead + bytes.length + 5).fill(0xa5);
        backing.set(bytes, lead);
        const data = backing.subarray(lead, lead + bytes.length);
        const cut = bytes.length === 0 ? 0 : cutSeed % (bytes.length + 1);
        const a = data.subarray(0, cut), b = data.subarray(cut);
        const want = wasm.digest(bytes);
        assert.equal(isal.digest(data), want);
        assert.equal(isal.digest(a, b), want);
        assert.equal(wasm.digest(a, b), want);
      },
    ),
    fuzzOptions(300),
  );
  // Large buffers (one call per part, the data-digest path of a 1 MiB burst).
  const big = new Uint8Array(3 << 20);
  for (let i = 0; i < big.length; i += 65536) crypto.getRandomValues(big.subarray(i, i + 65536));
  assert.equal(isal.digest(big), wasm.digest(big));
  assert.equal(isal.digest(big.subarray(0, 48), big.subarray(48)), wasm.digest(big));
});

Deno.test("crc32c: defaultCrc32c picks ISA-L when it loads, hash-wasm when it does not", async () => {
  const dir = await Deno.makeTempDir({ prefix: "isboot-crc-" });
  try {
    assert.equal((await defaultCrc32c()).name, "isa-l");
    // A missing library, a file that is not a library, and a library without the symbol.
    const notLib = `${dir}/libisal.so.2`;
    await Deno.writeTextFile(notLib, "not an ELF file\n");
    for (const path of [`${dir}/missing.so.2`, notLib, "libc.so.6"]) {
      assert.equal(isalCrc32c(path), null, path);
      const crc = await defaultCrc32c({ isalPath: path });
      assert.equal(crc.name, "hash-wasm", path);
      assert.equal(wireHex(crc.digest(new Uint8Array(32))), "aa36918a");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("crc32c: PDUs digested by ISA-L decode with hash-wasm and back", async () => {
  const [isal, wasm] = await implementations();
  // A Text Response with 5 bytes of data (padded to 8), header and data digests.
  const pdu = new Uint8Array(48 + 4 + 8 + 4);
  pdu[0] = 0x24;
  pdu[1] = 0x80;
  pdu[7] = 5; // DataSegmentLength
  pdu.set(new TextEncoder().encode("a=b\0x"), 52);
  const dv = new DataView(pdu.buffer);
  for (const [make, check] of [[isal, wasm], [wasm, isal]]) {
    dv.setUint32(48, make.digest(pdu.subarray(0, 48)), true);
    dv.setUint32(60, make.digest(pdu.subarray(52, 60)), true);
    const opts = { maxDataSegmentLength: 8192, headerDigest: true, dataDigest: true, crc: check };
    assert.equal(decodePdu(pdu, opts).data.length, 5, `${make.name} -> ${check.name}`);
    pdu[55] ^= 1;
    assert.throws(() => decodePdu(pdu, opts), /data digest mismatch/);
    pdu[55] ^= 1;
  }
});
