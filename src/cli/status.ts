/**
 * `isboot status [--json]`: every isboot daemon (through its control socket
 * under /run/isboot/) and every connected kernel NBD device.
 */
import {
  controlRequest,
  type DaemonMemory,
  listControlSockets,
  type PathEntry,
  type SessionStatus,
} from "../control/control.ts";
import type { GuardStatus } from "../net/guard.ts";
import { NbdKernel } from "../nbd/genl.ts";
import { nbdDevicePath, readNbdSysfs } from "../nbd/sysfs.ts";
import { NetlinkError } from "../sys/netlink.ts";
import { parseCommand, printJson } from "./args.ts";
import type { Command, CommandContext } from "./context.ts";

const USAGE = `usage: isboot status [--json]

Show isboot sessions (target, device, requests, bytes, errors, reconnects)
and the kernel's NBD devices. --json prints one document:
  { "sessions": [ { "pid", "device", "target", "backend", "startedAt", "uptimeSec",
                    "sizeBytes", "blockSize", "readOnly", "connections", "requests",
                    "bytesRead", "bytesWritten", "errors", "reconnects", "session"?,
                    "guard"?: [ { "nic", "parent", "address", "routes", "restores", "overruns",
                                  "lastEvent", "lastEventAt", "lastRestore" } ],
                    "paths"?: [ { "portal", "local", "state", "downSince", "isid", "tsih", "failures",
                                  "reconnects", "commands", "bytes" } ],
                    "lease"?: { "interface", "address", "server", "obtained", "expires", "renewals",
                                "state" },
                    "memory"?: { "rssBytes", "anonBytes", "fileBytes", "lockedBytes", "swapBytes",
                                 "heapUsedBytes", "heapTotalBytes", "externalBytes" } } ],
    "devices":  [ { "device", "index", "connected", "sizeBytes", "backend", "pid", "daemon" } ] }
"guard" is the boot NIC guard of the root-storage daemon (isboot boot): the
link, address and routes it keeps in place, how often it put them back, and
the last change another program made to them. "paths" are the paths of a
multipath device (attach --multipath): active, standby or down (since when).
"lease" is the boot NIC's DHCP lease when the boot's network came from DHCP:
bound, renewing, rebinding, expired (the address is kept; isboot keeps asking)
or handed over (a DHCP client of the root, such as systemd-networkd, renews it).
A device whose "daemon" is false has no isboot serving it (crashed or killed):
its I/O waits for a takeover until the dead-connection timeout.
"memory" is the daemon's own: resident, anonymous, file-backed, locked and
swapped bytes from /proc/PID/status, and V8's heap in use, heap reserved and
ArrayBuffer stores outside it.
`;

const OPTIONS = {} as const;

/** One kernel device in status output. */
export interface DeviceStatus {
  device: string;
  index: number;
  connected: boolean;
  sizeBytes: string;
  backend: string | null;
  pid: number | null;
  /** An isboot control socket answered for this device. */
  daemon: boolean;
}

/**
 * The text lines for one guarded NIC.
 *
 * @example
 * ```ts
 * formatGuard(status.guard[0]); // "  boot NIC guard: eno1 192.0.2.10/24 ..."
 * ```
 */
export function formatGuard(g: GuardStatus): string {
  const nic = g.parent ? `${g.nic} (VLAN on ${g.parent})` : g.nic;
  return `  boot NIC guard: ${nic} ${g.address ?? "no address"}  restores ${g.restores}` +
    (g.overruns ? `  overruns ${g.overruns}` : "") + "\n" +
    (g.routes.length ? `    routes guarded: ${g.routes.join(", ")}\n` : "") +
    `    last event: ${g.lastEvent ? `${g.lastEvent} (${g.lastEventAt})` : "none"}\n` +
    (g.lastRestore ? `    last restore: ${g.lastRestore}\n` : "");
}

async function run(args: string[], ctx: CommandContext): Promise<number> {
  const p = parseCommand(args, OPTIONS, USAGE, ctx, false);
  if (!p) return 0;
  const sessions: SessionStatus[] = [];
  for (const s of await listControlSockets()) {
    try {
      const r = await controlRequest(s.path, { cmd: "status" }, 3000);
      if (r.ok && r.status) sessions.push(r.status);
    } catch (e) {
      ctx.log.debug(`${s.path}: ${e instanceof Error ? e.message : e}`);
    }
  }
  const devices: DeviceStatus[] = [];
  let nbd: NbdKernel | undefined;
  try {
    nbd = await NbdKernel.open({ loadModule: false });
    for (const d of nbd.status()) {
      if (!d.connected) continue;
      const sys = readNbdSysfs(d.index);
      const device = nbdDevicePath(d.index);
      devices.push({
        device,
        index: d.index,
        connected: d.connected,
        sizeBytes: String(sys.sizeBytes),
        backend: sys.backend ?? null,
        pid: sys.pid ?? null,
        daemon: sessions.some((s) => s.device === device),
      });
    }
  } catch (e) {
    // No nbd driver loaded (or not root): no kernel devices to show.
    if (!(e instanceof NetlinkError) && !(e instanceof Error && /nbd driver/.test(e.message))) {
      throw e;
    }
    ctx.log.debug(`kernel NBD status unavailable: ${e.message}`);
  } finally {
    nbd?.close();
  }
  if ((p.values as { json?: boolean }).json) {
    printJson(ctx, { sessions, devices });
    return 0;
  }
  if (sessions.length === 0 && devices.length === 0) {
    ctx.out("no isboot sessions, no connected NBD devices\n");
    return 0;
  }
  for (const s of sessions) {
    ctx.out(
      `${s.device}  ${s.target}  pid ${s.pid}  up ${s.uptimeSec}s  ${s.sizeBytes} bytes` +
        `${s.readOnly ? " (read-only)" : ""}\n` +
        `  requests ${s.requests}  read ${s.bytesRead} B  written ${s.bytesWritten} B  errors ${s.errors}` +
        `  reconnects ${s.reconnects}  connections ${s.connections}\n`,
    );
    if (s.memory) ctx.out(formatMemory(s.memory));
    for (const g of s.guard ?? []) ctx.out(formatGuard(g));
    for (const path of s.paths ?? []) ctx.out(formatPath(path));
    if (s.lease) {
      const l = s.lease;
      ctx.out(
        `  DHCP lease: ${l.interface} ${l.address} from ${l.server}  ${l.state}  obtained ${l.obtained}` +
          `  expires ${l.expires}  renewals ${l.renewals}\n`,
      );
    }
  }
  for (const d of devices.filter((d) => !d.daemon)) {
    ctx.out(`${d.device}  connected, no isboot daemon answering  backend ${d.backend ?? "-"}\n`);
  }
  return 0;
}

/**
 * One line of a multipath path.
 *
 * @example
 * ```ts
 * formatPath({ portal: "192.0.2.10:3260", local: "192.0.2.15", state: "active", downSince: null,
 *   isid: "80a1b2c3d4e5", tsih: 256, failures: 0, reconnects: 0, commands: 1200, bytes: 78643200 });
 * // "  path 192.0.2.10:3260 from 192.0.2.15  active  isid 80a1b2c3d4e5 tsih 256  commands 1200  ..."
 * ```
 */
export function formatPath(p: PathEntry): string {
  return `  path ${p.portal}${p.local ? ` from ${p.local}` : ""}  ${p.state}${
    p.downSince ? ` since ${p.downSince}` : ""
  }` +
    `  isid ${p.isid} tsih ${p.tsih}  commands ${p.commands}  ${p.bytes} B` +
    `  failures ${p.failures}  reconnects ${p.reconnects}\n`;
}

/**
 * The daemon's memory line, MiB.
 *
 * @example
 * ```ts
 * formatMemory({ rssBytes: 130 << 20, anonBytes: 30 << 20, fileBytes: 100 << 20,
 *   lockedBytes: 96 << 20, swapBytes: 0, heapUsedBytes: 9 << 20, heapTotalBytes: 12 << 20,
 *   externalBytes: 2 << 20 });
 * // "  memory: rss 130.0 MiB  anon 30.0  file 100.0  locked 96.0  swap 0.0  heap 9.0 of 12.0  external 2.0\n"
 * ```
 */
export function formatMemory(m: DaemonMemory): string {
  const mib = (n: number | undefined) => n === undefined ? "?" : (n / 1048576).toFixed(1);
  return `  memory: rss ${mib(m.rssBytes)} MiB  anon ${mib(m.anonBytes)}  file ${
    mib(m.fileBytes)
  }  locked ${mib(m.lockedBytes)}  swap ${mib(m.swapBytes)}  heap ${mib(m.heapUsedBytes)} of ${
    mib(m.heapTotalBytes)
  }  external ${mib(m.externalBytes)}\n`;
}

export const statusCommand: Command = {
  summary: "show isboot sessions and kernel NBD devices",
  options: OPTIONS,
  run,
};
