/**
 * `isboot boot`: the initramfs job. Reads the kernel command line and the
 * iBFT, prints the plan, and (unless --plan) starts the root-storage daemon
 * that brings up the NIC, logs in, attaches /dev/nbdN and stays.
 */
import type { BlockDevice } from "../blockdev.ts";
import { IsbootError, OperationalError, UsageError } from "../errors.ts";
import { ibftFromJson, ibftToJson } from "../ibft/json.ts";
import { IbftNotFoundError, loadIbft } from "../ibft/sources.ts";
import type { LoadedIbft } from "../ibft/model.ts";
import { Logger } from "../log.ts";
import { NbdKernel, NbdLinkWatch } from "../nbd/genl.ts";
import { modprobe } from "../nbd/module.ts";
import { nbdDevicePath, parseNbdDevice } from "../nbd/sysfs.ts";
import { realBackend } from "../boot/backend.ts";
import { parseBootCmdline } from "../boot/cmdline.ts";
import { reactor } from "../sys/reactor.ts";
import {
  becomeRootStorageDaemon,
  bootStage,
  enterDaemonStage,
  FLUSHER_ENV,
  kmsgSink,
  launchDaemon,
  lockDaemonFiles,
  needsFlusherReexec,
  STAGE_ENV,
  T0_ENV,
  tellLauncher,
} from "../boot/daemon.ts";
import { type BootGuard, startBootGuard } from "../boot/guard.ts";
import { type BootLease, firmwareLease, startBootLease } from "../boot/lease.ts";
import { type Attached, type BootBackend, type Booted, runBoot } from "../boot/sequence.ts";
import { portal, resolveBoot } from "../boot/spec.ts";
import {
  answerResize,
  controlPath,
  controlRequest,
  ControlServer,
  listenBesideControl,
  type SessionStatus,
  sessionStatus,
} from "../control/control.ts";
import { takeOverServed } from "../control/takeover.ts";
import { parseCommand } from "./args.ts";
import type { Command, CommandContext } from "./context.ts";

const USAGE = `usage: isboot boot [--source auto|acpi|sysfs|mem|FILE] [--device /dev/nbdN] [options]

The initramfs job: read /proc/cmdline and the iBFT, print the plan, bring up
the boot NIC (address, VLAN, gateway, DNS) over rtnetlink, log in to the
targets in order, attach the LUN as /dev/nbdN, wait for its partitions, and
stay as the root-storage daemon '@isboot'. Exits 0 once the device is ready.

Kernel command line (see the README for all): rd.iscsi.firmware, ip=ibft,
rd.iscsi.initiator=IQN, netroot=iscsi:..., isboot.device=, isboot.timeout=,
isboot.link_timeout=, isboot.recovery_timeout=, isboot.command_timeout=,
isboot.header_digest=,
isboot.data_digest=, isboot.source=, isboot.handoff=, isboot.poll_us=, isboot.debug,
isboot=off.

options:
  --source SRC      where the iBFT is (default: isboot.source=, else auto)
  --device DEV      /dev/nbdN to use (default: isboot.device=, else the first free)
  --cmdline FILE    read the command line from FILE instead of /proc/cmdline
  --plan            print the plan and exit; touch nothing
  --foreground      do everything in this process and stay (no '@isboot' child)
  --root DIR        write /etc and /run files under DIR (default /)
  --takeover        replace the running boot daemon of --device (a live
                    upgrade; \`isboot takeover\` runs this): take its command
                    line and iBFT over its control socket, keep the NICs as
                    they are, log in beside it, then take the device over
  --debug           more detail
`;

const OPTIONS = {
  source: { type: "string" },
  device: { type: "string" },
  cmdline: { type: "string" },
  plan: { type: "boolean" },
  foreground: { type: "boolean" },
  root: { type: "string" },
  takeover: { type: "boolean" },
} as const;

/** What the boot started from: the command line text and the table, if any. */
interface BootInputs {
  cmdline: string;
  ibft: LoadedIbft | null;
}

/**
 * The boot inputs of the daemon serving /dev/nbd`index`, from its control
 * socket (its `handover`): the command line it read and its iBFT.
 */
async function inputsFromDaemon(index: number): Promise<BootInputs> {
  const path = controlPath(index);
  const r = await controlRequest(path, { cmd: "handover" });
  if (!r.ok) {
    throw new OperationalError(`the isboot serving ${nbdDevicePath(index)} refused: ${r.error}`);
  }
  const h = r.handover;
  if (!h || h.kind !== "boot") {
    throw new OperationalError(
      `${nbdDevicePath(index)} is not served by a boot daemon (use attach --takeover)`,
    );
  }
  return {
    cmdline: h.cmdline,
    ibft: h.ibft
      ? {
        source: `the boot daemon of ${nbdDevicePath(index)}`,
        table: ibftFromJson(h.ibft),
        warnings: [],
      }
      : null,
  };
}

async function findIbft(source: string, log: Logger): Promise<LoadedIbft | null> {
  try {
    return await loadIbft(source);
  } catch (e) {
    if (!(e instanceof IbftNotFoundError) || !["auto", "sysfs"].includes(source)) throw e;
  }
  // Under BIOS the table is shown by iscsi_ibft in sysfs; load it and look again.
  let loaded = false;
  try {
    const before = await Deno.stat("/sys/module/iscsi_ibft").then(() => true, () => false);
    await modprobe("iscsi_ibft");
    loaded = !before;
  } catch (e) {
    log.debug(`modprobe iscsi_ibft: ${e instanceof Error ? e.message : e}`);
  }
  try {
    return await loadIbft(source);
  } catch (e) {
    if (e instanceof IbftNotFoundError) return null;
    throw e;
  } finally {
    // The table is read. Left loaded, the module would show the firmware
    // target to the kernel initiator's tools after switch_root (open-iscsi's
    // `iscsiadm -m fw -l`, run by its udev rule), which would log in a second
    // time and make a second disk with the root's UUID (docs/boot.md,
    // "open-iscsi in the root").
    if (loaded) {
      await modprobe("iscsi_ibft", { remove: true }).then(
        () => log.debug("iscsi_ibft unloaded: the table is read"),
        (e) =>
          log.warn(`${e instanceof Error ? e.message : e}; iscsiadm -m fw can see the boot target`),
      );
    }
  }
}

async function run(args: string[], ctx: CommandContext): Promise<number> {
  const stage = bootStage(ctx.env(STAGE_ENV));
  if (stage === "flusher" || (stage === "daemon" && needsFlusherReexec(ctx.env(FLUSHER_ENV)))) {
    enterDaemonStage();
  }
  const p = parseCommand(args, OPTIONS, USAGE, ctx, false);
  if (!p) return 0;
  const v = p.values;
  const startedAt = Number(ctx.env(T0_ENV)) || Date.now();
  const takeoverIndex = v.takeover ? takeoverDevice(v.device) : undefined;
  const given = takeoverIndex !== undefined ? await inputsFromDaemon(takeoverIndex) : undefined;
  const cmdText = given?.cmdline ?? await Deno.readTextFile(v.cmdline ?? "/proc/cmdline");
  const cmd = parseBootCmdline(cmdText);
  const log = cmd.debug && !ctx.debug ? new Logger({ debug: true }) : ctx.log;
  const inDaemon = stage === "daemon";
  // The daemon repeats the launcher's decisions; only the launcher prints them.
  const say = (line: string) => (inDaemon ? log.debug(line) : log.info(line));
  if (cmd.disabled) {
    say("isboot=off on the kernel command line: nothing to do");
    return 0;
  }
  for (const u of cmd.unknown) log.warn(`unknown option ${u} on the kernel command line (ignored)`);
  if (cmd.pollUs !== undefined) reactor().spinUs = cmd.pollUs;
  const wantIbft = cmd.firmware || (cmd.netroots.length === 0 && !cmd.netrootDhcp);
  const source = v.source ?? cmd.source;
  const ibft = given ? given.ibft : wantIbft ? await findIbft(source, log) : null;
  if (!ibft && cmd.netroots.length === 0 && !cmd.netrootDhcp) {
    if (cmd.firmware || cmd.requested) {
      throw new OperationalError(
        "no iBFT found, and the kernel command line asks for an iSCSI boot (was the firmware's iSCSI boot enabled?)",
      );
    }
    say("no iBFT and no netroot=iscsi: on the kernel command line: nothing to do");
    return 0;
  }
  const effective = v.device ? { ...cmd, device: v.device } : cmd;
  const spec = resolveBoot(effective, ibft);
  for (const line of spec.lines) say(line);
  if (v.plan) return 0;

  if (!inDaemon && !v.foreground) {
    const r = await launchDaemon(log, startedAt);
    return r.code;
  }
  try {
    const base = realBackend();
    const backend: BootBackend = takeoverIndex === undefined ? base : {
      ...base,
      attach: (dev, o) => takeOverAttach(dev, { ...o, index: takeoverIndex }),
    };
    const booted = await runBoot(spec, effective, backend, {
      log,
      root: v.root ?? "/",
      kernelHostname: (v.root ?? "/") === "/",
      startedAt,
      adoptNics: takeoverIndex !== undefined,
    });
    if (takeoverIndex !== undefined) {
      log.info(`${booted.device}: taken over from the previous isboot`);
    }
    const ms = Date.now() - startedAt;
    const sizeGiB = Number(booted.blockDevice.size) / 2 ** 30;
    log.info(
      `${booted.device} ready: ${booted.target.targetName} LUN ${booted.target.lun}, ` +
        `${sizeGiB.toFixed(2)} GiB, partitions ${booted.partitions.join(" ") || "none"}; ` +
        `${(ms / 1000).toFixed(2)} s after isboot started`,
    );
    const t = booted.timing;
    const sec = (x: number) => (x / 1000).toFixed(2);
    log.info(
      `time: start-up ${sec(t.startMs)} s, network ${sec(t.networkMs)} s, login ${
        sec(t.loginMs)
      } s, ` +
        `attach + partition scan ${sec(t.attachMs)} s`,
    );
    await Deno.mkdir(`${v.root ?? ""}/run/isboot`, { recursive: true });
    const bootJson = `${v.root ?? ""}/run/isboot/boot.json`;
    // A live upgrade keeps the boot's own times and adds its takeover's.
    const boot = takeoverIndex === undefined ? null : await readBootTimes(bootJson);
    await Deno.writeTextFile(
      bootJson,
      JSON.stringify({
        device: booted.device,
        target: booted.target.targetName,
        lun: booted.target.lun,
        portal: `${booted.target.host}:${booted.target.port}`,
        interfaces: booted.nics.map((n) => n.ifname),
        partitions: booted.partitions,
        pid: Deno.pid,
        readyMs: boot ? boot.readyMs : ms,
        timing: boot ? boot.timing : booted.timing,
        ...(takeoverIndex !== undefined
          ? { takeover: { readyMs: ms, timing: booted.timing } }
          : {}),
      }) + "\n",
    );
    // From here on the root's network stack may touch the boot NIC; the guard keeps it.
    const guard = await startBootGuard(booted.nics, booted.targets, { log, root: v.root ?? "/" });
    const lease = keepLease(booted, { log, root: v.root ?? "/" });
    const ctl = await listenControl(booted, guard, lease, { cmdline: cmdText, ibft }, log);
    becomeRootStorageDaemon(log);
    const kmsg = kmsgSink();
    if (inDaemon) tellLauncher(`READY ${booted.device} ${ms}`);
    if (kmsg) log.setSink(kmsg);
    lockDaemonFiles(log);
    log.info(`serving ${booted.device} as the root-storage daemon (pid ${Deno.pid})`);
    await booted.attached.done;
    lease?.stop();
    await guard.stop();
    if (ctl?.released()) {
      // A new isboot serves the device now: end our session cleanly (its
      // own login used another ISID, so the target has both until this).
      log.info(`${booted.device} released to a new isboot; logging out`);
      await closeWithin(booted.blockDevice, 10_000, log);
    } else log.info(`${booted.device} was disconnected; exiting`);
    await ctl?.server.close();
    return 0;
  } catch (e) {
    // The error itself is printed by the CLI's error path on our stderr (the console).
    if (inDaemon) tellLauncher(`FAIL ${e instanceof IsbootError ? e.exitCode : 1}`);
    throw e;
  }
}

/**
 * The boot NIC's lease, kept by this daemon: the one isboot's DHCP client
 * got (`ip=dhcp`), or the firmware's (an iBFT NIC of origin DHCP that names
 * its server). Null when the boot's address is no lease.
 */
function keepLease(b: Booted, o: { log: Logger; root: string }): BootLease | null {
  if (b.dhcp) {
    const nic = b.nics.find((n) => n.config.mac === b.dhcp!.link.mac);
    return nic ? startBootLease(b.dhcp.lease, b.dhcp.link.mac!, nic, o) : null;
  }
  for (const nic of b.nics) {
    const l = firmwareLease(nic, Date.now());
    if (l && nic.config.mac) return startBootLease(l, nic.config.mac, nic, o);
  }
  return null;
}

/**
 * Answer `isboot status`, `isboot resize`, a takeover's `handover` and `release` on
 * /run/isboot/nbdN.ctl, like `isboot attach` does. `detach` is refused: this
 * device is the root disk. Null when the socket cannot be made.
 */
async function listenControl(
  b: Booted,
  guard: BootGuard,
  lease: BootLease | null,
  inputs: BootInputs,
  log: Logger,
): Promise<{ server: { close(): Promise<void> }; released(): boolean } | null> {
  const started = new Date();
  const a = b.attached;
  let released = false;
  const status = (): SessionStatus =>
    sessionStatus({
      device: a.device,
      target: `iscsi://${portal(b.target)}/${b.target.targetName}/${b.target.lun}`,
      backend: `${b.target.targetName}/${b.target.lun}`,
      started,
      size: b.blockDevice.size,
      blockSize: b.blockDevice.blockSize,
      readOnly: b.blockDevice.readOnly,
      counters: a.counters,
      reconnects: b.reconnects(),
      session: {
        role: "root-storage daemon (isboot boot)",
        interfaces: b.nics.map((n) => n.ifname),
      },
      guard: guard.status(),
      ...(b.paths() ? { paths: b.paths()! } : {}),
      ...(lease ? { lease: lease.status() } : {}),
    });
  try {
    const server = await ControlServer.listen(controlPath(a.index), (req) => {
      switch (req.cmd) {
        case "status":
          return { reply: { ok: true, status: status() } };
        case "detach":
          return { reply: { ok: false, error: `${a.device} is the root disk; not detaching it` } };
        case "release":
          released = true;
          return { reply: { ok: true }, after: () => a.release() };
        case "resize":
          return answerResize(() => a.resize());
        case "handover":
          if (b.dhcp) {
            // The successor would need this lease (and its root path) handed over too.
            return {
              reply: {
                ok: false,
                error:
                  "this boot's network came from DHCP: a live upgrade is not supported for it; reboot to upgrade",
              },
            };
          }
          if (b.luns.length) {
            // A successor would take over the root disk alone and leave the
            // other LUNs' devices without a server: the old daemon keeps all.
            return {
              reply: {
                ok: false,
                error: `this isboot also serves ${
                  b.luns.map((l) => l.attached.device).join(", ")
                } (isboot.luns=): a live upgrade moves the root disk only; reboot to upgrade`,
              },
            };
          }
          return {
            reply: {
              ok: true,
              handover: {
                kind: "boot",
                cmdline: inputs.cmdline,
                ibft: inputs.ibft ? ibftToJson(inputs.ibft, { showSecrets: true }) : null,
              },
            },
          };
      }
    });
    const servers = [server];
    // The other LUNs (isboot.luns=): a socket each, for status and detach.
    for (const l of b.luns) {
      const la = l.attached;
      const lunStatus = (): SessionStatus =>
        sessionStatus({
          device: la.device,
          target: `iscsi://${portal(b.target)}/${b.target.targetName}/${l.lun}`,
          backend: `${b.target.targetName}/${l.lun}`,
          started,
          size: l.blockDevice.size,
          blockSize: l.blockDevice.blockSize,
          readOnly: l.blockDevice.readOnly,
          counters: la.counters,
          reconnects: b.reconnects(),
          session: { role: `LUN ${l.lun} of the root disk's target (isboot.luns=)` },
        });
      try {
        servers.push(
          await listenBesideControl(
            controlPath(la.index),
            la.device,
            `the root disk ${a.device}`,
            lunStatus,
            () => la.disconnect(),
            () => la.resize(),
          ),
        );
      } catch (e) {
        log.warn(`${la.device}: no control socket: ${e instanceof Error ? e.message : e}`);
      }
    }
    return {
      server: { close: async () => void await Promise.all(servers.map((x) => x.close())) },
      released: () => released,
    };
  } catch (e) {
    log.warn(`no control socket: ${e instanceof Error ? e.message : e}`);
    return null;
  }
}

/** readyMs and timing of the boot that wrote `path` (null fields when it cannot be read). */
async function readBootTimes(path: string): Promise<{ readyMs: unknown; timing: unknown }> {
  try {
    const j = JSON.parse(await Deno.readTextFile(path));
    return { readyMs: j.readyMs ?? null, timing: j.timing ?? null };
  } catch {
    return { readyMs: null, timing: null };
  }
}

/** The `--device` a takeover names; required. */
function takeoverDevice(device: string | undefined): number {
  if (device === undefined) {
    throw new UsageError("--takeover needs --device /dev/nbdN (the device to take over)");
  }
  return parseNbdDevice(device);
}

/** The attach step of a takeover: the running daemon lets go, we hand the kernel our socket. */
async function takeOverAttach(
  dev: BlockDevice,
  o: { backendIdentifier: string; log: Logger; index: number },
): Promise<Attached> {
  const nbd = await NbdKernel.open({ log: o.log });
  let watch: NbdLinkWatch | undefined;
  try {
    watch = NbdLinkWatch.open(nbd.family);
  } catch (e) {
    o.log.warn(`no LINK_DEAD watch: ${e instanceof Error ? e.message : e}`);
  }
  try {
    return await takeOverServed(nbd, dev, {
      log: o.log,
      index: o.index,
      backendIdentifier: o.backendIdentifier,
      lockMappings: true,
    }, watch);
  } catch (e) {
    nbd.close();
    throw e;
  } finally {
    watch?.close();
  }
}

/** Close (log out of) `dev`, giving up after `ms`. */
async function closeWithin(dev: BlockDevice, ms: number, log: Logger): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      dev.close(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no logout after ${ms} ms`)), ms);
      }),
    ]);
  } catch (e) {
    log.warn(`logout: ${e instanceof Error ? e.message : e}`);
  } finally {
    clearTimeout(timer);
  }
}

export const bootCommand: Command = {
  summary:
    "initramfs: iBFT -> NIC -> iSCSI login -> /dev/nbdN, then stay as the root-storage daemon",
  options: OPTIONS,
  run,
};
