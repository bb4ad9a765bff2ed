/**
 * src/sys on this host: socketpair, netlink to NETLINK_ROUTE,
 * generic netlink family resolution, errno mapping, and property tests of the
 * netlink codecs.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { fuzzOptions } from "../helpers/fuzz.ts";
import { OperationalError } from "../../src/errors.ts";
import { errnoName, SysError } from "../../src/sys/errno.ts";
import { libc } from "../../src/sys/libc.ts";
import {
  AF_INET,
  closeFd,
  getIntOption,
  isNonBlocking,
  openSocket,
  setNonBlocking,
  setSocketBuffers,
  SHUT_WR,
  shutdownFd,
  SO_RCVBUF,
  SO_SNDBUF,
  SOCK_STREAM,
  socketPair,
  SOL_SOCKET,
} from "../../src/sys/socket.ts";
import { holdReclaimableSlack } from "../../src/sys/process.ts";
import {
  Attrs,
  AttrWriter,
  encodeMessage,
  NETLINK_GENERIC,
  NETLINK_ROUTE,
  NetlinkError,
  NetlinkParseError,
  NetlinkSocket,
  parseMessages,
} from "../../src/sys/netlink.ts";
import { GENL_ID_CTRL, resolveFamily } from "../../src/sys/genetlink.ts";

const RTM_GETLINK = 18;
const RTM_NEWLINK = 16;
const IFLA_ADDRESS = 1;
const IFLA_IFNAME = 3;
const IFLA_MTU = 4;

function ifinfomsg(index = 0): Uint8Array {
  const b = new Uint8Array(16); // family u8, pad, type u16, index i32, flags u32, change u32
  new DataView(b.buffer).setInt32(4, index, true);
  return b;
}

Deno.test("socketPair: bytes flow both ways; a shutdown end reads as EOF on the other", () => {
  const [a, b] = socketPair();
  try {
    setNonBlocking(a, false);
    setNonBlocking(b, false);
    const msg = new TextEncoder().encode("ping");
    assert.equal(libc().write(b, msg, BigInt(msg.length)), 4n);
    const buf = new Uint8Array(8);
    assert.equal(libc().read(a, buf, 8n), 4n);
    assert.deepEqual([...buf.subarray(0, 4)], [...msg]);
    const pong = new TextEncoder().encode("pong");
    assert.equal(libc().write(a, pong, 4n), 4n);
    assert.equal(libc().read(b, buf, 8n), 4n);
    assert.equal(new TextDecoder().decode(buf.subarray(0, 4)), "pong");
    shutdownFd(b, SHUT_WR);
    assert.equal(libc().read(a, buf, 8n), 0n);
  } finally {
    closeFd(a);
    closeFd(b);
  }
});

Deno.test("setNonBlocking toggles O_NONBLOCK", () => {
  const [a, b] = socketPair();
  try {
    assert.equal(isNonBlocking(a), false);
    setNonBlocking(a);
    assert.equal(isNonBlocking(a), true);
    // A read on an empty non-blocking socket is EAGAIN, typed.
    const n = libc().read(a, new Uint8Array(4), 4n);
    assert.equal(n, -1n);
    setNonBlocking(a, false);
    assert.equal(isNonBlocking(a), false);
  } finally {
    closeFd(a);
    closeFd(b);
  }
});

Deno.test("setSocketBuffers: fixed sizes on a unix and a TCP socket, past net.core.*mem_max as root", () => {
  const [a, b] = socketPair();
  const tcp = openSocket(AF_INET, SOCK_STREAM, 0);
  try {
    for (const fd of [a, tcp]) {
      const before = getIntOption(fd, SOL_SOCKET, SO_SNDBUF);
      const got = setSocketBuffers(fd, { send: 3 << 20, receive: 3 << 20 });
      // The kernel doubles what it is asked (its bookkeeping); 3 MiB is not a
      // default anywhere, so the doubled value shows the call took effect.
      assert.notEqual(before, 6 << 20);
      const max = Number(Deno.readTextFileSync("/proc/sys/net/core/wmem_max"));
      const want = Deno.uid() === 0 ? 6 << 20 : Math.min(3 << 20, max) * 2;
      assert.deepEqual(got, { send: want, receive: want });
      assert.equal(getIntOption(fd, SOL_SOCKET, SO_RCVBUF), want);
    }
  } finally {
    closeFd(a);
    closeFd(b);
    closeFd(tcp);
  }
});

Deno.test("holdReclaimableSlack: the pages are resident, then lazily freed; none taken yet", () => {
  const lazyFree = () =>
    Number(
      /^LazyFree:\s+(\d+) kB$/m.exec(Deno.readTextFileSync("/proc/self/smaps_rollup"))![1],
    ) * 1024;
  const before = lazyFree();
  const r = holdReclaimableSlack(4 << 20);
  assert.ok("slack" in r, "error" in r ? r.error : "");
  assert.equal(r.slack.bytes, 4 << 20);
  const grew = lazyFree() - before;
  // The kernel may already have dropped a few pages; most are there, lazily freed.
  assert.ok(grew >= 0.9 * (4 << 20), `LazyFree grew by ${grew} bytes`);
  assert.equal(r.slack.taken(), 0);
});

const MEMCG = "/sys/fs/cgroup/memory";
let memcgV1 = false;
try {
  memcgV1 = Deno.uid() === 0 && Deno.statSync(`${MEMCG}/memory.limit_in_bytes`).isFile;
} catch { /* no cgroup v1 memory controller */ }

Deno.test({
  name: "holdReclaimableSlack: a memory cgroup capped below its charge takes the slack first",
  ignore: !memcgV1,
  fn: () => {
    // This process in a memory cgroup of its own (cgroup v1 charges pages
    // where they are first touched, so only what it touches from here on is
    // charged there), the slack made there, then the limit put 2 MiB under
    // what the cgroup holds: the kernel must reclaim, and the slack is all it
    // can take without swap.
    const dir = `${MEMCG}/isboot-slack-test-${Deno.pid}`;
    const parent = `${MEMCG}/${
      /^\d+:memory:\/?(.*)$/m.exec(Deno.readTextFileSync("/proc/self/cgroup"))?.[1] ?? ""
    }`.replace(/\/$/, "");
    Deno.mkdirSync(dir);
    try {
      Deno.writeTextFileSync(`${dir}/cgroup.procs`, String(Deno.pid));
      const r = holdReclaimableSlack(4 << 20);
      assert.ok("slack" in r);
      const usage = Number(Deno.readTextFileSync(`${dir}/memory.usage_in_bytes`));
      assert.ok(usage >= 4 << 20, `the cgroup holds ${usage} bytes`);
      Deno.writeTextFileSync(`${dir}/memory.limit_in_bytes`, String(usage - (2 << 20)));
      Deno.writeTextFileSync(`${dir}/memory.limit_in_bytes`, "-1");
      const taken = r.slack.taken();
      // Most of the 2 MiB (the cgroup's own page cache and kernel objects may give a little).
      assert.ok(taken >= 1 << 20, `the kernel took ${taken} bytes of the slack`);
      assert.equal(
        /^oom_kill (\d+)$/m.exec(Deno.readTextFileSync(`${dir}/memory.oom_control`))?.[1],
        "0",
      );
    } finally {
      Deno.writeTextFileSync(`${parent}/cgroup.procs`, String(Deno.pid));
      Deno.removeSync(dir);
    }
  },
});

Deno.test("errno: a failed call is a typed SysError with the errno's name", () => {
  assert.equal(errnoName(2), "ENOENT");
  assert.equal(errnoName(9999), "errno 9999");
  const err = assert.throws(() => closeFd(987654), (e: unknown) => {
    assert.ok(e instanceof SysError);
    assert.ok(e instanceof OperationalError);
    assert.equal(e.code, "EBADF");
    assert.equal(e.errno, 9);
    assert.equal(e.call, "close");
    assert.equal(e.exitCode, 1);
    assert.match(e.message, /^close: EBADF/);
    return true;
  });
  assert.equal(err, undefined);
});

Deno.test("netlink: RTM_GETLINK dump lists lo with its name, MTU and zero MAC", () => {
  const nl = NetlinkSocket.open(NETLINK_ROUTE);
  try {
    assert.ok(nl.portId > 0);
    const links = nl.dump(RTM_GETLINK, ifinfomsg(), "RTM_GETLINK");
    assert.ok(links.length >= 1);
    const byName = new Map<string, { index: number; attrs: Attrs }>();
    for (const m of links) {
      assert.equal(m.type, RTM_NEWLINK);
      const index = new DataView(m.payload.buffer, m.payload.byteOffset).getInt32(4, true);
      const attrs = Attrs.parse(m.payload.subarray(16));
      byName.set(attrs.str(IFLA_IFNAME) ?? "?", { index, attrs });
    }
    const lo = byName.get("lo");
    assert.ok(lo, `no lo among ${[...byName.keys()]}`);
    assert.equal(lo.index, 1);
    assert.equal(lo.attrs.u32(IFLA_MTU), 65536);
    assert.deepEqual([...lo.attrs.get(IFLA_ADDRESS)!], [0, 0, 0, 0, 0, 0]);
    // A plain (non-dump) request for index 1 gives exactly lo.
    const one = nl.request(RTM_GETLINK, 0, ifinfomsg(1), "RTM_GETLINK lo");
    assert.equal(one.length, 1);
    assert.equal(Attrs.parse(one[0].payload.subarray(16)).str(IFLA_IFNAME), "lo");
  } finally {
    nl.close();
  }
});

Deno.test("netlink: the kernel's error for a missing link is a typed NetlinkError ENODEV", () => {
  const nl = NetlinkSocket.open(NETLINK_ROUTE);
  try {
    assert.throws(
      () => nl.request(RTM_GETLINK, 0, ifinfomsg(0x7ffffff0), "RTM_GETLINK"),
      (e: unknown) => {
        assert.ok(e instanceof NetlinkError);
        assert.equal(e.code, "ENODEV");
        assert.equal(e.call, "RTM_GETLINK");
        return true;
      },
    );
  } finally {
    nl.close();
  }
});

Deno.test("genetlink: nlctrl resolves to 0x10; nbd resolves only where nbd.ko is loaded", () => {
  const nl = NetlinkSocket.open(NETLINK_GENERIC);
  try {
    const ctrl = resolveFamily(nl, "nlctrl");
    assert.equal(ctrl.id, GENL_ID_CTRL);
    assert.ok(ctrl.ops.includes(3), "nlctrl implements CTRL_CMD_GETFAMILY");
    assert.ok(ctrl.mcastGroups.has("notify"));
    let haveNbd = false;
    try {
      Deno.statSync("/sys/module/nbd");
      haveNbd = true;
    } catch { /* no nbd driver on this kernel */ }
    if (haveNbd) {
      assert.ok(resolveFamily(nl, "nbd").id > GENL_ID_CTRL);
    } else {
      assert.throws(() => resolveFamily(nl, "nbd"), (e: unknown) => {
        assert.ok(e instanceof NetlinkError);
        assert.equal(e.code, "ENOENT");
        return true;
      });
    }
  } finally {
    nl.close();
  }
});

Deno.test("netlink: a closed socket refuses requests with EBADF", () => {
  const nl = NetlinkSocket.open(NETLINK_ROUTE);
  nl.close();
  nl.close(); // idempotent
  assert.throws(
    () => nl.dump(RTM_GETLINK, ifinfomsg()),
    (e: unknown) => e instanceof SysError && e.code === "EBADF",
  );
});

type Tree = { type: number; value: Uint8Array | Tree[] };
const treeArb: fc.Arbitrary<Tree[]> = fc.letrec<{ list: Tree[]; node: Tree }>((tie) => ({
  list: fc.array(tie("node"), { maxLength: 4 }),
  node: fc.record({
    type: fc.integer({ min: 0, max: 0x3fff }),
    value: fc.oneof(
      { depthSize: "small", withCrossShrink: true },
      fc.uint8Array({ maxLength: 40 }),
      tie("list"),
    ),
  }),
})).list;

function writeTree(w: AttrWriter, tree: Tree[]): AttrWriter {
  for (const n of tree) {
    if (n.value instanceof Uint8Array) w.raw(n.type, n.value);
    else w.nested(n.type, (inner) => writeTree(inner, n.value as Tree[]));
  }
  return w;
}

function checkTree(a: Attrs, tree: Tree[]): void {
  assert.equal(a.list.length, tree.length);
  tree.forEach((n, i) => {
    const got = a.list[i];
    assert.equal(got.type, n.type);
    if (n.value instanceof Uint8Array) {
      assert.equal(got.nested, false);
      assert.deepEqual([...got.data], [...n.value]);
    } else {
      assert.equal(got.nested, true);
      checkTree(Attrs.parse(got.data), n.value);
    }
  });
}

Deno.test("property: nested attributes round-trip through AttrWriter and Attrs.parse", () => {
  fc.assert(
    fc.property(treeArb, (tree) => {
      checkTree(Attrs.parse(writeTree(new AttrWriter(), tree).bytes()), tree);
    }),
    fuzzOptions(300),
  );
});

Deno.test("property: typed attribute getters read back what the writer put", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 255 }),
      fc.integer({ min: 0, max: 0xffff }),
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
      fc.string({ maxLength: 30 }).filter((s) => !s.includes("\0")),
      (a, b, c, d, s) => {
        const attrs = Attrs.parse(
          new AttrWriter().u8(1, a).u16(2, b).u32(3, c).u64(4, d).str(5, s).u16(6, b, true).u32(
            7,
            c,
            true,
          ).bytes(),
        );
        assert.equal(attrs.u8(1), a);
        assert.equal(attrs.u16(2), b);
        assert.equal(attrs.u32(3), c);
        assert.equal(attrs.u64(4), d);
        assert.equal(attrs.str(5), s);
        assert.equal(attrs.u16(6), b);
        assert.equal(attrs.u32(7), c);
        assert.equal(attrs.u32(99), undefined);
      },
    ),
    fuzzOptions(300),
  );
});

Deno.test("fuzz: arbitrary bytes make the netlink decoders return or throw NetlinkParseError, never crash", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      for (const parse of [() => parseMessages(bytes), () => Attrs.parse(bytes)]) {
        try {
          const out = parse();
          if (out instanceof Attrs) {
            for (const a of out.list) {
              try {
                Attrs.parse(a.data);
                out.u32(a.type);
                out.u64(a.type);
              } catch (e) {
                if (!(e instanceof NetlinkParseError)) throw e;
              }
            }
          }
        } catch (e) {
          if (!(e instanceof NetlinkParseError)) throw e;
        }
      }
    }),
    fuzzOptions(1000),
  );
});

Deno.test("property: encoded messages parse back, several per datagram", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.record({
          type: fc.integer({ min: 0, max: 0xffff }),
          flags: fc.integer({ min: 0, max: 0xffff }),
          seq: fc.integer({ min: 0, max: 0xffffffff }),
          payload: fc.uint8Array({ maxLength: 50 }),
        }),
        { minLength: 1, maxLength: 5 },
      ),
      (msgs) => {
        const parts = msgs.map((m) => encodeMessage(m));
        const buf = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
        let off = 0;
        for (const p of parts) {
          buf.set(p, off);
          off += p.length;
        }
        const got = parseMessages(buf);
        assert.equal(got.length, msgs.length);
        got.forEach((g, i) => {
          assert.equal(g.type, msgs[i].type);
          assert.equal(g.flags, msgs[i].flags);
          assert.equal(g.seq, msgs[i].seq);
          assert.deepEqual([...g.payload], [...msgs[i].payload]);
        });
      },
    ),
    fuzzOptions(300),
  );
});
