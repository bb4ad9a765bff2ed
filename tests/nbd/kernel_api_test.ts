/**
 * src/nbd/genl.ts, src/nbd/sysfs.ts and src/nbd/attach.ts on a host without
 * the nbd driver: the attribute layout of NBD_CMD_CONNECT, device names,
 * sysfs parsing, and the typed failures when the family is missing. The
 * real connect/disconnect/status path runs in the VM (tests/vm/attach_test.ts).
 */
import assert from "node:assert/strict";
import { OperationalError, UsageError } from "../../src/errors.ts";
import { attachDevice, kernelBlockSize } from "../../src/nbd/attach.ts";
import {
  connectAttributes,
  type ConnectOptions,
  linkDeadIndexes,
  NBD_ATTR_BACKEND_IDENTIFIER,
  NBD_ATTR_BLOCK_SIZE_BYTES,
  NBD_ATTR_CLIENT_FLAGS,
  NBD_ATTR_DEAD_CONN_TIMEOUT,
  NBD_ATTR_INDEX,
  NBD_ATTR_SERVER_FLAGS,
  NBD_ATTR_SIZE_BYTES,
  NBD_ATTR_SOCKETS,
  NBD_ATTR_TIMEOUT,
  NBD_CFLAG_DESTROY_ON_DISCONNECT,
  NBD_GENL_CMD,
  NBD_SOCK_FD,
  NBD_SOCK_ITEM,
  NbdKernel,
} from "../../src/nbd/genl.ts";
import { parseNbdDevice, readNbdSysfs } from "../../src/nbd/sysfs.ts";
import { Attrs, AttrWriter, NLA_F_NESTED, type NlMessage } from "../../src/sys/netlink.ts";
import { encodeGenl } from "../../src/sys/genetlink.ts";
import { pageSize } from "../../src/sys/process.ts";
import { MemoryDevice } from "../../src/memory_device.ts";
import { Logger } from "../../src/log.ts";

import { haveNbd } from "../helpers/fs.ts";

Deno.test("connectAttributes: every NBD_ATTR the kernel reads, sockets nested twice", () => {
  const w = connectAttributes({
    index: 3,
    sockets: [7, 9],
    sizeBytes: 64n << 20n,
    blockSize: 4096,
    serverFlags: 0x10d,
    timeoutSec: 30,
    deadConnTimeoutSec: 600,
    backendIdentifier: "iqn.2026-11.test:disk1/1",
  });
  const raw = w.bytes();
  const a = Attrs.parse(raw);
  assert.equal(a.u32(NBD_ATTR_INDEX), 3);
  assert.equal(a.u64(NBD_ATTR_SIZE_BYTES), 64n << 20n);
  assert.equal(a.u64(NBD_ATTR_BLOCK_SIZE_BYTES), 4096n);
  assert.equal(a.u64(NBD_ATTR_SERVER_FLAGS), 0x10dn);
  assert.equal(a.u64(NBD_ATTR_TIMEOUT), 30n);
  assert.equal(a.u64(NBD_ATTR_DEAD_CONN_TIMEOUT), 600n);
  assert.equal(a.u64(NBD_ATTR_CLIENT_FLAGS), BigInt(NBD_CFLAG_DESTROY_ON_DISCONNECT));
  assert.equal(a.str(NBD_ATTR_BACKEND_IDENTIFIER), "iqn.2026-11.test:disk1/1");
  // The kernel's nla_parse_nested wants NLA_F_NESTED on SOCKETS and each item.
  const sock = a.list.find((x) => x.type === NBD_ATTR_SOCKETS)!;
  assert.equal(sock.nested, true);
  const items = a.nested(NBD_ATTR_SOCKETS)!.list;
  assert.deepEqual(items.map((i) => [i.type, i.nested]), [[NBD_SOCK_ITEM, true], [
    NBD_SOCK_ITEM,
    true,
  ]]);
  assert.deepEqual(items.map((i) => Attrs.parse(i.data).u32(NBD_SOCK_FD)), [7, 9]);
  assert.ok(NLA_F_NESTED === 0x8000);
  // No index: the kernel picks a free device.
  const b = Attrs.parse(
    connectAttributes({ sockets: [1], sizeBytes: 512n, blockSize: 512, serverFlags: 1 }).bytes(),
  );
  assert.equal(b.has(NBD_ATTR_INDEX), false);
  assert.equal(b.u64(NBD_ATTR_TIMEOUT), 0n, "default: requests never time out in the kernel");
  assert.equal(b.u64(NBD_ATTR_DEAD_CONN_TIMEOUT), 120n);
  assert.equal(b.has(NBD_ATTR_BACKEND_IDENTIFIER), false);
});

Deno.test("connectAttributes: refuses what the kernel would refuse, as UsageError", () => {
  const base = { sockets: [1], sizeBytes: 1n << 20n, blockSize: 512, serverFlags: 1 };
  for (
    const bad of [
      { ...base, sockets: [] },
      { ...base, blockSize: 1000 },
      { ...base, blockSize: 256 },
      { ...base, sizeBytes: 0n },
      { ...base, sizeBytes: 1000n },
    ]
  ) {
    assert.throws(
      () => connectAttributes(bad),
      UsageError,
      JSON.stringify(bad, (_k, v) => typeof v === "bigint" ? String(v) : v),
    );
  }
});

Deno.test("kernel block size: never above the page size (Linux 6.1 blk_validate_block_size)", () => {
  const page = pageSize();
  assert.ok(page >= 4096 && (page & (page - 1)) === 0, `page size ${page}`);
  assert.deepEqual(
    [512, 4096, 8192, 65536].map((b) => kernelBlockSize(b, 4096)),
    [512, 4096, 4096, 4096],
  );
  assert.equal(kernelBlockSize(65536, 65536), 65536); // arm64/ppc64 64 KiB pages
  const base = { sockets: [1], sizeBytes: 1n << 20n, serverFlags: 1 };
  assert.throws(
    () => connectAttributes({ ...base, blockSize: 8192 }, 4096),
    (e: unknown) =>
      e instanceof UsageError &&
      e.message === "NBD block size 8192 is larger than the page size (4096), which Linux refuses",
  );
  const w = connectAttributes({ ...base, blockSize: 8192 }, 65536);
  const a = Attrs.parse(w.bytes());
  assert.equal(a.u64(NBD_ATTR_BLOCK_SIZE_BYTES), 8192n);
});

Deno.test("attachDevice: a LUN with blocks above the page size gets page-sized kernel blocks, and a warning", async () => {
  const seen: ConnectOptions[] = [];
  // Only connect() is reached before serving: the sockets are real, the kernel is not.
  const nbd = {
    connect(o: ConnectOptions) {
      seen.push(o);
      return 5;
    },
    disconnect() {},
  } as unknown as NbdKernel;
  const lines: string[] = [];
  const log = new Logger({ sink: (_l, line) => lines.push(line) });
  const big = pageSize() * 2;
  const device = new MemoryDevice({ size: BigInt(big) * 64n, blockSize: big });
  const a = await attachDevice(nbd, device, { log, backendIdentifier: "memory:test" });
  // hookUp closed the kernel's ends after connect: our ends see EOF and the server stops.
  await a.done;
  assert.equal(a.device, "/dev/nbd5");
  assert.equal(seen.length, 1);
  assert.equal(seen[0].blockSize, pageSize());
  assert.equal(seen[0].sizeBytes, BigInt(big) * 64n);
  assert.ok(
    lines.some((l) =>
      l.includes(`block size ${big} is larger than the page size (${pageSize()})`) &&
      l.includes(`/dev/nbd uses ${pageSize()}-byte blocks`)
    ),
    lines.join("\n"),
  );
  // A LUN within the page size is passed as it is, silently.
  const small = new MemoryDevice({ size: 1n << 20n, blockSize: 512 });
  lines.length = 0;
  await (await attachDevice(nbd, small, { log, backendIdentifier: "memory:small" })).done;
  assert.equal(seen[1].blockSize, 512);
  assert.deepEqual(lines.filter((l) => l.includes("page size")), []);
});

Deno.test("parseNbdDevice: /dev/nbdN, nbdN and N; anything else is a usage error", () => {
  assert.equal(parseNbdDevice("/dev/nbd0"), 0);
  assert.equal(parseNbdDevice("nbd15"), 15);
  assert.equal(parseNbdDevice("7"), 7);
  for (
    const bad of ["/dev/sda", "/dev/nbd", "nbd-1", "/dev/nbd0p1", "", "/tmp/nbd0", "nbd1234567"]
  ) {
    assert.throws(() => parseNbdDevice(bad), UsageError, bad);
  }
});

Deno.test("readNbdSysfs: size in bytes, backend and pid; absent device", async () => {
  const root = await Deno.makeTempDir({ prefix: "isboot-sysfs-" });
  try {
    await Deno.mkdir(`${root}/block/nbd2`, { recursive: true });
    await Deno.writeTextFile(`${root}/block/nbd2/size`, "131072\n");
    await Deno.writeTextFile(`${root}/block/nbd2/backend`, "iqn.2026-11.test:disk1/1\n");
    await Deno.writeTextFile(`${root}/block/nbd2/pid`, "4242\n");
    assert.deepEqual(readNbdSysfs(2, root), {
      index: 2,
      exists: true,
      sizeBytes: 64n << 20n,
      backend: "iqn.2026-11.test:disk1/1",
      pid: 4242,
    });
    await Deno.mkdir(`${root}/block/nbd3`);
    await Deno.writeTextFile(`${root}/block/nbd3/size`, "0\n");
    assert.deepEqual(readNbdSysfs(3, root), {
      index: 3,
      exists: true,
      sizeBytes: 0n,
      backend: undefined,
      pid: undefined,
    });
    assert.deepEqual(readNbdSysfs(9, root), { index: 9, exists: false, sizeBytes: 0n });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test({
  name: "NbdKernel.open: missing family is a one-line OperationalError; the loader is asked first",
  ignore: haveNbd,
  async fn() {
    await assert.rejects(() => NbdKernel.open({ loadModule: false }), (e: unknown) => {
      assert.ok(e instanceof OperationalError);
      assert.match(e.message, /no nbd driver/);
      return true;
    });
    const asked: string[] = [];
    await assert.rejects(
      () => NbdKernel.open({ loadModule: (m) => (asked.push(m), Promise.resolve()) }),
      /nbd module loaded but generic netlink family 'nbd' is still missing/,
    );
    assert.deepEqual(asked, ["nbd"]);
    await assert.rejects(
      () =>
        NbdKernel.open({
          loadModule: () => Promise.reject(new OperationalError("modprobe nbd: not found")),
        }),
      /modprobe nbd: not found/,
    );
  },
});

Deno.test("linkDeadIndexes: NBD_CMD_LINK_DEAD of the nbd family only; malformed ones skipped", () => {
  const fam = 0x1b;
  const msg = (type: number, payload: Uint8Array): NlMessage => ({
    type,
    flags: 0,
    seq: 0,
    pid: 0,
    payload,
  });
  const dead = (i: number) =>
    encodeGenl(NBD_GENL_CMD.LINK_DEAD, 1, new AttrWriter().u32(NBD_ATTR_INDEX, i).bytes());
  const got = linkDeadIndexes([
    msg(fam, dead(0)),
    msg(fam, dead(3)),
    msg(fam + 1, dead(5)), // another family
    msg(fam, encodeGenl(NBD_GENL_CMD.STATUS, 1, new AttrWriter().u32(NBD_ATTR_INDEX, 6).bytes())),
    msg(fam, encodeGenl(NBD_GENL_CMD.LINK_DEAD, 1, new Uint8Array(0))), // no index
    msg(fam, Uint8Array.of(4, 1)), // truncated genl header
    msg(fam, Uint8Array.of(4, 1, 0, 0, 200, 0, 1, 0)), // attribute longer than the message
  ], fam);
  assert.deepEqual([...got].sort(), [0, 3]);
});
