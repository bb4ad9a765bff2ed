/**
 * The DHCPv4 client (src/net/dhcp/client.ts) against a scripted in-memory
 * server on a virtual clock: hours of lease time run in milliseconds, and
 * every retransmission time is checked to the millisecond. A real dnsmasq
 * answers the client in dhcp_dnsmasq_test.ts.
 */
import assert from "node:assert/strict";
import { setImmediate } from "node:timers";
import { InvalidInputError } from "../../src/errors.ts";
import { formatIp, type IpAddress, parseIPv4 } from "../../src/net/addr.ts";
import {
  DhcpTimeoutError,
  type DhcpTransport,
  LeaseKeeper,
  obtainLease,
  renewLease,
} from "../../src/net/dhcp/client.ts";
import {
  BOOTREPLY,
  decodeDhcp,
  DHCPACK,
  DHCPDECLINE,
  DHCPDISCOVER,
  type DhcpMessage,
  DHCPNAK,
  DHCPOFFER,
  DHCPREQUEST,
  encodeDhcp,
  FLAG_BROADCAST,
  IPV4_ANY,
  type Lease,
  messageType,
  OPT,
} from "../../src/net/dhcp/message.ts";

const ip = (s: string): IpAddress => parseIPv4(s)!;
const MAC = Uint8Array.of(0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc);
const SERVER = ip("10.9.0.1");
const be32 = (n: number) => Uint8Array.of(n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);

/** Time that moves only when every task waits for it. */
class VirtualClock {
  t = 0;
  #seq = 0;
  #timers: { at: number; seq: number; fire: () => void }[] = [];

  now = (): number => this.t;

  timer(ms: number, fire: () => void): () => void {
    const e = { at: this.t + Math.max(0, ms), seq: this.#seq++, fire };
    this.#timers.push(e);
    return () => {
      const i = this.#timers.indexOf(e);
      if (i >= 0) this.#timers.splice(i, 1);
    };
  }

  sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
    new Promise((resolve) => {
      if (signal?.aborted) return resolve();
      const onAbort = () => {
        cancel();
        resolve();
      };
      const cancel = this.timer(ms, () => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      });
      signal?.addEventListener("abort", onAbort, { once: true });
    });

  /** Let every ready task run (promise chains end in one macrotask turn). */
  async settle(): Promise<void> {
    for (let i = 0; i < 2; i++) await new Promise((r) => setImmediate(r));
  }

  get pending(): number {
    return this.#timers.length;
  }

  /** Fire timers in time order up to `until` (ms), or until `stop()` says so. */
  async advance(until: number, stop: () => boolean = () => false): Promise<void> {
    await this.settle();
    while (!stop()) {
      this.#timers.sort((a, b) => a.at - b.at || a.seq - b.seq);
      const next = this.#timers[0];
      if (!next || next.at > until) break;
      this.#timers.shift();
      this.t = next.at;
      next.fire();
      await this.settle();
    }
    if (!stop()) this.t = Math.max(this.t, until);
  }

  /** Run until `p` settles (at most a simulated day). */
  async run<T>(p: Promise<T>): Promise<T> {
    let done = false;
    p.then(() => done = true, () => done = true);
    await this.advance(86_400_000, () => done);
    assert.ok(done, "still running after a simulated day");
    return p;
  }
}

interface Sent {
  at: number;
  to: string;
  m: DhcpMessage;
}

/** An in-memory link: what the client sends goes to `server`, what it replies comes back. */
class FakeLink implements DhcpTransport {
  sent: Sent[] = [];
  #inbox: Uint8Array[] = [];
  #waiter: ((p: Uint8Array | null) => void) | null = null;

  constructor(
    readonly clock: VirtualClock,
    public server: (s: Sent, link: FakeLink) => void = () => {},
  ) {}

  send(payload: Uint8Array, to: "broadcast" | IpAddress): Promise<void> {
    const s = {
      at: this.clock.t,
      to: to === "broadcast" ? to : formatIp(to),
      m: decodeDhcp(payload),
    };
    this.sent.push(s);
    this.server(s, this);
    return Promise.resolve();
  }

  /** Deliver a message (or raw bytes) to the client after `delayMs`. */
  deliver(m: DhcpMessage | Uint8Array, delayMs = 0): void {
    const bytes = m instanceof Uint8Array ? m : encodeDhcp(m);
    if (delayMs > 0) this.clock.timer(delayMs, () => this.#push(bytes));
    else this.#push(bytes);
  }

  #push(b: Uint8Array): void {
    const w = this.#waiter;
    if (w) {
      this.#waiter = null;
      w(b);
    } else this.#inbox.push(b);
  }

  receive(timeoutMs: number, signal?: AbortSignal): Promise<Uint8Array | null> {
    const queued = this.#inbox.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve) => {
      const finish = (p: Uint8Array | null) => {
        cancel();
        signal?.removeEventListener("abort", onAbort);
        this.#waiter = null;
        resolve(p);
      };
      const onAbort = () => finish(null);
      const cancel = this.clock.timer(timeoutMs, () => finish(null));
      this.#waiter = finish;
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  types(): string[] {
    const names: Record<number, string> = {
      [DHCPDISCOVER]: "DISCOVER",
      [DHCPREQUEST]: "REQUEST",
      [DHCPDECLINE]: "DECLINE",
    };
    return this.sent.map((s) => names[messageType(s.m) ?? 0] ?? "?");
  }
}

/** The server's answer to `req`. */
function answer(
  req: DhcpMessage,
  type: number,
  o: { yiaddr?: string; server?: IpAddress; lease?: number; extra?: [number, Uint8Array][] } = {},
): DhcpMessage {
  const options = new Map<number, Uint8Array>([[OPT.DHCP_MESSAGE_TYPE, Uint8Array.of(type)]]);
  options.set(OPT.SERVER_IDENTIFIER, (o.server ?? SERVER).bytes);
  if (type !== DHCPNAK) {
    options.set(OPT.IP_ADDRESS_LEASE_TIME, be32(o.lease ?? 3600));
    options.set(OPT.SUBNET_MASK, Uint8Array.of(255, 255, 255, 0));
    options.set(OPT.ROUTER, SERVER.bytes);
  }
  for (const [c, v] of o.extra ?? []) options.set(c, v);
  return {
    op: BOOTREPLY,
    htype: 1,
    hlen: 6,
    hops: 0,
    xid: req.xid,
    secs: 0,
    flags: req.flags,
    ciaddr: req.ciaddr,
    yiaddr: type === DHCPNAK ? IPV4_ANY : ip(o.yiaddr ?? "10.9.0.50"),
    siaddr: IPV4_ANY,
    giaddr: IPV4_ANY,
    chaddr: req.chaddr,
    sname: "",
    file: "",
    options,
  };
}

/** A server that offers and acknowledges `addr` (after `delayMs`). */
function simpleServer(addr = "10.9.0.50", delayMs = 0, lease = 3600) {
  return (s: Sent, link: FakeLink) => {
    const type = messageType(s.m);
    if (type === DHCPDISCOVER) {
      link.deliver(answer(s.m, DHCPOFFER, { yiaddr: addr, lease }), delayMs);
    }
    if (type === DHCPREQUEST) link.deliver(answer(s.m, DHCPACK, { yiaddr: addr, lease }), delayMs);
  };
}

function setup(server?: (s: Sent, link: FakeLink) => void) {
  const clock = new VirtualClock();
  const link = new FakeLink(clock, server);
  const logs: string[] = [];
  const opts = {
    mac: MAC,
    timeoutMs: 30_000,
    now: clock.now,
    sleep: clock.sleep,
    random: () => 0.5,
    log: (l: string) => logs.push(l),
  };
  return { clock, link, logs, opts };
}

const opt = (m: DhcpMessage, code: number) => m.options.get(code);
const text = (v: Uint8Array | undefined) => new TextDecoder().decode(v);

Deno.test("dhcp client: DISCOVER, OFFER, REQUEST, ACK", async () => {
  const { clock, link, opts } = setup(simpleServer("10.9.0.50", 300));
  const lease = await clock.run(
    obtainLease(link, { ...opts, hostname: "node7", requestedAddress: ip("10.9.0.77") }),
  );
  assert.deepEqual(link.types(), ["DISCOVER", "REQUEST"]);
  const [d, r] = link.sent.map((s) => s.m);
  assert.equal(link.sent[0].to, "broadcast");
  assert.equal(link.sent[1].to, "broadcast");
  for (const m of [d, r]) {
    assert.equal(m.op, 1);
    assert.equal(m.flags, FLAG_BROADCAST);
    assert.deepEqual(m.chaddr, MAC);
    assert.equal(formatIp(m.ciaddr), "0.0.0.0");
    assert.deepEqual(opt(m, OPT.CLIENT_IDENTIFIER), Uint8Array.of(1, ...MAC));
    assert.equal(text(opt(m, OPT.VENDOR_CLASS_IDENTIFIER)), "isboot");
    assert.equal(text(opt(m, OPT.HOST_NAME)), "node7");
    assert.ok(opt(m, OPT.PARAMETER_REQUEST_LIST)!.includes(OPT.ROOT_PATH));
  }
  assert.equal(formatIp({ family: 4, bytes: opt(d, OPT.REQUESTED_IP_ADDRESS)! }), "10.9.0.77");
  assert.equal(opt(d, OPT.SERVER_IDENTIFIER), undefined);
  // RFC 2131 §4.4.1: REQUEST keeps the xid and names the offer and its server.
  assert.equal(r.xid, d.xid);
  assert.equal(formatIp({ family: 4, bytes: opt(r, OPT.REQUESTED_IP_ADDRESS)! }), "10.9.0.50");
  assert.deepEqual(opt(r, OPT.SERVER_IDENTIFIER), SERVER.bytes);
  assert.equal(r.secs, 0, "300 ms is less than a second");
  assert.equal(formatIp(lease.address), "10.9.0.50");
  assert.equal(lease.prefixLength, 24);
  assert.equal(formatIp(lease.serverId), "10.9.0.1");
  // The lease runs from when the REQUEST left, not from when the ACK came.
  assert.equal(lease.obtainedAt, 300);
  assert.equal(clock.t, 600);
});

Deno.test("dhcp client: replies for someone else, or malformed, are ignored", async () => {
  const { clock, link, logs, opts } = setup((s, l) => {
    const type = messageType(s.m);
    if (type !== DHCPDISCOVER && type !== DHCPREQUEST) return;
    const good = answer(s.m, type === DHCPDISCOVER ? DHCPOFFER : DHCPACK);
    l.deliver({ ...good, xid: (good.xid + 1) >>> 0, yiaddr: ip("10.9.0.66") }, 10);
    l.deliver({ ...good, chaddr: Uint8Array.of(2, 0, 0, 0, 0, 1), yiaddr: ip("10.9.0.66") }, 20);
    l.deliver({ ...good, op: 1, yiaddr: ip("10.9.0.66") }, 30);
    l.deliver(encodeDhcp(good).subarray(0, 250), 40); // no END
    const noServerId = { ...good, yiaddr: ip("10.9.0.66"), options: new Map(good.options) };
    noServerId.options.delete(OPT.SERVER_IDENTIFIER);
    l.deliver(noServerId, 50);
    if (type === DHCPREQUEST) {
      // An ACK from a server we did not choose is not ours to take.
      l.deliver(answer(s.m, DHCPACK, { server: ip("10.9.0.2"), yiaddr: "10.9.0.66" }), 55);
    }
    l.deliver(good, 60);
  });
  const lease = await clock.run(obtainLease(link, opts));
  assert.equal(formatIp(lease.address), "10.9.0.50");
  assert.deepEqual(link.types(), ["DISCOVER", "REQUEST"]);
  assert.ok(logs.some((l) => l.includes("ignored a malformed DHCP message")), logs.join("\n"));
});

Deno.test("dhcp client: the first acceptable OFFER wins", async () => {
  const other = ip("10.9.0.2");
  const { clock, link, opts } = setup((s, l) => {
    const type = messageType(s.m);
    if (type === DHCPDISCOVER) {
      l.deliver(answer(s.m, DHCPOFFER, { server: other, yiaddr: "10.9.0.60" }), 100);
      l.deliver(answer(s.m, DHCPOFFER, { yiaddr: "10.9.0.50" }), 200);
    }
    if (type === DHCPREQUEST) {
      const chosen = opt(s.m, OPT.SERVER_IDENTIFIER)!;
      l.deliver(answer(s.m, DHCPACK, { server: ip(chosen.join(".")), yiaddr: "10.9.0.60" }), 100);
    }
  });
  const lease = await clock.run(obtainLease(link, opts));
  assert.equal(formatIp(lease.serverId), "10.9.0.2");
  assert.equal(formatIp(lease.address), "10.9.0.60");
  assert.deepEqual(opt(link.sent[1].m, OPT.SERVER_IDENTIFIER), other.bytes);
});

Deno.test("dhcp client: a NAK sends the client back to INIT, with a new xid", async () => {
  let naks = 0;
  const { clock, link, logs, opts } = setup((s, l) => {
    const type = messageType(s.m);
    if (type === DHCPDISCOVER) l.deliver(answer(s.m, DHCPOFFER), 100);
    if (type === DHCPREQUEST) {
      if (naks++ === 0) {
        const nak = answer(s.m, DHCPNAK);
        nak.options.set(OPT.MESSAGE, new TextEncoder().encode("wrong network\n"));
        l.deliver(nak, 100);
      } else l.deliver(answer(s.m, DHCPACK), 100);
    }
  });
  const lease = await clock.run(
    obtainLease(link, { ...opts, requestedAddress: ip("10.9.0.77"), random: seq() }),
  );
  assert.equal(formatIp(lease.address), "10.9.0.50");
  assert.deepEqual(link.types(), ["DISCOVER", "REQUEST", "DISCOVER", "REQUEST"]);
  assert.notEqual(link.sent[2].m.xid, link.sent[0].m.xid);
  // The refused hint is not asked for again.
  assert.ok(opt(link.sent[0].m, OPT.REQUESTED_IP_ADDRESS));
  assert.equal(opt(link.sent[2].m, OPT.REQUESTED_IP_ADDRESS), undefined);
  assert.deepEqual(
    link.sent.map((s) => s.at),
    [0, 100, 200, 300],
    "the first NAK restarts at once",
  );
  assert.ok(logs.includes('DHCPNAK from 10.9.0.1: "wrong network?"'), logs.join("\n"));
});

/** A deterministic sequence in [0, 1): distinct xids, varied jitter. */
function seq(): () => number {
  let x = 12345;
  return () => {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    return x / 2 ** 31;
  };
}

Deno.test("dhcp client: no server: DISCOVER retransmitted on RFC 2131 §4.1's backoff, capped, then DhcpTimeoutError", async () => {
  // 30 s budget: waits of 4 s (random 0.5 = no jitter), then capped at 7.5 s.
  const a = setup();
  const err = await a.clock.run(obtainLease(a.link, a.opts)).catch((e) => e);
  assert.ok(err instanceof DhcpTimeoutError, String(err));
  assert.match(err.message, /no lease after 30 s \(no DHCPOFFER\)/);
  assert.equal(err.exitCode, 1);
  assert.deepEqual(a.link.sent.map((s) => s.at), [0, 4000, 11500, 19000, 26500]);
  assert.equal(a.clock.t, 30_000);
  assert.ok(a.link.sent.every((s) => messageType(s.m) === DHCPDISCOVER && s.to === "broadcast"));
  // secs counts from the start (RFC 2131 §2).
  assert.deepEqual(a.link.sent.map((s) => s.m.secs), [0, 4, 11, 19, 26]);

  // 300 s budget: 4, 8, 16, 32, 64 s (cap 75 s) with jitter -1 s (random 0).
  const b = setup();
  await b.clock.run(obtainLease(b.link, { ...b.opts, timeoutMs: 300_000, random: () => 0 }))
    .catch(() => {});
  assert.deepEqual(b.link.sent.map((s) => s.at), [
    0,
    3000,
    10000,
    25000,
    56000,
    119000,
    182000,
    245000,
  ]);
  assert.equal(b.clock.t, 300_000);
  // Jitter +1 s (random near 1).
  const c = setup();
  await c.clock.run(obtainLease(c.link, { ...c.opts, timeoutMs: 100_000, random: () => 0.99999 }))
    .catch(() => {});
  assert.deepEqual(c.link.sent.map((s) => Math.round(s.at)), [0, 5000, 14000, 31000, 56000, 81000]);
});

Deno.test("dhcp client: an unanswered REQUEST is retried, then the client starts over", async () => {
  const { clock, link, opts } = setup((s, l) => {
    if (messageType(s.m) === DHCPDISCOVER) l.deliver(answer(s.m, DHCPOFFER), 100);
  });
  const err = await clock.run(obtainLease(link, { ...opts, timeoutMs: 60_000 })).catch((e) => e);
  assert.ok(err instanceof DhcpTimeoutError);
  assert.match(err.message, /no DHCPACK from 10\.9\.0\.1/);
  // cap 15 s: REQUEST at 100 ms, then 4 s, 8 s, 15 s later; DISCOVER again 15 s after that.
  assert.deepEqual(link.types().slice(0, 7), [
    "DISCOVER",
    "REQUEST",
    "REQUEST",
    "REQUEST",
    "REQUEST",
    "DISCOVER",
    "REQUEST",
  ]);
  assert.deepEqual(link.sent.slice(0, 6).map((s) => s.at), [0, 100, 4100, 12100, 27100, 42100]);
});

Deno.test("dhcp client: an address in use is declined, and after 10 s the client starts over", async () => {
  let offers = 0;
  const { clock, link, logs, opts } = setup((s, l) => {
    const type = messageType(s.m);
    const addr = offers <= 1 ? "10.9.0.50" : "10.9.0.51";
    if (type === DHCPDISCOVER) {
      offers++;
      l.deliver(answer(s.m, DHCPOFFER, { yiaddr: offers === 1 ? "10.9.0.50" : "10.9.0.51" }), 100);
    }
    if (type === DHCPREQUEST) l.deliver(answer(s.m, DHCPACK, { yiaddr: addr }), 100);
  });
  const probed: string[] = [];
  const lease = await clock.run(obtainLease(link, {
    ...opts,
    addressInUse: (a) => {
      probed.push(formatIp(a));
      return Promise.resolve(formatIp(a) === "10.9.0.50");
    },
  }));
  assert.equal(formatIp(lease.address), "10.9.0.51");
  assert.deepEqual(probed, ["10.9.0.50", "10.9.0.51"]);
  assert.deepEqual(link.types(), ["DISCOVER", "REQUEST", "DECLINE", "DISCOVER", "REQUEST"]);
  const decline = link.sent[2];
  assert.equal(decline.to, "broadcast");
  assert.equal(decline.at, 200);
  assert.equal(decline.m.xid, link.sent[0].m.xid);
  assert.equal(formatIp(decline.m.ciaddr), "0.0.0.0");
  assert.deepEqual(opt(decline.m, OPT.REQUESTED_IP_ADDRESS), ip("10.9.0.50").bytes);
  assert.deepEqual(opt(decline.m, OPT.SERVER_IDENTIFIER), SERVER.bytes);
  // RFC 2131 table 5: no parameter list or vendor class in a DECLINE.
  assert.equal(opt(decline.m, OPT.PARAMETER_REQUEST_LIST), undefined);
  assert.equal(opt(decline.m, OPT.VENDOR_CLASS_IDENTIFIER), undefined);
  assert.equal(link.sent[3].at, 10_200, "RFC 2131 §3.1.5: ten seconds before starting over");
  assert.ok(logs.some((l) => l.includes("10.9.0.50 is in use")));
});

Deno.test("dhcp client: an abort stops obtainLease at its next step", async () => {
  const { clock, link, opts } = setup();
  const abort = new AbortController();
  clock.timer(5_000, () => abort.abort());
  const err = await clock.run(obtainLease(link, { ...opts, signal: abort.signal })).catch((e) => e);
  assert.match(String(err), /DHCP: stopped/);
  assert.equal(clock.t, 5_000);
  assert.equal(clock.pending, 0, "the receive's timer was cancelled");
});

/** A lease of `seconds` from SERVER obtained at time 0. */
function leaseAt0(seconds: number, address = "10.9.0.50"): Lease {
  return {
    address: ip(address),
    prefixLength: 24,
    dns: [],
    leaseSeconds: seconds,
    t1Seconds: seconds / 2,
    t2Seconds: seconds * 0.875,
    serverId: SERVER,
    obtainedAt: 0,
  };
}

Deno.test("dhcp client: renewLease: RENEWING unicasts, REBINDING broadcasts, ciaddr set, no 50 or 54", async () => {
  const l = leaseAt0(3600);
  for (const mode of ["renew", "rebind"] as const) {
    const { clock, link, opts } = setup((s, k) =>
      k.deliver(answer(s.m, DHCPACK, { lease: 7200 }), 50)
    );
    clock.t = 1_800_000;
    const r = await clock.run(renewLease(link, l, opts, mode));
    assert.ok(r && r !== "nak");
    assert.equal(r.leaseSeconds, 7200);
    assert.equal(r.obtainedAt, 1_800_000);
    const m = link.sent[0].m;
    assert.equal(link.sent[0].to, mode === "renew" ? "10.9.0.1" : "broadcast");
    assert.equal(messageType(m), DHCPREQUEST);
    assert.equal(formatIp(m.ciaddr), "10.9.0.50");
    assert.equal(m.flags, 0, "with an address, the server answers ciaddr");
    assert.equal(opt(m, OPT.REQUESTED_IP_ADDRESS), undefined);
    assert.equal(opt(m, OPT.SERVER_IDENTIFIER), undefined);
  }
  // NAK, and silence.
  const n = setup((s, k) => k.deliver(answer(s.m, DHCPNAK), 50));
  assert.equal(await n.clock.run(renewLease(n.link, l, n.opts, "renew")), "nak");
  const q = setup();
  q.clock.t = 1_800_000;
  assert.equal(await q.clock.run(renewLease(q.link, l, q.opts, "renew")), null);
  // Half the 1350 s left to T2.
  assert.equal(q.clock.t, 1_800_000 + 675_000);
});

interface Events {
  renewed: Lease[];
  naks: number[];
  expired: number[];
  logs: string[];
}

function keeperFor(t: DhcpTransport, lease: Lease, opts: ReturnType<typeof setup>["opts"]) {
  const ev: Events = { renewed: [], naks: [], expired: [], logs: [] };
  const keeper = new LeaseKeeper(t, lease, opts, {
    renewed: (l) => ev.renewed.push(l),
    nak: () => ev.naks.push(opts.now()),
    expired: () => ev.expired.push(opts.now()),
    log: (l) => ev.logs.push(l),
  });
  return { keeper, ev };
}

Deno.test("dhcp keeper: RENEWING at T1, unicast to the server; the next T1 counts from the renewal", async () => {
  const { clock, link, opts } = setup((s, k) => k.deliver(answer(s.m, DHCPACK), 20));
  const { keeper, ev } = keeperFor(link, leaseAt0(3600), opts);
  keeper.start();
  await clock.advance(1_799_999);
  assert.equal(link.sent.length, 0, "BOUND until T1");
  await clock.advance(5_000_000);
  assert.deepEqual(link.sent.map((s) => [s.at, s.to]), [
    [1_800_000, "10.9.0.1"],
    [3_600_000, "10.9.0.1"],
  ]);
  assert.equal(keeper.renewals, 2);
  assert.equal(ev.renewed.length, 2);
  assert.equal(keeper.lease.obtainedAt, 3_600_000);
  await keeper.stop();
  assert.equal(clock.pending, 0);
});

Deno.test("dhcp keeper: no answer to RENEWING: retransmit after half the time to T2 (>= 60 s), REBINDING broadcasts from T2", async () => {
  // The server hears only broadcasts (it moved; its old address is gone).
  const { clock, link, opts } = setup((s, k) => {
    if (s.to === "broadcast") k.deliver(answer(s.m, DHCPACK, { server: ip("10.9.0.2") }), 20);
  });
  const { keeper, ev } = keeperFor(link, leaseAt0(3600), opts);
  keeper.start();
  await clock.advance(3_200_000);
  // T1 1800 s, T2 3150 s: 1800, +675, +337.5, +168.75, +84.375, +60 (the floor), then T2.
  assert.deepEqual(link.sent.map((s) => [s.at, s.to]), [
    [1_800_000, "10.9.0.1"],
    [2_475_000, "10.9.0.1"],
    [2_812_500, "10.9.0.1"],
    [2_981_250, "10.9.0.1"],
    [3_065_625, "10.9.0.1"],
    [3_125_625, "10.9.0.1"],
    [3_150_000, "broadcast"],
  ]);
  assert.equal(ev.renewed.length, 1);
  assert.equal(formatIp(keeper.lease.serverId), "10.9.0.2", "the rebinding server is the new one");
  await keeper.stop();
});

Deno.test("dhcp keeper: a one-hour lease and no server: every REQUEST's time (docs/dhcp.md)", async () => {
  const { clock, link, opts } = setup();
  const { keeper, ev } = keeperFor(link, leaseAt0(3600), opts);
  keeper.start();
  await clock.advance(3_720_000);
  assert.deepEqual(link.sent.map((s) => [s.at / 1000, s.to === "broadcast" ? "b" : "u"]), [
    [1800, "u"],
    [2475, "u"],
    [2812.5, "u"],
    [2981.25, "u"],
    [3065.625, "u"],
    [3125.625, "u"],
    [3150, "b"],
    [3375, "b"],
    [3487.5, "b"],
    [3547.5, "b"],
    [3600, "b"],
    [3660, "b"],
    [3720, "b"],
  ]);
  assert.deepEqual(ev.expired, [3_600_000]);
  await keeper.stop();
});

Deno.test("dhcp keeper: at expiry expired() once, the address kept, REBINDING every 60 s until a server answers", async () => {
  let alive = false;
  const { clock, link, opts } = setup((s, k) => {
    if (alive) k.deliver(answer(s.m, DHCPACK, { lease: 100 }), 20);
  });
  const { keeper, ev } = keeperFor(link, leaseAt0(100), opts);
  keeper.start();
  await clock.advance(250_000);
  // T1 50 s, T2 87.5 s, end 100 s; then every 60 s.
  assert.deepEqual(link.sent.map((s) => [s.at, s.to]), [
    [50_000, "10.9.0.1"],
    [87_500, "broadcast"],
    [100_000, "broadcast"],
    [160_000, "broadcast"],
    [220_000, "broadcast"],
  ]);
  assert.deepEqual(ev.expired, [100_000]);
  assert.ok(ev.logs.some((l) => l.includes("expired; keeping the address")));
  alive = true;
  await clock.advance(290_000);
  assert.equal(ev.renewed.length, 1);
  assert.equal(keeper.lease.obtainedAt, 280_000);
  // The new lease is kept the ordinary way: T1 50 s later.
  await clock.advance(330_000);
  assert.deepEqual(link.sent.slice(-2).map((s) => [s.at, s.to]), [
    [280_000, "broadcast"],
    [330_000, "10.9.0.1"],
  ]);
  assert.deepEqual(ev.expired, [100_000], "expired() only once per lease");
  // Silence again (after the ACK to that renewal, of 330 s): the lease expires in its turn.
  alive = false;
  await clock.advance(450_000);
  assert.equal(keeper.lease.obtainedAt, 330_000);
  assert.deepEqual(ev.expired, [100_000, 430_000]);
  await keeper.stop();
});

Deno.test("dhcp keeper: NAK while renewing: nak(), the address kept, a new lease asked for with option 50 = the old address", async () => {
  let nakked = false;
  const { clock, link, opts } = setup((s, k) => {
    const type = messageType(s.m);
    if (type === DHCPREQUEST && formatIp(s.m.ciaddr) !== "0.0.0.0" && !nakked) {
      nakked = true;
      k.deliver(answer(s.m, DHCPNAK), 20);
    } else if (type === DHCPDISCOVER) k.deliver(answer(s.m, DHCPOFFER), 20);
    else if (type === DHCPREQUEST) k.deliver(answer(s.m, DHCPACK), 20);
  });
  const { keeper, ev } = keeperFor(link, leaseAt0(3600), opts);
  keeper.start();
  await clock.advance(1_900_000);
  assert.deepEqual(ev.naks, [1_800_020]);
  assert.deepEqual(link.types(), ["REQUEST", "DISCOVER", "REQUEST"]);
  assert.deepEqual(opt(link.sent[1].m, OPT.REQUESTED_IP_ADDRESS), ip("10.9.0.50").bytes);
  assert.equal(link.sent[1].at, 1_800_020, "at once");
  assert.equal(ev.renewed.length, 1);
  assert.equal(keeper.renewals, 1);
  assert.equal(formatIp(keeper.lease.address), "10.9.0.50");
  assert.equal(keeper.lease.obtainedAt, 1_800_040);
  await keeper.stop();
});

Deno.test("dhcp keeper: after a NAK with no server at all, obtainLease again every 60 s", async () => {
  let nakked = false;
  const { clock, link, opts } = setup((s, k) => {
    if (messageType(s.m) === DHCPREQUEST && !nakked) {
      nakked = true;
      k.deliver(answer(s.m, DHCPNAK), 0);
    }
  });
  const { keeper, ev } = keeperFor(link, leaseAt0(3600), { ...opts, timeoutMs: 10_000 });
  keeper.start();
  await clock.advance(1_800_000 + 130_000);
  const discovers = link.sent.filter((s) => messageType(s.m) === DHCPDISCOVER).map((s) => s.at);
  // Each obtainLease: 10 s of DISCOVERs (waits capped at 2.5 s); attempts 60 s apart.
  assert.deepEqual(
    discovers,
    [0, 2500, 5000, 7500, 60_000, 62_500, 65_000, 67_500, 120_000, 122_500, 125_000, 127_500].map((
      t,
    ) => 1_800_000 + t),
  );
  assert.equal(ev.naks.length, 1);
  assert.ok(ev.logs.some((l) => l.includes("no lease after 10 s")));
  await keeper.stop();
});

Deno.test("dhcp keeper: an infinite lease is never renewed", async () => {
  const { clock, link, opts } = setup();
  const { keeper, ev } = keeperFor(link, { ...leaseAt0(100), leaseSeconds: 0xffffffff }, opts);
  keeper.start();
  await clock.advance(10 ** 12);
  assert.equal(link.sent.length, 0);
  assert.ok(ev.logs.some((l) => l.includes("infinite")));
  await keeper.stop();
});

Deno.test("dhcp keeper: stop() with the default clock clears its timer (the test sanitizer checks)", async () => {
  const never: DhcpTransport = {
    send: () => Promise.reject(new Error("not expected")),
    receive: () => Promise.reject(new Error("not expected")),
  };
  const lease = { ...leaseAt0(86_400), obtainedAt: performance.timeOrigin + performance.now() };
  const keeper = new LeaseKeeper(never, lease, { mac: MAC, timeoutMs: 1000 }, {
    renewed: () => assert.fail(),
    nak: () => assert.fail(),
    expired: () => assert.fail(),
    log: () => {},
  });
  keeper.start();
  keeper.start(); // a second start does nothing
  await new Promise((r) => setTimeout(r, 10));
  await keeper.stop();
});

Deno.test("dhcp client: an unusable ACK is not a lease", async () => {
  const { clock, link, logs, opts } = setup((s, k) => {
    const type = messageType(s.m);
    if (type === DHCPDISCOVER) k.deliver(answer(s.m, DHCPOFFER), 10);
    if (type === DHCPREQUEST) {
      k.deliver(answer(s.m, DHCPACK, { extra: [[OPT.SUBNET_MASK, be32(0xff00ff00)]] }), 10);
    }
  });
  const err = await clock.run(obtainLease(link, { ...opts, timeoutMs: 10_000 })).catch((e) => e);
  assert.ok(err instanceof DhcpTimeoutError);
  assert.match(err.message, /unusable DHCPACK: subnet mask 255\.0\.255\.0/);
  assert.ok(!(err instanceof InvalidInputError));
  assert.ok(logs.length > 0);
});
