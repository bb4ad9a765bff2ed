/**
 * Session configuration from what a user gives: an `iscsi://` URI, the
 * shared target options (initiator name, CHAP and mutual CHAP, CHAP
 * algorithms, digests, extra portals, recovery and command timeouts) and the
 * environment. Secrets come from files or the environment
 * (ISBOOT_CHAP_SECRET, ISBOOT_MUTUAL_SECRET), or, discouraged, from the
 * URI's `user%password@` part; they are read here into bytes and never
 * printed. The CLI's option table is src/cli/target_options.ts.
 *
 * @example
 * ```ts
 * const cfg = await sessionConfigFromUri("iscsi://192.0.2.1/iqn.2026-11.test:d/1", values, env);
 * const session = await loginSession(cfg, log);
 * ```
 */
import { InvalidInputError, OperationalError, UsageError } from "../errors.ts";
import { type ChapAlgorithmName, DEFAULT_CHAP_ALGORITHMS, parseChapAlgorithms } from "./chap.ts";
import type { ChapCredentials } from "./login.ts";
import type { DigestChoice } from "./negotiate.ts";
import type { SessionConfig } from "./session_config.ts";
import { type IscsiTargetUri, parsePortal, parseTargetUri, type Portal } from "./uri.ts";

/** Authentication and negotiation settings from the shared options. */
export interface TargetOptions {
  initiatorName: string;
  chap?: ChapCredentials;
  mutual?: ChapCredentials;
  chapAlgorithms: ChapAlgorithmName[];
  headerDigest: DigestChoice;
  dataDigest: DigestChoice;
}

/**
 * The values parseArgs returns for the shared target options
 * (src/cli/target_options.ts TARGET_OPTIONS; other keys ignored).
 */
export interface TargetOptionValues {
  initiator?: string | boolean;
  "chap-user"?: string | boolean;
  "chap-secret-file"?: string | boolean;
  "mutual-user"?: string | boolean;
  "mutual-secret-file"?: string | boolean;
  "chap-algorithms"?: string | boolean;
  "header-digest"?: string | boolean;
  "data-digest"?: string | boolean;
  /** Extra portals of the same target, `host[:port]` (repeatable `--portal`). */
  portal?: string | boolean | (string | boolean)[];
  /** Seconds commands wait for recovery; "none" or absent: forever. */
  "recovery-timeout"?: string | boolean;
  /** Seconds before a command is aborted and re-issued; "none", 0 or absent: never. */
  "command-timeout"?: string | boolean;
}

const NAME_RE =
  /^(iqn\.\d{4}-\d{2}\.[a-z0-9][a-z0-9.\-]*(:[^\s]*)?|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16,32})$/;

/**
 * The default initiator name: stable for the host, so relogins keep their
 * I_T nexus (RFC 7143 §4.2.7).
 *
 * @example
 * ```ts
 * defaultInitiatorName("Host-1"); // "iqn.2026-11.org.isboot:host-1"
 * ```
 */
export function defaultInitiatorName(hostname = safeHostname()): string {
  const h = hostname.toLowerCase().replace(/[^a-z0-9.\-]/g, "-").replace(/^-+|-+$/g, "") ||
    "localhost";
  return `iqn.2026-11.org.isboot:${h}`;
}

function safeHostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return "localhost";
  }
}

/** Check an iSCSI name (iqn./eui./naa., RFC 7143 §4.2.7.2). */
export function checkIscsiName(name: string, what: string): string {
  if (name.length > 223 || !NAME_RE.test(name)) {
    throw new InvalidInputError(
      `${what} '${
        name.slice(0, 64)
      }' is not a valid iSCSI name (iqn.YYYY-MM.domain[:id], eui., naa.)`,
    );
  }
  return name;
}

function str(v: string | boolean | undefined): string | undefined {
  return typeof v === "string" ? v : undefined;
}

async function readSecret(path: string, option: string): Promise<Uint8Array> {
  let b: Uint8Array;
  try {
    b = await Deno.readFile(path);
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound
      ? "no such file"
      : e instanceof Deno.errors.PermissionDenied
      ? "permission denied"
      : "unreadable";
    throw new OperationalError(`cannot read ${option} ${path}: ${why}`);
  }
  // A file written by `echo` ends in a newline that is not part of the secret.
  let end = b.length;
  if (end && b[end - 1] === 0x0a) end--;
  if (end && b[end - 1] === 0x0d) end--;
  if (end === 0) throw new InvalidInputError(`${option} ${path} is empty`);
  return b.slice(0, end);
}

function digest(v: string | undefined, option: string): DigestChoice {
  if (v === undefined) return "prefer-none";
  const l = v.toLowerCase();
  if (l === "crc32c") return "crc32c";
  if (l === "none") return "none";
  throw new UsageError(`${option} must be crc32c or none, not '${v}'`);
}

const encoder = new TextEncoder();

/**
 * Turn the shared option values (plus the URI's credentials, if any) into
 * typed settings, reading secret files. Throws UsageError for inconsistent
 * options; messages never contain a secret.
 *
 * @example
 * ```ts
 * const opts = await parseTargetOptions(p.values, ctx.env);
 * ```
 */
export async function parseTargetOptions(
  values: TargetOptionValues,
  env: (name: string) => string | undefined,
  uri?: Pick<IscsiTargetUri, "user" | "password">,
): Promise<TargetOptions> {
  const initiatorName = checkIscsiName(
    str(values.initiator) ?? defaultInitiatorName(),
    "--initiator",
  );
  const algText = str(values["chap-algorithms"]);
  let chapAlgorithms = [...DEFAULT_CHAP_ALGORITHMS];
  if (algText !== undefined) {
    const a = parseChapAlgorithms(algText);
    if (!a) {
      throw new UsageError(`--chap-algorithms: expected a list of sha3-256, sha256, sha1, md5`);
    }
    chapAlgorithms = a;
  }
  const chapUser = str(values["chap-user"]) ?? uri?.user;
  const chapFile = str(values["chap-secret-file"]);
  let chapSecret: Uint8Array | undefined;
  if (chapFile !== undefined) chapSecret = await readSecret(chapFile, "--chap-secret-file");
  else if (env("ISBOOT_CHAP_SECRET")) chapSecret = encoder.encode(env("ISBOOT_CHAP_SECRET"));
  else if (uri?.password) chapSecret = encoder.encode(uri.password);
  const mutualUser = str(values["mutual-user"]);
  const mutualFile = str(values["mutual-secret-file"]);
  let mutualSecret: Uint8Array | undefined;
  if (mutualFile !== undefined) mutualSecret = await readSecret(mutualFile, "--mutual-secret-file");
  else if (env("ISBOOT_MUTUAL_SECRET")) mutualSecret = encoder.encode(env("ISBOOT_MUTUAL_SECRET"));

  if (chapSecret && !chapUser) throw new UsageError("a CHAP secret was given without --chap-user");
  if (chapUser && !chapSecret) {
    throw new UsageError(
      "--chap-user needs a secret: --chap-secret-file FILE or ISBOOT_CHAP_SECRET",
    );
  }
  if (mutualUser && !mutualSecret) {
    throw new UsageError(
      "--mutual-user needs a secret: --mutual-secret-file FILE or ISBOOT_MUTUAL_SECRET",
    );
  }
  if (mutualFile !== undefined && !mutualUser) {
    throw new UsageError("--mutual-secret-file needs --mutual-user");
  }
  if (mutualUser && !chapUser) {
    throw new UsageError("mutual CHAP (--mutual-user) needs one-way CHAP (--chap-user) too");
  }
  return {
    initiatorName,
    ...(chapUser && chapSecret ? { chap: { user: chapUser, secret: chapSecret } } : {}),
    ...(mutualUser && mutualSecret ? { mutual: { user: mutualUser, secret: mutualSecret } } : {}),
    chapAlgorithms,
    headerDigest: digest(str(values["header-digest"]), "--header-digest"),
    dataDigest: digest(str(values["data-digest"]), "--data-digest"),
  };
}

/**
 * Parse a TARGET URI and the shared options into a SessionConfig for
 * loginSession(). `isidPurpose` makes the ISID stable (serve/attach/boot);
 * leave it out for one-off sessions such as probe.
 *
 * @example
 * ```ts
 * const cfg = await sessionConfigFromUri("iscsi://[::1]/iqn.2026-11.test:d/1", p.values, ctx.env);
 * ```
 */
export async function sessionConfigFromUri(
  uriText: string,
  values: TargetOptionValues,
  env: (name: string) => string | undefined,
  extra: Partial<
    Pick<
      SessionConfig,
      | "isidPurpose"
      | "commandTimeoutMs"
      | "nopIntervalMs"
      | "nopTimeoutMs"
      | "recoveryTimeoutMs"
      | "portals"
    >
  > = {},
): Promise<SessionConfig> {
  const uri = parseTargetUri(uriText);
  const o = await parseTargetOptions(values, env, uri);
  const portals = parsePortalOptions(values.portal);
  const recovery = parseRecoveryTimeout(values["recovery-timeout"]);
  const command = parseCommandTimeout(values["command-timeout"]);
  return {
    portal: { host: uri.host, port: uri.port },
    targetName: uri.targetName,
    lun: uri.lun,
    ...o,
    ...(portals.length ? { portals } : {}),
    ...(recovery !== undefined ? { recoveryTimeoutMs: recovery } : {}),
    ...(command !== undefined ? { commandTimeoutMs: command } : {}),
    ...extra,
  };
}

/**
 * `--portal host[:port]` values (repeatable): other portals of the same
 * target for failover during recovery.
 *
 * @example
 * ```ts
 * parsePortalOptions(["192.0.2.2", "[2001:db8::2]:3261"]);
 * // [{ host: "192.0.2.2", port: 3260 }, { host: "2001:db8::2", port: 3261 }]
 * ```
 */
export function parsePortalOptions(v: TargetOptionValues["portal"]): Portal[] {
  if (v === undefined) return [];
  const list = Array.isArray(v) ? v : [v];
  return list.map((x) => {
    if (typeof x !== "string") throw new UsageError("--portal needs host[:port]");
    try {
      return parsePortal(x);
    } catch (e) {
      throw new UsageError(`--portal: ${e instanceof Error ? e.message : String(e)}`);
    }
  });
}

/**
 * `--recovery-timeout SECONDS`: how long commands wait for a lost
 * connection to come back; "none" (or absent) = forever, 0 = no recovery.
 *
 * @example
 * ```ts
 * parseRecoveryTimeout("30"); // 30000
 * parseRecoveryTimeout("none"); // Infinity
 * ```
 */
export function parseRecoveryTimeout(v: string | boolean | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw new UsageError("--recovery-timeout needs SECONDS or none");
  if (v === "none") return Infinity;
  if (!/^\d{1,7}(\.\d{1,3})?$/.test(v)) {
    throw new UsageError(
      `--recovery-timeout must be seconds (0-9999999) or none, not '${v.slice(0, 32)}'`,
    );
  }
  return Math.round(Number(v) * 1000);
}

/**
 * `--command-timeout SECONDS`: a command without status after this long is
 * escalated (ABORT TASK, LOGICAL UNIT RESET, reconnect) and re-issued;
 * "none" or 0 = never (the default). Returns milliseconds, 0 for never.
 *
 * @example
 * ```ts
 * parseCommandTimeout("30"); // 30000
 * parseCommandTimeout("none"); // 0
 * ```
 */
export function parseCommandTimeout(v: string | boolean | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw new UsageError("--command-timeout needs SECONDS or none");
  if (v === "none") return 0;
  if (!/^\d{1,7}(\.\d{1,3})?$/.test(v)) {
    throw new UsageError(
      `--command-timeout must be seconds (0-9999999) or none, not '${v.slice(0, 32)}'`,
    );
  }
  return Math.round(Number(v) * 1000);
}

/**
 * A list of other LUNs to attach (`isboot.luns=`, `attach --luns`): "all",
 * or LUN numbers 0..16383 separated by commas (repeats dropped); null when
 * `text` is neither.
 *
 * @example
 * ```ts
 * parseLunList("all"); // "all"
 * parseLunList("3,1,3"); // [3, 1]
 * ```
 */
export function parseLunList(text: string): "all" | number[] | null {
  if (text === "all") return "all";
  if (!/^\d{1,5}(,\d{1,5})*$/.test(text)) return null;
  const luns = text.split(",").map(Number);
  return luns.every((n) => n < 16384) ? [...new Set(luns)] : null;
}
