/**
 * Fuzz drivers for the iSCSI edges the owners' property tests do not reach
 * (theirs cover decodePdu, decodeText, parseTargetUri, the NBD server, the
 * iBFT decoder and the kernel command line). Everything here takes bytes or
 * text that a target sends (or a user types) and must either return sane
 * values or throw its typed error: never anything else, never hang.
 *
 * `make fuzz` runs each with ISBOOT_FUZZ_RUNS=100000.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { AuthError, InvalidInputError, UsageError } from "../../src/errors.ts";
import { decodeChapBinary } from "../../src/iscsi/chap.ts";
import { BHS_LENGTH, TARGET_OPCODES } from "../../src/iscsi/constants.ts";
import { Connection } from "../../src/iscsi/connection.ts";
import { defaultCrc32c } from "../../src/iscsi/digest.ts";
import { sendTargetsRecords } from "../../src/iscsi/discovery.ts";
import { IscsiProtocolError } from "../../src/iscsi/errors.ts";
import { parseTargetAddress } from "../../src/iscsi/login.ts";
import { KEY_RULES, Negotiation } from "../../src/iscsi/negotiate.ts";
import type { TextPair } from "../../src/iscsi/text.ts";
import { parsePortal } from "../../src/iscsi/uri.ts";
import { OperationalError } from "../../src/errors.ts";
import { Logger } from "../../src/log.ts";
import { parseSize } from "../../src/memory_device.ts";
import { parseListenAddress } from "../../src/nbd/listen.ts";
import { fuzzOptions } from "../helpers/fuzz.ts";

/** Values a target might send for a key: the RFC's tokens, edge numbers, junk. */
const valueArb = fc.oneof(
  fc.constantFrom(
    "Yes",
    "No",
    "None",
    "CRC32C",
    "CRC32C,None",
    "None,CRC32C",
    "Reject",
    "Irrelevant",
    "NotUnderstood",
    "0",
    "1",
    "511",
    "512",
    "8192",
    "262144",
    "16777215",
    "16777216",
    "4294967296",
    "-1",
    "0x10",
    "1e3",
    "",
    " 1",
    "Normal",
    "Discovery",
    "CHAP",
  ),
  fc.string({ maxLength: 24 }),
  fc.nat().map(String),
);
const keyArb = fc.oneof(
  fc.constantFrom(...Object.keys(KEY_RULES), "TargetAlias", "TargetPortalGroupTag", "X-vendor"),
  // Names that a plain-object lookup finds on Object.prototype.
  fc.constantFrom("valueOf", "toString", "constructor", "__proto__", "hasOwnProperty"),
  fc.stringMatching(/^[A-Za-z0-9.\-+@_]{1,20}$/),
);

Deno.test("iscsi fuzz: negotiation of arbitrary target keys returns sane parameters or raises a typed error", () => {
  fc.assert(
    fc.property(
      fc.array(fc.array(fc.tuple(keyArb, valueArb), { maxLength: 12 }), { maxLength: 3 }),
      fc.constantFrom("Normal", "Discovery"),
      fc.constantFrom("crc32c", "none", "prefer-none"),
      (responses, sessionType, digest) => {
        const n = new Negotiation({
          sessionType: sessionType as "Normal" | "Discovery",
          headerDigest: digest as "crc32c" | "none" | "prefer-none",
          dataDigest: digest as "crc32c" | "none" | "prefer-none",
        });
        try {
          for (const pairs of responses) {
            const replies = n.receive(pairs as TextPair[]);
            for (const [k, v] of replies) assert.ok(k.length > 0 && typeof v === "string");
          }
          const p = n.result();
          const ints: [string, number, number, number][] = [
            ["maxBurstLength", p.maxBurstLength, 512, 16777215],
            ["firstBurstLength", p.firstBurstLength, 512, 16777215],
            ["maxXmitDataSegmentLength", p.maxXmitDataSegmentLength, 512, 16777215],
            ["maxOutstandingR2T", p.maxOutstandingR2T, 1, 65535],
            ["defaultTime2Wait", p.defaultTime2Wait, 0, 3600],
            ["defaultTime2Retain", p.defaultTime2Retain, 0, 3600],
            ["errorRecoveryLevel", p.errorRecoveryLevel, 0, 2],
            ["maxConnections", p.maxConnections, 1, 65535],
          ];
          for (const [name, v, lo, hi] of ints) {
            assert.ok(
              Number.isInteger(v) && v >= lo && v <= hi,
              `${name} = ${v} after ${JSON.stringify(responses)}`,
            );
          }
          assert.ok(p.firstBurstLength <= p.maxBurstLength);
        } catch (e) {
          // OperationalError: the target cannot do what we require (a list key
          // answered outside our offer, e.g. no CRC32C when we insist on it).
          if (!(e instanceof IscsiProtocolError) && !(e instanceof OperationalError)) throw e;
        }
      },
    ),
    fuzzOptions(2000),
  );
});

Deno.test("iscsi fuzz: TargetAddress and SendTargets records from a target raise only IscsiProtocolError", () => {
  const piece = fc.constantFrom(
    "[",
    "]",
    ":",
    ",",
    "::1",
    "127.0.0.1",
    "3260",
    "65536",
    "1",
    "a",
    "",
  );
  const addrArb = fc.oneof(
    fc.string({ maxLength: 40 }),
    fc.array(piece, { maxLength: 8 }).map((a) => a.join("")),
  );
  fc.assert(
    fc.property(addrArb, (v) => {
      try {
        const a = parseTargetAddress(v);
        assert.ok(a.port >= 1 && a.port <= 65535 && a.host.length > 0, JSON.stringify(a));
        if (a.tpgt !== undefined) assert.ok(a.tpgt >= 0 && a.tpgt <= 65535);
      } catch (e) {
        if (!(e instanceof IscsiProtocolError)) throw e;
      }
    }),
    fuzzOptions(3000),
  );
  fc.assert(
    fc.property(
      fc.array(
        fc.tuple(fc.constantFrom("TargetName", "TargetAddress", "TargetAlias", "X"), addrArb),
        { maxLength: 8 },
      ),
      (pairs) => {
        try {
          const out = sendTargetsRecords(pairs as TextPair[], { host: "127.0.0.1", port: 3260 });
          for (const t of out) {
            assert.ok(t.name.length > 0 && t.portals.length > 0);
          }
        } catch (e) {
          if (!(e instanceof IscsiProtocolError)) throw e;
        }
      },
    ),
    fuzzOptions(1000),
  );
});

Deno.test("iscsi fuzz: CHAP binary values from a target decode within bounds or raise only AuthError", () => {
  const hexish = fc.array(fc.constantFrom(..."0123456789abcdefABCDEFxXbB+/=g "), {
    maxLength: 60,
  }).map((a) => a.join(""));
  fc.assert(
    fc.property(
      fc.oneof(
        fc.string({ maxLength: 60 }),
        hexish.map((s) => `0x${s}`),
        hexish.map((s) => `0b${s}`),
        hexish,
      ),
      (v) => {
        try {
          const b = decodeChapBinary("CHAP_C", v);
          assert.ok(b.length <= v.length, `${v} decoded to ${b.length} bytes`);
        } catch (e) {
          if (!(e instanceof AuthError)) throw e;
        }
      },
    ),
    fuzzOptions(3000),
  );
});

Deno.test("cli fuzz: portal, --listen and size parsers raise only their typed errors", () => {
  const piece = fc.constantFrom(
    "tcp:",
    "unix:",
    "[",
    "]",
    ":",
    "::1",
    "127.0.0.1",
    "0",
    "65535",
    "99999",
    "/x",
    "",
    "k",
    "M",
    "iB",
  );
  const textArb = fc.oneof(
    fc.string({ maxLength: 40 }),
    fc.array(piece, { maxLength: 8 }).map((a) => a.join("")),
  );
  fc.assert(
    fc.property(textArb, (s) => {
      try {
        const p = parsePortal(s);
        assert.ok(p.port >= 1 && p.port <= 65535);
      } catch (e) {
        if (!(e instanceof InvalidInputError)) throw e;
      }
      try {
        const a = parseListenAddress(s);
        if (a.transport === "tcp") assert.ok(a.port >= 0 && a.port <= 65535);
        else assert.ok(a.path.length > 0);
      } catch (e) {
        if (!(e instanceof UsageError)) throw e;
      }
      try {
        assert.ok(parseSize(s) >= 0n);
      } catch (e) {
        if (!(e instanceof InvalidInputError)) throw e;
      }
    }),
    fuzzOptions(3000),
  );
});

/**
 * The real receive path: a peer on 127.0.0.1 sends arbitrary bytes, in
 * arbitrary pieces, to a Connection that reads PDUs until it fails. The
 * streams are built from PDU-shaped pieces (valid BHS opcodes and lengths,
 * digests on or off) mixed with junk, so the fuzzer reaches past the header
 * checks. Only IscsiProtocolError (bad input) and OperationalError (the peer
 * closed) may come out, and the read must end when the bytes do.
 */
Deno.test({
  name:
    "iscsi fuzz: Connection.readPdu over a socket fed arbitrary PDU-shaped bytes raises only typed errors",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const crc = await defaultCrc32c();
    const log = new Logger({ quiet: true });
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    const opcodes = [...TARGET_OPCODES];
    const pduArb = fc.record({
      opcode: fc.oneof(fc.constantFrom(...opcodes), fc.integer({ min: 0, max: 0x3f })),
      flags: fc.integer({ min: 0, max: 255 }),
      ahsWords: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 255 })),
      dsl: fc.oneof(
        fc.integer({ min: 0, max: 600 }),
        fc.constant(0xffffff),
        fc.integer({ min: 0, max: 0xffffff }),
      ),
      body: fc.uint8Array({ maxLength: 700 }),
      goodDigest: fc.boolean(),
    });
    const streamArb = fc.record({
      pdus: fc.array(pduArb, { minLength: 1, maxLength: 4 }),
      junk: fc.uint8Array({ maxLength: 64 }),
      hd: fc.boolean(),
      dd: fc.boolean(),
      mrdsl: fc.constantFrom(512, 8192, 262144),
      cut: fc.integer({ min: 1, max: 97 }),
    });
    try {
      await fc.assert(
        fc.asyncProperty(streamArb, async (s) => {
          const parts: Uint8Array[] = [];
          for (const p of s.pdus) {
            const bhs = new Uint8Array(BHS_LENGTH);
            bhs[0] = p.opcode;
            bhs[1] = p.flags;
            bhs[4] = p.ahsWords;
            bhs[5] = p.dsl >>> 16;
            bhs[6] = (p.dsl >>> 8) & 0xff;
            bhs[7] = p.dsl & 0xff;
            parts.push(bhs);
            if (s.hd) {
              const d = new Uint8Array(4);
              new DataView(d.buffer).setUint32(
                0,
                p.goodDigest ? crc.digest(bhs) : 0x12345678,
                true,
              );
              parts.push(d);
            }
            parts.push(p.body);
          }
          parts.push(s.junk);
          const stream = new Uint8Array(parts.reduce((a, b) => a + b.length, 0));
          let o = 0;
          for (const p of parts) {
            stream.set(p, o);
            o += p.length;
          }
          const accepted = listener.accept();
          const conn = await Connection.connect({ host: "127.0.0.1", port, crc, log });
          const peer = await accepted;
          conn.headerDigest = s.hd;
          conn.dataDigest = s.dd;
          conn.maxRecvDataSegmentLength = s.mrdsl;
          const writer = (async () => {
            try {
              for (let off = 0; off < stream.length; off += s.cut) {
                await peer.write(stream.subarray(off, Math.min(stream.length, off + s.cut)));
              }
            } catch { /* reader gave up first */ }
            try {
              peer.close();
            } catch { /* closed */ }
          })();
          let pdus = 0;
          try {
            for (;;) {
              const r = await conn.readPdu();
              pdus++;
              assert.ok(r.data.length === r.header.dataSegmentLength);
              assert.ok(r.data.length <= s.mrdsl);
              assert.ok(pdus <= s.pdus.length + 1, "more PDUs than were sent");
            }
          } catch (e) {
            if (!(e instanceof IscsiProtocolError) && !(e instanceof OperationalError)) throw e;
          } finally {
            conn.close();
            await writer;
          }
        }),
        fuzzOptions(150),
      );
    } finally {
      listener.close();
    }
  },
});
