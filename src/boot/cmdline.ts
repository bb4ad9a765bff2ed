/**
 * The kernel command line as `isboot boot` reads it (/proc/cmdline): the
 * option switch over the arguments (split by src/boot/kernel_args.ts;
 * `netroot=` parsed by src/iscsi/root_path.ts, `ip=` by src/net/ip_arg.ts).
 *
 * Options honoured, with dracut's meaning where dracut has the name:
 * - `rd.iscsi.firmware`, `rd.iscsi.ibft`, `iscsi_firmware`: boot from the iBFT.
 * - `ip=ibft`: configure the network from the iBFT (implies the above).
 * - `ip=CLIENT:[PEER]:GATEWAY:NETMASK:HOSTNAME:IFACE:none[:MTU[:MAC]]` static
 *   network for `netroot=` on machines without an iBFT (dracut's form; `off`,
 *   `none` and `static` all mean static here).
 * - `ip=dhcp` (also `on`, `any`): DHCPv4 on every interface with carrier, the
 *   first lease wins; `ip=IFACE:dhcp[:MTU[:MAC]]`: on that interface
 *   (src/boot/dhcp.ts). Used when there is no iBFT NIC. `dhcp6`, `auto6`
 *   and the like are not supported (a warning).
 * - `netroot=dhcp`: the target is the lease's root path (option 17, RFC 4173
 *   form); implies `ip=dhcp` when no `ip=` says otherwise.
 * - `rd.neednet`: accepted; isboot brings the network up for its targets anyway.
 * - `vlan=NAME:PHYS` (dracut's form, repeatable): the 802.1Q link NAME on PHYS
 *   for `ip=NAME:dhcp`; the VLAN id is NAME's trailing number (`eth0.5`,
 *   `vlan0005`, `vlan5`).
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
 *   `isboot.multipath=failover|round-robin|off` (default failover: every path to the boot
 *   disk logged in at once, scsi/multipath.ts), `isboot.luns=all|N[,N...]` (the target's
 *   other LUNs as more /dev/nbdN devices, over the same session),
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
import { type NetRoot, parseNetRoot } from "../iscsi/root_path.ts";
import { parseLunList } from "../iscsi/config.ts";
import { type IpAddress, normalizeMac, requireIp } from "../net/addr.ts";
import { boundedInt } from "../decimal.ts";
import { HANDOFF_KINDS, type HandoffKind } from "../net/handoff.ts";
import { type IpSpec, parseIpArg } from "../net/ip_arg.ts";
import type { MultipathPolicy } from "../scsi/multipath.ts";
import { splitKernelCmdline } from "./kernel_args.ts";

export type Digest = "crc32c" | "none";

/** A `vlan=NAME:PHYS` link: made on PHYS with id `id` when a DHCP request names it. */
export interface VlanSpec {
  readonly name: string;
  readonly parent: string;
  readonly id: number;
}

/** One `ip=` DHCP request: on `iface`, or on any interface with carrier. */
export interface DhcpSpec {
  readonly iface?: string;
  readonly mtu?: number;
  readonly mac?: string;
}
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
  /** ip=dhcp (iface absent: every interface with carrier) and ip=IFACE:dhcp. */
  readonly dhcp: readonly DhcpSpec[];
  /** netroot=dhcp: the target comes from the DHCP lease's root path. */
  readonly netrootDhcp: boolean;
  /** ip= forms isboot does not act on (dhcp6, auto6, ...), for a warning. */
  readonly ipIgnored: readonly string[];
  /** vlan=NAME:PHYS links. */
  readonly vlans: readonly VlanSpec[];
  readonly nameservers: readonly IpAddress[];
  readonly device?: string;
  readonly timeoutMs: number;
  readonly linkTimeoutMs: number;
  readonly recoveryTimeoutMs: number;
  /** A command without status after this long is escalated and re-issued; 0: never. */
  readonly commandTimeoutMs: number;
  /** How the boot disk's paths are used when the plan has several (off: recovery only). */
  readonly multipath: MultipathPolicy | "off";
  /** isboot.luns=: the target's other LUNs to attach too ("all", or their numbers); absent: none. */
  readonly luns?: "all" | readonly number[];
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
  /** Several paths to the boot disk (the iBFT's two NICs, repeated netroot=) are used at once. */
  multipath: "failover",
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
  "rd.neednet",
  "vlan",
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
  "multipath",
  "luns",
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
  let multipath: MultipathPolicy | "off" = BOOT_DEFAULTS.multipath;
  let luns: "all" | number[] | undefined;
  let headerDigest: Digest | undefined, dataDigest: Digest | undefined;
  let pollUs: number | undefined;
  let source: IbftSource = "auto";
  let handoff: HandoffKind[] = [...HANDOFF_KINDS];
  const netrootTexts: string[] = [];
  const ip: IpSpec[] = [];
  const dhcp: DhcpSpec[] = [];
  const ipIgnored: string[] = [];
  let netrootDhcp = false;
  const vlans: VlanSpec[] = [];
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
          } else if (/^(dhcp|on|any)$/.test(v)) {
            dhcp.push({});
          } else if (/^(dhcp6|auto6|either6|link6|off|none)$/.test(v)) {
            ipIgnored.push(v);
          } else {
            const d = parseDhcpIfaceArg(v);
            if (d === "ignored") ipIgnored.push(v);
            else if (d) dhcp.push(d);
            else ip.push(parseIpArg(v) as IpSpec);
          }
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
          } else if (v === "dhcp") netrootDhcp = requested = true;
          continue;
        case "rd.neednet":
          continue;
        case "vlan": {
          const m = /^([A-Za-z0-9_.-]{1,15}):([A-Za-z0-9_.-]{1,15})$/.exec(v);
          const id = m ? /(?:\.|^vlan)0*(\d{1,4})$/.exec(m[1]) : null;
          if (!m || !id || Number(id[1]) < 1 || Number(id[1]) > 4094) {
            throw new InvalidInputError(
              `vlan=${v}: expected NAME:PHYS with the VLAN id (1..4094) at NAME's end (eth0.5, vlan0005)`,
            );
          }
          vlans.push({ name: m[1], parent: m[2], id: Number(id[1]) });
          continue;
        }
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
      case "multipath":
        if (v !== "failover" && v !== "round-robin" && v !== "off") {
          throw new InvalidInputError(`${name}=${v}: expected failover, round-robin or off`);
        }
        multipath = v;
        break;
      case "luns": {
        const list = parseLunList(v);
        if (list === null) {
          throw new InvalidInputError(
            `${name}=${v}: expected all or LUN numbers 0..16383, comma-separated`,
          );
        }
        luns = list;
        break;
      }
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
    // netroot=dhcp needs an address from DHCP when the line names no network.
    dhcp: netrootDhcp && dhcp.length === 0 && ip.length === 0 && !ipFromIbft ? [{}] : dhcp,
    netrootDhcp,
    ipIgnored,
    vlans,
    nameservers,
    ...(device !== undefined ? { device } : {}),
    timeoutMs,
    linkTimeoutMs,
    recoveryTimeoutMs,
    commandTimeoutMs,
    multipath,
    ...(luns !== undefined ? { luns } : {}),
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

/**
 * dracut's `ip=IFACE:dhcp[:MTU[:MAC]]` (also `on`, `any`): the request, or
 * "ignored" for the IPv6 autoconf forms, or null when `v` is another form.
 */
function parseDhcpIfaceArg(v: string): DhcpSpec | "ignored" | null {
  const m = /^([^:[\]]+):(dhcp|on|any|dhcp6|auto6|either6|link6)(?::(\d*)(?::(.+))?)?$/.exec(v);
  if (!m) return null;
  if (!["dhcp", "on", "any"].includes(m[2])) return "ignored";
  const [, iface, , mtuText, macText] = m;
  const mtu = mtuText ? boundedInt(mtuText, 68, 65535) : undefined;
  if (mtu === null) throw new InvalidInputError(`ip=${v}: bad MTU '${mtuText}'`);
  const mac = macText ? normalizeMac(macText) : undefined;
  if (mac === null) throw new InvalidInputError(`ip=${v}: bad MAC '${macText}'`);
  return { iface, ...(mtu !== undefined ? { mtu } : {}), ...(mac ? { mac } : {}) };
}
