/**
 * The retry policy between a SCSI command and its final status. It retries
 * only what SAM-5/SPC-4 say did not execute or may succeed later:
 *
 * - UNIT ATTENTION (SPC-4 §5.14): the command was not executed; the target
 *   reports a reset, a changed parameter or capacity. Retried at once, up to
 *   a bounded count (a UA storm after a reset is normal, a UA loop is not).
 * - NOT READY with "becoming ready" or a transition in progress (04/01,
 *   04/07, 04/0A, 04/14, 04/00): retried with backoff until a bounded wait
 *   ends. NOT READY that needs a human (04/03, 3A/xx) fails at once.
 * - BUSY and TASK SET FULL (SAM-5 §5.3): retried with exponential backoff
 *   until a bounded wait ends.
 * - ABORTED COMMAND and TASK ABORTED: retried a few times (transport hiccups).
 *
 * Everything else becomes a SenseError (an OperationalError carrying the
 * decoded sense text). Writes are safe to re-issue: a block write is
 * idempotent, and these statuses mean the command did not complete.
 */
import type { ScsiCommand, ScsiResponse, ScsiTransport } from "./transport.ts";
import { SENSE_KEY, STATUS } from "./constants.ts";
import {
  cdbName,
  describeSense,
  parseSense,
  type SenseData,
  SenseError,
  statusName,
} from "./sense.ts";

/** Tunables of the retry policy (all times in milliseconds). */
export interface RetryPolicy {
  /** Consecutive UNIT ATTENTIONs accepted for one command. */
  unitAttentionRetries: number;
  /** Longest total wait for a LUN that is becoming ready. */
  notReadyTimeoutMs: number;
  /** Longest total wait while the target answers BUSY / TASK SET FULL. */
  busyTimeoutMs: number;
  /** Retries for ABORTED COMMAND / TASK ABORTED. */
  abortedRetries: number;
  /** First backoff delay; doubled up to backoffMaxMs. */
  backoffInitialMs: number;
  backoffMaxMs: number;
}

export const DEFAULT_RETRY_POLICY: Readonly<RetryPolicy> = {
  unitAttentionRetries: 16,
  notReadyTimeoutMs: 30_000,
  busyTimeoutMs: 60_000,
  abortedRetries: 5,
  backoffInitialMs: 5,
  backoffMaxMs: 1_000,
};

/** Why a command is being retried (for logs and counters). */
export interface RetryEvent {
  command: string;
  reason: "unit-attention" | "not-ready" | "busy" | "task-set-full" | "aborted";
  /** Decoded sense text, when there was sense. */
  detail: string;
  attempt: number;
  delayMs: number;
  sense: SenseData | null;
}

/** Hooks and clock for the policy (tests swap the clock). */
export interface RetryHooks {
  /** Called before each retry. */
  onRetry?: (e: RetryEvent) => void;
  /** Waits `ms` milliseconds. */
  sleep?: (ms: number) => Promise<void>;
  /** Milliseconds since some epoch. */
  now?: () => number;
}

const defaultSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Statuses after which the data-in and the command's effect are valid. */
function isSuccess(status: number): boolean {
  return status === STATUS.GOOD || status === STATUS.CONDITION_MET;
}

/** NOT READY reasons that resolve on their own (SPC-4 Annex D). */
function isTransientNotReady(s: SenseData): boolean {
  if (s.asc !== 0x04) return false;
  return s.ascq === 0x00 || s.ascq === 0x01 || s.ascq === 0x07 || s.ascq === 0x0a ||
    s.ascq === 0x14;
}

/**
 * Execute a command under the retry policy. Resolves with the response of a
 * command that completed (GOOD, CONDITION MET, or CHECK CONDITION with
 * RECOVERED ERROR); rejects with SenseError otherwise. Transport errors
 * (OperationalError from the session) pass through untouched.
 *
 * @example
 * ```ts
 * const r = await executeWithRetry(session, { lun: 1, cdb: testUnitReady() });
 * ```
 */
export async function executeWithRetry(
  transport: ScsiTransport,
  cmd: ScsiCommand,
  policy: Readonly<RetryPolicy> = DEFAULT_RETRY_POLICY,
  hooks: RetryHooks = {},
): Promise<ScsiResponse> {
  const sleep = hooks.sleep ?? defaultSleep;
  const now = hooks.now ?? (() => performance.now());
  let unitAttentions = 0;
  let aborted = 0;
  let waitStart = -1; // start of the current NOT READY / BUSY episode
  let backoff = policy.backoffInitialMs;
  let attempt = 0;
  for (;;) {
    const r = await transport.execute(cmd);
    if (isSuccess(r.status)) return r;
    attempt++;
    let sense: SenseData | null = null;
    let reason: RetryEvent["reason"];
    if (r.status === STATUS.CHECK_CONDITION) {
      sense = r.sense ? parseSense(r.sense) : null;
      if (!sense) throw new SenseError(cdbName(cmd.cdb), r.status, null);
      if (sense.senseKey === SENSE_KEY.RECOVERED_ERROR) return r;
      if (sense.senseKey === SENSE_KEY.UNIT_ATTENTION && sense.current) {
        if (++unitAttentions > policy.unitAttentionRetries) {
          throw new SenseError(cdbName(cmd.cdb), r.status, sense);
        }
        hooks.onRetry?.({
          command: cdbName(cmd.cdb),
          reason: "unit-attention",
          detail: describeSense(sense),
          attempt,
          delayMs: 0,
          sense,
        });
        continue;
      }
      if (sense.senseKey === SENSE_KEY.NOT_READY && sense.current && isTransientNotReady(sense)) {
        reason = "not-ready";
      } else if (sense.senseKey === SENSE_KEY.ABORTED_COMMAND && sense.current) {
        reason = "aborted";
      } else {
        throw new SenseError(cdbName(cmd.cdb), r.status, sense);
      }
    } else if (r.status === STATUS.BUSY) {
      reason = "busy";
    } else if (r.status === STATUS.TASK_SET_FULL) {
      reason = "task-set-full";
    } else if (r.status === STATUS.TASK_ABORTED) {
      reason = "aborted";
    } else {
      throw new SenseError(cdbName(cmd.cdb), r.status, null);
    }

    let delayMs = 0;
    if (reason === "aborted") {
      if (++aborted > policy.abortedRetries) {
        throw new SenseError(cdbName(cmd.cdb), r.status, sense);
      }
    } else {
      const limit = reason === "not-ready" ? policy.notReadyTimeoutMs : policy.busyTimeoutMs;
      const t = now();
      if (waitStart < 0) waitStart = t;
      if (t - waitStart >= limit) throw new SenseError(cdbName(cmd.cdb), r.status, sense);
      delayMs = Math.min(backoff, Math.max(0, limit - (t - waitStart)));
      backoff = Math.min(policy.backoffMaxMs, backoff * 2);
    }
    hooks.onRetry?.({
      command: cdbName(cmd.cdb),
      reason,
      detail: sense ? describeSense(sense) : statusName(r.status),
      attempt,
      delayMs,
      sense,
    });
    if (delayMs > 0) await sleep(delayMs);
  }
}
