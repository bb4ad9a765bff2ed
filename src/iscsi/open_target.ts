/**
 * Open an iSCSI LUN as a BlockDevice: log in (src/iscsi/session.ts) and open
 * the LUN (src/scsi/lun.ts). The one entry point `probe`, `serve`, `attach`
 * and `boot` use, so they all see the same device the same way.
 */
import { OperationalError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { SessionParams } from "./negotiate.ts";
import { loginSession, type Session } from "./session.ts";
import { type SessionConfig, type SessionInfo } from "./session_config.ts";
import { Lun, type LunInventory, type LunOptions, reportLuns } from "../scsi/lun.ts";
import { type MultipathPolicy, MultipathTransport, type PathStatus } from "../scsi/multipath.ts";
import type { Designator } from "../scsi/responses.ts";
import { formatPortal } from "./uri.ts";

/** One path of a multipath target now (what `status` shows). */
export interface PathReport extends Omit<PathStatus, "downSince" | "name"> {
  portal: string;
  downSince: string | null;
  isid: string;
  tsih: number;
  reconnects: number;
}

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
  if (opts.multipath && (cfg.portals?.length ?? 0) > 0) return await openMultipath(cfg, opts);
  const session = await loginSession(cfg, opts.log);
  try {
    const device = await Lun.open(session, cfg.lun, {
      ...opts.lun,
      log: opts.log,
      closeTransport: true,
    });
    let luns: number[] | null = null;
    if (opts.reportLuns) {
      luns = await reportLuns(session, cfg.lun).then((r) => r.luns, (e) => {
        opts.log.debug(`REPORT LUNS: ${e instanceof Error ? e.message : String(e)}`);
        return null;
      });
    }
    const info = session.info;
    return {
      device,
      inventory: device.inventory,
      session: {
        ...info,
        initiatorName: cfg.initiatorName,
        parameters: negotiatedParameters(info.params),
      },
      transport: session,
      luns,
      close: async () => {
        await device.close();
        await session.close();
      },
    };
  } catch (e) {
    await session.close().catch(() => {});
    throw e;
  }
}

/**
 * NOP-Out timing of a multipath path: a path that has gone silent is
 * declared down after 1 to 1.5 s of silence plus 2 s unanswered, and its
 * commands go on another path (a single path keeps the longer defaults of
 * session_config.ts: it has nowhere else to go).
 */
export const MULTIPATH_NOP = { nopIntervalMs: 1_000, nopTimeoutMs: 2_000 } as const;

/** Designator types by how well they name a unit, best first (SPC-4 §7.8.6). */
const NAME_PREFERENCE = ["naa", "eui-64", "scsi-name-string", "t10-vendor-id"];

/**
 * The designators that name the logical unit itself (not a port of the
 * target): `key` compares two paths' units, `name` shows the unit (its
 * best designator, an NAA name where there is one).
 */
function luIdentity(ids: readonly Designator[]): { key: string; name: string } {
  const lu = ids.filter((d) => d.association === "logical-unit");
  const rank = (d: Designator) => {
    const i = NAME_PREFERENCE.indexOf(d.type);
    return i < 0 ? NAME_PREFERENCE.length : i;
  };
  const best = [...lu].sort((x, y) => rank(x) - rank(y) || y.value.length - x.value.length)[0];
  return {
    key: lu.map((d) => `${d.type}=${d.value}`).sort().join("|"),
    name: best?.value ?? "",
  };
}

/**
 * Log in on each portal as a path of its own (a session each, its own ISID,
 * the same initiator name), keep the paths that reach the same logical unit
 * as the first that answers (Device Identification VPD designators of the
 * logical unit equal), and open the LUN over all of them.
 */
async function openMultipath(cfg: SessionConfig, opts: OpenTargetOptions): Promise<OpenedTarget> {
  const log = opts.log;
  const portals = [cfg.portal, ...(cfg.portals ?? [])];
  const logins = await Promise.allSettled(portals.map((portal, i) =>
    loginSession({
      ...cfg,
      nopIntervalMs: cfg.nopIntervalMs ?? MULTIPATH_NOP.nopIntervalMs,
      nopTimeoutMs: cfg.nopTimeoutMs ?? MULTIPATH_NOP.nopTimeoutMs,
      portal,
      portals: [],
      failFast: true,
      ...(cfg.isidPurpose ? { isidPurpose: `${cfg.isidPurpose} path ${i}` } : {}),
    }, log)
  ));
  const paths: { name: string; session: Session; identity: { key: string; name: string } }[] = [];
  let firstError: unknown = null;
  for (const [i, r] of logins.entries()) {
    const name = formatPortal(portals[i]);
    if (r.status === "rejected") {
      firstError ??= r.reason;
      log.error(
        `multipath: path ${name}: login failed: ${
          r.reason instanceof Error ? r.reason.message : String(r.reason)
        }; not used`,
      );
      continue;
    }
    const session = r.value;
    try {
      // Each path opens the LUN on its own: the inventory names the unit it reached.
      const probe = await Lun.open(session, cfg.lun, { log });
      const identity = luIdentity(probe.inventory.identifiers);
      await probe.close(); // the Lun only; the session stays
      if (!identity.key) {
        throw new OperationalError(
          `LUN ${cfg.lun} reports no logical-unit designator (VPD page 0x83): ` +
            "cannot tell whether the paths lead to the same unit",
        );
      }
      if (paths.length && identity.key !== paths[0].identity.key) {
        throw new OperationalError(
          `leads to another logical unit (${identity.name}, not ${paths[0].identity.name})`,
        );
      }
      paths.push({ name, session, identity });
    } catch (e) {
      firstError ??= e;
      log.error(`multipath: path ${name}: ${e instanceof Error ? e.message : String(e)}; not used`);
      await session.close().catch(() => {});
    }
  }
  if (paths.length === 0) throw firstError;
  const mp = new MultipathTransport(
    paths.map((p) => ({ name: p.name, transport: p.session })),
    { policy: opts.multipath!, log, holdTimeoutMs: cfg.recoveryTimeoutMs },
  );
  log.info(
    `multipath (${opts.multipath}): ${paths.length} of ${portals.length} path(s) to ${
      paths[0].identity.name
    }: ` +
      paths.map((p) => p.name).join(", "),
  );
  try {
    const device = await Lun.open(mp, cfg.lun, { ...opts.lun, log, closeTransport: true });
    let luns: number[] | null = null;
    if (opts.reportLuns) {
      luns = await reportLuns(mp, cfg.lun).then((r) => r.luns, () => null);
    }
    const info = paths[0].session.info;
    return {
      device,
      inventory: device.inventory,
      session: {
        ...info,
        initiatorName: cfg.initiatorName,
        parameters: negotiatedParameters(info.params),
      },
      transport: paths[0].session,
      multipath: mp,
      paths: () =>
        mp.paths.map((st, i) => {
          const session = paths[i].session;
          const { isid, tsih } = session.info;
          return {
            portal: st.name,
            state: st.state,
            downSince: st.downSince === null ? null : new Date(st.downSince).toISOString(),
            isid,
            tsih,
            failures: st.failures,
            reconnects: session.reconnects,
            commands: st.commands,
            bytes: st.bytes,
          };
        }),
      luns,
      close: async () => {
        await device.close();
        await mp.close();
      },
    };
  } catch (e) {
    await mp.close();
    throw e;
  }
}
