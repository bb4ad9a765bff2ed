/**
 * The fake target's side of a login (RFC 7143 §6, §11.12, §11.13, §12.1.3):
 * security stage with AuthMethod None or CHAP (one-way or mutual, any of
 * the four algorithms), operational keys answered by {@link answerOffers},
 * long text both ways over continuation PDUs (C bit), then the Full Feature
 * Phase with the digests agreed. Hooks let a scenario break it on purpose
 * (an empty or huge challenge, a reflected one, endless continuation, keys
 * named like Object.prototype members).
 *
 * @example
 * ```ts
 * const first = await serveLogin(c, { chap: { user: "u", secret: "s3cret-12345" } });
 * if (first === null) return; // refused, or the initiator gave up
 * ```
 */
import { concatBytes } from "../../../src/bytes.ts";
import {
  chapResponse,
  decodeChapBinary,
  encodeChapBinary,
  equalBytes,
} from "../../../src/iscsi/chap.ts";
import { OP_LOGIN_REQ } from "../../../src/iscsi/constants.ts";
import type { Crc32c } from "../../../src/iscsi/digest.ts";
import { decodeText, type TextPair } from "../../../src/iscsi/text.ts";
import type { FakeConn, FakePdu, LoginReply } from "./conn.ts";

/** A CHAP account. */
export interface Account {
  user: string;
  secret: string;
}

/** The fake's own answer to an operational key, from the initiator's offer. */
export type OwnAnswers = Readonly<Record<string, (offer: string) => string>>;

/** How the fake target logs in. */
export interface LoginOptions {
  /** Answer HeaderDigest/DataDigest with CRC32C where offered, and use them with this CRC. */
  crc?: Crc32c;
  /** MaxCmdSN - ExpCmdSN + 1 in the Login Responses (default 32). */
  window?: number;
  /** The target's name: a login to another is refused (0x0203). Default: any name. */
  iqn?: string;
  /** Require CHAP with this account. */
  chap?: Account;
  /** Mutual CHAP: the account the target proves itself with. */
  mutual?: Account;
  /** The fake's own answers for these keys, instead of the initiator's values. */
  own?: OwnAnswers;
  /** TSIH of the final Login Response (default 1). */
  tsih?: number;
  hooks?: LoginHooks;
}

/** Where a scenario breaks the login. */
export interface LoginHooks {
  /** The CHAP challenge to send instead of 16 random bytes (undefined: the usual one). */
  challenge?: () => Uint8Array | undefined;
  /** Sees the initiator's own CHAP challenge (mutual CHAP), as it sent it. */
  initiatorChallenge?: (text: string) => void;
  /**
   * Sees each operational-stage Login Request and the answer the fake would
   * give (which it may change); true when it answered the request itself.
   */
  operational?: (req: FakePdu, answer: TextPair[]) => Promise<boolean>;
}

/** The initiator's MaxRecvDataSegmentLength during login (§13.12): our text goes in parts of this. */
const LOGIN_SEGMENT = 8192;
/** What we declare as our MaxRecvDataSegmentLength. */
export const FAKE_MRDSL = 262144;
/** CHAP_I of our challenges. */
const CHAP_ID = 7;
/** Keys the initiator declares, or that belong to the security stage: no answer. */
const DECLARED = new Set([
  "InitiatorName",
  "InitiatorAlias",
  "TargetName",
  "SessionType",
  "AuthMethod",
]);
/** Operational keys (§13) answered with the initiator's own value unless `own` says otherwise. */
const NEGOTIATED = new Set([
  "MaxConnections",
  "InitialR2T",
  "ImmediateData",
  "MaxBurstLength",
  "FirstBurstLength",
  "DefaultTime2Wait",
  "DefaultTime2Retain",
  "MaxOutstandingR2T",
  "DataPDUInOrder",
  "DataSequenceInOrder",
  "ErrorRecoveryLevel",
  "IFMarker",
  "OFMarker",
]);
const encoder = new TextEncoder();

/**
 * The fake's answer to the initiator's operational offers: the initiator's
 * own value (legal under every rule of §13) unless `own` has an answer for
 * the key; digests CRC32C where offered if `digests`, else None; our
 * MaxRecvDataSegmentLength ({@link FAKE_MRDSL}) declared in its place;
 * NotUnderstood for keys it does not know (§6.2); declarations not answered.
 *
 * @example
 * ```ts
 * answerOffers([["InitialR2T", "No"], ["HeaderDigest", "None,CRC32C"]], { own: { InitialR2T: () => "Yes" } });
 * // [["InitialR2T", "Yes"], ["HeaderDigest", "None"]]
 * ```
 */
export function answerOffers(
  pairs: readonly TextPair[],
  o: { digests?: boolean; own?: OwnAnswers } = {},
): TextPair[] {
  const out: TextPair[] = [];
  for (const [k, v] of pairs) {
    if (DECLARED.has(k)) continue;
    if (k === "MaxRecvDataSegmentLength") {
      out.push([k, String(FAKE_MRDSL)]);
    } else if (k === "HeaderDigest" || k === "DataDigest") {
      const list = v.split(",");
      out.push([
        k,
        o.digests && list.includes("CRC32C") ? "CRC32C" : list.includes("None") ? "None" : list[0],
      ]);
    } else {
      // hasOwn: keys named like Object.prototype members come too (login-prototype-keys).
      const own = o.own && Object.hasOwn(o.own, k) ? o.own[k] : undefined;
      out.push([k, own ? own(v) : NEGOTIATED.has(k) ? v : "NotUnderstood"]);
    }
  }
  return out;
}

/**
 * Answer operational offers with the initiator's own values (legal under
 * every rule), plus TargetPortalGroupTag: for a script's own Login Response.
 */
export function echoOffers(pairs: TextPair[], digests = false): TextPair[] {
  return [...answerOffers(pairs, { digests }), ["TargetPortalGroupTag", "1"]];
}

function parsePairs(data: Uint8Array): TextPair[] {
  try {
    return data.length ? decodeText(data) : [];
  } catch {
    return [];
  }
}

/** What the settled keys mean for the fake's side of the connection. */
function settle(c: FakeConn, offers: readonly TextPair[], answer: readonly TextPair[]): void {
  const mrdsl = new Map(offers).get("MaxRecvDataSegmentLength");
  if (mrdsl !== undefined) {
    c.params.peerMrdsl = Math.max(512, Math.min(Number(mrdsl) || 8192, 16777215));
  }
  const burst = new Map(answer).get("MaxBurstLength");
  if (burst !== undefined) c.params.maxBurst = Number(burst) || c.params.maxBurst;
}

/**
 * Answer the Login Requests of a connection until the Full Feature Phase.
 * Returns the session's first CmdSN, or null when the initiator closed the
 * connection first (after a refusal, or giving up on a broken login).
 */
export async function serveLogin(c: FakeConn, o: LoginOptions = {}): Promise<number | null> {
  let continued: Uint8Array[] = [];
  /** The rest of a long Login Response text, one part per empty request. */
  let pending: Uint8Array[] = [];
  const chap: { algorithm: number; challenge: Uint8Array } = {
    algorithm: 5,
    challenge: new Uint8Array(0),
  };
  /** HeaderDigest, DataDigest as the operational stage settled them. */
  const digests: [boolean, boolean] = [false, false];
  for (;;) {
    const req = await c.read();
    if (!req) return null;
    if (req.opcode !== OP_LOGIN_REQ) {
      throw new Error(`fake target: opcode 0x${req.opcode.toString(16)} during login`);
    }
    const transit = (req.flags & 0x80) !== 0;
    const csg = (req.flags >> 2) & 3;
    const nsg = req.flags & 3;
    const respond = (r: LoginReply) => c.loginResponse(req, { window: o.window, ...r });
    if (req.flags & 0x40) {
      // The initiator continues its text: acknowledge with an empty response (§6.1).
      continued.push(req.data);
      await respond({});
      continue;
    }
    const pairs = parsePairs(concatBytes([...continued, req.data]));
    continued = [];
    if (pending.length > 0 && pairs.length === 0) {
      // The initiator asks for the rest of our text (an empty request after C=1).
      const part = pending.shift()!;
      await respond({ cont: pending.length > 0, raw: part });
      continue;
    }
    const keys = new Map(pairs);
    if (o.iqn !== undefined && keys.has("TargetName") && keys.get("TargetName") !== o.iqn) {
      await respond({ status: 0x0203 }); // Not found
      continue;
    }
    /** Digests apply from the first full-feature PDU (§13.1); the session's first CmdSN. */
    const fullFeature = (): number => {
      if (o.crc) {
        c.crc = o.crc;
        [c.headerDigest, c.dataDigest] = digests;
      }
      c.log(`full feature phase (digests ${c.headerDigest}/${c.dataDigest})`);
      return c.expCmdSN;
    };

    /** The security stage done: move on as the initiator asks; true when that is the Full Feature Phase. */
    const leaveSecurity = async (answer: TextPair[]): Promise<boolean> => {
      const full = transit && nsg === 3;
      await respond({
        transit,
        nsg: transit ? nsg : 0,
        pairs: answer,
        tsih: full ? o.tsih ?? 1 : 0,
      });
      return full;
    };

    if (csg === 0) {
      // ---- security stage ----
      if (!o.chap) {
        const answer: TextPair[] = [];
        if (keys.has("AuthMethod")) {
          answer.push(["AuthMethod", "None"], ["TargetPortalGroupTag", "1"]);
        }
        if (await leaveSecurity(answer)) return fullFeature();
        continue;
      }
      if (keys.has("AuthMethod")) {
        if (!(keys.get("AuthMethod") ?? "").split(",").includes("CHAP")) {
          await respond({ status: 0x0201 }); // Authentication failure
          continue;
        }
        await respond({ pairs: [["AuthMethod", "CHAP"], ["TargetPortalGroupTag", "1"]] });
        continue;
      }
      if (keys.has("CHAP_A")) {
        const algs = (keys.get("CHAP_A") ?? "").split(",").map(Number);
        chap.algorithm = algs.includes(5) ? 5 : algs[0];
        chap.challenge = o.hooks?.challenge?.() ?? crypto.getRandomValues(new Uint8Array(16));
        // Built by hand: encodeText is for sane values, and this one may be 2 MiB.
        const text = encoder.encode(
          `CHAP_A=${chap.algorithm}\0CHAP_I=${CHAP_ID}\0CHAP_C=${
            encodeChapBinary(chap.challenge)
          }\0`,
        );
        const parts: Uint8Array[] = [];
        for (let off = 0; off < text.length; off += LOGIN_SEGMENT) {
          parts.push(text.subarray(off, off + LOGIN_SEGMENT));
        }
        pending = parts.slice(1);
        await respond({ cont: parts.length > 1, raw: parts[0] });
        continue;
      }
      if (keys.has("CHAP_N") && keys.has("CHAP_R")) {
        c.log("CHAP_R received");
        let ok = keys.get("CHAP_N") === o.chap.user;
        if (ok) {
          try {
            const got = decodeChapBinary("CHAP_R", keys.get("CHAP_R") ?? "");
            const want = await chapResponse(
              chap.algorithm,
              CHAP_ID,
              encoder.encode(o.chap.secret),
              chap.challenge,
            );
            ok = equalBytes(got, want);
          } catch {
            ok = false;
          }
        }
        if (!ok) {
          c.log("CHAP failed");
          await respond({ status: 0x0201 });
          continue;
        }
        const answer: TextPair[] = [];
        if (o.mutual && keys.has("CHAP_I") && keys.has("CHAP_C")) {
          const theirs = keys.get("CHAP_C") ?? "";
          o.hooks?.initiatorChallenge?.(theirs);
          const r = await chapResponse(
            chap.algorithm,
            Number(keys.get("CHAP_I")),
            encoder.encode(o.mutual.secret),
            decodeChapBinary("CHAP_C", theirs),
          );
          answer.push(["CHAP_N", o.mutual.user], ["CHAP_R", encodeChapBinary(r)]);
        }
        if (await leaveSecurity(answer)) return fullFeature();
        continue;
      }
      await respond({});
      continue;
    }

    // ---- operational stage ----
    const answer = answerOffers(pairs, { digests: o.crc !== undefined, own: o.own });
    settle(c, pairs, answer);
    const m = new Map(answer);
    if (m.has("HeaderDigest")) digests[0] = m.get("HeaderDigest") === "CRC32C";
    if (m.has("DataDigest")) digests[1] = m.get("DataDigest") === "CRC32C";
    if (o.hooks?.operational && (await o.hooks.operational(req, answer))) continue;
    if (!(transit && nsg === 3)) {
      await respond({ pairs: answer });
      continue;
    }
    answer.push(["TargetPortalGroupTag", "1"]);
    await respond({ transit: true, nsg: 3, tsih: o.tsih ?? 1, pairs: answer });
    return fullFeature();
  }
}
