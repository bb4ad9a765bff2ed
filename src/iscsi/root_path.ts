/**
 * RFC 4173 iSCSI root paths, `iscsi:SERVER:PROTO:PORT:LUN:TARGETNAME`, as
 * dracut's `netroot=` takes them (with its `USER:PASS[:RUSER:RPASS]@`
 * credentials prefix).
 * @module
 */
import { boundedInt } from "../decimal.ts";
import { InvalidInputError } from "../errors.ts";
import { parseIp } from "../net/addr.ts";

/** An RFC 4173 iSCSI root path (`netroot=iscsi:...`). */
export interface NetRoot {
  readonly server: string;
  readonly port: number;
  readonly lun: number;
  readonly targetName: string;
  readonly chapUser?: string;
  readonly chapSecret?: string;
  readonly mutualUser?: string;
  readonly mutualSecret?: string;
}

/**
 * Parse an RFC 4173 root path `iscsi:SERVER:PROTO:PORT:LUN:TARGETNAME`, with
 * dracut's optional `USER:PASS[:RUSER:RPASS]@` prefix. SERVER may be an IPv6
 * address in brackets; PROTO must be empty or 6 (TCP); PORT defaults to 3260,
 * LUN to 0. TARGETNAME may itself contain colons (IQNs do).
 *
 * @example
 * ```ts
 * parseNetRoot("iscsi:10.0.2.2::3260:1:iqn.2026-11.test:disk1").lun; // 1
 * ```
 */
export function parseNetRoot(text: string): NetRoot {
  const bad = (why: string) =>
    new InvalidInputError(`netroot: ${why} (form iscsi:SERVER:PROTO:PORT:LUN:TARGET)`);
  if (!text.startsWith("iscsi:")) throw bad("not an iscsi: root path");
  let rest = text.slice("iscsi:".length);
  let creds: string[] = [];
  // Credentials end at the last '@' before the server field; IQNs do not contain '@'.
  const at = rest.lastIndexOf("@");
  if (at >= 0) {
    creds = rest.slice(0, at).split(":");
    rest = rest.slice(at + 1);
    if (creds.length !== 2 && creds.length !== 4) {
      throw bad("credentials must be USER:PASS[:RUSER:RPASS]");
    }
    if (creds.some((c) => c === "")) throw bad("empty CHAP user or secret");
  }
  let server: string;
  if (rest.startsWith("[")) {
    const close = rest.indexOf("]");
    if (close < 0) throw bad("unclosed '[' in server");
    server = rest.slice(1, close);
    if (parseIp(server)?.family !== 6) throw bad(`'${server}' is not an IPv6 address`);
    rest = rest.slice(close + 1);
    if (!rest.startsWith(":")) throw bad("':' expected after ']'");
    rest = rest.slice(1);
  } else {
    const c = rest.indexOf(":");
    if (c < 0) throw bad("too few fields");
    server = rest.slice(0, c);
    rest = rest.slice(c + 1);
  }
  if (server === "") throw bad("empty server");
  const fields = rest.split(":");
  if (fields.length < 4) throw bad("too few fields");
  const [proto, portText, lunText] = fields;
  const targetName = fields.slice(3).join(":");
  if (proto !== "" && proto !== "6") throw bad(`protocol '${proto}' is not TCP (6)`);
  const port = portText === "" ? 3260 : boundedInt(portText, 1, 65535);
  if (port === null) throw bad(`bad port '${portText}'`);
  const lun = lunText === "" ? 0 : parseLun(lunText);
  if (lun === null) throw bad(`bad LUN '${lunText}'`);
  if (targetName === "") throw bad("empty target name");
  if (targetName.length > 223) throw bad("target name longer than 223 bytes (RFC 3720 §3.2.6.1)");
  return {
    server,
    port,
    lun,
    targetName,
    ...(creds.length >= 2 ? { chapUser: creds[0], chapSecret: creds[1] } : {}),
    ...(creds.length === 4 ? { mutualUser: creds[2], mutualSecret: creds[3] } : {}),
  };
}

/**
 * RFC 4173 §5: the LUN is hexadecimal in the SAM form, up to four 16-bit groups
 * separated by '-' or written as 16 digits; the first group carries the LUN
 * (flat/peripheral addressing). iPXE reads it the same way: "1" is LUN 1, "10" is LUN 16.
 */
function parseLun(text: string): number | null {
  let groups: string[];
  if (text.includes("-")) groups = text.split("-");
  else if (text.length === 16) groups = text.match(/.{4}/g)!;
  else groups = [text];
  if (groups.length > 4 || groups.some((g) => !/^[0-9A-Fa-f]{1,4}$/.test(g))) return null;
  return parseInt(groups[0], 16) & 0x3fff;
}
