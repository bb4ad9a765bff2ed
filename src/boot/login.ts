/**
 * Log in to one boot target through the iSCSI initiator (src/iscsi/open_target.ts) and
 * return its LUN as a BlockDevice. The ISID is stable for (initiator, boot
 * target), so a later `isboot attach --takeover` or a retried boot reinstates
 * the same session (RFC 7143 §6.3.5) instead of leaving a stale one.
 */
import type { BlockDevice } from "../blockdev.ts";
import { DEFAULT_CHAP_ALGORITHMS } from "../iscsi/chap.ts";
import { type OpenedTarget, openTarget } from "../iscsi/open_target.ts";
import type { LoginOptions } from "./sequence.ts";
import type { BootTarget } from "./spec.ts";

const enc = new TextEncoder();

/**
 * @example
 * ```ts
 * const dev = await loginTarget(spec.targets[0], { initiator, recoveryTimeoutMs: 120_000, log });
 * ```
 */
export async function loginTarget(t: BootTarget, o: LoginOptions): Promise<BlockDevice> {
  return (await openBootTarget(t, o)).device;
}

/** {@link loginTarget}, with the session too (its counters feed `isboot status`). */
export async function openBootTarget(t: BootTarget, o: LoginOptions): Promise<OpenedTarget> {
  return await openTarget({
    portal: { host: t.host, port: t.port },
    targetName: t.targetName,
    lun: t.lun,
    initiatorName: o.initiator,
    ...(t.chapUser !== undefined && t.chapSecret !== undefined
      ? { chap: { user: t.chapUser, secret: enc.encode(t.chapSecret) } }
      : {}),
    ...(t.mutualUser !== undefined && t.mutualSecret !== undefined
      ? { mutual: { user: t.mutualUser, secret: enc.encode(t.mutualSecret) } }
      : {}),
    chapAlgorithms: DEFAULT_CHAP_ALGORITHMS,
    headerDigest: o.headerDigest ?? "prefer-none",
    dataDigest: o.dataDigest ?? "prefer-none",
    isidPurpose: `boot ${t.targetName}`,
    connectTimeoutMs: 5_000,
    loginTimeoutMs: 15_000,
    // isboot.recovery_timeout= (src/boot/cmdline.ts): how long I/O waits for a lost connection.
    recoveryTimeoutMs: o.recoveryTimeoutMs,
    // isboot.command_timeout=: a hung command is aborted and re-issued, never failed by this.
    ...(o.commandTimeoutMs ? { commandTimeoutMs: o.commandTimeoutMs } : {}),
    portals: failoverPortals(t, o.targets ?? []),
  }, {
    log: o.log,
    ...(o.multipath && o.multipath !== "off" ? { multipath: o.multipath } : {}),
  });
}

/**
 * The other portals of the plan that serve the same IQN and LUN as `t`
 * (iBFT's second target, more netroots), in plan order, without repeats:
 * where recovery fails over to (src/iscsi/session.ts).
 *
 * @example
 * ```ts
 * failoverPortals(spec.targets[0], spec.targets); // [{ host: "192.0.2.11", port: 3260 }]
 * ```
 */
export function failoverPortals(
  t: BootTarget,
  all: readonly BootTarget[],
): { host: string; port: number }[] {
  const seen = new Set([`${t.host}|${t.port}`]);
  const out: { host: string; port: number }[] = [];
  for (const x of all) {
    const key = `${x.host}|${x.port}`;
    if (x.targetName !== t.targetName || x.lun !== t.lun || seen.has(key)) continue;
    seen.add(key);
    out.push({ host: x.host, port: x.port });
  }
  return out;
}
