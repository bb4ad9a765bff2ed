/**
 * `isboot attach TARGET [--device /dev/nbdN] [--daemon]`: serve a LUN (or
 * `memory:SIZE`) to a kernel NBD device over netlink, print the device, and
 * stay serving until `isboot detach`, SIGINT or SIGTERM (docs/kernel.md).
 */
import type { MultipathPolicy } from "../scsi/multipath.ts";
import type { BlockDevice } from "../blockdev.ts";
import { InvalidInputError, OperationalError, UsageError } from "../errors.ts";
import { MemoryDevice, parseSize } from "../memory_device.ts";
import {
  answerResize,
  controlPath,
  ControlServer,
  listenBesideControl,
  type PathEntry,
  type SessionStatus,
  sessionStatus,
} from "../control/control.ts";
import {
  attachDevice,
  type AttachOptions,
  type KernelAttachment,
  takeOverDevice,
} from "../nbd/attach.ts";
import {
  DEFAULT_DEAD_CONN_TIMEOUT_SEC,
  DEFAULT_TIMEOUT_SEC,
  NbdKernel,
  NbdLinkWatch,
} from "../nbd/genl.ts";
import { parseNbdDevice } from "../nbd/sysfs.ts";
import { NBD_FLAG_READ_ONLY } from "../nbd/constants.ts";
import { redactUri } from "../iscsi/uri.ts";
import { openOtherLuns, openTarget } from "../iscsi/open_target.ts";
import { parseLunList } from "../iscsi/config.ts";
import type { Logger } from "../log.ts";
import { blockSizeOption, intOption, parseCommand } from "./args.ts";
import {
  MULTIPATH_HELP,
  MULTIPATH_OPTION,
  multipathFor,
  parseRecoveryTimeout,
  sessionConfigFromUri,
  TARGET_OPTIONS,
  TARGET_OPTIONS_HELP,
  type TargetOptionValues,
} from "./target_options.ts";
import type { Command, CommandContext } from "./context.ts";
import { limitMallocRetention, selfPrefix, startDaemon } from "../sys/process.ts";
import { takeOverServed } from "../control/takeover.ts";

const USAGE = `usage: isboot attach TARGET [--device /dev/nbdN] [options]

Serve TARGET to the kernel as an NBD device (generic netlink; never the
NBD_DO_IT ioctl), print the device name, and stay in the foreground serving
it. The device keeps working while this process lives; detach it with
\`isboot detach DEVICE\`, SIGINT or SIGTERM.

TARGET:
  iscsi://[user@]host[:port]/target-iqn/lun   an iSCSI LUN
  memory:SIZE                                 an in-memory disk, e.g. memory:64M (tests)

options:
  --device /dev/nbdN        use this device (default: the first free one)
  --daemon                  go to the background once the device is up
  --takeover                replace the isboot serving the live --device (its
                            backend must be TARGET): the old one lets go, the
                            kernel gets our socket (NBD_CMD_RECONFIGURE), the
                            device and its mounts stay
  --connections N           NBD sockets (kernel queues), 1..16 (default 1);
                            above 1 for an iSCSI target only with a finite
                            --recovery-timeout (Linux fails I/O after ~30 s
                            of outage with several sockets)
  --timeout SEC             kernel per-request timeout; 0 = none (default ${DEFAULT_TIMEOUT_SEC}:
                            isboot recovers lost connections itself; the
                            kernel sees a slow request). With N > 0 a late
                            request is resent on a new socket, never failed
  --dead-conn-timeout SEC   how long the kernel holds I/O when this process
                            dies, for a takeover (default ${DEFAULT_DEAD_CONN_TIMEOUT_SEC})
  --read-only               export read-only
  --luns all|N[,N...]       the target's other LUNs too, each its own /dev/nbdN
                            (one line each after the first), over the same session
  --block-size N            memory: logical block size (default 512)
  --debug                   log every failed request

${TARGET_OPTIONS_HELP}${MULTIPATH_HELP}
Control socket: /run/isboot/nbdN.ctl (mode 0600), read by \`isboot status\`.
Needs root (CAP_SYS_ADMIN) and the nbd module (loaded when missing).
`;

const OPTIONS = {
  ...TARGET_OPTIONS,
  ...MULTIPATH_OPTION,
  device: { type: "string" },
  daemon: { type: "boolean" },
  takeover: { type: "boolean" },
  connections: { type: "string" },
  timeout: { type: "string" },
  "dead-conn-timeout": { type: "string" },
  "read-only": { type: "boolean" },
  "block-size": { type: "string" },
  luns: { type: "string" },
} as const;

interface Backend {
  device: BlockDevice;
  /** Close the device (and log out of the target). */
  close(): Promise<void>;
  /** Backend identifier for the kernel (sysfs `backend`): IQN/LUN, or memory:... */
  identifier: string;
  /** The target as shown in status (no secrets). */
  display: string;
  /** Backend facts for status (no secrets). */
  session?: () => Record<string, unknown>;
  reconnects?: () => number;
  /** With multipath: each path now. */
  paths?: () => PathEntry[];
  /** The target's other LUNs (`--luns`), opened over the same session(s). */
  otherLuns?: (
    want: "all" | readonly number[],
    log: Logger,
  ) => Promise<{ lun: number; device: BlockDevice }[]>;
}

async function openBackend(
  target: string,
  opts: {
    blockSize?: number;
    readOnly: boolean;
    device?: string;
    takeover?: boolean;
    multipath?: MultipathPolicy;
  },
  values: TargetOptionValues,
  ctx: CommandContext,
): Promise<Backend> {
  if (target.startsWith("memory:")) {
    const size = parseSize(target.slice(7));
    const device = new MemoryDevice({
      size,
      blockSize: opts.blockSize ?? 512,
      readOnly: opts.readOnly,
    });
    // Unique per process: a takeover of one memory disk by another makes no sense.
    return {
      device,
      close: () => device.close(),
      identifier: `memory:${target.slice(7)}:${Deno.pid}`,
      display: target,
    };
  }
  if (target.startsWith("iscsi:")) {
    if (opts.blockSize !== undefined) {
      throw new UsageError("--block-size is for memory: targets; a LUN has its own");
    }
    // A stable ISID per device: a restarted attach reinstates its own stale
    // session (RFC 7143 §4.2.7) without touching other initiators' sessions.
    const cfg = await sessionConfigFromUri(target, values, ctx.env, {
      // A takeover logs in while the old daemon still serves: its own ISID,
      // so the target does not reinstate (end) the old session under it.
      isidPurpose: opts.takeover
        ? `attach ${opts.device} takeover ${Deno.pid}`
        : `attach ${opts.device ?? "auto"}`,
    });
    const t = await openTarget(cfg, { log: ctx.log, multipath: opts.multipath });
    const s = t.session;
    return {
      device: t.device,
      close: () => t.close(),
      identifier: `${cfg.targetName}/${cfg.lun}`,
      display: redactUri(target),
      reconnects: t.reconnects,
      ...(t.paths ? { paths: t.paths } : {}),
      otherLuns: (want, log) => openOtherLuns(t.multipath ?? t.transport, cfg.lun, want, log),
      session: () => ({
        portal: s.portal,
        targetName: s.targetName,
        initiatorName: s.initiatorName,
        isid: s.isid,
        tsih: s.tsih,
        auth: s.auth,
        loginMs: s.loginMs,
        parameters: s.parameters,
      }),
    };
  }
  throw new InvalidInputError(`target '${target}': expected iscsi://... or memory:SIZE`);
}

function statusOf(a: KernelAttachment, b: Backend, started: Date): SessionStatus {
  return sessionStatus({
    device: a.device,
    target: b.display,
    backend: b.identifier,
    started,
    size: b.device.size,
    blockSize: b.device.blockSize,
    readOnly: (a.flags & NBD_FLAG_READ_ONLY) !== 0,
    counters: a.counters,
    reconnects: b.reconnects?.() ?? 0,
    ...(b.session ? { session: b.session() } : {}),
    ...(b.paths ? { paths: b.paths() } : {}),
  });
}

/** Re-run this same command in the background; return once it printed its device. */
async function daemonize(args: string[], ctx: CommandContext): Promise<number> {
  const rest = args.filter((a) => a !== "--daemon");
  const { line, spawnError } = await startDaemon([...selfPrefix(), "attach", ...rest]);
  if (line === null) {
    throw new OperationalError(
      `attach --daemon: ${
        spawnError
          ? `cannot start the background process: ${spawnError.message}`
          : "the background process exited before attaching"
      }`,
    );
  }
  ctx.out(line + "\n");
  return 0;
}

/** The environment variables that carry CHAP secrets to `attach`. */
const SECRET_ENV = ["ISBOOT_CHAP_SECRET", "ISBOOT_MUTUAL_SECRET"] as const;

function secretEnv(ctx: CommandContext): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of SECRET_ENV) {
    const v = ctx.env(name);
    if (v !== undefined) out[name] = v;
  }
  return out;
}

/**
 * This command's arguments for a successor that takes the device over
 * (`isboot takeover` adds `--device DEV --takeover --daemon`): the same,
 * without --daemon, --takeover and --device.
 *
 * @example
 * ```ts
 * handoverArgs(["iscsi://h/iqn/1", "--device", "/dev/nbd1", "--daemon"]); // ["iscsi://h/iqn/1"]
 * ```
 */
export function handoverArgs(args: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--") {
      out.push(...args.slice(i));
      break;
    }
    if (a === "--daemon" || a === "--takeover" || a.startsWith("--device=")) continue;
    if (a === "--device") {
      i++;
      continue;
    }
    out.push(a);
  }
  return out;
}

async function run(args: string[], ctx: CommandContext): Promise<number> {
  const p = parseCommand(args, OPTIONS, USAGE, ctx);
  if (!p) return 0;
  const v = p.values;
  if (p.positionals.length !== 1) throw new UsageError("attach: expected one TARGET (see --help)");
  const index = v.device === undefined ? undefined : parseNbdDevice(v.device);
  const connections = intOption("connections", v.connections, 1, 16);
  const timeoutSec = intOption("timeout", v.timeout, 0, 1 << 30);
  const deadConnTimeoutSec = intOption("dead-conn-timeout", v["dead-conn-timeout"], 0, 1 << 30);
  const blockSize = blockSizeOption(v["block-size"], 512);
  const recovery = parseRecoveryTimeout(v["recovery-timeout"]);
  const multipath = multipathFor(v.multipath, v.portal);
  if (
    (connections ?? 1) > 1 && p.positionals[0].startsWith("iscsi:") &&
    (recovery === undefined || recovery === Infinity)
  ) {
    // With several sockets Linux (6.1 nbd_xmit_timeout) marks a socket dead
    // after the block layer's 30 s timer whatever --timeout says, and fails
    // held I/O once every socket is dead for dead_conn_timeout: a long target
    // outage would become I/O errors, which a recovery "forever" promises
    // never to give (docs/kernel.md, "Several connections").
    throw new UsageError(
      `--connections ${connections} cannot hold I/O through a target outage longer than about 30 s; ` +
        "use --connections 1, or a finite --recovery-timeout to accept I/O errors after an outage",
    );
  }
  if (v.takeover && index === undefined) {
    throw new UsageError("--takeover needs --device /dev/nbdN (the device to take over)");
  }
  const luns = v.luns === undefined ? undefined : parseLunList(v.luns);
  if (luns === null) {
    throw new UsageError(
      `--luns '${v.luns}': expected all or LUN numbers 0..16383, comma-separated`,
    );
  }
  if (luns && !p.positionals[0].startsWith("iscsi:")) {
    throw new UsageError("--luns is for iscsi:// targets");
  }
  if (luns && v.takeover) {
    throw new UsageError("--luns with --takeover: a takeover moves one device");
  }
  if (v.daemon) return await daemonize(args, ctx);
  const log = ctx.log;
  limitMallocRetention(); // a long-lived server: freed I/O buffers go back to the kernel

  const backend = await openBackend(
    p.positionals[0],
    {
      blockSize,
      readOnly: v["read-only"] ?? false,
      device: v.device,
      takeover: v.takeover,
      multipath,
    },
    v,
    ctx,
  );
  let nbd: NbdKernel | undefined;
  let watch: NbdLinkWatch | undefined;
  let attachment: KernelAttachment;
  const opts: AttachOptions = {
    log,
    index,
    backendIdentifier: backend.identifier,
    connections,
    timeoutSec,
    deadConnTimeoutSec,
    readOnly: v["read-only"],
  };
  try {
    nbd = await NbdKernel.open({ log });
    // With a kernel request timeout, the kernel may drop our socket on its own
    // (a slow target) and announce NBD_CMD_LINK_DEAD: heal by handing it a new
    // one, as a takeover would. A disconnect sends no LINK_DEAD. Joined before
    // the connect, so that a timeout of the very first request is seen too.
    try {
      watch = NbdLinkWatch.open(nbd.family);
    } catch (e) {
      log.warn(
        `no LINK_DEAD watch (a kernel-dropped socket will not be replaced): ${
          e instanceof Error ? e.message : e
        }`,
      );
    }
    attachment = index !== undefined && v.takeover
      ? await takeOverServed(nbd, backend.device, { ...opts, index }, watch)
      : await attachDevice(nbd, backend.device, opts);
  } catch (e) {
    watch?.close();
    nbd?.close();
    await backend.close().catch(() => {});
    throw e;
  }
  // Notifications so far are about sockets before ours (a takeover's old
  // one: it is dead before our RECONFIGURE, and takeOver() waited for the old
  // daemon to exit, so its LINK_DEAD is in).
  watch?.deadIndexes();
  const started = new Date();
  let a = attachment;
  let released = false;
  let stopRequested = false;
  /** The target's other LUNs (--luns): a device, a server and a control socket each. */
  const others: { lun: number; device: BlockDevice; a: KernelAttachment; ctl?: ControlServer }[] =
    [];
  let ctl: ControlServer | undefined;
  try {
    ctl = await ControlServer.listen(controlPath(a.index), (req) => {
      switch (req.cmd) {
        case "status":
          return { reply: { ok: true, status: statusOf(a, backend, started) } };
        case "detach":
          stopRequested = true;
          return { reply: { ok: true }, after: () => a.disconnect() };
        case "release":
          released = stopRequested = true;
          return { reply: { ok: true }, after: () => a.release() };
        case "resize":
          return answerResize(() => a.resize());
        case "handover":
          if (others.length) {
            return {
              reply: {
                ok: false,
                error: `this isboot also serves ${
                  others.map((o) => o.a.device).join(", ")
                } (--luns): a takeover would move ${a.device} only`,
              },
            };
          }
          return {
            reply: {
              ok: true,
              handover: { kind: "attach", args: handoverArgs(args), env: secretEnv(ctx) },
            },
          };
      }
    });
  } catch (e) {
    log.warn(`no control socket: ${e instanceof Error ? e.message : e}`);
  }
  ctx.out(`${a.device}\n`);
  log.info(
    `${a.device}: ${backend.display}, ${backend.device.size} bytes, block ${backend.device.blockSize}`,
  );
  // The target's other LUNs (--luns), attached below: a device, a server and a control socket each.
  for (const x of luns && backend.otherLuns ? await backend.otherLuns(luns, log) : []) {
    let o: KernelAttachment;
    try {
      o = await attachDevice(nbd, x.device, {
        ...opts,
        index: undefined,
        backendIdentifier: `${backend.identifier.replace(/\/\d+$/, "")}/${x.lun}`,
      });
    } catch (e) {
      log.error(`LUN ${x.lun}: not attached: ${e instanceof Error ? e.message : e}`);
      await x.device.close().catch(() => {});
      continue;
    }
    const entry: (typeof others)[number] = { lun: x.lun, device: x.device, a: o };
    others.push(entry);
    const lunBackend: Backend = {
      ...backend,
      device: x.device,
      identifier: `${backend.identifier.replace(/\/\d+$/, "")}/${x.lun}`,
      display: backend.display.replace(/\/\d+$/, `/${x.lun}`),
    };
    try {
      entry.ctl = await listenBesideControl(
        controlPath(o.index),
        o.device,
        a.device,
        () => statusOf(o, lunBackend, started),
        () => o.disconnect(),
        () => o.resize(),
      );
    } catch (e) {
      log.warn(`${o.device}: no control socket: ${e instanceof Error ? e.message : e}`);
    }
    ctx.out(`${o.device}\n`);
    log.info(`${o.device}: LUN ${x.lun}, ${x.device.size} bytes, block ${x.device.blockSize}`);
  }

  const stop = () => {
    stopRequested = true;
    for (const o of others) {
      try {
        o.a.disconnect();
      } catch { /* already gone */ }
    }
    log.info(`${a.device}: disconnecting`);
    try {
      a.disconnect();
    } catch (e) {
      log.error(`${a.device}: disconnect failed: ${e instanceof Error ? e.message : e}`);
      a.release();
    }
  };
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  for (const s of signals) Deno.addSignalListener(s, stop);
  try {
    for (;;) {
      await a.done;
      if (stopRequested || !watch) break;
      let dead = false;
      for (let i = 0; i < 20 && !dead; i++) {
        dead = watch.deadIndexes().has(a.index);
        if (!dead) await new Promise((r) => setTimeout(r, 50));
      }
      if (!dead || stopRequested) {
        log.debug(`${a.device}: connection ended${dead ? "" : " (no LINK_DEAD from the kernel)"}`);
        break;
      }
      log.warn(`${a.device}: the kernel dropped our socket (request timeout?): reconnecting it`);
      a = await takeOverDevice(nbd, backend.device, {
        ...opts,
        index: a.index,
        counters: a.counters,
      });
      watch.deadIndexes();
    }
  } finally {
    watch?.close();
    for (const s of signals) Deno.removeSignalListener(s, stop);
    // The other LUNs go with the main device.
    for (const o of others) {
      try {
        o.a.disconnect();
      } catch { /* already gone */ }
      await Promise.race([o.a.done, new Promise((r) => setTimeout(r, 10_000))]);
      await o.ctl?.close();
      await o.device.flush().catch(() => {});
      await o.device.close().catch(() => {});
    }
    await ctl?.close();
    nbd.close();
    try {
      await backend.device.flush();
    } catch (e) {
      log.error(`flush at exit failed: ${e instanceof Error ? e.message : e}`);
    }
    await backend.close();
  }
  const c = a.counters;
  log.info(
    `${a.device}: ${released ? "released" : "detached"}: ${c.requests} requests, ` +
      `${c.bytesRead} bytes read, ${c.bytesWritten} bytes written, ${c.errors} errors`,
  );
  return 0;
}

export const attachCommand: Command = {
  summary: "serve a LUN (or memory:SIZE) as a kernel /dev/nbdN device",
  options: OPTIONS,
  run,
};
