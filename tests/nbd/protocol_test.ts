import { assertEquals, assertThrows } from "../helpers/assert.ts";
import * as C from "../../src/nbd/constants.ts";
import {
  decodeString,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeOptionError,
  encodeOptionReply,
  encodeRequest,
  encodeServerEntry,
  encodeSimpleReply,
  encodeStructuredError,
  NbdProtocolError,
  parseInfoRequest,
  parseOptionHeader,
  parseRequest,
  STRUCTURED_READ_HEADER_SIZE,
  writeStructuredReadHeader,
} from "../../src/nbd/protocol.ts";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

Deno.test("nbd codec: greeting is NBDMAGIC IHAVEOPT FIXED_NEWSTYLE|NO_ZEROES", () => {
  assertEquals(hex(encodeGreeting()), "4e42444d41474943" + "49484156454f5054" + "0003");
});

Deno.test("nbd codec: option header parse and bad magic", () => {
  const b = new Uint8Array(16);
  const v = dv(b);
  v.setUint32(0, C.IHAVEOPT_HI);
  v.setUint32(4, C.IHAVEOPT_LO);
  v.setUint32(8, C.NBD_OPT_GO);
  v.setUint32(12, 0xfffffff0);
  assertEquals(parseOptionHeader(b), { option: C.NBD_OPT_GO, length: 0xfffffff0 });
  b[0] ^= 1;
  assertThrows(() => parseOptionHeader(b), NbdProtocolError);
  assertThrows(() => parseOptionHeader(new Uint8Array(15)), NbdProtocolError);
});

function infoData(name: Uint8Array, infos: number[], extra = 0): Uint8Array {
  const b = new Uint8Array(4 + name.length + 2 + infos.length * 2 + extra);
  const v = dv(b);
  v.setUint32(0, name.length);
  b.set(name, 4);
  v.setUint16(4 + name.length, infos.length);
  infos.forEach((t, i) => v.setUint16(6 + name.length + i * 2, t));
  return b;
}

Deno.test("nbd codec: NBD_OPT_GO data parse, valid and malformed", () => {
  const name = new TextEncoder().encode("iqn.2026-11.test:disk/0");
  assertEquals(parseInfoRequest(infoData(name, [3, 1])), {
    name: "iqn.2026-11.test:disk/0",
    infos: [3, 1],
  });
  assertEquals(parseInfoRequest(infoData(new Uint8Array(0), [])), { name: "", infos: [] });
  assertEquals(parseInfoRequest(new Uint8Array(5)), null); // too short
  assertEquals(parseInfoRequest(infoData(name, [3], 1)), null); // trailing byte
  const lying = infoData(name, []);
  dv(lying).setUint32(0, 1000); // name length beyond the data
  assertEquals(parseInfoRequest(lying), null);
  assertEquals(parseInfoRequest(infoData(new Uint8Array([0x61, 0, 0x62]), [])), null); // NUL
  assertEquals(parseInfoRequest(infoData(new Uint8Array([0xff, 0xfe]), [])), null); // not UTF-8
  assertEquals(parseInfoRequest(infoData(new Uint8Array(4097).fill(0x61), [])), null); // > 4096
});

Deno.test("nbd codec: strings", () => {
  assertEquals(decodeString(new TextEncoder().encode("ä")), "ä");
  assertEquals(decodeString(new Uint8Array([0xc3])), null);
});

Deno.test("nbd codec: option replies and info blocks", () => {
  const ack = encodeOptionReply(C.NBD_OPT_STRUCTURED_REPLY, C.NBD_REP_ACK);
  assertEquals(hex(ack), "0003e889045565a9" + "00000008" + "00000001" + "00000000");
  const err = encodeOptionError(C.NBD_OPT_GO, C.NBD_REP_ERR_UNKNOWN, "no");
  assertEquals(hex(err.subarray(12)), "80000006" + "00000002" + "6e6f");
  assertEquals(
    hex(encodeInfoExport(0x1_0000_0200n, 0x0d4d)),
    "0000" + "0000000100000200" + "0d4d",
  );
  assertEquals(hex(encodeInfoString(C.NBD_INFO_NAME, "a")), "000161");
  assertEquals(
    hex(encodeInfoBlockSize({ minimum: 512, preferred: 4096, maximum: 1 << 25 })),
    "0003" + "00000200" + "00001000" + "02000000",
  );
  assertEquals(hex(encodeServerEntry("ab", "d")), "00000002" + "6162" + "64");
  const long = encodeOptionError(1, C.NBD_REP_ERR_INVALID, "x".repeat(5000));
  assertEquals(dv(long).getUint32(16), 4096); // messages are capped at 4096 bytes
});

Deno.test("nbd codec: error messages are at most 4096 bytes of whole UTF-8 characters", () => {
  const strict = new TextDecoder("utf-8", { fatal: true });
  // "a" then 2-, 3- and 4-byte characters: the 4096th byte falls inside one.
  for (const ch of ["é", "€", "😀"]) {
    const msg = "a" + ch.repeat(5000);
    const e = encodeStructuredError(1, 2, C.NBD_EIO, msg);
    const len = dv(e).getUint16(24);
    assertEquals(dv(e).getUint32(16), 6 + len, ch); // chunk length covers error + message
    assertEquals(e.length, 26 + len, ch);
    const text = strict.decode(e.subarray(26)); // throws on a split character
    assertEquals(msg.startsWith(text), true, ch);
    const chBytes = new TextEncoder().encode(ch).length;
    assertEquals(len <= 4096 && len > 4096 - chBytes, true, `${ch}: ${len} bytes`);
    const o = encodeOptionError(1, C.NBD_REP_ERR_INVALID, msg);
    const olen = dv(o).getUint32(16);
    assertEquals(olen <= 4096 && olen > 4096 - chBytes, true, `${ch}: option ${olen} bytes`);
    strict.decode(o.subarray(20));
  }
  // Short messages pass whole.
  const e = encodeStructuredError(1, 2, C.NBD_EIO, "€".repeat(10));
  assertEquals(dv(e).getUint16(24), 30);
});

Deno.test("nbd codec: NBD_OPT_EXPORT_NAME reply with and without zeroes", () => {
  assertEquals(encodeExportNameReply(1024n, 1, false).length, 134);
  const r = encodeExportNameReply(1024n, 3, true);
  assertEquals(hex(r), "0000000000000400" + "0003");
});

Deno.test("nbd codec: request round trip, 64-bit offsets and handles", () => {
  const req = {
    flags: C.NBD_CMD_FLAG_FUA,
    type: C.NBD_CMD_WRITE,
    handleHi: 0xdeadbeef,
    handleLo: 0x01020304,
    offset: 2 ** 40 + 4096,
    length: 0xffffffff,
  };
  const b = encodeRequest(req);
  assertEquals(hex(b.subarray(0, 8)), "25609513" + "0001" + "0001");
  assertEquals(parseRequest(b), req);
  const at = new Uint8Array(40);
  at.set(b, 12);
  assertEquals(parseRequest(at, 12), req);
  b[3] = 0x14;
  assertThrows(() => parseRequest(b), NbdProtocolError, "bad request magic");
  assertThrows(() => parseRequest(new Uint8Array(27)), NbdProtocolError);
});

Deno.test("nbd codec: simple and structured replies", () => {
  assertEquals(hex(encodeSimpleReply(22, 1, 2)), "67446698" + "00000016" + "00000001" + "00000002");
  const h = new Uint8Array(STRUCTURED_READ_HEADER_SIZE);
  writeStructuredReadHeader(h, 0, 7, 8, 2 ** 33, 4096);
  assertEquals(
    hex(h),
    "668e33ef" + "0001" + "0001" + "0000000700000008" + "00001008" + "0000000200000000",
  );
  const e = encodeStructuredError(7, 8, C.NBD_EINVAL, "bad");
  assertEquals(
    hex(e),
    "668e33ef" + "0001" + "8001" + "0000000700000008" + "00000009" + "00000016" + "0003" +
      "626164",
  );
});
