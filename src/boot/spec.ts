/**
 * What to boot: the kernel command line and the iBFT's boot plan
 * (src/ibft/plan.ts) turned into the NICs to configure and the targets to
 * try, in order, plus the few lines `isboot boot` prints about it.
 *
 * Precedence (docs/boot.md): `rd.iscsi.initiator=` over the iBFT's initiator;
 * iBFT targets first, then `netroot=` targets; `ip=` static specs configure
 * the NICs of `netroot=` targets when there is no iBFT NIC.
 *
 * @example
 * ```ts
 * const spec = resolveBoot(parseBootCmdline(cmdline), loaded);
 * for (const l of spec.lines) log.info(l);
 * ```
 */
import { InvalidInputError } from "../errors.ts";
import type { LoadedIbft } from "../ibft/model.ts";
import { makeBootPlan } from "../ibft/plan.ts";
import { type IpAddress, parseIp } from "../net/addr.ts";
import type { NicConfig } from "../net/configure.ts";
import type { NetRoot } from "../iscsi/root_path.ts";
import type { BootCmdline, DhcpSpec, VlanSpec } from "./cmdline.ts";

/**
 * One target to log in to: a root path's fields (from `netroot=` or the
 * iBFT), with the server as `host`. Secrets stay in here; `label` is safe to
 * print.
 */
export interface BootTarget extends Omit<NetRoot, "server"> {
  /** "iBFT target 0", "netroot 1". */
  readonly label: string;
  readonly host: string;
}

/** Everything `isboot boot` will do, decided before it touches anything. */
export interface BootSpec {
  readonly initiator: string;
  readonly nics: readonly NicConfig[];
  readonly targets: readonly BootTarget[];
  /**
   * The network comes from DHCP (no iBFT NIC; `ip=dhcp`, `ip=IFACE:dhcp` or
   * `netroot=dhcp`): the interfaces to try, and whether the lease's root path
   * is a target (it goes before the `netroot=iscsi:` targets).
   */
  readonly dhcp?: {
    readonly requests: readonly DhcpSpec[];
    readonly rootPath: boolean;
    /** `vlan=` links the requests may name. */
    readonly vlans: readonly VlanSpec[];
  };
  /** The plan in a few printable lines (no secrets). */
  readonly lines: readonly string[];
}

function ip(text: string | null): IpAddress | null {
  return text === null ? null : parseIp(text);
}

/** `host:port`, IPv6 in brackets. */
export function portal(t: { host: string; port: number }): string {
  return t.host.includes(":") ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`;
}

function chapKind(t: BootTarget): string {
  return t.mutualUser !== undefined ? "mutual CHAP" : t.chapUser !== undefined ? "CHAP" : "no CHAP";
}

/**
 * Combine the command line and the iBFT (null when none was found or asked
 * for) into a BootSpec.
 *
 * @throws InvalidInputError when nothing can be booted or no initiator name is known.
 */
export function resolveBoot(cmd: BootCmdline, ibft: LoadedIbft | null): BootSpec {
  const nics: NicConfig[] = [];
  const targets: BootTarget[] = [];
  const lines: string[] = [];
  let initiator = cmd.initiator ?? null;
  if (ibft) {
    const plan = makeBootPlan(ibft.table);
    lines.push(
      `iBFT from ${ibft.source} (${ibft.table.header.oemId || "?"}/${
        ibft.table.header.oemTableId || "?"
      })`,
    );
    for (const w of ibft.warnings) lines.push(`iBFT warning: ${w}`);
    for (const n of plan.nics) {
      const first = n === plan.nic;
      const dns = [n.primaryDns, n.secondaryDns].map(ip).filter((x): x is IpAddress => x !== null);
      const reached = plan.targets.filter((p) => p.nic === n).map((p) => ip(p.target.ip))
        .filter((x): x is IpAddress => x !== null);
      nics.push({
        mac: n.mac,
        vlan: n.vlan,
        address: ip(n.ip),
        prefixLength: n.prefixLength,
        gateway: ip(n.gateway),
        dns: first ? [...dns, ...cmd.nameservers] : dns,
        hostname: first ? n.hostname : null,
        origin: n.origin === "dhcp" ? "dhcp" : "static",
        ...(n.origin === "dhcp" && ip(n.dhcpServer) ? { dhcpServer: ip(n.dhcpServer)! } : {}),
        // A second path's NIC routes its own targets only: the default route is the boot NIC's.
        ...(first ? {} : { defaultRoute: false, optional: true }),
        targets: reached,
      });
    }
    initiator ??= plan.initiatorName;
    for (const p of plan.targets) {
      const t = p.target;
      targets.push({
        label: `iBFT target ${t.index}`,
        host: t.ip as string,
        port: t.port,
        lun: t.lun ?? 0,
        targetName: t.name as string,
        ...(t.chap !== "none" && t.chapName !== null && t.chapSecret !== null
          ? { chapUser: t.chapName, chapSecret: t.chapSecret }
          : {}),
        ...(t.chap === "mutual" && t.reverseChapName !== null && t.reverseChapSecret !== null
          ? { mutualUser: t.reverseChapName, mutualSecret: t.reverseChapSecret }
          : {}),
      });
    }
    // Targets and the initiator are printed below, once, with what the command line changed.
    lines.push(
      ...plan.reasons.filter((r) =>
        (!r.startsWith("target ") || r.includes("skipped")) &&
        r !== `initiator: ${plan.initiatorName}`
      ),
    );
  }
  cmd.netroots.forEach((n, i) =>
    targets.push({
      label: `netroot ${i}`,
      host: n.server,
      port: n.port,
      lun: n.lun,
      targetName: n.targetName,
      ...chapOf(n),
    })
  );
  let dhcp: BootSpec["dhcp"];
  if ((!ibft || nics.length === 0) && cmd.dhcp.length) {
    dhcp = { requests: cmd.dhcp, rootPath: cmd.netrootDhcp, vlans: cmd.vlans };
    const where = cmd.dhcp.map((d) => d.iface ?? "any interface with carrier").join(", ");
    lines.push(
      `network from DHCP on ${where}${cmd.netrootDhcp ? "; target from its root path" : ""}`,
    );
  } else if (cmd.netrootDhcp) {
    throw new InvalidInputError(
      "netroot=dhcp needs the network from DHCP (ip=dhcp or ip=IFACE:dhcp), not from " +
        (ibft && nics.length ? "the iBFT" : "a static ip="),
    );
  }
  for (const v of cmd.ipIgnored) lines.push(`ip=${v}: not supported by isboot (ignored)`);
  if (!dhcp && (!ibft || nics.length === 0)) {
    for (const s of cmd.ip) {
      if (!s.mac && !s.iface) {
        throw new InvalidInputError(
          "ip=: a static address needs the interface name or MAC (field 6 or 9)",
        );
      }
      nics.push({
        mac: s.mac ?? null,
        ...(s.iface ? { ifname: s.iface } : {}),
        vlan: 0,
        address: s.address,
        prefixLength: s.prefixLength,
        gateway: s.gateway ?? null,
        dns: cmd.nameservers,
        hostname: s.hostname ?? null,
        origin: "static",
        ...(s.mtu ? { mtu: s.mtu } : {}),
      });
    }
  }
  if (targets.length === 0 && !dhcp?.rootPath) {
    throw new InvalidInputError("nothing to boot: no iBFT target and no netroot=iscsi:...");
  }
  if (nics.length === 0 && !dhcp) {
    throw new InvalidInputError(
      "no network to configure: netroot= needs ip=ibft, ip=dhcp or a static ip=ADDR:...:IFACE:none",
    );
  }
  if (initiator === null) {
    throw new InvalidInputError(
      "no initiator name: the iBFT has none; set rd.iscsi.initiator=iqn....",
    );
  }
  lines.push(`initiator ${initiator}${cmd.initiator ? " (rd.iscsi.initiator=)" : ""}`);
  for (const t of targets) {
    lines.push(`${t.label}: ${t.targetName} LUN ${t.lun} at ${portal(t)}, ${chapKind(t)}`);
  }
  return { initiator, nics, targets, lines, ...(dhcp ? { dhcp } : {}) };
}

function chapOf(
  n: { chapUser?: string; chapSecret?: string; mutualUser?: string; mutualSecret?: string },
) {
  return {
    ...(n.chapUser !== undefined ? { chapUser: n.chapUser, chapSecret: n.chapSecret } : {}),
    ...(n.mutualUser !== undefined
      ? { mutualUser: n.mutualUser, mutualSecret: n.mutualSecret }
      : {}),
  };
}
