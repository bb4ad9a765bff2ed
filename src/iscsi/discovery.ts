/**
 * SendTargets discovery (RFC 7143 §4.3, Appendix C): a Discovery session,
 * one `SendTargets=All` Text Request, the answer gathered over as many Text
 * Responses as the target needs (F=0 / C=1 continuation, §11.10-11.11),
 * then Logout. TargetName starts a record; each TargetAddress after it
 * (`host[:port],tpgt`, IPv6 in brackets) belongs to that record; a target
 * with no TargetAddress is reached through the portal we asked (Appendix C).
 */
import { OperationalError } from "../errors.ts";
import type { Logger } from "../log.ts";
import {
  BHS_LENGTH,
  FLAG_FINAL,
  KEY,
  LOGOUT_CLOSE_SESSION,
  MAX_DISCOVERY_TEXT,
  OP_ASYNC_MSG,
  OP_LOGOUT_RESP,
  OP_NOP_IN,
  OP_REJECT,
  OP_TEXT_RESP,
  RESERVED_TAG,
  TEXT_FLAG_CONTINUE,
} from "./constants.ts";
import type { Connection } from "./connection.ts";
import { defaultCrc32c } from "./digest.ts";
import { IscsiProtocolError } from "./errors.ts";
import { login, parseTargetAddress, randomIsid } from "./login.ts";
import { encodeLogoutRequest, encodeNopOut, encodeTextRequest } from "./pdu.ts";
import { encodeText, TextAccumulator, type TextPair } from "./text.ts";
import type { TargetLogin } from "./session_config.ts";
import type { Portal } from "./uri.ts";

/** What discovery needs: the login to the portal. */
export type DiscoveryConfig = TargetLogin;

/** One portal of a discovered target. */
export interface DiscoveredPortal {
  host: string;
  port: number;
  /** Target portal group tag, when the target gave one. */
  tpgt: number | null;
}

/** One target from the SendTargets answer. */
export interface DiscoveredTarget {
  name: string;
  portals: DiscoveredPortal[];
}

/**
 * Turn SendTargets text pairs into targets (exported for tests).
 *
 * @example
 * ```ts
 * sendTargetsRecords([["TargetName", "iqn.x:a"], ["TargetAddress", "[::1]:3260,1"]], portal);
 * ```
 */
export function sendTargetsRecords(pairs: readonly TextPair[], asked: Portal): DiscoveredTarget[] {
  const out: DiscoveredTarget[] = [];
  let cur: DiscoveredTarget | null = null;
  for (const [k, v] of pairs) {
    if (k === KEY.TargetName) {
      if (v === "") throw new IscsiProtocolError("SendTargets: empty TargetName");
      cur = { name: v, portals: [] };
      out.push(cur);
    } else if (k === KEY.TargetAddress) {
      if (!cur) throw new IscsiProtocolError("SendTargets: TargetAddress before any TargetName");
      const a = parseTargetAddress(v);
      cur.portals.push({ host: a.host, port: a.port, tpgt: a.tpgt ?? null });
    }
    // TargetAlias and other keys are informational.
  }
  for (const t of out) {
    if (t.portals.length === 0) t.portals.push({ host: asked.host, port: asked.port, tpgt: null });
  }
  return out;
}

/**
 * Log in to a portal as a Discovery session and list its targets.
 *
 * @example
 * ```ts
 * const targets = await discoverTargets({ portal: { host: "::1", port: 3260 },
 *   initiatorName, chapAlgorithms: DEFAULT_CHAP_ALGORITHMS,
 *   headerDigest: "prefer-none", dataDigest: "prefer-none" }, log);
 * ```
 */
export async function discoverTargets(
  cfg: DiscoveryConfig,
  log: Logger,
): Promise<DiscoveredTarget[]> {
  const crc = cfg.crc ?? (await defaultCrc32c());
  const r = await login(
    {
      portal: cfg.portal,
      initiatorName: cfg.initiatorName,
      sessionType: "Discovery",
      chap: cfg.chap,
      mutual: cfg.mutual,
      chapAlgorithms: cfg.chapAlgorithms,
      headerDigest: cfg.headerDigest,
      dataDigest: cfg.dataDigest,
      isid: randomIsid(),
      connectTimeoutMs: cfg.connectTimeoutMs,
      loginTimeoutMs: cfg.loginTimeoutMs,
    },
    crc,
    log,
  );
  const conn = r.conn;
  const timeoutMs = cfg.loginTimeoutMs ?? 15000;
  const timer = setTimeout(
    () =>
      conn.close(new OperationalError(`discovery at ${conn.peer} timed out after ${timeoutMs} ms`)),
    timeoutMs,
  );
  try {
    const st = { cmdSN: r.cmdSN, expStatSN: r.expStatSN };
    const pairs = await sendTargets(conn, st, r.params.maxXmitDataSegmentLength);
    await logout(conn, st).catch((e) => log.debug(`discovery logout: ${String(e)}`));
    return sendTargetsRecords(pairs, r.portal);
  } finally {
    clearTimeout(timer);
    conn.close();
  }
}

const ITT = 1;

async function sendTargets(
  conn: Connection,
  st: { cmdSN: number; expStatSN: number },
  maxXmit: number,
): Promise<TextPair[]> {
  const bhs = new Uint8Array(BHS_LENGTH);
  const text = encodeText([[KEY.SendTargets, "All"]]);
  if (text.length > maxXmit) throw new OperationalError("internal: SendTargets request too long");
  const acc = new TextAccumulator(MAX_DISCOVERY_TEXT);
  let ttt = RESERVED_TAG;
  let payload = text;
  for (;;) {
    encodeTextRequest(bhs, {
      final: true,
      cont: false,
      itt: ITT,
      ttt,
      cmdSN: st.cmdSN,
      expStatSN: st.expStatSN,
      dataSegmentLength: payload.length,
    });
    st.cmdSN = (st.cmdSN + 1) >>> 0;
    await conn.send(bhs, payload);
    const { header: h, data } = await readSkippingPings(conn, st, bhs);
    if (h.opcode === OP_REJECT) throw new OperationalError("target rejected SendTargets");
    if (h.opcode !== OP_TEXT_RESP) {
      throw new IscsiProtocolError(`expected Text Response, got ${h.name}`);
    }
    if (h.itt !== ITT) throw new IscsiProtocolError("Text Response for another ITT");
    st.expStatSN = (h.statSN + 1) >>> 0;
    acc.push(data);
    if (h.flags & FLAG_FINAL) {
      if (h.flags & TEXT_FLAG_CONTINUE) {
        throw new IscsiProtocolError("Text Response with both F and C");
      }
      return acc.take();
    }
    // More to come: ask with an empty Text Request carrying the target's TTT (§11.10.4).
    if (h.ttt === RESERVED_TAG) {
      throw new IscsiProtocolError("continued Text Response without a TTT");
    }
    ttt = h.ttt;
    payload = new Uint8Array(0);
  }
}

/** Read the next PDU, answering target pings and skipping async events meanwhile. */
async function readSkippingPings(
  conn: Connection,
  st: { cmdSN: number; expStatSN: number },
  bhs: Uint8Array,
) {
  for (let i = 0; i < 64; i++) {
    const pdu = await conn.readPdu();
    const h = pdu.header;
    if (h.opcode === OP_NOP_IN && h.itt === RESERVED_TAG) {
      if (h.ttt !== RESERVED_TAG) {
        // §11.18: a NOP-Out answering a NOP-In MUST copy its Target
        // Transfer Tag and LUN, in a discovery session as in any other.
        encodeNopOut(bhs, {
          itt: RESERVED_TAG,
          ttt: h.ttt,
          cmdSN: st.cmdSN,
          expStatSN: st.expStatSN,
          lunBytes: h.lunBytes,
          dataSegmentLength: 0,
        });
        await conn.send(bhs);
      }
      continue;
    }
    if (h.opcode === OP_ASYNC_MSG) continue;
    return pdu;
  }
  throw new IscsiProtocolError("too many unsolicited PDUs during discovery");
}

async function logout(conn: Connection, st: { cmdSN: number; expStatSN: number }): Promise<void> {
  const bhs = new Uint8Array(BHS_LENGTH);
  encodeLogoutRequest(bhs, {
    reason: LOGOUT_CLOSE_SESSION,
    itt: ITT + 1,
    cid: 0,
    cmdSN: st.cmdSN,
    expStatSN: st.expStatSN,
  });
  await conn.send(bhs);
  const { header: h } = await readSkippingPings(conn, st, bhs);
  if (h.opcode !== OP_LOGOUT_RESP) {
    throw new IscsiProtocolError(`expected Logout Response, got ${h.name}`);
  }
}
