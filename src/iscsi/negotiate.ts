/**
 * Operational parameter negotiation (RFC 7143 §6.2, §13).
 *
 * Each key has a rule: numeric keys take the minimum or maximum of both
 * sides' values (§6.2.2), boolean keys take AND or OR, list keys (digests)
 * take the responder's first choice from the offerer's list, declarative
 * keys (MaxRecvDataSegmentLength, TargetAlias, ...) state one side's own
 * value. Answers `NotUnderstood`, `Irrelevant` and `Reject` leave the key at
 * its RFC default. An answer that breaks the rule (a larger MaxBurstLength
 * than we offered, a digest we did not list) is a protocol error.
 *
 * {@link Negotiation} holds one session's negotiation: it produces our
 * offers, checks the target's answers, answers the target's own offers
 * (unknown keys get `NotUnderstood`) and yields {@link SessionParams}.
 */
import { KEY, OUR_MAX_RECV_DATA_SEGMENT_LENGTH } from "./constants.ts";
import { OperationalError } from "../errors.ts";
import { IscsiProtocolError } from "./errors.ts";
import type { TextPair } from "./text.ts";

/** How a key's value is settled (§6.2). */
export type KeyRule =
  | { kind: "min" | "max"; lo: number; hi: number; dflt: number }
  | { kind: "and" | "or"; dflt: boolean }
  | { kind: "list"; values: readonly string[]; dflt: string }
  | { kind: "declarative"; lo?: number; hi?: number };

const U24 = 16777215;

/** The rules of the operational keys we know (§13). */
/** The rule for a key, or undefined: own properties only, so `valueOf` is just unknown. */
function ruleFor(key: string): KeyRule | undefined {
  return Object.hasOwn(KEY_RULES, key) ? KEY_RULES[key] : undefined;
}

export const KEY_RULES: Readonly<Record<string, KeyRule>> = {
  [KEY.HeaderDigest]: { kind: "list", values: ["CRC32C", "None"], dflt: "None" },
  [KEY.DataDigest]: { kind: "list", values: ["CRC32C", "None"], dflt: "None" },
  [KEY.MaxConnections]: { kind: "min", lo: 1, hi: 65535, dflt: 1 },
  [KEY.InitialR2T]: { kind: "or", dflt: true },
  [KEY.ImmediateData]: { kind: "and", dflt: true },
  [KEY.MaxRecvDataSegmentLength]: { kind: "declarative", lo: 512, hi: U24 },
  [KEY.MaxBurstLength]: { kind: "min", lo: 512, hi: U24, dflt: 262144 },
  [KEY.FirstBurstLength]: { kind: "min", lo: 512, hi: U24, dflt: 65536 },
  [KEY.DefaultTime2Wait]: { kind: "max", lo: 0, hi: 3600, dflt: 2 },
  [KEY.DefaultTime2Retain]: { kind: "min", lo: 0, hi: 3600, dflt: 20 },
  [KEY.MaxOutstandingR2T]: { kind: "min", lo: 1, hi: 65535, dflt: 1 },
  [KEY.DataPDUInOrder]: { kind: "or", dflt: true },
  [KEY.DataSequenceInOrder]: { kind: "or", dflt: true },
  [KEY.ErrorRecoveryLevel]: { kind: "min", lo: 0, hi: 2, dflt: 0 },
  [KEY.TargetAlias]: { kind: "declarative" },
  [KEY.TargetPortalGroupTag]: { kind: "declarative", lo: 0, hi: 65535 },
  [KEY.TargetAddress]: { kind: "declarative" },
};

/** What a session runs with after login. */
export interface SessionParams {
  headerDigest: boolean;
  dataDigest: boolean;
  maxConnections: number;
  initialR2T: boolean;
  immediateData: boolean;
  /** What we declared: the largest data segment the target may send us. */
  maxRecvDataSegmentLength: number;
  /** What the target declared: the largest data segment we may send. */
  maxXmitDataSegmentLength: number;
  maxBurstLength: number;
  firstBurstLength: number;
  defaultTime2Wait: number;
  defaultTime2Retain: number;
  maxOutstandingR2T: number;
  dataPDUInOrder: boolean;
  dataSequenceInOrder: boolean;
  errorRecoveryLevel: number;
  targetAlias?: string;
  targetPortalGroupTag?: number;
}

/** The RFC defaults (§13), before anything is negotiated. */
export function defaultParams(): SessionParams {
  return {
    headerDigest: false,
    dataDigest: false,
    maxConnections: 1,
    initialR2T: true,
    immediateData: true,
    maxRecvDataSegmentLength: 8192,
    maxXmitDataSegmentLength: 8192,
    maxBurstLength: 262144,
    firstBurstLength: 65536,
    defaultTime2Wait: 2,
    defaultTime2Retain: 20,
    maxOutstandingR2T: 1,
    dataPDUInOrder: true,
    dataSequenceInOrder: true,
    errorRecoveryLevel: 0,
  };
}

/** Digest preference: require CRC32C, refuse it, or prefer none but accept the target's demand. */
export type DigestChoice = "crc32c" | "none" | "prefer-none";

function digestOffer(c: DigestChoice): string {
  return c === "crc32c" ? "CRC32C" : c === "none" ? "None" : "None,CRC32C";
}

const SPECIAL = new Set(["NotUnderstood", "Irrelevant", "Reject"]);

function parseNumber(key: string, v: string, lo: number, hi: number): number {
  // §6.1: decimal, or hex (0x...) numbers.
  let n: number;
  if (/^\d{1,10}$/.test(v)) n = Number(v);
  else if (/^0[xX][0-9a-fA-F]{1,8}$/.test(v)) n = Number.parseInt(v.slice(2), 16);
  else throw new IscsiProtocolError(`${key}=${v}: not a number`);
  if (n < lo || n > hi) throw new IscsiProtocolError(`${key}=${v}: outside ${lo}..${hi}`);
  return n;
}

function parseBool(key: string, v: string): boolean {
  if (v === "Yes") return true;
  if (v === "No") return false;
  throw new IscsiProtocolError(`${key}=${v}: expected Yes or No`);
}

/**
 * The value a responder picks for a key the other side offered (§6.2.2).
 * Used for the target's own offers and tested as the RFC's tables.
 *
 * @example
 * ```ts
 * respond("MaxBurstLength", "1048576", "262144"); // "262144"
 * respond("InitialR2T", "No", "Yes");             // "Yes"
 * ```
 */
export function respond(key: string, offered: string, ours: string): string {
  const rule = ruleFor(key);
  if (!rule) return "NotUnderstood";
  switch (rule.kind) {
    case "min":
    case "max": {
      const a = parseNumber(key, offered, rule.lo, rule.hi);
      const b = parseNumber(key, ours, rule.lo, rule.hi);
      return String(rule.kind === "min" ? Math.min(a, b) : Math.max(a, b));
    }
    case "and":
    case "or": {
      const a = parseBool(key, offered);
      const b = parseBool(key, ours);
      return (rule.kind === "and" ? a && b : a || b) ? "Yes" : "No";
    }
    case "list": {
      const mine = ours.split(",");
      for (const v of offered.split(",")) if (mine.includes(v)) return v;
      return "Reject";
    }
    case "declarative":
      return ours;
  }
}

/**
 * Check the target's answer to one of our offers and return the settled
 * value, or null when the key stays at its default (NotUnderstood,
 * Irrelevant, Reject).
 *
 * @example
 * ```ts
 * settle("MaxBurstLength", "262144", "65536"); // "65536"
 * settle("MaxBurstLength", "65536", "262144"); // throws: larger than offered
 * ```
 */
export function settle(key: string, offered: string, answer: string): string | null {
  if (SPECIAL.has(answer)) return null;
  const rule = ruleFor(key);
  if (!rule) return answer;
  switch (rule.kind) {
    case "min":
    case "max": {
      const o = parseNumber(key, offered, rule.lo, rule.hi);
      const a = parseNumber(key, answer, rule.lo, rule.hi);
      if (rule.kind === "min" ? a > o : a < o) {
        throw new IscsiProtocolError(
          `${key}=${answer} breaks the ${rule.kind} rule (we offered ${offered})`,
        );
      }
      return String(a);
    }
    case "and":
    case "or": {
      const o = parseBool(key, offered);
      const a = parseBool(key, answer);
      // AND: an offered No cannot become Yes; OR: an offered Yes cannot become No.
      if (rule.kind === "and" ? !o && a : o && !a) {
        throw new IscsiProtocolError(`${key}=${answer} breaks the ${rule.kind.toUpperCase()} rule`);
      }
      return answer;
    }
    case "list":
      if (!offered.split(",").includes(answer)) {
        // Usually a target that cannot do what we require (HeaderDigest=CRC32C only).
        throw new OperationalError(
          `target answered ${key}=${answer.slice(0, 32)}; we offered only ${offered}`,
        );
      }
      return answer;
    case "declarative":
      return answer;
  }
}

/** What we ask for. */
export interface NegotiationConfig {
  sessionType: "Normal" | "Discovery";
  headerDigest: DigestChoice;
  dataDigest: DigestChoice;
}

/** One login's operational negotiation. */
export class Negotiation {
  readonly #offers = new Map<string, string>();
  readonly #settled = new Map<string, string>();
  readonly #answered = new Set<string>();
  readonly #params: SessionParams = defaultParams();

  constructor(cfg: NegotiationConfig) {
    const o = this.#offers;
    o.set(KEY.HeaderDigest, digestOffer(cfg.headerDigest));
    o.set(KEY.DataDigest, digestOffer(cfg.dataDigest));
    o.set(KEY.MaxRecvDataSegmentLength, String(OUR_MAX_RECV_DATA_SEGMENT_LENGTH));
    this.#params.maxRecvDataSegmentLength = OUR_MAX_RECV_DATA_SEGMENT_LENGTH;
    if (cfg.sessionType === "Normal") {
      // We keep one connection per session; more sessions scale better here.
      o.set(KEY.MaxConnections, "1");
      // Unsolicited data saves a round trip per write (§13.10, §13.11).
      o.set(KEY.InitialR2T, "No");
      o.set(KEY.ImmediateData, "Yes");
      o.set(KEY.MaxBurstLength, String(U24 - 511)); // largest multiple of 512
      o.set(KEY.FirstBurstLength, "262144");
      // Time2Wait 0: at ERL 0 recovery reinstates the session, which makes the
      // target drop the old one at once; a target that needs time answers
      // more (max rule, §13.15) and recovery honours that.
      o.set(KEY.DefaultTime2Wait, "0");
      // ERL 0 and Time2Retain 0: on connection loss the target may drop
      // tasks at once; we reinstate the session and replay (docs/iscsi.md, "Recovery").
      o.set(KEY.DefaultTime2Retain, "0");
      o.set(KEY.MaxOutstandingR2T, "16");
      o.set(KEY.DataPDUInOrder, "Yes");
      o.set(KEY.DataSequenceInOrder, "Yes");
      o.set(KEY.ErrorRecoveryLevel, "0");
    }
  }

  /** Our offers, to send in the first operational PDU. */
  offers(): TextPair[] {
    return [...this.#offers];
  }

  /**
   * Take the target's keys from one Login Response (or Text Response) and
   * return the answers we owe it (for keys the target offered on its own).
   */
  receive(pairs: readonly TextPair[]): TextPair[] {
    const replies: TextPair[] = [];
    const seen = new Set<string>();
    for (const [key, value] of pairs) {
      if (seen.has(key)) throw new IscsiProtocolError(`key ${key} sent twice`);
      seen.add(key);
      const offered = this.#offers.get(key);
      const rule = ruleFor(key);
      if (offered !== undefined && !this.#answered.has(key)) {
        this.#answered.add(key);
        if (rule?.kind === "declarative") {
          // Our MaxRecvDataSegmentLength is declarative; a target may
          // declare its own under the same key.
          if (key === KEY.MaxRecvDataSegmentLength) this.#declare(key, value);
          continue;
        }
        const v = settle(key, offered, value);
        if (v !== null) this.#settled.set(key, v);
        continue;
      }
      if (!rule) {
        replies.push([key, "NotUnderstood"]); // §6.2: unknown keys, X- ones included
        continue;
      }
      if (rule.kind === "declarative") {
        this.#declare(key, value);
        continue;
      }
      if (SPECIAL.has(value)) continue;
      // The target offers a key: answer with the rule, from our preference or the default.
      const ours = this.#offers.get(key) ?? ruleDefault(rule);
      const answer = respond(key, value, ours);
      replies.push([key, answer]);
      if (answer !== "Reject") this.#settled.set(key, answer);
    }
    return replies;
  }

  #declare(key: string, value: string): void {
    if (key === KEY.MaxRecvDataSegmentLength) {
      this.#params.maxXmitDataSegmentLength = parseNumber(key, value, 512, U24);
    } else if (key === KEY.TargetAlias) this.#params.targetAlias = value;
    else if (key === KEY.TargetPortalGroupTag) {
      this.#params.targetPortalGroupTag = parseNumber(key, value, 0, 65535);
    }
  }

  /** The session parameters once login completed. */
  result(): SessionParams {
    const p = this.#params;
    const s = this.#settled;
    const num = (k: string, d: number) => (s.has(k) ? Number(s.get(k)) : d);
    const bool = (k: string, d: boolean) => (s.has(k) ? s.get(k) === "Yes" : d);
    p.headerDigest = s.get(KEY.HeaderDigest) === "CRC32C";
    p.dataDigest = s.get(KEY.DataDigest) === "CRC32C";
    p.maxConnections = num(KEY.MaxConnections, 1);
    p.initialR2T = bool(KEY.InitialR2T, true);
    p.immediateData = bool(KEY.ImmediateData, true);
    p.maxBurstLength = num(KEY.MaxBurstLength, 262144);
    p.firstBurstLength = Math.min(num(KEY.FirstBurstLength, 65536), p.maxBurstLength);
    p.defaultTime2Wait = num(KEY.DefaultTime2Wait, 2);
    p.defaultTime2Retain = num(KEY.DefaultTime2Retain, 20);
    p.maxOutstandingR2T = num(KEY.MaxOutstandingR2T, 1);
    p.dataPDUInOrder = bool(KEY.DataPDUInOrder, true);
    p.dataSequenceInOrder = bool(KEY.DataSequenceInOrder, true);
    p.errorRecoveryLevel = num(KEY.ErrorRecoveryLevel, 0);
    return { ...p };
  }

  /**
   * Whether a digest we required was refused: the RFC lets a target answer
   * None only if we offered it, so this only guards against Reject/NotUnderstood.
   */
  digestMismatch(cfg: NegotiationConfig): string | null {
    const p = this.result();
    if (cfg.headerDigest === "crc32c" && !p.headerDigest) return "HeaderDigest CRC32C refused";
    if (cfg.dataDigest === "crc32c" && !p.dataDigest) return "DataDigest CRC32C refused";
    return null;
  }
}

function ruleDefault(rule: KeyRule): string {
  switch (rule.kind) {
    case "min":
    case "max":
      return String(rule.dflt);
    case "and":
    case "or":
      return rule.dflt ? "Yes" : "No";
    case "list":
      return rule.values.join(",");
    case "declarative":
      return "";
  }
}
