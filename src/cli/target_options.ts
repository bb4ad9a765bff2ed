/**
 * Options shared by every command that logs in to a target (`discover`,
 * `probe`, `serve`, `attach`): initiator name, CHAP and mutual CHAP, CHAP
 * algorithms, digests, failover portals, recovery and command timeouts. The parsing
 * lives in src/iscsi/config.ts (re-exported here); this file holds the
 * parseArgs table and the help text.
 *
 * @example
 * ```ts
 * const p = parseCommand(args, TARGET_OPTIONS, USAGE, ctx);
 * const cfg = await sessionConfigFromUri(p.positionals[0], p.values, ctx.env);
 * const session = await loginSession(cfg, ctx.log);
 * ```
 */
import type { ParseArgsConfig } from "node:util";
import { UsageError } from "../errors.ts";
import type { MultipathPolicy } from "../scsi/multipath.ts";

export {
  checkIscsiName,
  defaultInitiatorName,
  parseCommandTimeout,
  parsePortalOptions,
  parseRecoveryTimeout,
  parseTargetOptions,
  sessionConfigFromUri,
  type TargetOptions,
  type TargetOptionValues,
} from "../iscsi/config.ts";

type Options = NonNullable<ParseArgsConfig["options"]>;

/** parseArgs definitions of the shared target options. */
export const TARGET_OPTIONS = {
  initiator: { type: "string" },
  "chap-user": { type: "string" },
  "chap-secret-file": { type: "string" },
  "mutual-user": { type: "string" },
  "mutual-secret-file": { type: "string" },
  "chap-algorithms": { type: "string" },
  "header-digest": { type: "string" },
  "data-digest": { type: "string" },
  portal: { type: "string", multiple: true },
  "recovery-timeout": { type: "string" },
  "command-timeout": { type: "string" },
} as const satisfies Options;

/** Help text for the shared options, to append to a command's usage. */
export const TARGET_OPTIONS_HELP = `target options:
  --initiator IQN            initiator name (default iqn.2026-11.org.isboot:<hostname>)
  --chap-user NAME           CHAP user name (or the user part of an iscsi:// URI)
  --chap-secret-file FILE    CHAP secret (or env ISBOOT_CHAP_SECRET)
  --mutual-user NAME         the target's CHAP name: turns on mutual CHAP
  --mutual-secret-file FILE  the target's CHAP secret (or env ISBOOT_MUTUAL_SECRET)
  --chap-algorithms LIST     CHAP_A offer, strongest first (default sha3-256,sha256,sha1,md5)
  --header-digest crc32c|none  require or refuse CRC32C header digests
  --data-digest crc32c|none    require or refuse CRC32C data digests
                             (default for both: none preferred, CRC32C if the target requires it)
  --portal HOST[:PORT]       another portal of the same target, tried when the
                             first cannot be reached (repeatable; failover)
  --recovery-timeout SECONDS how long I/O waits for a lost connection to come back
                             before failing (default none: wait forever; 0: no recovery)
  --command-timeout SECONDS  a command without status after this long gets ABORT TASK,
                             then LOGICAL UNIT RESET, then a reconnect, and is issued
                             again (default none: wait for the target)
`;

/** parseArgs definition of `--multipath` (serve and attach: the commands that keep a session). */
export const MULTIPATH_OPTION = { multipath: { type: "string" } } as const satisfies Options;

/** Help text of {@link MULTIPATH_OPTION}. */
export const MULTIPATH_HELP = `  --multipath off|failover|round-robin
                             with --portal: log in on every portal at once, each
                             a path of its own, and when one fails go on at once on
                             another (failover: one active path; round-robin: all);
                             off (default): the other portals only for recovery
`;

/**
 * The `--multipath` value; undefined for off.
 *
 * @example
 * ```ts
 * parseMultipath("failover"); // "failover"
 * parseMultipath(undefined); // undefined
 * ```
 */
export function parseMultipath(v: string | undefined): MultipathPolicy | undefined {
  if (v === undefined || v === "off") return undefined;
  if (v === "failover" || v === "round-robin") return v;
  throw new UsageError(`--multipath '${v}': expected off, failover or round-robin`);
}

/**
 * `--multipath` checked against the `--portal` values it needs: undefined
 * for off; a usage error when there is no second portal to make a path of.
 *
 * @example
 * ```ts
 * multipathFor("round-robin", ["192.0.2.2"]); // "round-robin"
 * ```
 */
export function multipathFor(
  v: string | undefined,
  portals: string | string[] | undefined,
): MultipathPolicy | undefined {
  const policy = parseMultipath(v);
  if (policy && (portals === undefined || portals.length === 0)) {
    throw new UsageError(`--multipath ${policy} needs at least one --portal (a second path)`);
  }
  return policy;
}
