/**
 * CHAP (RFC 7143 §12.1.3): responses for every algorithm against vectors
 * computed with another implementation (Python's hashlib:
 * `hashlib.new(alg, bytes([0x2a]) + b"alice-secret-12" + bytes(range(16))).hexdigest()`),
 * and against node:crypto for random inputs; binary value encodings (§6.1).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fc from "fast-check";
import {
  chapResponse,
  decodeChapBinary,
  encodeChapBinary,
  equalBytes,
  parseChapAlgorithms,
} from "../../src/iscsi/chap.ts";
import { AuthError } from "../../src/errors.ts";
import { fuzzOptions } from "../helpers/fuzz.ts";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const secret = new TextEncoder().encode("alice-secret-12");
const challenge = Uint8Array.from({ length: 16 }, (_, i) => i);

Deno.test("CHAP responses match independently computed vectors for each algorithm", async () => {
  const vectors: [number, string][] = [
    [5, "8403ec85b56bfb88a7105696fad24320"],
    [6, "bd8354c9fe7c2c8913187c7b9e66fc1db78507ad"],
    [7, "14508d94c11d7a9d0721c9fc682104d6c48ce631d399e75bd51b1c51d7ff7117"],
    [8, "b580730a9b5df8b50c84b57539a418f44195b491b5faadbe2c2649e2352b9673"],
  ];
  for (const [alg, want] of vectors) {
    assert.equal(hex(await chapResponse(alg, 0x2a, secret, challenge)), want, `CHAP_A=${alg}`);
  }
  await assert.rejects(chapResponse(4, 1, secret, challenge), AuthError);
});

Deno.test("property: CHAP responses equal node:crypto for any id, secret and challenge length", async () => {
  const names: Record<number, string> = { 5: "md5", 6: "sha1", 7: "sha256", 8: "sha3-256" };
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(5, 6, 7, 8),
      fc.integer({ min: 0, max: 255 }),
      fc.uint8Array({ minLength: 1, maxLength: 64 }),
      fc.uint8Array({ minLength: 1, maxLength: 1024 }),
      async (alg, id, sec, ch) => {
        const h = createHash(names[alg]);
        h.update(Uint8Array.of(id));
        h.update(sec);
        h.update(ch);
        assert.equal(hex(await chapResponse(alg, id, sec, ch)), h.digest("hex"));
      },
    ),
    fuzzOptions(200),
  );
});

Deno.test("CHAP binary values: hex and base64 of any length; junk is AuthError without the value", () => {
  assert.deepEqual(decodeChapBinary("CHAP_C", "0x00ff10"), Uint8Array.of(0, 255, 16));
  assert.deepEqual(decodeChapBinary("CHAP_C", "0XABC"), Uint8Array.of(0x0a, 0xbc));
  assert.deepEqual(decodeChapBinary("CHAP_C", "0bAAEC"), Uint8Array.of(0, 1, 2));
  assert.equal(decodeChapBinary("CHAP_C", "0x" + "ab".repeat(1024)).length, 1024);
  assert.equal(encodeChapBinary(Uint8Array.of(1, 0xfe)), "0x01fe");
  for (const bad of ["", "0x", "12", "0xzz", "0b@@@@", "0bAAE"]) {
    if (bad === "0x") {
      assert.equal(decodeChapBinary("CHAP_C", bad).length, 0);
      continue;
    }
    assert.throws(() => decodeChapBinary("CHAP_R", bad), (e) => {
      assert.ok(e instanceof AuthError);
      if (bad.length > 2) assert.ok(!e.message.includes(bad));
      return true;
    });
  }
  assert.ok(equalBytes(Uint8Array.of(1, 2), Uint8Array.of(1, 2)));
  assert.ok(!equalBytes(Uint8Array.of(1, 2), Uint8Array.of(1, 3)));
  assert.ok(!equalBytes(Uint8Array.of(1), Uint8Array.of(1, 3)));
});

Deno.test("--chap-algorithms parsing keeps order and rejects unknown names", () => {
  assert.deepEqual(parseChapAlgorithms("SHA-256, md5"), ["sha256", "md5"]);
  assert.deepEqual(parseChapAlgorithms("sha3-256,SHA3_256,sha1"), ["sha3-256", "sha1"]);
  assert.equal(parseChapAlgorithms("sha512"), null);
  assert.equal(parseChapAlgorithms("constructor"), null);
  assert.equal(parseChapAlgorithms(""), null);
});
