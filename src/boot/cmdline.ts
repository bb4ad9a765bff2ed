/**
 * The kernel command line as `isboot boot` reads it (/proc/cmdline).
 *
 * Splitting follows the kernel's own `next_arg()` (lib/cmdline.c / kernel/params.c):
 * arguments are separated by unquoted whitespace, a double quote toggles quoting,
 * and the quotes around a value (`opt="a b"`) or a whole argument (`"a b"`) are
 * removed. Everything after a lone `--` belongs to init and is ignored here.
 *
 * Options honoured, with dracut's meaning where dracut has the name:
 * - `rd.iscsi.firmware`, `rd.iscsi.ibft`, `iscsi_firmware`: boot from the iBFT.
 * - `ip=ibft`: configure the network from the iBFT (implies the above).
 * - `ip=CLIENT:[PEER]:GATEWAY:NETMASK:HOSTNAME:IFACE:none[:MTU[:MAC]]` static
 *   network for `netroot=` on machines without an iBFT (dracut's form; `off`,
 *   `none` and `static` all mean static here; DHCP forms are refused).
 * - `nameserver=IP` (repeatable).
 * - `rd.iscsi.initiator=IQN`: the initiator name (overrides the iBFT's).
 * - `netroot=iscsi:[USER:PASS[:RUSER:RPASS]@]SERVER:PROTO:PORT:LUN:TARGET`
 *   (RFC 4173, dracut's credentials prefix), repeatable.
 * - `rd.iscsi.username=`, `rd.iscsi.password=`, `rd.iscsi.in.username=`,
 *   `rd.iscsi.in.password=`: CHAP and mutual CHAP for `netroot=` targets.
 * - `isboot=off`: do nothing (rescue).
 * - `isboot.device=/dev/nbdN`, `isboot.timeout=S`, `isboot.link_timeout=S`,
 *   `isboot.recovery_timeout=S|forever` (default forever; 0: no recovery),
 *   `isboot.command_timeout=S|none` (default 30; abort, reset, reconnect, re-issue),
 *   `isboot.header_digest=crc32c|none`,
 *   `isboot.data_digest=crc32c|none`, `isboot.debug`, `isboot.source=auto|acpi|sysfs|mem`,
 *   `isboot.handoff=all|none|LIST` (ifupdown,networkd,nm), `isboot.poll_us=N` (busy-poll
 *   window of the socket reactor, 0..1000000 µs; 0 turns busy polling off). `-` and `_` are the same
 *   in isboot option names, as in kernel module parameters.
 *
 * Secrets from the command line (netroot= credentials, rd.iscsi.password=) are
 * kept in `BootCmdline` but never printed: /proc/cmdline is world-readable,
 * which the README says plainly.
 *
 * @example
 * ```ts
 * const c = parseBootCmdline("BOOT_IMAGE=/vmlinuz root=UUID=abcd ip=ibft isboot.timeout=60");
 * c.firmware;   // true
 * c.timeoutMs;  // 60000
 * ```
 */
import { InvalidInputError } from "../errors.ts";
import { type IpAddress, netmaskToPrefix, normalizeMac, parseIp, requireIp } from "../net/addr.ts";
import { HANDOFF_KINDS, type HandoffKind } from "../net/handoff.ts";

/** One `name[=value]` argument; value is null when there was no `=`. */
export interface KernelArg {
  readonly name: string;
  readonly value: string | null;
}

const SPACE = /[ \t\n\v\f\r]/;

/**
 * Split a command line exactly as the kernel's `next_arg()` does.
 *
 * @example
 * ```ts
 * splitKernelCmdline('a="x y" b'); // [{name:"a",value:"x y"},{name:"b",value:null}]
 * ```
 */
export function splitKernelCmdline(line: string): KernelArg[] {
  const out: KernelArg[] = [];
  let s = line.replace(/^[ \t\n\v\f\r]+/, "");
  while (s.length > 0) {
    let quoted = false;
    let inQuote = false;
    let start = 0;
    if (s[0] === '"') {
      start = 1;
      inQuote = true;
      quoted = true;
    }
    let i = start;
    let equals = -1;
    for (; i < s.length; i++) {
      if (SPACE.test(s[i]) && !inQuote) break;
      // The kernel keeps `equals == 0` as "not found", so an '=' first in the argument is part of the name.
      if (equals < 0 && s[i] === "=" && i > start) equals = i;
      if (s[i] === '"') inQuote = !inQuote;
    }
    // i is the end of this argument (exclusive); the kernel NULs a closing quote.
    let end = i;
    const endsWithQuote = end > start && s[end - 1] === '"';
    let name: string;
    let value: string | null;
    if (equals < 0) {
      if (quoted && endsWithQuote) end--;
      name = s.slice(start, end);
      value = null;
    } else {
      name = s.slice(start, equals);
      let vStart = equals + 1;
      if (s[vStart] === '"') {
        vStart++;
        if (endsWithQuote) end--;
      } else if (quoted && endsWithQuote) end--;
      value = s.slice(vStart, Math.max(vStart, end));
    }
    out.push({ name, value });
    s = s.slice(i < s.length ? i + 1 : i).replace(/^[ \t\n\v\f\r]+/, "");
    if (name === "--" && value === null) break;
  }
  return out.filter((a) => !(a.name === "--" && a.value === null));
}

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

/** A static `ip=` network (dracut form), or `ip=ibft`. */
export interface IpSpec {
  readonly address: IpAddress;
  readonly prefixLength: number;
  readonly peer?: IpAddress;
  readonly gateway?: IpAddress;
  readonly hostname?: string;
  readonly iface?: string;
  readonly mtu?: number;
  readonly mac?: string;
}

export type Digest = "crc32c" | "none";
export type IbftSource = "auto" | "acpi" | "sysfs" | "mem";

/** What the command line asks of `isboot boot`. */
export interface BootCmdline {
  /** `isboot=off`: do nothing. */
  readonly disabled: boolean;
  /** rd.iscsi.firmware / rd.iscsi.ibft / ip=ibft: the iBFT names the boot. */
  readonly firmware: boolean;
  /** ip=ibft: the network comes from the iBFT. */
  readonly ipFromIbft: boolean;
  /** Something on the line asked for an iSCSI boot (so failing is fatal). */
  readonly requested: boolean;
  readonly initiator?: string;
  readonly netroots: readonly NetRoot[];
  readonly ip: readonly IpSpec[];
  readonly nameservers: readonly IpAddress[];
  readonly device?: string;
  readonly timeoutMs: number;
  readonly linkTimeoutMs: number;
  readonly recoveryTimeoutMs: number;
  /** A command without status after this long is escalated and re-issued; 0: never. */
  readonly commandTimeoutMs: number;
  readonly headerDigest?: Digest;
  readonly dataDigest?: Digest;
  readonly debug: boolean;
  readonly source: IbftSource;
  readonly handoff: readonly HandoffKind[];
  /** Busy-poll window of the socket reactor in µs (sys/reactor.ts); absent: its default. */
  readonly pollUs?: number;
  readonly root?: string;
  /** Unknown `isboot.*` names, for a warning. */
  readonly unknown: readonly string[];
}

/** Defaults; documented in the README's command-line table. */
export const BOOT_DEFAULTS = {
  timeoutMs: 180_000,
  linkTimeoutMs: 30_000,
  /** The root disk waits for the target as long as it takes: an I/O error would cost the root filesystem. */
  recoveryTimeoutMs: Infinity,
  /**
   * A hung command is aborted (then its LU reset, then the connection
   * dropped) and issued again after 30 s, Linux's SCSI disk default; with
   * recovery forever this never turns into an I/O error.
   */
  commandTimeoutMs: 30_000,
} as const;

/**
 * The names `isboot boot` acts on outside its own `isboot.` namespace: dracut's,
 * open-iscsi's and the kernel's, with their meaning. parseBootCmdline's switch
 * over them is exhaustive, so a name handled there is listed here and back
 * (the man page's KERNEL COMMAND LINE section is checked against this list).
 */
export const GENERAL_OPTIONS = [
  "rd.iscsi.firmware",
  "rd.iscsi.ibft",
  "iscsi_firmware",
  "ip",
  "nameserver",
  "rd.iscsi.initiator",
  "netroot",
  "rd.iscsi.username",
  "rd.iscsi.password",
  "rd.iscsi.in.username",
  "rd.iscsi.in.password",
  "root",
  "isboot",
] as const;
type GeneralOption = typeof GENERAL_OPTIONS[number];

/** isboot's own options, `isboot.NAME` (`-` and `_` alike in NAME); exhaustive like the above. */
export const ISBOOT_OPTIONS = [
  "device",
  "timeout",
  "link_timeout",
  "recovery_timeout",
  "command_timeout",
  "header_digest",
  "data_digest",
  "debug",
  "source",
  "handoff",
  "poll_us",
] as const;
type IsbootOption = typeof ISBOOT_OPTIONS[number];

/** Every option name parseBootCmdline recognises, as written on the command line. */
export const KERNEL_CMDLINE_OPTIONS: readonly string[] = [
  ...GENERAL_OPTIONS,
  ...ISBOOT_OPTIONS.map((o) => `isboot.${o}`),
];

function unhandled(name: never): never {
  throw new Error(`kernel command line option ${name} has no case`);
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
  const port = portText === "" ? 3260 : strictInt(portText, 1, 65535);
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

function strictInt(text: string, min: number, max: number): number | null {
  if (!/^\d{1,9}$/.test(text)) return null;
  const n = Number(text);
  return n >= min && n <= max ? n : null;
}

function seconds(name: string, value: string | null): number {
  const n = value === null ? null : /^\d{1,7}(\.\d{1,3})?$/.test(value) ? Number(value) : null;
  if (n === null) {
    throw new InvalidInputError(
      `kernel command line: ${name}=${value ?? ""}: not a number of seconds`,
    );
  }
  return Math.round(n * 1000);
}

function truthy(value: string | null): boolean {
  return value === null || !["0", "no", "off", "false"].includes(value.toLowerCase());
}

/**
 * Parse dracut's `ip=` forms. Returns "ibft" for `ip=ibft`, an IpSpec for the
 * static form; DHCP/auto forms are refused since isboot has no DHCP client
 * (the iBFT carries the firmware's lease instead).
 */
export function parseIpArg(value: string): IpSpec | "ibft" {
  if (value === "ibft") return "ibft";
  const bad = (why: string) => new InvalidInputError(`ip=${value}: ${why}`);
  // Fields are ':'-separated; IPv6 addresses are in brackets.
  const fields: string[] = [];
  let cur = "";
  let depth = 0;
  for (const ch of value) {
    if (ch === "[") depth++;
    if (ch === "]") depth--;
    if (ch === ":" && depth === 0) {
      fields.push(cur);
      cur = "";
    } else cur += ch;
  }
  fields.push(cur);
  if (fields.length < 7) {
    throw bad("isboot takes ip=ibft or the static form CLIENT:[PEER]:GW:NETMASK:HOST:IFACE:none");
  }
  const [client, peer, gw, mask, host, iface, autoconf, mtuText, ...macParts] = fields;
  if (!["none", "off", "static"].includes(autoconf)) {
    throw bad(`autoconf '${autoconf}' needs a DHCP client; use ip=ibft or a static address`);
  }
  let address: IpAddress;
  let prefixLength: number;
  const slash = client.replace(/^\[|\]$/g, "").split("/");
  address = requireIp(slash[0], "ip= client address");
  if (slash.length === 2) {
    const p = strictInt(slash[1], 0, address.family === 4 ? 32 : 128);
    if (p === null) throw bad(`bad prefix '${slash[1]}'`);
    prefixLength = p;
  } else if (mask !== "") {
    const m = parseIp(mask);
    const fromMask = m && m.family === address.family ? netmaskToPrefix(m) : null;
    const fromNum = strictInt(mask, 0, address.family === 4 ? 32 : 128);
    if (fromMask === null && fromNum === null) throw bad(`bad netmask '${mask}'`);
    prefixLength = (fromMask ?? fromNum)!;
  } else prefixLength = address.family === 4 ? 24 : 64;
  address = { ...address };
  const mac = macParts.length ? normalizeMac(macParts.join(":")) : undefined;
  if (mac === null) throw bad(`bad MAC '${macParts.join(":")}'`);
  const mtu = mtuText ? strictInt(mtuText, 68, 65535) : undefined;
  if (mtu === null) throw bad(`bad MTU '${mtuText}'`);
  return {
    address,
    prefixLength,
    ...(peer ? { peer: requireIp(peer, "ip= peer") } : {}),
    ...(gw ? { gateway: requireIp(gw, "ip= gateway") } : {}),
    ...(host ? { hostname: host } : {}),
    ...(iface ? { iface } : {}),
    ...(mtu !== undefined ? { mtu } : {}),
    ...(mac ? { mac } : {}),
  };
}

/**
 * Parse /proc/cmdline text into what `isboot boot` needs. Invalid values of
 * options isboot acts on are InvalidInputError (exit 3) with a one-line message;
 * the last occurrence of a single-valued option wins, as in dracut's getarg.
 */
export function parseBootCmdline(line: string): BootCmdline {
  let disabled = false, firmware = false, ipFromIbft = false, requested = false, debug = false;
  let initiator: string | undefined, device: string | undefined, root: string | undefined;
  let timeoutMs: number = BOOT_DEFAULTS.timeoutMs;
  let linkTimeoutMs: number = BOOT_DEFAULTS.linkTimeoutMs;
  let recoveryTimeoutMs: number = BOOT_DEFAULTS.recoveryTimeoutMs;
  let commandTimeoutMs: number = BOOT_DEFAULTS.commandTimeoutMs;
  let headerDigest: Digest | undefined, dataDigest: Digest | undefined;
  let pollUs: number | undefined;
  let source: IbftSource = "auto";
  let handoff: HandoffKind[] = [...HANDOFF_KINDS];
  const netrootTexts: string[] = [];
  const ip: IpSpec[] = [];
  const nameservers: IpAddress[] = [];
  const unknown: string[] = [];
  const chap: { user?: string; secret?: string; mutualUser?: string; mutualSecret?: string } = {};

  for (const { name, value } of splitKernelCmdline(line)) {
    const v = value ?? "";
    if ((GENERAL_OPTIONS as readonly string[]).includes(name)) {
      const general = name as GeneralOption;
      switch (general) {
        case "rd.iscsi.firmware":
        case "rd.iscsi.ibft":
        case "iscsi_firmware":
          if (truthy(value)) firmware = requested = true;
          continue;
        case "ip":
          if (v === "ibft") {
            ipFromIbft = firmware = requested = true;
          } else if (/^(dhcp6?|on|any|auto6|either6|link6|off|none)$/.test(v)) {
            // A bare ip=dhcp etc. is for other tools; isboot only acts on ibft or static.
          } else ip.push(parseIpArg(v) as IpSpec);
          continue;
        case "nameserver":
          nameservers.push(requireIp(v, "nameserver="));
          continue;
        case "rd.iscsi.initiator":
          if (!/^(iqn|eui|naa)\.\S{1,219}$/.test(v)) {
            throw new InvalidInputError(
              `rd.iscsi.initiator=${v}: not an iSCSI name (iqn./eui./naa.)`,
            );
          }
          initiator = v;
          continue;
        case "netroot":
          if (v.startsWith("iscsi:")) {
            netrootTexts.push(v);
            requested = true;
          }
          continue;
        case "rd.iscsi.username":
          chap.user = v;
          continue;
        case "rd.iscsi.password":
          chap.secret = v;
          continue;
        case "rd.iscsi.in.username":
          chap.mutualUser = v;
          continue;
        case "rd.iscsi.in.password":
          chap.mutualSecret = v;
          continue;
        case "root":
          root = v;
          continue;
        case "isboot":
          disabled = ["off", "0", "no", "false"].includes(v);
          continue;
        default:
          unhandled(general);
      }
    }
    if (!name.startsWith("isboot.")) continue;
    const opt = name.slice("isboot.".length).replaceAll("-", "_");
    if (!(ISBOOT_OPTIONS as readonly string[]).includes(opt)) {
      unknown.push(name);
      continue;
    }
    requested = true;
    const own = opt as IsbootOption;
    switch (own) {
      case "device": {
        const m = /^(?:\/dev\/)?nbd(\d{1,4})$/.exec(v) ?? /^(\d{1,4})$/.exec(v);
        if (!m) throw new InvalidInputError(`isboot.device=${v}: expected /dev/nbdN`);
        device = `/dev/nbd${Number(m[1])}`;
        break;
      }
      case "timeout":
        timeoutMs = seconds(name, value);
        break;
      case "link_timeout":
        linkTimeoutMs = seconds(name, value);
        break;
      case "poll_us":
        if (value === null || !/^\d{1,7}$/.test(value) || Number(value) > 1_000_000) {
          throw new InvalidInputError(
            `kernel command line: ${name}=${value ?? ""}: expected microseconds, 0..1000000`,
          );
        }
        pollUs = Number(value);
        break;
      case "recovery_timeout":
        recoveryTimeoutMs = value === "forever" || value === "infinity"
          ? Infinity
          : seconds(name, value);
        break;
      case "command_timeout":
        commandTimeoutMs = value === "none" ? 0 : seconds(name, value);
        break;
      case "header_digest":
      case "data_digest": {
        const d = v.toLowerCase();
        if (d !== "crc32c" && d !== "none") {
          throw new InvalidInputError(`${name}=${v}: expected crc32c or none`);
        }
        if (opt === "header_digest") headerDigest = d;
        else dataDigest = d;
        break;
      }
      case "debug":
        debug = truthy(value);
        break;
      case "source":
        if (!["auto", "acpi", "sysfs", "mem"].includes(v)) {
          throw new InvalidInputError(`${name}=${v}: expected auto, acpi, sysfs or mem`);
        }
        source = v as IbftSource;
        break;
      case "handoff": {
        if (v === "all") handoff = [...HANDOFF_KINDS];
        else if (v === "none") handoff = [];
        else {
          const kinds = v.split(",");
          const badKind = kinds.find((k) => !(HANDOFF_KINDS as readonly string[]).includes(k));
          if (badKind !== undefined) {
            throw new InvalidInputError(
              `${name}=${v}: '${badKind}' is not all, none, ifupdown, networkd or nm`,
            );
          }
          handoff = kinds as HandoffKind[];
        }
        break;
      }
      default:
        unhandled(own);
    }
  }
  const netroots = netrootTexts.map(parseNetRoot).map((n) =>
    n.chapUser === undefined && chap.user !== undefined && chap.secret !== undefined
      ? {
        ...n,
        chapUser: chap.user,
        chapSecret: chap.secret,
        ...(chap.mutualUser !== undefined && chap.mutualSecret !== undefined
          ? { mutualUser: chap.mutualUser, mutualSecret: chap.mutualSecret }
          : {}),
      }
      : n
  );
  return {
    disabled,
    firmware,
    ipFromIbft,
    requested,
    ...(initiator !== undefined ? { initiator } : {}),
    netroots,
    ip,
    nameservers,
    ...(device !== undefined ? { device } : {}),
    timeoutMs,
    linkTimeoutMs,
    recoveryTimeoutMs,
    commandTimeoutMs,
    ...(headerDigest ? { headerDigest } : {}),
    ...(dataDigest ? { dataDigest } : {}),
    debug,
    source,
    handoff,
    ...(pollUs !== undefined ? { pollUs } : {}),
    ...(root !== undefined ? { root } : {}),
    unknown,
  };
}
