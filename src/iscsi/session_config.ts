/**
 * What an iSCSI session is opened with ({@link SessionConfig}), what it
 * reports about itself ({@link SessionInfo}), the defaults of its recovery
 * timers ({@link RECOVERY_DEFAULTS}), and the login a session (re)opens
 * with ({@link loginConfigFor}).
 */
import type { ChapAlgorithmName } from "./chap.ts";
import type { Crc32c } from "./digest.ts";
import type { ChapCredentials, LoginConfig } from "./login.ts";
import type { DigestChoice, SessionParams } from "./negotiate.ts";
import type { Portal } from "./uri.ts";

/** Defaults of the recovery timers (docs/iscsi.md, "Recovery", says why). */
export const RECOVERY_DEFAULTS = {
  /** Idle time after which a NOP-Out checks the connection (open-iscsi noop_out_interval). */
  nopIntervalMs: 5_000,
  /** A NOP-Out unanswered this long ends the connection (open-iscsi noop_out_timeout). */
  nopTimeoutMs: 10_000,
  /** First reconnect delay after a failed attempt; doubled per round of portals. */
  backoffInitialMs: 250,
  /** Longest delay between reconnect rounds. */
  backoffMaxMs: 5_000,
  /** Consecutive authentication failures on relogin before the session gives up. */
  authFailures: 3,
  /**
   * While recovering, or while commands wait for a closed CmdSN window, a
   * line this often says what the session waits for (a stuck root disk
   * says why on the console).
   */
  progressIntervalMs: 5_000,
  /**
   * The longest the commands in flight get to finish when the target asks
   * for a logout or a renegotiation, before the Logout goes out; what is
   * left is replayed after the relogin. Half of the target's Parameter3 when
   * that is shorter (it drops the connection after Parameter3).
   */
  logoutDrainMs: 2_000,
  /** How long a Logout Response is waited for. */
  logoutTimeoutMs: 5_000,
  /** First delay before a command rejected as "not now" is sent again; doubled per retry. */
  rejectRetryInitialMs: 100,
  /** Longest delay between resends of a rejected command. */
  rejectRetryMaxMs: 2_000,
  /**
   * Longest wait for the answer to ABORT TASK or LOGICAL UNIT RESET
   * (open-iscsi's abort_timeout); shorter when the command timeout is.
   */
  tmfTimeoutMs: 15_000,
  /**
   * A command re-issued after an abort or a reset gets twice its previous
   * timeout, up to this many times the configured one: a command that is
   * merely slow (a large UNMAP or SYNCHRONIZE CACHE on a busy target)
   * completes in the end instead of being aborted for ever.
   */
  commandTimeoutGrowth: 16,
} as const;

/**
 * How to log in to a target's portal: who we are, how to authenticate, which
 * digests to offer, how long to wait (a session and a discovery both).
 */
export interface TargetLogin {
  portal: Portal;
  initiatorName: string;
  chap?: ChapCredentials;
  mutual?: ChapCredentials;
  chapAlgorithms: readonly ChapAlgorithmName[];
  headerDigest: DigestChoice;
  dataDigest: DigestChoice;
  connectTimeoutMs?: number;
  loginTimeoutMs?: number;
  /** CRC32C implementation (default: the process default). */
  crc?: Crc32c;
}

/** What a session needs: where, who, how to authenticate, what to negotiate. */
export interface SessionConfig extends TargetLogin {
  /**
   * Other portals of the same target (iBFT's second target, `--portal`),
   * tried in order when the current one cannot be reached during recovery;
   * every recovery starts again at `portal`.
   */
  portals?: readonly Portal[];
  targetName: string;
  /** The LUN the user named (commands carry their own; kept for display). */
  lun: number;
  /**
   * Makes the ISID stable (claimIsid(initiatorName, purpose), isid.ts): a
   * later login for the same purpose reinstates this session, while another
   * live session of this host with the same purpose gets its own ISID; omit
   * for one-off sessions (random ISID).
   */
  isidPurpose?: string;
  /** Where ISID slot locks live (default ISBOOT_RUN_DIR or /run/isboot). */
  runDir?: string;
  /**
   * A command not done after this long is escalated: ABORT TASK, then
   * LOGICAL UNIT RESET, then the connection is dropped and recovered; an
   * aborted or reset command is re-issued, not failed (docs/iscsi.md,
   * "Command timeout"). 0 or undefined = never.
   */
  commandTimeoutMs?: number;
  /** Send a NOP-Out ping after this long without a PDU from the target (default 5 s); 0 = never. */
  nopIntervalMs?: number;
  /** A ping not answered within this is a connection failure (default 10 s). */
  nopTimeoutMs?: number;
  /** How often a waiting session says what it waits for (default RECOVERY_DEFAULTS.progressIntervalMs). */
  progressIntervalMs?: number;
  /**
   * How long commands wait for a lost connection to be recovered before they
   * fail with OperationalError (recovery goes on in the background).
   * Undefined or Infinity: forever (the root disk); 0: no recovery at all,
   * the first connection error fails the session.
   */
  recoveryTimeoutMs?: number;
  /**
   * This session is one path of several (multipath, scsi/multipath.ts): on a
   * lost connection every command it holds fails at once with PathDownError,
   * and so does every new one until the relogin, so that the caller sends
   * them on another path; the reconnect loop goes on in the background for
   * as long as the session lives (`recoveryTimeoutMs` is not used).
   */
  failFast?: boolean;
}

/** What `probe` and `status` show about a session (no secrets). */
export interface SessionInfo {
  portal: string;
  /** Our side of the connection now (the NIC's address); absent while there is none. */
  local?: string;
  targetName: string;
  isid: string;
  tsih: number;
  auth: "none" | "chap" | "mutual";
  chapAlgorithm?: string;
  loginMs: number;
  params: SessionParams;
}

/**
 * The login of a session's connection to `portal`: a new session, or the
 * reinstatement of the one with this ISID.
 *
 * @example
 * ```ts
 * const r = await login(loginConfigFor(cfg, cfg.portal, isid, new Set()), crc, log);
 * ```
 */
export function loginConfigFor(
  cfg: SessionConfig,
  portal: Portal,
  isid: Uint8Array,
  sentChallenges: Set<string>,
): LoginConfig {
  return {
    portal,
    initiatorName: cfg.initiatorName,
    targetName: cfg.targetName,
    sessionType: "Normal",
    chap: cfg.chap,
    mutual: cfg.mutual,
    chapAlgorithms: cfg.chapAlgorithms,
    headerDigest: cfg.headerDigest,
    dataDigest: cfg.dataDigest,
    isid,
    // TSIH 0: a new session, or the reinstatement of the one with this ISID
    // (§6.3.5; a non-zero TSIH would add a connection, which ERL 0 and
    // MaxConnections=1 rule out).
    tsih: 0,
    connectTimeoutMs: cfg.connectTimeoutMs,
    loginTimeoutMs: cfg.loginTimeoutMs,
    sentChallenges,
  };
}
