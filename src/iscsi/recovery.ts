/**
 * The reconnect loop of session recovery (docs/iscsi.md, "Recovery"): after
 * a lost connection, wait Time2Wait, then log in with the session's ISID
 * and TSIH 0 (session reinstatement, RFC 7143 §6.3.5: the target ends the
 * old session and, at ERL 0 with Time2Retain 0, its tasks), each portal in
 * turn, with a doubling backoff between rounds, until a login succeeds, the
 * session stops recovering (closed), or authentication is refused too many
 * times in a row. What the session does before (hold the tasks) and after
 * (take the new connection, replay the tasks) stays in session.ts.
 */
import { AuthError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { LoginResult } from "./login.ts";
import { RECOVERY_DEFAULTS } from "./session_config.ts";
import { formatPortal, type Portal } from "./uri.ts";

/** What the loop needs from the session. */
export interface ReconnectPlan {
  /** In order; every recovery starts again at the first. */
  portals: readonly Portal[];
  /** Seconds before the first relogin (the target's Time2Wait or DefaultTime2Wait). */
  time2Wait: number;
  /** One login attempt on `portal`. */
  login(portal: Portal): Promise<LoginResult>;
  /** A sleep that closing the session cuts short. */
  sleep(ms: number): Promise<void>;
  /** False once the session no longer recovers (closed meanwhile): the loop ends. */
  recovering(): boolean;
  /** What the loop waits for now, for the session's progress line. */
  waitingFor(what: string): void;
  log: Logger;
}

/** How the loop ended: a new login, a refusal to give up on, or nothing (the session stopped recovering). */
export type ReconnectOutcome =
  | { login: LoginResult }
  | { refused: AuthError; message: string }
  | null;

/**
 * Reconnect until a login succeeds or the session stops recovering.
 *
 * @example
 * ```ts
 * const out = await reconnect({ portals, time2Wait: 2, login, sleep, recovering, waitingFor, log });
 * if (out && "login" in out) resume(out.login);
 * ```
 */
export async function reconnect(plan: ReconnectPlan): Promise<ReconnectOutcome> {
  const { portals, time2Wait: wait, log } = plan;
  let delay = wait * 1000;
  let backoff: number = RECOVERY_DEFAULTS.backoffInitialMs;
  let authFailures = 0;
  let attempt = 0;
  for (;;) {
    for (const portal of portals) {
      if (delay > 0) {
        plan.waitingFor(
          attempt === 0
            ? `Time2Wait (${wait} s) before the first relogin`
            : `${delay} ms of backoff before relogin ${attempt + 1}`,
        );
        await plan.sleep(delay);
      }
      delay = 0;
      if (!plan.recovering()) return null;
      attempt++;
      plan.waitingFor(`relogin ${attempt} to ${formatPortal(portal)} (connect, then login)`);
      let r: LoginResult;
      try {
        r = await plan.login(portal);
      } catch (e) {
        if (!plan.recovering()) return null;
        const msg = e instanceof Error ? e.message : String(e);
        if (e instanceof AuthError && ++authFailures >= RECOVERY_DEFAULTS.authFailures) {
          return {
            refused: e,
            message: `iSCSI relogin to ${formatPortal(portal)} refused: ${msg}`,
          };
        }
        log.info(`iSCSI relogin ${attempt} to ${formatPortal(portal)} failed: ${msg}`);
        continue;
      }
      if (!plan.recovering()) {
        r.conn.close();
        return null;
      }
      return { login: r };
    }
    delay = backoff;
    backoff = Math.min(backoff * 2, RECOVERY_DEFAULTS.backoffMaxMs);
  }
}
