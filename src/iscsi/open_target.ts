/**
 * Open an iSCSI LUN as a BlockDevice: log in (src/iscsi/session.ts) and open
 * the LUN (src/scsi/lun.ts). The one entry point `probe`, `serve`, `attach`
 * and `boot` use, so they all see the same device the same way.
 */
import { IsbootError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { UnsupportedError } from "../scsi/errors.ts";
import type { ScsiTransport } from "../scsi/transport.ts";
import type { SessionParams } from "./negotiate.ts";
import { loginSession, type Session } from "./session.ts";
import { type SessionConfig, type SessionInfo } from "./session_config.ts";
import { Lun, type LunInventory, type LunOptions, reportLuns } from "../scsi/lun.ts";
import type { MultipathPolicy, MultipathTransport } from "../scsi/multipath.ts";
import { openPaths, type PathReport } from "./paths.ts";

export type { PathReport } from "./paths.ts";

/** Options for openTarget(). */
export interface OpenTargetOptions {
  log: Logger;
  /** Lun options (retry policy, per-command cap). */
  lun?: Omit<LunOptions, "log" | "closeTransport">;
  /** Also send REPORT LUNS (probe shows the target's LUN list). */
  reportLuns?: boolean;
  /**
   * Log in on every portal of `cfg` (`portal` and `portals`) at once, each
   * its own session, and spread the commands over them by this policy
   * (scsi/multipath.ts). Without it, the other portals are only tried when
   * the first cannot be reached.
   */
  multipath?: MultipathPolicy;
}

/** An open target: the LUN as a BlockDevice, what was learned, and how to close it. */
export interface OpenedTarget {
  /** The LUN (a BlockDevice); its close() also logs out. */
  device: Lun;
  inventory: LunInventory;
  /** Login facts and negotiated parameters (no secrets). */
  session: SessionInfo & { initiatorName: string; parameters: Record<string, string | number> };
  /** The logged-in session (for status counters); with multipath, the first path's. */
  transport: Session;
  /** With multipath: every path, for status. */
  multipath?: MultipathTransport;
  /** Connections recovered so far: the session's, or every path's together. */
  reconnects(): number;
  /** With multipath: each path's state, session and counters now, in portal order. */
  paths?: () => PathReport[];
  /** LUN numbers from REPORT LUNS, when asked for and answered. */
  luns: number[] | null;
  /** Close the device and log out. Idempotent. */
  close(): Promise<void>;
}

/**
 * The negotiated operational parameters under their RFC 7143 §13 key names.
 *
 * @example
 * ```ts
 * negotiatedParameters(session.info.params).HeaderDigest; // "CRC32C"
 * ```
 */
export function negotiatedParameters(p: SessionParams): Record<string, string | number> {
  const yn = (b: boolean) => (b ? "Yes" : "No");
  return {
    HeaderDigest: p.headerDigest ? "CRC32C" : "None",
    DataDigest: p.dataDigest ? "CRC32C" : "None",
    MaxConnections: p.maxConnections,
    InitialR2T: yn(p.initialR2T),
    ImmediateData: yn(p.immediateData),
    MaxRecvDataSegmentLength: p.maxRecvDataSegmentLength,
    // What the target declared (§13.12); open-iscsi shows it under this name.
    MaxXmitDataSegmentLength: p.maxXmitDataSegmentLength,
    MaxBurstLength: p.maxBurstLength,
    FirstBurstLength: p.firstBurstLength,
    DefaultTime2Wait: p.defaultTime2Wait,
    DefaultTime2Retain: p.defaultTime2Retain,
    MaxOutstandingR2T: p.maxOutstandingR2T,
    DataPDUInOrder: yn(p.dataPDUInOrder),
    DataSequenceInOrder: yn(p.dataSequenceInOrder),
    ErrorRecoveryLevel: p.errorRecoveryLevel,
    ...(p.targetAlias !== undefined ? { TargetAlias: p.targetAlias } : {}),
    ...(p.targetPortalGroupTag !== undefined
      ? { TargetPortalGroupTag: p.targetPortalGroupTag }
      : {}),
  };
}

/**
 * Log in to the target `cfg` names and open its LUN (`cfg.lun`). On any
 * failure after login the session is logged out before the error is thrown.
 * Errors: AuthError (exit 4) for CHAP failures, OperationalError (exit 1)
 * for unreachable targets and SCSI failures, InvalidInputError (exit 3) for
 * malformed answers.
 *
 * @example
 * ```ts
 * const cfg = await sessionConfigFromUri(uri, p.values, ctx.env); // src/iscsi/config.ts
 * const t = await openTarget(cfg, { log: ctx.log });
 * try {
 *   const first = await t.device.read(0n, t.device.blockSize);
 * } finally {
 *   await t.close();
 * }
 * ```
 */
export async function openTarget(
  cfg: SessionConfig,
  opts: OpenTargetOptions,
): Promise<OpenedTarget> {
  if (opts.multipath && (cfg.portals?.length ?? 0) > 0) {
    const p = await openPaths(cfg, opts.multipath, opts.log);
    return await openOver(cfg, opts, p.transport, p.first, {
      multipath: p.transport,
      paths: p.report,
    });
  }
  const session = await loginSession(cfg, opts.log);
  return await openOver(cfg, opts, session, session, {});
}

/**
 * Open the LUN over `transport` (a session, or the multipath device of the
 * paths); `first` gives the login facts. The transport is closed on failure.
 */
async function openOver(
  cfg: SessionConfig,
  opts: OpenTargetOptions,
  transport: ScsiTransport,
  first: Session,
  extra: Pick<OpenedTarget, "multipath" | "paths">,
): Promise<OpenedTarget> {
  try {
    const device = await Lun.open(transport, cfg.lun, {
      ...opts.lun,
      log: opts.log,
      closeTransport: true,
    });
    let luns: number[] | null = null;
    if (opts.reportLuns) {
      luns = await reportLuns(transport, cfg.lun).then((r) => r.luns, (e) => {
        opts.log.debug(`REPORT LUNS: ${e instanceof Error ? e.message : String(e)}`);
        return null;
      });
    }
    const info = first.info;
    return {
      device,
      inventory: device.inventory,
      session: {
        ...info,
        initiatorName: cfg.initiatorName,
        parameters: negotiatedParameters(info.params),
      },
      transport: first,
      ...extra,
      reconnects: () =>
        extra.paths ? extra.paths().reduce((n, p) => n + p.reconnects, 0) : first.reconnects,
      luns,
      close: async () => {
        await device.close();
        await transport.close();
      },
    };
  } catch (e) {
    await transport.close().catch(() => {});
    throw e;
  }
}

/**
 * The target's other LUNs, opened over `transport` (the session, or the
 * multipath device, that carries `bootLun`): REPORT LUNS, less `bootLun`,
 * those `want` names ("all": every one). A LUN that is not a disk (tgt's
 * controller LUN 0) is skipped with an info line, a named LUN the target
 * does not report or cannot open with a warning. Closing one of them
 * leaves the transport open.
 *
 * @example
 * ```ts
 * for (const x of await openOtherLuns(t.transport, 1, "all", log)) console.log(x.lun, x.device.size);
 * ```
 */
export async function openOtherLuns(
  transport: ScsiTransport,
  bootLun: number,
  want: "all" | readonly number[],
  log: Logger,
): Promise<{ lun: number; device: Lun }[]> {
  let listed: number[];
  try {
    listed = (await reportLuns(transport, bootLun)).luns;
  } catch (e) {
    log.error(`REPORT LUNS failed: ${e instanceof Error ? e.message : e}; no other LUN opened`);
    return [];
  }
  const wanted = (want === "all" ? listed : want).filter((n) => n !== bootLun);
  for (const n of want === "all" ? [] : wanted.filter((n) => !listed.includes(n))) {
    log.warn(`LUN ${n}: the target does not report it; skipped`);
  }
  const out: { lun: number; device: Lun }[] = [];
  for (const n of wanted.filter((x) => listed.includes(x))) {
    try {
      out.push({ lun: n, device: await Lun.open(transport, n, { log }) });
    } catch (e) {
      if (!(e instanceof IsbootError)) throw e;
      const what = e.message.startsWith(`LUN ${n}`) ? e.message : `LUN ${n}: ${e.message}`;
      if (want === "all" && e instanceof UnsupportedError) log.info(`${what}; skipped`);
      else log.warn(`${what}; skipped`);
    }
  }
  return out;
}
