/**
 * The paths of a multipath LUN (docs/iscsi.md, "Multipath"): a session to
 * each portal (its own ISID, the same initiator name, `failFast`, NOP-Out
 * every second), each checked to reach the same logical unit as the first
 * (the logical unit's designators in VPD page 0x83), together as one
 * {@link MultipathTransport}. A path whose login fails now (its NIC has no
 * cable yet, its portal is down) is not left out for good: it stays "down"
 * and logs in again in the background, with a doubling delay up to 30 s,
 * until it joins or the device is closed. A path that leads to another
 * logical unit is refused for good.
 *
 * @example
 * ```ts
 * const p = await openPaths(cfg, "failover", log);
 * const lun = await Lun.open(p.transport, cfg.lun, { log, closeTransport: true });
 * ```
 */
import { OperationalError } from "../errors.ts";
import type { Logger } from "../log.ts";
import {
  type MultipathPolicy,
  MultipathTransport,
  type PathStatus,
  type PathTransport,
} from "../scsi/multipath.ts";
import { Lun } from "../scsi/lun.ts";
import type { Designator } from "../scsi/responses.ts";
import { PathDownError, type ScsiCommand, type ScsiResponse } from "../scsi/transport.ts";
import { loginSession, type Session } from "./session.ts";
import type { SessionConfig } from "./session_config.ts";
import { formatPortal, type Portal } from "./uri.ts";

/**
 * NOP-Out timing of a multipath path: a path that has gone silent is
 * declared down after 1 to 1.5 s of silence plus 2 s unanswered, and its
 * commands go on another path (a single path keeps the longer defaults of
 * session_config.ts: it has nowhere else to go).
 */
export const MULTIPATH_NOP = { nopIntervalMs: 1_000, nopTimeoutMs: 2_000 } as const;

/** Background logins of a path that is not in yet: first delay, doubled up to the second. */
export const LATE_LOGIN_MS = { first: 1_000, max: 30_000 } as const;

/** One path of a multipath target now (what `status` shows). */
export interface PathReport extends Omit<PathStatus, "downSince" | "name"> {
  portal: string;
  /** Our address on the path's connection (its NIC's), empty while it has none. */
  local: string;
  downSince: string | null;
  /** Empty, and TSIH 0, while the path has never logged in. */
  isid: string;
  tsih: number;
  reconnects: number;
}

/** An open multipath LUN's paths. */
export interface OpenedPaths {
  transport: MultipathTransport;
  /** A session that logged in (the first path's that did), for login facts. */
  first: Session;
  /** The best designator of the logical unit (an NAA name where there is one). */
  unitName: string;
  /** Each path now, in portal order. */
  report(): PathReport[];
}

/** Designator types by how well they name a unit, best first (SPC-4 §7.8.6). */
const NAME_PREFERENCE = ["naa", "eui-64", "scsi-name-string", "t10-vendor-id"];

/**
 * The designators that name the logical unit itself (not a port of the
 * target): `key` compares two paths' units, `name` shows the unit.
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
 * A path's place in the multipath device: the session once it has logged
 * in; until then down, refusing commands with PathDownError.
 */
class PathSlot implements PathTransport {
  session: Session | null = null;
  closed = false;
  readonly #listeners: (() => void)[] = [];
  #wake: (() => void) | null = null;

  get up(): boolean {
    return this.session?.up ?? false;
  }
  get maxTransferHint(): number {
    return this.session?.maxTransferHint ?? 0;
  }
  execute(cmd: ScsiCommand): Promise<ScsiResponse> {
    if (this.session) return this.session.execute(cmd);
    return Promise.reject(new PathDownError("path not logged in yet"));
  }
  onChange(listener: () => void): void {
    this.#listeners.push(listener);
  }
  /** The path logged in: commands go to `session` from now on. */
  join(session: Session): void {
    this.session = session;
    session.onChange(() => this.#listeners.forEach((f) => f()));
    this.#listeners.forEach((f) => f());
  }
  /** A sleep that close() cuts short. */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      this.#wake = done;
      function done() {
        clearTimeout(t);
        resolve();
      }
    });
  }
  async close(): Promise<void> {
    this.closed = true;
    this.#wake?.();
    await this.session?.close();
  }
}

const msg = (e: unknown) => (e instanceof Error ? e.message : String(e));

/**
 * Open every portal of `cfg` (`portal`, then `portals`) as a path. Throws
 * the first path's error when no path logs in and reaches the unit.
 */
export async function openPaths(
  cfg: SessionConfig,
  policy: MultipathPolicy,
  log: Logger,
): Promise<OpenedPaths> {
  const portals: Portal[] = [cfg.portal, ...(cfg.portals ?? [])];
  const names = portals.map(formatPortal);
  /** Log in on path `i` and name the unit it reaches. */
  const open = async (i: number) => {
    const session = await loginSession({
      ...cfg,
      nopIntervalMs: cfg.nopIntervalMs ?? MULTIPATH_NOP.nopIntervalMs,
      nopTimeoutMs: cfg.nopTimeoutMs ?? MULTIPATH_NOP.nopTimeoutMs,
      portal: portals[i],
      portals: [],
      failFast: true,
      ...(cfg.isidPurpose ? { isidPurpose: `${cfg.isidPurpose} path ${i}` } : {}),
    }, log);
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
      return { session, identity };
    } catch (e) {
      await session.close().catch(() => {});
      throw e;
    }
  };
  const first = await Promise.allSettled(portals.map((_, i) => open(i)));
  const reference = first.find((r) => r.status === "fulfilled");
  if (!reference) throw (first[0] as PromiseRejectedResult).reason;
  const unit = reference.value.identity;
  const slots = portals.map(() => new PathSlot());
  const refused = new Set<number>();
  for (const [i, r] of first.entries()) {
    if (r.status === "fulfilled") {
      if (r.value.identity.key === unit.key) {
        slots[i].join(r.value.session);
        continue;
      }
      log.error(
        `multipath: path ${
          names[i]
        } leads to another logical unit (${r.value.identity.name}, not ${unit.name}); not used`,
      );
      refused.add(i);
      await r.value.session.close().catch(() => {});
      continue;
    }
    log.error(
      `multipath: path ${names[i]}: login failed: ${msg(r.reason)}; ` +
        "logging in again in the background",
    );
  }
  const used = slots.filter((_, i) => !refused.has(i));
  const usedNames = names.filter((_, i) => !refused.has(i));
  const transport = new MultipathTransport(
    used.map((slot, k) => ({ name: usedNames[k], transport: slot })),
    { policy, log, holdTimeoutMs: cfg.recoveryTimeoutMs },
  );
  // The paths not in yet keep trying until they join or the device closes.
  for (const [i, slot] of slots.entries()) {
    if (slot.session || refused.has(i)) continue;
    void (async () => {
      let delay: number = LATE_LOGIN_MS.first;
      while (!slot.closed) {
        await slot.sleep(delay);
        if (slot.closed) return;
        try {
          const r = await open(i);
          if (slot.closed) {
            await r.session.close().catch(() => {});
            return;
          }
          if (r.identity.key !== unit.key) {
            log.error(
              `multipath: path ${
                names[i]
              } leads to another logical unit (${r.identity.name}, not ${unit.name}); not used`,
            );
            await r.session.close().catch(() => {});
            return;
          }
          log.info(`multipath: path ${names[i]} logged in`);
          slot.join(r.session);
          return;
        } catch (e) {
          log.debug(`multipath: path ${names[i]}: login failed again: ${msg(e)}`);
          delay = Math.min(delay * 2, LATE_LOGIN_MS.max);
        }
      }
    })();
  }
  log.info(
    `multipath (${policy}): ${slots.filter((s) => s.session).length} of ${portals.length} ` +
      `path(s) to ${unit.name}: ${usedNames.join(", ")}`,
  );
  return {
    transport,
    first: reference.value.session,
    unitName: unit.name,
    report: () =>
      transport.paths.map((st, k) => {
        const session = used[k].session;
        return {
          portal: st.name,
          local: session?.info.local ?? "",
          state: st.state,
          downSince: st.downSince === null ? null : new Date(st.downSince).toISOString(),
          isid: session?.info.isid ?? "",
          tsih: session?.info.tsih ?? 0,
          failures: st.failures,
          reconnects: session?.reconnects ?? 0,
          commands: st.commands,
          bytes: st.bytes,
        };
      }),
  };
}
