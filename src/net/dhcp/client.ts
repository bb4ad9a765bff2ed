/**
 * The DHCPv4 client's state machine (RFC 2131 §4.4): obtain a lease
 * (INIT → SELECTING → REQUESTING → BOUND) and keep it (RENEWING at T1,
 * REBINDING at T2), over an abstract transport so that it runs the same
 * against a packet socket and a scripted server in tests. Time comes from an
 * injectable clock; nothing here touches the network or a real timer unless
 * the caller's transport does.
 *
 * Where isboot departs from the RFC, because the address carries the root
 * disk: at the end of a lease, and after a DHCPNAK while renewing, it keeps
 * the address and goes on asking (docs/dhcp.md).
 *
 * @example
 * ```ts
 * const lease = await obtainLease(transport, { mac, timeoutMs: 30_000 });
 * const keeper = new LeaseKeeper(transport, lease, { mac, timeoutMs: 30_000 }, {
 *   renewed: (l) => log(`renewed ${formatIp(l.address)}`),
 *   nak: () => log("DHCPNAK while renewing"),
 *   expired: () => log("lease expired; keeping the address"),
 *   log,
 * });
 * keeper.start();
 * // ... on shutdown:
 * keeper.stop();
 * ```
 * @module
 */
import { InvalidInputError, OperationalError } from "../../errors.ts";
import { formatIp, type IpAddress } from "../addr.ts";
import {
  BOOTREPLY,
  BOOTREQUEST,
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
  HTYPE_ETHERNET,
  INFINITE_LEASE,
  IPV4_ANY,
  type Lease,
  leaseFromAck,
  messageType,
  OPT,
} from "./message.ts";

/** Where the client's messages go and where the server's come from. */
export interface DhcpTransport {
  /**
   * Send a DHCP payload: to the limited broadcast, or unicast to a server
   * (RENEWING). The IP source is the payload's `ciaddr`: 0.0.0.0 while the
   * client has no address, ours when renewing or rebinding.
   */
  send(payload: Uint8Array, to: "broadcast" | IpAddress): Promise<void>;
  /**
   * The next DHCP payload received for the client port, or null when
   * `timeoutMs` passes first. A transport may also return null early once
   * `signal` is aborted (the client then stops).
   */
  receive(timeoutMs: number, signal?: AbortSignal): Promise<Uint8Array | null>;
}

/** What the client sends and how it waits. */
export interface DhcpClientOptions {
  /** 6 bytes: chaddr, and the client identifier (option 61: type 1, then the MAC). */
  mac: Uint8Array;
  /** Option 12. */
  hostname?: string;
  /** Option 60; default "isboot". */
  vendorClass?: string;
  /** Asked for in DHCPDISCOVER (option 50), e.g. the address of a previous lease. */
  requestedAddress?: IpAddress;
  /** Set the BROADCAST flag while the client has no address (default true): some relays need it. */
  broadcastFlag?: boolean;
  /** obtainLease gives up after this long (DhcpTimeoutError). */
  timeoutMs: number;
  /** The clock, ms. Default: monotonic time since this process started, on the wall clock of its start. */
  now?: () => number;
  /** Wait `ms` on that clock; may resolve early when `signal` aborts. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Uniform in [0, 1): xids and retransmission jitter. Default: crypto.getRandomValues. */
  random?: () => number;
  log?: (line: string) => void;
  /**
   * Whether another host already uses the address an ACK granted (an ARP
   * probe, RFC 2131 §4.4.1). True: the client sends DHCPDECLINE, waits
   * DECLINE_WAIT_MS and starts over.
   */
  addressInUse?: (a: IpAddress) => Promise<boolean>;
  /** Abort: obtainLease and renewLease reject with an OperationalError at their next step. */
  signal?: AbortSignal;
}

/** No lease within the time allowed. Exit 1 (an operational failure). */
export class DhcpTimeoutError extends OperationalError {}

/** RFC 2131 §4.1: the first retransmission after 4 s, doubling up to 64 s, each ±1 s. */
export const RETRANSMIT_FIRST_MS = 4_000, RETRANSMIT_MAX_MS = 64_000, RETRANSMIT_JITTER_MS = 1_000;
/** REQUEST (REQUESTING) is sent this many times before the client returns to INIT. */
export const REQUEST_TRIES = 4;
/** RFC 2131 §3.1.5: after a DHCPDECLINE, wait at least ten seconds before starting over. */
export const DECLINE_WAIT_MS = 10_000;
/** RFC 2131 §4.4.5: the least wait between REQUESTs while RENEWING or REBINDING. */
export const RENEW_MIN_WAIT_MS = 60_000;
/** The least time after obtaining a lease before renewing it, whatever T1 says (no renewal storm on a 0 s T1). */
export const RENEW_MIN_AFTER_MS = 10_000;
/** Options asked for in option 55 (the ones `leaseFromAck` reads). */
export const PARAMETER_REQUEST_LIST = Uint8Array.of(
  OPT.SUBNET_MASK,
  OPT.ROUTER,
  OPT.DOMAIN_NAME_SERVER,
  OPT.HOST_NAME,
  OPT.DOMAIN_NAME,
  OPT.ROOT_PATH,
  OPT.INTERFACE_MTU,
  OPT.BROADCAST_ADDRESS,
  OPT.NTP_SERVERS,
  OPT.IP_ADDRESS_LEASE_TIME,
  OPT.SERVER_IDENTIFIER,
  OPT.RENEWAL_TIME_VALUE,
  OPT.REBINDING_TIME_VALUE,
);

/** The options with their defaults filled in. */
interface Ctx {
  o: DhcpClientOptions;
  now: () => number;
  sleep: (ms: number) => Promise<void>;
  random: () => number;
  log: (line: string) => void;
  signal?: AbortSignal;
}

/** The default clock: performance.now() never jumps, timeOrigin anchors it to the wall clock. */
function defaultNow(): number {
  return performance.timeOrigin + performance.now();
}

/** setTimeout in steps under its 2^31-1 ms limit, cleared when `signal` aborts. */
function defaultSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted || ms <= 0) return resolve();
    const done = () => {
      clearTimeout(id);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const id = setTimeout(done, Math.min(ms, 2 ** 31 - 1));
    signal?.addEventListener("abort", done, { once: true });
  });
}

function defaultRandom(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0] / 2 ** 32;
}

function context(o: DhcpClientOptions): Ctx {
  const sleep = o.sleep ?? defaultSleep;
  return {
    o,
    now: o.now ?? defaultNow,
    sleep: (ms) => sleep(ms, o.signal),
    random: o.random ?? defaultRandom,
    log: o.log ?? (() => {}),
    signal: o.signal,
  };
}

function checkAborted(c: Ctx): void {
  if (c.signal?.aborted) throw new OperationalError("DHCP: stopped");
}

function randomXid(c: Ctx): number {
  return Math.floor(c.random() * 2 ** 32) >>> 0;
}

/** RFC 2131 §4.1's wait after the `attempt`th transmission (0-based), before capping. */
function backoffMs(attempt: number, c: Ctx): number {
  const base = Math.min(RETRANSMIT_FIRST_MS * 2 ** Math.min(attempt, 4), RETRANSMIT_MAX_MS);
  return base + (c.random() * 2 - 1) * RETRANSMIT_JITTER_MS;
}

/**
 * The longest single wait of one obtainLease: a quarter of its time (at
 * least 1 s), so that a 20 s budget still sends four or five DISCOVERs
 * instead of the RFC's 4 + 8 s.
 */
function waitCapMs(timeoutMs: number): number {
  return Math.max(1_000, Math.floor(timeoutMs / 4));
}

function ip(b: Uint8Array): IpAddress {
  return { family: 4, bytes: b };
}

const utf8 = new TextEncoder();

/** The fields every client message shares (RFC 2131 table 5). */
function clientMessage(
  c: Ctx,
  type: number,
  xid: number,
  secs: number,
  ciaddr: IpAddress,
  extra: [number, Uint8Array][],
  withParameters: boolean,
): Uint8Array {
  const mac = c.o.mac;
  const options = new Map<number, Uint8Array>([[OPT.DHCP_MESSAGE_TYPE, Uint8Array.of(type)]]);
  for (const [code, v] of extra) options.set(code, v);
  const clientId = new Uint8Array(1 + mac.length);
  clientId[0] = HTYPE_ETHERNET;
  clientId.set(mac, 1);
  options.set(OPT.CLIENT_IDENTIFIER, clientId);
  if (withParameters) {
    options.set(OPT.PARAMETER_REQUEST_LIST, PARAMETER_REQUEST_LIST);
    options.set(OPT.VENDOR_CLASS_IDENTIFIER, utf8.encode(c.o.vendorClass ?? "isboot"));
    if (c.o.hostname) options.set(OPT.HOST_NAME, utf8.encode(c.o.hostname));
  }
  const unbound = ciaddr.bytes.every((x) => x === 0);
  const m: DhcpMessage = {
    op: BOOTREQUEST,
    htype: HTYPE_ETHERNET,
    hlen: mac.length,
    hops: 0,
    xid,
    secs: Math.min(0xffff, Math.max(0, Math.floor(secs))),
    // With an address the server unicasts to ciaddr (RFC 2131 §4.1), so the flag is for the unbound.
    flags: unbound && c.o.broadcastFlag !== false && type !== DHCPDECLINE ? FLAG_BROADCAST : 0,
    ciaddr,
    yiaddr: IPV4_ANY,
    siaddr: IPV4_ANY,
    giaddr: IPV4_ANY,
    chaddr: mac,
    sname: "",
    file: "",
    options,
  };
  return encodeDhcp(m);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** The NAK's option 56, printable and short, for a log line. */
function nakText(m: DhcpMessage): string {
  const v = m.options.get(OPT.MESSAGE);
  if (!v) return "";
  const s = Array.from(
    v.subarray(0, 100),
    (x) => (x >= 0x20 && x < 0x7f ? String.fromCharCode(x) : "?"),
  )
    .join("");
  return `: "${s}"`;
}

function serverOf(m: DhcpMessage): IpAddress | undefined {
  const v = m.options.get(OPT.SERVER_IDENTIFIER);
  return v ? ip(v) : undefined;
}

/**
 * Receive until `untilMs` for a reply to `xid`: op BOOTREPLY, our chaddr,
 * and whatever `accept` takes. Malformed and foreign messages are skipped.
 */
async function awaitReply(
  t: DhcpTransport,
  c: Ctx,
  xid: number,
  untilMs: number,
  accept: (m: DhcpMessage) => boolean,
): Promise<DhcpMessage | null> {
  for (;;) {
    checkAborted(c);
    const left = untilMs - c.now();
    if (left <= 0) return null;
    const payload = await t.receive(left, c.signal);
    checkAborted(c);
    if (payload === null) return null;
    let m: DhcpMessage;
    try {
      m = decodeDhcp(payload);
    } catch (e) {
      if (!(e instanceof InvalidInputError)) throw e;
      c.log(`ignored a malformed DHCP message: ${e.message}`);
      continue;
    }
    if (m.op !== BOOTREPLY || m.xid !== xid || !sameBytes(m.chaddr, c.o.mac)) continue;
    if (accept(m)) return m;
  }
}

/** One message sent with retransmissions until a reply `accept`s, `tries` run out, or the deadline. */
async function exchange(
  t: DhcpTransport,
  c: Ctx,
  a: {
    xid: number;
    build: (now: number) => Uint8Array;
    to: "broadcast" | IpAddress;
    what: string;
    tries: number;
    deadline: number;
    cap: number;
    accept: (m: DhcpMessage) => boolean;
  },
): Promise<{ reply: DhcpMessage; sentAt: number } | null> {
  for (let attempt = 0; attempt < a.tries; attempt++) {
    checkAborted(c);
    const now = c.now();
    if (now >= a.deadline) return null;
    const dest = a.to === "broadcast" ? "broadcast" : formatIp(a.to);
    c.log(
      `${a.what} to ${dest} (xid 0x${a.xid.toString(16).padStart(8, "0")}, try ${attempt + 1})`,
    );
    try {
      await t.send(a.build(now), a.to);
    } catch (e) {
      // A lost packet, as far as the protocol goes: the retransmission covers it.
      c.log(`${a.what}: send failed: ${e instanceof Error ? e.message : String(e)}`);
    }
    const wait = Math.min(backoffMs(attempt, c), a.cap, a.deadline - now);
    const reply = await awaitReply(t, c, a.xid, now + wait, a.accept);
    if (reply) return { reply, sentAt: now };
  }
  return null;
}

/**
 * Obtain a lease (RFC 2131 §4.4.1): broadcast DHCPDISCOVER, take the first
 * usable DHCPOFFER, broadcast DHCPREQUEST for it (options 50 and 54, the
 * same xid), and return the lease of the DHCPACK. Each transmission is
 * retried with RFC 2131 §4.1's backoff (4, 8, 16, 32, 64 s, ±1 s), each wait
 * capped to a quarter of `timeoutMs`; a fresh xid for each DISCOVER. No ACK
 * after REQUEST_TRIES REQUESTs, or a DHCPNAK: back to INIT (after a second
 * NAK, a pause of one capped 4 s wait first). An address the
 * `addressInUse` probe finds taken is declined (DHCPDECLINE), and after
 * DECLINE_WAIT_MS the client starts over. Throws DhcpTimeoutError when
 * `timeoutMs` passes, saying what went wrong last.
 *
 * @example
 * ```ts
 * const lease = await obtainLease(transport, { mac, hostname: "node7", timeoutMs: 30_000 });
 * console.log(formatIp(lease.address), lease.prefixLength);
 * ```
 */
export async function obtainLease(t: DhcpTransport, o: DhcpClientOptions): Promise<Lease> {
  const c = context(o);
  const started = c.now();
  const deadline = started + o.timeoutMs;
  const cap = waitCapMs(o.timeoutMs);
  let hint = o.requestedAddress;
  let problem = "no DHCPOFFER";
  let naks = 0;
  const secs = (now: number) => (now - started) / 1000;
  const timedOut = () =>
    new DhcpTimeoutError(`DHCP: no lease after ${Math.round(o.timeoutMs / 1000)} s (${problem})`);

  for (;;) {
    checkAborted(c);
    if (c.now() >= deadline) throw timedOut();
    // INIT -> SELECTING
    const xid = randomXid(c);
    const discover = (now: number) =>
      clientMessage(
        c,
        DHCPDISCOVER,
        xid,
        secs(now),
        IPV4_ANY,
        hint ? [[OPT.REQUESTED_IP_ADDRESS, hint.bytes]] : [],
        true,
      );
    const offered = await exchange(t, c, {
      xid,
      build: discover,
      to: "broadcast",
      what: "DHCPDISCOVER",
      tries: Infinity,
      deadline,
      cap,
      // A usable offer names an address and its server (RFC 2131 §4.3.1: 54 is a MUST).
      accept: (m) =>
        messageType(m) === DHCPOFFER && !m.yiaddr.bytes.every((x) => x === 0) &&
        serverOf(m) !== undefined,
    });
    if (!offered) throw timedOut();
    const offer = offered.reply;
    const server = serverOf(offer)!;
    c.log(`DHCPOFFER of ${formatIp(offer.yiaddr)} from ${formatIp(server)}`);

    // SELECTING -> REQUESTING
    const request = (now: number) =>
      clientMessage(c, DHCPREQUEST, xid, secs(now), IPV4_ANY, [
        [OPT.REQUESTED_IP_ADDRESS, offer.yiaddr.bytes],
        [OPT.SERVER_IDENTIFIER, server.bytes],
      ], true);
    const answered = await exchange(t, c, {
      xid,
      build: request,
      to: "broadcast",
      what: "DHCPREQUEST",
      tries: REQUEST_TRIES,
      deadline,
      cap,
      accept: (m) => {
        const type = messageType(m);
        if (type === DHCPACK) return sameServer(serverOf(m), server);
        // Some servers leave 54 out of a NAK; any other server's NAK is not about this REQUEST.
        return type === DHCPNAK && (serverOf(m) === undefined || sameServer(serverOf(m), server));
      },
    });
    if (!answered) {
      problem = `no DHCPACK from ${formatIp(server)}`;
      continue;
    }
    const reply = answered.reply;
    if (messageType(reply) === DHCPNAK) {
      problem = `DHCPNAK from ${formatIp(server)}${nakText(reply)}`;
      c.log(problem);
      hint = undefined;
      if (++naks > 1) await c.sleep(Math.min(RETRANSMIT_FIRST_MS, cap, deadline - c.now()));
      continue;
    }
    let lease: Lease;
    try {
      // RFC 2131 §4.4.1: the lease runs from when the REQUEST was sent.
      lease = leaseFromAck(reply, answered.sentAt);
    } catch (e) {
      if (!(e instanceof InvalidInputError)) throw e;
      problem = `unusable ${e.message}`;
      c.log(problem);
      await c.sleep(Math.min(RETRANSMIT_FIRST_MS, cap, deadline - c.now()));
      continue;
    }
    if (o.addressInUse && await o.addressInUse(lease.address)) {
      checkAborted(c);
      problem = `${formatIp(lease.address)} is in use by another host (declined)`;
      c.log(problem);
      const decline = clientMessage(c, DHCPDECLINE, xid, 0, IPV4_ANY, [
        [OPT.REQUESTED_IP_ADDRESS, lease.address.bytes],
        [OPT.SERVER_IDENTIFIER, lease.serverId.bytes],
      ], false);
      try {
        await t.send(decline, "broadcast");
      } catch (e) {
        c.log(`DHCPDECLINE: send failed: ${e instanceof Error ? e.message : String(e)}`);
      }
      hint = undefined;
      await c.sleep(Math.min(DECLINE_WAIT_MS, deadline - c.now()));
      continue;
    }
    c.log(
      `DHCPACK: ${formatIp(lease.address)}/${lease.prefixLength} from ${
        formatIp(lease.serverId)
      }, lease ${leaseText(lease)}`,
    );
    return lease;
  }
}

function sameServer(a: IpAddress | undefined, b: IpAddress): boolean {
  return a !== undefined && sameBytes(a.bytes, b.bytes);
}

function leaseText(l: Lease): string {
  return l.leaseSeconds === INFINITE_LEASE
    ? "infinite"
    : `${l.leaseSeconds} s (T1 ${l.t1Seconds} s, T2 ${l.t2Seconds} s)`;
}

/** When a lease enters RENEWING, REBINDING, and ends, on the client's clock. */
export function leaseTimes(l: Lease): { renewAt: number; rebindAt: number; expiresAt: number } {
  if (l.leaseSeconds === INFINITE_LEASE) {
    return { renewAt: Infinity, rebindAt: Infinity, expiresAt: Infinity };
  }
  return {
    renewAt: l.obtainedAt + Math.max(l.t1Seconds * 1000, RENEW_MIN_AFTER_MS),
    rebindAt: l.obtainedAt + l.t2Seconds * 1000,
    expiresAt: l.obtainedAt + l.leaseSeconds * 1000,
  };
}

/**
 * RFC 2131 §4.4.5: how long to wait for an answer to a RENEWING or REBINDING
 * REQUEST before sending another: half the time left until T2 (RENEWING) or
 * the lease's end (REBINDING), at least RENEW_MIN_WAIT_MS, but never past
 * that point, so that REBINDING starts at T2. After the end: RENEW_MIN_WAIT_MS.
 *
 * @example
 * ```ts
 * retransmitWaitMs(lease, "renew", now); // e.g. 675_000 at T1 of a one-hour lease
 * ```
 */
export function retransmitWaitMs(l: Lease, mode: "renew" | "rebind", nowMs: number): number {
  const { rebindAt, expiresAt } = leaseTimes(l);
  const left = (mode === "renew" ? rebindAt : expiresAt) - nowMs;
  if (left <= 0) return RENEW_MIN_WAIT_MS;
  return Math.min(left, Math.max(RENEW_MIN_WAIT_MS, left / 2));
}

/**
 * One RENEWING or REBINDING exchange (RFC 2131 §4.4.5): a DHCPREQUEST with
 * `ciaddr` = our address and neither option 50 nor 54 (table 5), unicast to
 * the lease's server (renew) or broadcast (rebind), then wait `waitMs`
 * (default retransmitWaitMs) for the DHCPACK or DHCPNAK. Returns the new
 * lease, "nak", or null when nothing usable came. `startedAt`: when this
 * renewal began, for `secs`.
 *
 * @example
 * ```ts
 * const r = await renewLease(transport, lease, opts, "renew");
 * if (r === "nak") restart(); else if (r) lease = r;
 * ```
 */
export async function renewLease(
  t: DhcpTransport,
  lease: Lease,
  o: DhcpClientOptions,
  mode: "renew" | "rebind",
  extra: { waitMs?: number; startedAt?: number } = {},
): Promise<Lease | "nak" | null> {
  const c = context(o);
  const now = c.now();
  const wait = extra.waitMs ?? retransmitWaitMs(lease, mode, now);
  const xid = randomXid(c);
  const to = mode === "renew" ? lease.serverId : "broadcast";
  const payload = clientMessage(
    c,
    DHCPREQUEST,
    xid,
    (now - (extra.startedAt ?? now)) / 1000,
    lease.address,
    [],
    true,
  );
  c.log(
    `DHCPREQUEST (${mode === "renew" ? "RENEWING" : "REBINDING"}) for ${
      formatIp(lease.address)
    } to ${to === "broadcast" ? "broadcast" : formatIp(to)}`,
  );
  checkAborted(c);
  try {
    await t.send(payload, to);
  } catch (e) {
    c.log(`DHCPREQUEST: send failed: ${e instanceof Error ? e.message : String(e)}`);
  }
  const until = now + wait;
  for (;;) {
    const reply = await awaitReply(t, c, xid, until, (m) => {
      const type = messageType(m);
      return type === DHCPACK || type === DHCPNAK;
    });
    if (!reply) return null;
    if (messageType(reply) === DHCPNAK) {
      c.log(
        `DHCPNAK${serverOf(reply) ? ` from ${formatIp(serverOf(reply)!)}` : ""}${nakText(reply)}`,
      );
      return "nak";
    }
    try {
      const renewed = leaseFromAck(reply, now);
      c.log(`DHCPACK: ${formatIp(renewed.address)}, lease ${leaseText(renewed)}`);
      return renewed;
    } catch (e) {
      if (!(e instanceof InvalidInputError)) throw e;
      c.log(`ignored an unusable ${e.message}`);
    }
  }
}

/** What a LeaseKeeper tells its owner. */
export interface LeaseKeeperEvents {
  /** A new lease (its address may differ from the old one's after a NAK). */
  renewed(l: Lease): void;
  /** A DHCPNAK answered a renewal; the address is kept while a new lease is sought. */
  nak(): void;
  /** The lease ended without renewal; the address is kept and the keeper goes on asking. */
  expired(l: Lease): void;
  log(line: string): void;
}

/**
 * Keeps a lease (RFC 2131 §4.4.5): BOUND until T1; RENEWING (unicast REQUEST
 * to the server, retransmitted after half the time left to T2, at least
 * 60 s); REBINDING from T2 (broadcast, after half the time left in the lease,
 * at least 60 s). Where isboot departs from the RFC, because the address
 * carries the root disk: at the lease's end it calls `expired()` once,
 * keeps the address and rebinds every 60 s; after a DHCPNAK it calls `nak()`,
 * keeps the address and runs obtainLease with option 50 = the old address at
 * once, then every 60 s until it gets a lease. An infinite lease needs no
 * renewal. Every wait goes through the options' clock; `stop()` ends them.
 *
 * @example
 * ```ts
 * const keeper = new LeaseKeeper(transport, lease, opts, events);
 * keeper.start();
 * keeper.stop();
 * ```
 */
export class LeaseKeeper {
  readonly #t: DhcpTransport;
  readonly #o: DhcpClientOptions;
  readonly #ev: LeaseKeeperEvents;
  #lease: Lease;
  #renewals = 0;
  #abort: AbortController | null = null;
  #done: Promise<void> = Promise.resolve();

  constructor(t: DhcpTransport, lease: Lease, o: DhcpClientOptions, ev: LeaseKeeperEvents) {
    this.#t = t;
    this.#lease = lease;
    this.#o = o;
    this.#ev = ev;
  }

  /** The current lease. */
  get lease(): Lease {
    return this.#lease;
  }

  /** Leases received since the keeper started (renewals, rebinds, new leases after a NAK). */
  get renewals(): number {
    return this.#renewals;
  }

  /** Begin keeping the lease; a second call while running does nothing. */
  start(): void {
    if (this.#abort) return;
    const abort = new AbortController();
    this.#abort = abort;
    this.#done = this.#run(abort.signal).catch((e) => {
      if (!abort.signal.aborted) {
        this.#ev.log(`DHCP: lease keeper stopped: ${e instanceof Error ? e.message : String(e)}`);
      }
    });
  }

  /** Stop: every wait ends (the default sleep clears its timer); resolves when the loop has ended. */
  stop(): Promise<void> {
    this.#abort?.abort();
    this.#abort = null;
    return this.#done;
  }

  async #run(signal: AbortSignal): Promise<void> {
    const o: DhcpClientOptions = { ...this.#o, signal, log: (l) => this.#ev.log(l) };
    const c = context(o);
    let nakPending = false;
    let expiredReported = false;
    let renewingSince: number | undefined;
    while (!signal.aborted) {
      const l = this.#lease;
      const { renewAt, rebindAt, expiresAt } = leaseTimes(l);
      if (renewAt === Infinity) {
        this.#ev.log(`DHCP: lease of ${formatIp(l.address)} is infinite: nothing to renew`);
        return;
      }
      const now = c.now();
      if (now < renewAt && !nakPending) {
        await c.sleep(renewAt - now);
        continue;
      }
      if (now >= expiresAt && !expiredReported) {
        expiredReported = true;
        this.#ev.log(`DHCP: lease of ${formatIp(l.address)} expired; keeping the address`);
        this.#ev.expired(l);
      }
      renewingSince ??= now;
      let result: Lease | "nak" | null;
      let next: number;
      if (nakPending) {
        next = now + RENEW_MIN_WAIT_MS;
        try {
          result = await obtainLease(this.#t, { ...o, requestedAddress: l.address });
        } catch (e) {
          if (signal.aborted) return;
          this.#ev.log(e instanceof Error ? e.message : String(e));
          result = null;
        }
      } else {
        const mode = now < rebindAt ? "renew" : "rebind";
        const wait = retransmitWaitMs(l, mode, now);
        next = now + wait;
        try {
          result = await renewLease(this.#t, l, o, mode, {
            waitMs: wait,
            startedAt: renewingSince,
          });
        } catch (e) {
          if (signal.aborted) return;
          // The transport failed (a closed socket?): say so and try again at the next retransmission.
          this.#ev.log(`DHCP: renewal failed: ${e instanceof Error ? e.message : String(e)}`);
          result = null;
        }
      }
      if (signal.aborted) return;
      if (result === "nak") {
        nakPending = true;
        this.#ev.nak();
        continue;
      }
      if (result) {
        this.#lease = result;
        this.#renewals++;
        nakPending = false;
        expiredReported = false;
        renewingSince = undefined;
        this.#ev.renewed(result);
        continue;
      }
      // Nothing: wait out the retransmission interval if the exchange ended early.
      const left = next - c.now();
      if (left > 0) await c.sleep(left);
    }
  }
}
