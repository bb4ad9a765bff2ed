/**
 * iSCSI target names as users write them:
 *
 * - `iscsi://[user[%password]@]host[:port]/target-iqn/lun` (the qemu/libiscsi
 *   form; IPv6 literals in brackets);
 * - `iscsi:[user:password@]server:[protocol]:[port]:[lun]:target-iqn` (RFC 4173,
 *   as iPXE's `sanhook` and dracut's `netroot=` use it; empty fields take
 *   their defaults: TCP, 3260, LUN 0; the LUN is hexadecimal as RFC 4173 says).
 *
 * Errors are InvalidInputError (exit 3). A password in the URI is accepted
 * but never echoed: messages show the URI with the password replaced.
 */
import { InvalidInputError } from "../errors.ts";
import { ISCSI_PORT } from "./constants.ts";

/** A parsed target name. */
export interface IscsiTargetUri {
  host: string;
  port: number;
  targetName: string;
  lun: number;
  user?: string;
  /** Secret from the URI itself (discouraged: argv is world-readable). */
  password?: string;
}

/** A portal: where to connect. */
export interface Portal {
  host: string;
  port: number;
}

const MAX_LUN = 16383;

/** The URI with any password replaced by `***`, safe for messages. */
export function redactUri(text: string): string {
  if (text.startsWith("iscsi://")) {
    const rest = text.slice(8);
    const slash = rest.indexOf("/");
    const auth = slash < 0 ? rest : rest.slice(0, slash);
    const at = auth.lastIndexOf("@");
    if (at < 0) return text;
    const pct = auth.slice(0, at).indexOf("%");
    if (pct < 0) return text;
    return `iscsi://${auth.slice(0, pct)}%***${rest.slice(at)}`;
  }
  if (text.startsWith("iscsi:")) {
    const at = text.indexOf("@");
    if (at < 0) return text;
    const colon = text.indexOf(":", 6);
    return colon >= 0 && colon < at ? `${text.slice(0, colon)}:***${text.slice(at)}` : text;
  }
  return text;
}

function bad(text: string, why: string): InvalidInputError {
  return new InvalidInputError(`invalid iSCSI target '${redactUri(text)}': ${why}`);
}

function parsePort(s: string, text: string): number {
  if (s === "") return ISCSI_PORT;
  if (!/^\d{1,5}$/.test(s)) throw bad(text, `port '${s}' is not a number`);
  const p = Number(s);
  if (p < 1 || p > 65535) throw bad(text, `port ${p} out of range`);
  return p;
}

function checkHost(h: string, text: string): string {
  if (h.startsWith("[")) {
    if (!h.endsWith("]")) throw bad(text, "unterminated IPv6 literal");
    const inner = h.slice(1, -1);
    if (!/^[0-9a-fA-F:.]+(%[\w.-]+)?$/.test(inner) || !inner.includes(":")) {
      throw bad(text, "malformed IPv6 literal");
    }
    return inner;
  }
  if (h === "") throw bad(text, "missing host");
  if (!/^[A-Za-z0-9.\-_]+$/.test(h)) throw bad(text, `malformed host '${h}'`);
  return h;
}

function checkTargetName(n: string, text: string): string {
  if (n === "") throw bad(text, "missing target name");
  // RFC 7143 §4.2.7.2: iqn./eui./naa. names, lower case after stringprep;
  // we accept the character set and leave the rest to the target.
  if (!/^[A-Za-z0-9.\-:_]+$/.test(n) || n.length > 223) {
    throw bad(text, "malformed target name");
  }
  return n;
}

/**
 * Split `host[:port]` (IPv6 in brackets) into a portal.
 *
 * @example
 * ```ts
 * parsePortal("[::1]:3261"); // { host: "::1", port: 3261 }
 * ```
 */
export function parsePortal(text: string, defaultPort = ISCSI_PORT): Portal {
  let host: string;
  let portStr = "";
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close < 0) throw bad(text, "unterminated IPv6 literal");
    host = text.slice(0, close + 1);
    const rest = text.slice(close + 1);
    if (rest !== "") {
      if (!rest.startsWith(":")) throw bad(text, "junk after IPv6 literal");
      portStr = rest.slice(1);
      if (portStr === "") throw bad(text, "empty port");
    }
  } else {
    const colon = text.indexOf(":");
    if (colon >= 0 && text.indexOf(":", colon + 1) >= 0) {
      throw bad(text, "IPv6 addresses must be in brackets");
    }
    host = colon < 0 ? text : text.slice(0, colon);
    if (colon >= 0) {
      portStr = text.slice(colon + 1);
      if (portStr === "") throw bad(text, "empty port");
    }
  }
  const port = portStr === "" ? defaultPort : parsePort(portStr, text);
  return { host: checkHost(host, text), port };
}

function pctDecode(s: string, text: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw bad(text, "bad percent-encoding");
  }
}

/**
 * Parse either target-name form.
 *
 * @example
 * ```ts
 * parseTargetUri("iscsi://[::1]:3260/iqn.2026-11.test:disk1/1");
 * parseTargetUri("iscsi:10.0.2.2::3260:1:iqn.2026-11.test:disk1");
 * ```
 */
export function parseTargetUri(text: string): IscsiTargetUri {
  if (text.startsWith("iscsi://")) return parseUrlForm(text);
  if (text.startsWith("iscsi:")) return parseRfc4173(text);
  throw bad(text, "expected iscsi://host[:port]/iqn/lun or iscsi:server:proto:port:lun:iqn");
}

function parseUrlForm(text: string): IscsiTargetUri {
  const rest = text.slice("iscsi://".length);
  const slash = rest.indexOf("/");
  if (slash < 0) throw bad(text, "missing /target-iqn/lun");
  const authority = rest.slice(0, slash);
  const path = rest.slice(slash + 1);
  const at = authority.lastIndexOf("@");
  let user: string | undefined;
  let password: string | undefined;
  let hostPort = authority;
  if (at >= 0) {
    const cred = authority.slice(0, at);
    hostPort = authority.slice(at + 1);
    const pct = cred.indexOf("%");
    user = pctDecode(pct < 0 ? cred : cred.slice(0, pct), text);
    if (pct >= 0) password = pctDecode(cred.slice(pct + 1), text);
    if (user === "") throw bad(text, "empty user name");
  }
  const portal = parsePortal(hostPort);
  const parts = path.split("/");
  if (parts.length !== 2) throw bad(text, "path must be /target-iqn/lun");
  const targetName = checkTargetName(pctDecode(parts[0], text), text);
  if (!/^\d{1,5}$/.test(parts[1])) throw bad(text, `LUN '${parts[1]}' is not a number`);
  const lun = Number(parts[1]);
  if (lun > MAX_LUN) throw bad(text, `LUN ${lun} out of range`);
  return {
    ...portal,
    targetName,
    lun,
    ...(user !== undefined ? { user } : {}),
    ...(password !== undefined ? { password } : {}),
  };
}

function parseRfc4173(text: string): IscsiTargetUri {
  let rest = text.slice("iscsi:".length);
  let user: string | undefined;
  let password: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    // dracut's extension: iscsi:user:password@server:...
    const cred = rest.slice(0, at);
    rest = rest.slice(at + 1);
    const colon = cred.indexOf(":");
    user = colon < 0 ? cred : cred.slice(0, colon);
    if (colon >= 0) password = cred.slice(colon + 1);
    if (user === "") throw bad(text, "empty user name");
  }
  let server: string;
  if (rest.startsWith("[")) {
    const close = rest.indexOf("]");
    if (close < 0) throw bad(text, "unterminated IPv6 literal");
    server = rest.slice(0, close + 1);
    rest = rest.slice(close + 1);
  } else {
    const colon = rest.indexOf(":");
    server = colon < 0 ? rest : rest.slice(0, colon);
    rest = colon < 0 ? "" : rest.slice(colon);
  }
  if (!rest.startsWith(":")) throw bad(text, "expected server:protocol:port:lun:target-iqn");
  const fields = rest.slice(1).split(":");
  if (fields.length < 4) throw bad(text, "expected server:protocol:port:lun:target-iqn");
  const [proto, portStr, lunStr] = fields;
  if (proto !== "" && proto !== "6" && proto.toLowerCase() !== "tcp") {
    throw bad(text, `protocol '${proto}' is not TCP (6)`);
  }
  const port = parsePort(portStr, text);
  let lun = 0;
  if (lunStr !== "") {
    // RFC 4173: hexadecimal; SAM-style "0001-0000-..." takes the first level.
    const first = lunStr.split("-")[0];
    if (!/^[0-9a-fA-F]{1,4}$/.test(first)) throw bad(text, `LUN '${lunStr}' is not hexadecimal`);
    lun = Number.parseInt(first, 16);
    if (lun > MAX_LUN) throw bad(text, `LUN ${lun} out of range`);
  }
  const targetName = checkTargetName(fields.slice(3).join(":"), text);
  return {
    host: checkHost(server, text),
    port,
    targetName,
    lun,
    ...(user !== undefined ? { user } : {}),
    ...(password !== undefined ? { password } : {}),
  };
}

/**
 * Format a target as an `iscsi://` URI without any password.
 *
 * @example
 * ```ts
 * formatTargetUri({ host: "::1", port: 3260, targetName: "iqn.x:y", lun: 1 });
 * // "iscsi://[::1]:3260/iqn.x:y/1"
 * ```
 */
export function formatTargetUri(t: IscsiTargetUri): string {
  const user = t.user ? `${encodeURIComponent(t.user)}@` : "";
  return `iscsi://${user}${formatPortal(t)}/${t.targetName}/${t.lun}`;
}

/** `host:port`, IPv6 in brackets. */
export function formatPortal(p: Portal): string {
  return p.host.includes(":") ? `[${p.host}]:${p.port}` : `${p.host}:${p.port}`;
}
