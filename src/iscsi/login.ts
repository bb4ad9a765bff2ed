/**
 * Login phase (RFC 7143 §6.3, §11.12, §11.13, §12.1.3).
 *
 * ```
 *  connect ──► SecurityNegotiation (CSG=0) ──► LoginOperationalNegotiation (CSG=1) ──► FullFeature
 *               AuthMethod=CHAP[,None]|None      our offers (negotiate.ts),
 *               CHAP_A=8,7,6,5 → CHAP_A,I,C      answers to the target's offers
 *               CHAP_N,CHAP_R[,CHAP_I,CHAP_C]    until T=1 NSG=3
 *               → [CHAP_N,CHAP_R verified]
 * ```
 * Every Login Response is checked: Version-active 0, the stage we are in,
 * Status-Class (§11.13.5): redirection (0x0101/0x0102) reconnects to the
 * TargetAddress given, initiator errors 0x0201/0x0202 are AuthError (exit 4),
 * the rest OperationalError with the RFC's name for the status.
 *
 * The ISID (§10.12.5, §11.12.5) is the caller's: a stable one (see
 * {@link stableIsid}) makes a later login with the same names reinstate the
 * session, which is how recovery clears the target's old state.
 */
import { AuthError, OperationalError } from "../errors.ts";
import type { Logger } from "../log.ts";
import {
  BHS_LENGTH,
  KEY,
  LOGIN_CLASS_REDIRECT,
  LOGIN_CLASS_SUCCESS,
  LOGIN_FLAG_TRANSIT,
  LOGIN_STATUS_NAMES,
  MAX_LOGIN_TEXT,
  OP_LOGIN_RESP,
  STAGE_FULL_FEATURE,
  STAGE_OPERATIONAL,
  STAGE_SECURITY,
  TEXT_FLAG_CONTINUE,
} from "./constants.ts";
import {
  CHAP_ALGORITHM_IDS,
  CHAP_DIGEST_LENGTH,
  type ChapAlgorithmName,
  chapAlgorithmName,
  chapResponse,
  decodeChapBinary,
  encodeChapBinary,
  equalBytes,
} from "./chap.ts";
import { Connection } from "./connection.ts";
import type { Crc32c } from "./digest.ts";
import { IscsiProtocolError } from "./errors.ts";
import { type DigestChoice, Negotiation, type SessionParams } from "./negotiate.ts";
import { encodeLoginRequest, loginCsg, loginNsg, type PduHeader } from "./pdu.ts";
import { encodeText, splitText, TextAccumulator, type TextPair } from "./text.ts";
import { formatPortal, parsePortal, type Portal } from "./uri.ts";

/** CHAP credentials: a user name and the secret's bytes. */
export interface ChapCredentials {
  user: string;
  secret: Uint8Array;
}

/** Everything a login needs. */
export interface LoginConfig {
  portal: Portal;
  initiatorName: string;
  /** Required for Normal sessions. */
  targetName?: string;
  sessionType: "Normal" | "Discovery";
  /** One-way CHAP: the target authenticates us. */
  chap?: ChapCredentials;
  /** Mutual CHAP: we authenticate the target too (needs `chap`). */
  mutual?: ChapCredentials;
  /** CHAP_A offer, strongest first. */
  chapAlgorithms: readonly ChapAlgorithmName[];
  headerDigest: DigestChoice;
  dataDigest: DigestChoice;
  /** 6-byte ISID (see stableIsid / randomIsid). */
  isid: Uint8Array;
  /** TSIH: 0 for a new session (and for reinstatement at ERL 0). */
  tsih?: number;
  connectTimeoutMs?: number;
  /** Bound on the whole login exchange (default 15 s). */
  loginTimeoutMs?: number;
  /**
   * Treat CHAP_A=7 as SHA-1, the numbering of Linux tgt up to at least
   * 1.0.85 (IANA and RFC 7143 say 7 is SHA-256). Set by login() itself for
   * one retry when a target that picked 7 rejects a SHA-256 response as
   * malformed (status 0x0200, not 0x0201).
   */
  chapSha1As7?: boolean;
  /**
   * Hex of the CHAP challenges we sent on earlier logins of this session
   * (bounded); a target that sends one of them back as its own challenge is
   * trying a reflection attack (RFC 7143 §12.1.3) and is refused.
   */
  sentChallenges?: Set<string>;
}

/** A completed login: the connection in full feature phase and the session's numbers. */
export interface LoginResult {
  conn: Connection;
  params: SessionParams;
  portal: Portal;
  isid: Uint8Array;
  tsih: number;
  /** CmdSN of the first command to send. */
  cmdSN: number;
  expStatSN: number;
  expCmdSN: number;
  maxCmdSN: number;
  auth: "none" | "chap" | "mutual";
  chapAlgorithm?: string;
  /** Milliseconds from connect to full feature phase. */
  loginMs: number;
}

const LOGIN_ITT = 0;
const MAX_REDIRECTS = 4;
const encoder = new TextEncoder();

/** FNV-1a, 32-bit: a stable, non-cryptographic spread of a name. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (const b of encoder.encode(s)) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/**
 * A stable ISID for (initiator, purpose): type 10b "random" format (§10.12.5)
 * whose 24-bit B/C field comes from the initiator name and whose qualifier D
 * from `purpose`. Logging in again with the same pair reinstates the session
 * (§6.3.5); different purposes (a `probe` next to the boot session) do not
 * disturb each other.
 *
 * @example
 * ```ts
 * stableIsid("iqn.2026-11.org.isboot:host1", "serve iqn.2026-11.test:disk1"); // 6 bytes
 * ```
 */
export function stableIsid(initiatorName: string, purpose: string): Uint8Array {
  const h = fnv1a(initiatorName);
  const q = fnv1a(purpose) & 0xffff;
  return Uint8Array.from([0x80, (h >>> 16) & 0xff, (h >>> 8) & 0xff, h & 0xff, q >>> 8, q & 0xff]);
}

/** A random-format ISID for a one-off session (discover, probe). */
export function randomIsid(): Uint8Array {
  const r = crypto.getRandomValues(new Uint8Array(6));
  r[0] = 0x80;
  return r;
}

/** Thrown inside login when a target that chose CHAP_A=7 rejected a SHA-256 response as malformed. */
class Alg7Mismatch {}

/** Thrown inside login when the target redirects us. */
class Redirect {
  constructor(readonly portal: Portal, readonly permanent: boolean) {}
}

/**
 * Connect to the portal and log in, following redirections.
 *
 * @example
 * ```ts
 * const r = await login({ portal, initiatorName, targetName, sessionType: "Normal",
 *   chapAlgorithms: DEFAULT_CHAP_ALGORITHMS, headerDigest: "prefer-none",
 *   dataDigest: "prefer-none", isid: randomIsid() }, crc, log);
 * ```
 */
export async function login(cfg: LoginConfig, crc: Crc32c, log: Logger): Promise<LoginResult> {
  if (cfg.sessionType === "Normal" && !cfg.targetName) {
    throw new OperationalError("internal: Normal session without TargetName");
  }
  if (cfg.mutual && !cfg.chap) {
    throw new AuthError("mutual CHAP needs one-way CHAP credentials too");
  }
  if (cfg.chap && cfg.mutual && equalBytes(cfg.chap.secret, cfg.mutual.secret)) {
    // §12.1.3: a secret used to authenticate the initiator must not authenticate the target.
    throw new AuthError(
      "the mutual CHAP secret must differ from the CHAP secret (RFC 7143 §12.1.3)",
    );
  }
  let portal = cfg.portal;
  let legacy7 = cfg.chapSha1As7 ?? false;
  for (let hop = 0;; hop++) {
    const start = performance.now();
    const conn = await Connection.connect({ ...portal, crc, log, timeoutMs: cfg.connectTimeoutMs });
    const timeoutMs = cfg.loginTimeoutMs ?? 15000;
    // The whole exchange is bounded, whatever it waits on: a target (or a
    // half-up one behind a proxy) that accepts and never answers must not
    // hold a relogin for ever. Closing the connection ends its reads and
    // sends; the race ends the exchange even if something else held it.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const e = new OperationalError(`login to ${conn.peer} timed out after ${timeoutMs} ms`);
        conn.close(e);
        reject(e);
      }, timeoutMs);
    });
    try {
      const exchange = new LoginExchange(conn, { ...cfg, chapSha1As7: legacy7 }, log).run();
      exchange.catch(() => {}); // after a timeout its own failure is of no interest
      const r = await Promise.race([exchange, expired]);
      return { ...r, conn, portal, loginMs: Math.round(performance.now() - start) };
    } catch (e) {
      conn.close();
      if (e instanceof Alg7Mismatch && !legacy7) {
        if (!cfg.chapAlgorithms.includes("sha1")) {
          throw new AuthError(
            "target picked CHAP_A=7 but expects SHA-1 there (Linux tgt numbering); allow sha1 in --chap-algorithms",
          );
        }
        log.debug(
          "target picked CHAP_A=7 but rejected a SHA-256 response; retrying with 7 as SHA-1 (Linux tgt numbering)",
        );
        legacy7 = true;
        continue;
      }
      if (e instanceof Redirect) {
        if (hop >= MAX_REDIRECTS) {
          throw new OperationalError(
            `too many login redirections (last to ${formatPortal(e.portal)})`,
          );
        }
        log.info(
          `target moved ${e.permanent ? "permanently" : "temporarily"} to ${
            formatPortal(e.portal)
          }`,
        );
        portal = e.portal;
        continue;
      }
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }
}

type ExchangeResult = Omit<LoginResult, "conn" | "portal" | "loginMs">;

/** The state of one login on one connection. */
class LoginExchange {
  readonly #conn: Connection;
  readonly #cfg: LoginConfig;
  readonly #log: Logger;
  readonly #bhs = new Uint8Array(BHS_LENGTH);
  readonly #cmdSN = 1;
  #expStatSN = 0;
  #statSNSeen = false;
  #csg = STAGE_SECURITY;
  #auth: "none" | "chap" | "mutual" = "none";
  #algorithm?: number;
  #hash?: number;

  constructor(conn: Connection, cfg: LoginConfig, log: Logger) {
    this.#conn = conn;
    this.#cfg = cfg;
    this.#log = log;
  }

  async run(): Promise<ExchangeResult> {
    let last = await this.#security();
    const neg = new Negotiation(this.#cfg);
    let toSend: TextPair[] = neg.offers();
    for (let round = 0;; round++) {
      if (round > 8) throw new IscsiProtocolError("operational negotiation does not converge");
      const { header, pairs } = await this.#exchange(toSend, true, STAGE_FULL_FEATURE);
      last = header;
      toSend = neg.receive(pairs);
      if (header.flags & LOGIN_FLAG_TRANSIT) {
        if (loginNsg(header.flags) !== STAGE_FULL_FEATURE) {
          throw new IscsiProtocolError(
            `target transits to stage ${loginNsg(header.flags)}, expected full feature`,
          );
        }
        break;
      }
    }
    const mismatch = neg.digestMismatch(this.#cfg);
    if (mismatch) throw new OperationalError(`login: ${mismatch} by the target`);
    const params = neg.result();
    // Digests and our receive limit apply from the first full-feature PDU (§13.1, §13.12).
    this.#conn.headerDigest = params.headerDigest;
    this.#conn.dataDigest = params.dataDigest;
    this.#conn.maxRecvDataSegmentLength = params.maxRecvDataSegmentLength;
    const tsih = last.tsih;
    if (this.#cfg.sessionType === "Normal" && tsih === 0) {
      throw new IscsiProtocolError("final Login Response carries TSIH 0");
    }
    return {
      params,
      isid: this.#cfg.isid,
      tsih,
      cmdSN: last.expCmdSN,
      expStatSN: this.#expStatSN,
      expCmdSN: last.expCmdSN,
      maxCmdSN: last.maxCmdSN,
      auth: this.#auth,
      ...(this.#hash !== undefined ? { chapAlgorithm: this.#algName() } : {}),
    };
  }

  #algName(): string {
    const name = chapAlgorithmName(this.#hash as number);
    return this.#hash !== this.#algorithm ? `${name} (as CHAP_A=${this.#algorithm})` : name;
  }

  /** Security stage; returns the response that moved us to the operational stage. */
  async #security(): Promise<PduHeader> {
    const c = this.#cfg;
    const names: TextPair[] = [
      [KEY.InitiatorName, c.initiatorName],
      [KEY.SessionType, c.sessionType],
    ];
    if (c.targetName) names.push([KEY.TargetName, c.targetName]);
    const method = c.mutual ? "CHAP" : c.chap ? "CHAP,None" : "None";
    const first = await this.#exchange(
      [...names, [KEY.AuthMethod, method]],
      !c.chap,
      STAGE_OPERATIONAL,
    );
    const chosen = lookup(first.pairs, KEY.AuthMethod);
    if (chosen === "CHAP") {
      if (!c.chap) throw new IscsiProtocolError("target chose CHAP, which we did not offer");
      return await this.#chap(c.chap, c.mutual);
    }
    if (chosen !== undefined && chosen !== "None") {
      throw new AuthError(`target wants AuthMethod ${chosen}; we offered ${method}`);
    }
    if (c.mutual) {
      throw new AuthError(
        "target did not authenticate itself (AuthMethod None) but mutual CHAP is configured",
      );
    }
    return await this.#toOperational(first.header);
  }

  /** Send an empty transit request until the target moves to the operational stage. */
  async #toOperational(h: PduHeader): Promise<PduHeader> {
    for (let i = 0; i < 4; i++) {
      if (h.flags & LOGIN_FLAG_TRANSIT) {
        if (loginNsg(h.flags) !== STAGE_OPERATIONAL && loginNsg(h.flags) !== STAGE_FULL_FEATURE) {
          throw new IscsiProtocolError("target transits to an unexpected stage");
        }
        this.#csg = STAGE_OPERATIONAL;
        return h;
      }
      const r = await this.#exchange([], true, STAGE_OPERATIONAL);
      h = r.header;
    }
    throw new IscsiProtocolError("target does not leave the security stage");
  }

  async #chap(chap: ChapCredentials, mutual?: ChapCredentials): Promise<PduHeader> {
    const offer = this.#cfg.chapAlgorithms.map((n) => CHAP_ALGORITHM_IDS[n]);
    const r1 = await this.#exchange(
      [[KEY.CHAP_A, offer.join(",")]],
      false,
      STAGE_OPERATIONAL,
      `CHAP_A=${offer.join(",")} (${this.#cfg.chapAlgorithms.join(",")})`,
    );
    const aText = lookup(r1.pairs, KEY.CHAP_A);
    const idText = lookup(r1.pairs, KEY.CHAP_I);
    const cText = lookup(r1.pairs, KEY.CHAP_C);
    if (aText === undefined || idText === undefined || cText === undefined) {
      throw new AuthError(
        "target did not send CHAP_A, CHAP_I and CHAP_C (none of our CHAP algorithms accepted?)",
      );
    }
    const alg = Number(aText);
    if (!/^\d+$/.test(aText) || !offer.includes(alg)) {
      throw new AuthError(`target chose CHAP_A=${aText.slice(0, 16)}, which we did not offer`);
    }
    if (!/^\d{1,3}$/.test(idText) || Number(idText) > 255) {
      throw new AuthError("CHAP_I from the target is not 0..255");
    }
    const challenge = decodeChapBinary(KEY.CHAP_C, cText);
    if (challenge.length === 0) throw new AuthError("target sent an empty CHAP challenge");
    const sent = this.#cfg.sentChallenges;
    if (sent?.has(encodeChapBinary(challenge))) {
      throw new AuthError("target sent our own CHAP challenge back (reflection refused)");
    }
    this.#algorithm = alg;
    this.#auth = "chap";
    // The hash actually used: 7 means SHA-1 for targets with tgt's old numbering.
    const hash = alg === 7 && this.#cfg.chapSha1As7 ? 6 : alg;
    this.#hash = hash;
    const response = await chapResponse(hash, Number(idText), chap.secret, challenge);
    const out: TextPair[] = [[KEY.CHAP_N, chap.user], [KEY.CHAP_R, encodeChapBinary(response)]];
    let ourId = 0;
    let ourChallenge: Uint8Array | null = null;
    if (mutual) {
      ourId = crypto.getRandomValues(new Uint8Array(1))[0];
      do {
        ourChallenge = crypto.getRandomValues(new Uint8Array(32));
      } while (equalBytes(ourChallenge, challenge));
      out.push([KEY.CHAP_I, String(ourId)], [KEY.CHAP_C, encodeChapBinary(ourChallenge)]);
      if (sent) {
        if (sent.size >= 64) sent.delete(sent.values().next().value as string);
        sent.add(encodeChapBinary(ourChallenge));
      }
    }
    const r2 = await this.#exchange(out, true, STAGE_OPERATIONAL, "chap");
    if (mutual && ourChallenge) {
      const n = lookup(r2.pairs, KEY.CHAP_N);
      const rText = lookup(r2.pairs, KEY.CHAP_R);
      if (n === undefined || rText === undefined) {
        throw new AuthError("target did not answer our CHAP challenge (mutual CHAP failed)");
      }
      if (n !== mutual.user) {
        throw new AuthError(
          `mutual CHAP: target calls itself '${n.slice(0, 64)}', expected '${mutual.user}'`,
        );
      }
      const got = decodeChapBinary(KEY.CHAP_R, rText);
      const want = await chapResponse(hash, ourId, mutual.secret, ourChallenge);
      if (got.length !== CHAP_DIGEST_LENGTH[hash] || !equalBytes(got, want)) {
        throw new AuthError(
          "mutual CHAP: the target's response is wrong (target not authenticated)",
        );
      }
      this.#auth = "mutual";
    }
    return await this.#toOperational(r2.header);
  }

  /**
   * Send one Login Request (split over PDUs with the C bit when long) and
   * collect the whole Login Response (asking for more while C is set).
   */
  async #exchange(
    pairs: readonly TextPair[],
    transit: boolean,
    nsg: number,
    what = "login",
  ): Promise<{ header: PduHeader; pairs: TextPair[] }> {
    const conn = this.#conn;
    const segs = splitText(encodeText(pairs), 8192);
    let header: PduHeader | null = null;
    for (let i = 0; i < segs.length; i++) {
      const more = i < segs.length - 1;
      await this.#send(segs[i], transit && !more, more, nsg);
      header = await this.#receive(what);
      if (more) {
        // §6.1: the target answers a C=1 Login Request with an empty Login Response.
        if (header.dataSegmentLength !== 0 || (header.flags & TEXT_FLAG_CONTINUE)) {
          throw new IscsiProtocolError("target answered a continued Login Request with data");
        }
      }
    }
    const acc = new TextAccumulator(MAX_LOGIN_TEXT);
    let h = header as PduHeader;
    acc.push(this.#lastData);
    while (h.flags & TEXT_FLAG_CONTINUE) {
      await this.#send(new Uint8Array(0), false, false, nsg);
      h = await this.#receive(what);
      acc.push(this.#lastData);
    }
    void conn;
    return { header: h, pairs: acc.take() };
  }

  #lastData: Uint8Array = new Uint8Array(0);

  async #send(data: Uint8Array, transit: boolean, cont: boolean, nsg: number): Promise<void> {
    encodeLoginRequest(this.#bhs, {
      transit,
      cont,
      csg: this.#csg,
      nsg: transit ? nsg : 0,
      isid: this.#cfg.isid,
      tsih: this.#cfg.tsih ?? 0,
      itt: LOGIN_ITT,
      cid: 0,
      cmdSN: this.#cmdSN,
      expStatSN: this.#expStatSN,
      dataSegmentLength: data.length,
    });
    await this.#conn.send(this.#bhs, data);
  }

  async #receive(what: string): Promise<PduHeader> {
    const { header: h, data } = await this.#conn.readPdu();
    if (h.opcode !== OP_LOGIN_RESP) {
      throw new IscsiProtocolError(`expected Login Response, got ${h.name}`);
    }
    if (h.itt !== LOGIN_ITT) throw new IscsiProtocolError("Login Response for another ITT");
    if (this.#statSNSeen || h.statusClass === LOGIN_CLASS_SUCCESS) {
      this.#expStatSN = (h.statSN + 1) >>> 0;
      this.#statSNSeen = true;
    }
    const status = (h.statusClass << 8) | h.statusDetail;
    if (h.statusClass === LOGIN_CLASS_REDIRECT) {
      const addr = lookupIn(data, KEY.TargetAddress);
      if (!addr) throw new IscsiProtocolError("redirection without TargetAddress");
      throw new Redirect(parseTargetAddress(addr), status === 0x0102);
    }
    if (h.statusClass !== LOGIN_CLASS_SUCCESS) {
      const name = LOGIN_STATUS_NAMES[status] ?? "unknown status";
      const msg = `target refused ${what}: ${name} (0x${status.toString(16).padStart(4, "0")})`;
      if (status === 0x0201 || status === 0x0202) {
        const alg = this.#hash !== undefined ? ` with CHAP ${this.#algName()}` : "";
        throw new AuthError(`${msg}${alg}`);
      }
      if (status === 0x0200 && what === "chap" && this.#algorithm === 7 && !this.#cfg.chapSha1As7) {
        throw new Alg7Mismatch();
      }
      throw new OperationalError(msg);
    }
    if (h.versionActive !== 0) {
      throw new IscsiProtocolError(`target speaks iSCSI version ${h.versionActive}, not 0`);
    }
    if (loginCsg(h.flags) !== this.#csg) {
      throw new IscsiProtocolError(
        `Login Response for stage ${loginCsg(h.flags)}, we are in ${this.#csg}`,
      );
    }
    this.#lastData = data.slice();
    return h;
  }
}

function lookup(pairs: readonly TextPair[], key: string): string | undefined {
  for (const [k, v] of pairs) if (k === key) return v;
  return undefined;
}

function lookupIn(data: Uint8Array, key: string): string | undefined {
  const acc = new TextAccumulator(MAX_LOGIN_TEXT);
  acc.push(data);
  return lookup(acc.take(), key);
}

/**
 * Parse a TargetAddress value (§13.8): `host[:port][,tpgt]`, IPv6 in brackets.
 *
 * @example
 * ```ts
 * parseTargetAddress("[::1]:3261,1"); // { host: "::1", port: 3261, tpgt: 1 }
 * ```
 */
export function parseTargetAddress(v: string): Portal & { tpgt?: number } {
  const comma = v.lastIndexOf(",");
  const addr = comma >= 0 && !v.slice(comma).includes("]") ? v.slice(0, comma) : v;
  const tpgtText = addr === v ? undefined : v.slice(comma + 1);
  let portal: Portal;
  try {
    portal = parsePortal(addr);
  } catch {
    throw new IscsiProtocolError(`malformed TargetAddress '${v.slice(0, 80)}'`);
  }
  if (tpgtText === undefined) return portal;
  if (!/^\d{1,5}$/.test(tpgtText) || Number(tpgtText) > 65535) {
    throw new IscsiProtocolError(`malformed portal group tag in TargetAddress '${v.slice(0, 80)}'`);
  }
  return { ...portal, tpgt: Number(tpgtText) };
}
