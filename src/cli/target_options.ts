/**
 * Options shared by every command that logs in to a target (`discover`,
 * `probe`, `serve`, `attach`): initiator name, CHAP and mutual CHAP, CHAP
 * algorithms, digests. Secrets come from files or the environment
 * (ISBOOT_CHAP_SECRET, ISBOOT_MUTUAL_SECRET), or, discouraged, from the
 * URI's `user%password@` part; they are read here into bytes and never
 * printed.
 *
 * @example
 * ```ts
 * const p = parseCommand(args, TARGET_OPTIONS, USAGE, ctx);
 * const cfg = await sessionConfigFromUri(p.positionals[0], p.values, ctx.env);
 * const session = await loginSession(cfg, ctx.log);
 * ```
 */
import type { ParseArgsConfig } from "node:util";
import { InvalidInputError, OperationalError, UsageError } from "../errors.ts";
import {
  type ChapAlgorithmName,
  DEFAULT_CHAP_ALGORITHMS,
  parseChapAlgorithms,
} from "../iscsi/chap.ts";
import type { ChapCredentials } from "../iscsi/login.ts";
import type { DigestChoice } from "../iscsi/negotiate.ts";
import type { SessionConfig } from "../iscsi/session.ts";
import { type IscsiTargetUri, parseTargetUri } from "../iscsi/uri.ts";

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
`;

/** Authentication and negotiation settings from the shared options. */
export interface TargetOptions {
  initiatorName: string;
  chap?: ChapCredentials;
  mutual?: ChapCredentials;
  chapAlgorithms: ChapAlgorithmName[];
  headerDigest: DigestChoice;
  dataDigest: DigestChoice;
}

/** The values parseArgs returns for TARGET_OPTIONS (other keys ignored). */
export type TargetOptionValues = { [K in keyof typeof TARGET_OPTIONS]?: string | boolean };

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
    Pick<SessionConfig, "isidPurpose" | "commandTimeoutMs" | "nopIntervalMs" | "nopTimeoutMs">
  > = {},
): Promise<SessionConfig> {
  const uri = parseTargetUri(uriText);
  const o = await parseTargetOptions(values, env, uri);
  return {
    portal: { host: uri.host, port: uri.port },
    targetName: uri.targetName,
    lun: uri.lun,
    ...o,
    ...extra,
  };
}
