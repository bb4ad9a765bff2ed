/**
 * `isboot takeover [DEVICE...]`: move every device an older isboot serves to
 * this executable, with no unmount and no failed I/O (docs/boot.md "Live
 * upgrade"). The package's postinst runs it after an upgrade. For each
 * control socket: ask the daemon its status; skip it when it already runs
 * this version from an executable file still in place; else ask it for its
 * handover and start the successor, which logs in beside it and takes the
 * device over (`isboot boot --takeover` for the root disk, `isboot attach
 * --takeover --daemon` with the old daemon's arguments for the rest).
 */
import { controlRequest, listControlSockets, type SessionStatus } from "../control/control.ts";
import { OperationalError, UsageError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { nbdDevicePath, parseNbdDevice } from "../nbd/sysfs.ts";
import { selfPrefix } from "../sys/process.ts";
import { VERSION } from "../version.ts";
import { parseCommand } from "./args.ts";
import type { Command, CommandContext } from "./context.ts";

const USAGE = `usage: isboot takeover [DEVICE...] [--force]

Replace the isboot serving each device (every /run/isboot/nbdN.ctl, or the
DEVICEs named) with this executable, without unmounting anything or failing
a request: the successor logs in to the target beside the running daemon,
which then drains its requests and lets go, and the kernel gets the
successor's socket. The root disk's boot daemon is followed by a new boot
daemon ('@isboot', same NICs, same guard); an 'isboot attach' daemon by
'isboot attach --takeover --daemon' with its own arguments. Package upgrades
run this. A device whose daemon runs this version from an executable that
was not replaced since is left alone unless --force.

Prints one line per device. Exit status 1 when any takeover failed; the
line says whether the old daemon still serves the device (a failure before
it let go) or nobody does (the kernel holds the device's I/O for its
dead-connection timeout, 120 s by default).

options:
  --force   take over even a daemon of this version
`;

const OPTIONS = { force: { type: "boolean" } } as const;

/** Whether `s` must be replaced by this executable. */
export function needsTakeover(s: Pick<SessionStatus, "version" | "executable">): boolean {
  return s.version !== VERSION || !s.executable || s.executable.endsWith(" (deleted)");
}

/**
 * Run this isboot again with `args`; pass its output lines on to our log
 * until it exits. Its output pipes are not read to their end: a daemon it
 * started may hold them open for ever.
 */
async function runSelf(
  args: string[],
  env: Record<string, string>,
  log: Logger,
): Promise<number> {
  const child = new Deno.Command("/proc/self/exe", {
    args: [...selfPrefix(), ...args],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    let exited = false;
    void child.status.then(() => (exited = true));
    // Until the child exits, then what is left in the pipe (200 ms of quiet ends it).
    const stop = (): Promise<null> =>
      exited
        ? new Promise<null>((r) => setTimeout(() => r(null), 200))
        : child.status.then(() => stop());
    try {
      for (;;) {
        const r = await Promise.race([reader.read(), stop()]);
        if (r === null || r.done) break;
        buf += r.value;
        for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
          const line = buf.slice(0, nl).replace(/^isboot: /, "");
          buf = buf.slice(nl + 1);
          if (line) log.info(`  ${line}`);
        }
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  };
  const [status] = await Promise.all([child.status, pump(child.stdout), pump(child.stderr)]);
  return status.code;
}

async function status(path: string): Promise<SessionStatus> {
  const r = await controlRequest(path, { cmd: "status" });
  if (!r.ok) throw new OperationalError(r.error);
  if (!r.status) throw new OperationalError("the daemon sent no status");
  return r.status;
}

/** Replace the daemon behind `path` (serving `dev`); returns the successor's status. */
async function takeOne(
  path: string,
  dev: string,
  old: SessionStatus,
  log: Logger,
): Promise<SessionStatus> {
  const r = await controlRequest(path, { cmd: "handover" });
  if (!r.ok || !r.handover) {
    throw new OperationalError(
      `the serving isboot (pid ${old.pid}, version ${old.version ?? "0.1.0"}) cannot hand over: ${
        r.ok ? "no handover in its reply" : r.error
      }`,
    );
  }
  const h = r.handover;
  const code = h.kind === "boot"
    ? await runSelf(["boot", "--takeover", "--device", dev], {}, log)
    : await runSelf(["attach", ...h.args, "--device", dev, "--takeover", "--daemon"], h.env, log);
  if (code !== 0) throw new OperationalError(`the successor exited with status ${code}`);
  const now = await status(path);
  if (now.pid === old.pid) throw new OperationalError(`pid ${old.pid} still answers for ${dev}`);
  return now;
}

async function run(args: string[], ctx: CommandContext): Promise<number> {
  const p = parseCommand(args, OPTIONS, USAGE, ctx);
  if (!p) return 0;
  const wanted = new Set(p.positionals.map(parseNbdDevice));
  const all = await listControlSockets();
  for (const w of wanted) {
    if (!all.some((s) => s.index === w)) {
      throw new UsageError(`${nbdDevicePath(w)}: no isboot serves it (no control socket)`);
    }
  }
  const sockets = wanted.size ? all.filter((s) => wanted.has(s.index)) : all;
  if (sockets.length === 0) {
    ctx.out("no isboot serves a device: nothing to take over\n");
    return 0;
  }
  let failed = 0;
  for (const s of sockets) {
    const dev = nbdDevicePath(s.index);
    let old: SessionStatus | undefined;
    try {
      old = await status(s.path);
      if (!p.values.force && !needsTakeover(old)) {
        ctx.out(`${dev}: served by isboot ${VERSION} already (pid ${old.pid})\n`);
        continue;
      }
      const now = await takeOne(s.path, dev, old, ctx.log);
      ctx.out(
        `${dev}: now served by isboot ${now.version} (pid ${now.pid}); ` +
          `was ${old.version ?? "0.1.0"} (pid ${old.pid})\n`,
      );
    } catch (e) {
      failed++;
      const why = e instanceof Error ? e.message : String(e);
      const still = await status(s.path).catch(() => null);
      ctx.log.error(
        `${dev}: takeover failed: ${why}; ` +
          (still
            ? `pid ${still.pid} (isboot ${still.version ?? "0.1.0"}) still serves it`
            : "nobody serves it now: its I/O waits for the kernel's dead-connection timeout"),
      );
    }
  }
  return failed ? 1 : 0;
}

export const takeoverCommand: Command = {
  summary: "move every device served by an older isboot to this executable (live upgrade)",
  options: OPTIONS,
  run,
};
