/**
 * CRC32C study for iSCSI digests: hash-wasm (src/iscsi/digest.ts)
 * against Intel ISA-L's `crc32_iscsi` through Deno.dlopen (Debian libisal2)
 * and the kernel's crc32c through an AF_ALG hash socket, on 48-byte headers
 * and 8 KiB / 256 KiB / 1 MiB data segments. Every implementation is first
 * checked against the RFC 3720 B.4 vectors and against the others on random
 * data split at random points (header + data in one digest call).
 *
 * All three give the same unsigned CRC value; iSCSI sends it least significant
 * byte first (RFC 3720 B.4: 32 zero bytes -> `aa 36 91 8a`, value 0x8a9136aa).
 *
 * Usage: deno run -A bench/crc32c.ts [--quick] [--json docs/bench/crc32c.json]
 */
import { parseArgs } from "node:util";
import { type Crc32c, hashWasmCrc32c } from "../src/iscsi/digest.ts";

const ISAL_LIB = "libisal.so.2";

/**
 * ISA-L `uint32_t crc32_iscsi(unsigned char *buf, int len, uint32_t init)`:
 * no pre- or post-inversion inside, so chaining parts is natural:
 * crc = ~crc32_iscsi(b, crc32_iscsi(a, ~0)). Returns null when libisal2 is absent.
 *
 * @example
 * const crc = isalCrc32c(); crc?.digest(new Uint8Array(32)); // 0x8a9136aa
 */
export function isalCrc32c(): (Crc32c & { close(): void }) | null {
  let lib;
  try {
    lib = Deno.dlopen(ISAL_LIB, {
      crc32_iscsi: { parameters: ["buffer", "i32", "u32"], result: "u32" },
    });
  } catch {
    return null;
  }
  const f = lib.symbols.crc32_iscsi;
  return {
    name: "isa-l",
    digest(a: Uint8Array, b?: Uint8Array): number {
      let crc = f(a, a.length, 0xffffffff);
      if (b && b.length) crc = f(b, b.length, crc);
      return (~crc) >>> 0;
    },
    close: () => lib.close(),
  };
}

const AF_ALG = 38;
const SOCK_SEQPACKET = 5;
const SOCK_CLOEXEC = 0o2000000;
const MSG_MORE = 0x8000;

/**
 * The kernel's crc32c through AF_ALG (linux/if_alg.h: struct sockaddr_alg,
 * type "hash", name "crc32c"). Each digest is one send() per part (MSG_MORE
 * on all but the last) and one read() of the 4-byte result, which the kernel
 * writes little-endian (wire order). Returns null when AF_ALG is unavailable.
 *
 * @example
 * const crc = afAlgCrc32c(); crc?.digest(new Uint8Array(32)); // 0x8a9136aa
 */
export function afAlgCrc32c(): (Crc32c & { close(): void }) | null {
  const libc = Deno.dlopen("libc.so.6", {
    socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
    bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
    accept: { parameters: ["i32", "pointer", "pointer"], result: "i32" },
    send: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
    read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
    close: { parameters: ["i32"], result: "i32" },
  });
  const s = libc.symbols;
  const tfm = s.socket(AF_ALG, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (tfm < 0) {
    libc.close();
    return null;
  }
  // struct sockaddr_alg { u16 salg_family; u8 salg_type[14]; u32 salg_feat; u32 salg_mask; u8 salg_name[64]; }
  const sa = new Uint8Array(88);
  new DataView(sa.buffer).setUint16(0, AF_ALG, true);
  sa.set(new TextEncoder().encode("hash"), 2);
  sa.set(new TextEncoder().encode("crc32c"), 24);
  const op = s.bind(tfm, sa, sa.length) === 0 ? s.accept(tfm, null, null) : -1;
  if (op < 0) {
    s.close(tfm);
    libc.close();
    return null;
  }
  const out = new Uint8Array(4);
  const outView = new DataView(out.buffer);
  const send = (buf: Uint8Array, flags: number) => {
    for (let off = 0; off < buf.length;) {
      const n = Number(s.send(op, buf.subarray(off), BigInt(buf.length - off), flags));
      if (n <= 0) throw new Error("AF_ALG send failed");
      off += n;
    }
  };
  return {
    name: "af_alg",
    digest(a: Uint8Array, b?: Uint8Array): number {
      const more = b !== undefined && b.length > 0;
      send(a, more ? MSG_MORE : 0);
      if (more) send(b, 0);
      if (Number(s.read(op, out, 4n)) !== 4) throw new Error("AF_ALG read failed");
      return outView.getUint32(0, true);
    },
    close() {
      s.close(op);
      s.close(tfm);
      libc.close();
    },
  };
}

/** RFC 3720 B.4: 32-byte vectors and the 48-byte READ(10) command PDU, with CRC values. */
export function rfc3720Vectors(): { name: string; data: Uint8Array; crc: number }[] {
  const n = (f: (i: number) => number) => Uint8Array.from({ length: 32 }, (_, i) => f(i));
  const read10 = Uint8Array.from([
    0x01,
    0xc0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0x14,
    0,
    0,
    0,
    0,
    0,
    0x04,
    0,
    0,
    0,
    0,
    0x14,
    0,
    0,
    0,
    0x18,
    0x28,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0x02,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
  ]);
  return [
    { name: "32 zero bytes", data: n(() => 0), crc: 0x8a9136aa },
    { name: "32 bytes 0xff", data: n(() => 0xff), crc: 0x62a8ab43 },
    { name: "32 ascending", data: n((i) => i), crc: 0x46dd794e },
    { name: "32 descending", data: n((i) => 31 - i), crc: 0x113fdb5c },
    { name: "READ(10) PDU", data: read10, crc: 0xd9963a56 },
  ];
}

/** Check one implementation against the vectors and a reference on random split buffers. */
export function check(impl: Crc32c, reference: Crc32c, cases = 300): string[] {
  const bad: string[] = [];
  for (const v of rfc3720Vectors()) {
    const got = impl.digest(v.data);
    if (got !== v.crc) bad.push(`${impl.name}: ${v.name} gave 0x${got.toString(16)}`);
    // The same vector split in two must give the same CRC (header + data in one call).
    const cut = v.data.length >> 1;
    const split = impl.digest(v.data.subarray(0, cut), v.data.subarray(cut));
    if (split !== v.crc) bad.push(`${impl.name}: ${v.name} split gave 0x${split.toString(16)}`);
  }
  const buf = new Uint8Array(300_000);
  for (let i = 0; i < buf.length; i += 65536) crypto.getRandomValues(buf.subarray(i, i + 65536));
  for (let i = 0; i < cases; i++) {
    const len = i < 50 ? i : Math.floor(Math.random() * buf.length);
    const start = Math.floor(Math.random() * (buf.length - len));
    const a = buf.subarray(start, start + Math.floor(Math.random() * (len + 1)));
    const b = buf.subarray(start + a.length, start + len);
    const want = reference.digest(buf.subarray(start, start + len));
    const got = impl.digest(a, b);
    if (got !== want) {
      bad.push(
        `${impl.name}: ${a.length}+${b.length} bytes at ${start} differ from ${reference.name}`,
      );
      break;
    }
  }
  return bad;
}

export interface Speed {
  impl: string;
  bytes: number;
  nsPerCall: number;
  gbPerSec: number;
}

/** Time `digest` on one buffer size for about `ms` milliseconds (after a warm-up). */
export function speed(impl: Crc32c, bytes: number, ms: number): Speed {
  const buf = new Uint8Array(bytes);
  crypto.getRandomValues(buf.subarray(0, Math.min(bytes, 65536)));
  let sink = 0;
  for (let i = 0; i < 200; i++) sink ^= impl.digest(buf);
  let calls = 0, batch = 16;
  const t0 = performance.now();
  let t = t0;
  while (t - t0 < ms) {
    for (let i = 0; i < batch; i++) sink ^= impl.digest(buf);
    calls += batch;
    if (batch < 1 << 16) batch *= 2;
    t = performance.now();
  }
  if (sink === 0.5) console.log(""); // keep the result alive
  const ns = (t - t0) * 1e6 / calls;
  return { impl: impl.name, bytes, nsPerCall: ns, gbPerSec: bytes / ns };
}

const SIZES = [48, 8192, 256 << 10, 1 << 20];

/**
 * Where AF_ALG is missing (hosts built without CONFIG_CRYPTO_USER_API_HASH),
 * the floor of its per-digest cost is still measurable: one send() and one
 * read() through FFI on a unix SOCK_SEQPACKET pair, which is the syscall
 * pattern an AF_ALG digest needs, with no hashing at all.
 */
export function syscallPairNs(bytes: number, ms: number): number {
  const libc = Deno.dlopen("libc.so.6", {
    socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
    send: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
    read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
    close: { parameters: ["i32"], result: "i32" },
  });
  const s = libc.symbols;
  const fds = new Int32Array(2);
  if (s.socketpair(1, /* AF_UNIX */ SOCK_SEQPACKET, 0, new Uint8Array(fds.buffer)) !== 0) {
    libc.close();
    return NaN;
  }
  const buf = new Uint8Array(bytes);
  const n = BigInt(bytes);
  let calls = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < ms) {
    for (let i = 0; i < 256; i++) {
      s.send(fds[0], buf, n, 0);
      s.read(fds[1], buf, n);
    }
    calls += 256;
  }
  const ns = (performance.now() - t0) * 1e6 / calls;
  s.close(fds[0]);
  s.close(fds[1]);
  libc.close();
  return ns;
}

async function main() {
  const { values } = parseArgs({
    args: Deno.args,
    options: { quick: { type: "boolean", default: false }, json: { type: "string" } },
  });
  const hw = await hashWasmCrc32c();
  const impls: Crc32c[] = [hw];
  const notes: string[] = [];
  const isal = isalCrc32c();
  if (isal) impls.push(isal);
  else notes.push(`${ISAL_LIB} not loadable (apt-get install libisal2)`);
  const alg = afAlgCrc32c();
  if (alg) impls.push(alg);
  else notes.push("AF_ALG crc32c socket not available");

  const problems = impls.flatMap((i) => check(i, hw));
  for (const p of problems) console.log(`MISMATCH ${p}`);
  console.log(
    `correctness: ${impls.map((i) => i.name).join(", ")} ${
      problems.length ? "DISAGREE" : "agree on RFC 3720 B.4 vectors and random split buffers"
    }`,
  );

  const ms = values.quick ? 60 : 400;
  const results: Speed[] = [];
  const head = [
    "bytes",
    ...impls.map((i) => `${i.name} ns/call`),
    ...impls.map((i) => `${i.name} GB/s`),
  ];
  console.log(`| ${head.join(" | ")} |\n| ${head.map(() => "---").join(" | ")} |`);
  for (const bytes of SIZES) {
    const row = impls.map((i) => speed(i, bytes, ms));
    results.push(...row);
    console.log(
      `| ${bytes} | ${
        row.map((r) => r.nsPerCall.toFixed(r.nsPerCall < 10 ? 2 : 0)).join(" | ")
      } | ${row.map((r) => r.gbPerSec.toFixed(2)).join(" | ")} |`,
    );
  }
  let floorNs: number | undefined;
  if (!alg) {
    floorNs = syscallPairNs(48, ms);
    notes.push(
      `AF_ALG floor: send()+read() of 48 bytes through FFI costs ${floorNs.toFixed(0)} ns ` +
        "before any hashing (unix SOCK_SEQPACKET pair)",
    );
  }
  for (const n of notes) console.log(`note: ${n}`);
  if (values.json) {
    await Deno.writeTextFile(
      values.json,
      JSON.stringify(
        {
          date: new Date().toISOString(),
          impls: impls.map((i) => i.name),
          problems,
          notes,
          results,
        },
        null,
        2,
      ) + "\n",
    );
  }
  isal?.close();
  alg?.close();
  if (problems.length) Deno.exit(1);
}

if (import.meta.main) await main();
