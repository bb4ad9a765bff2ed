/**
 * `isboot detach DEVICE`: disconnect a kernel NBD device and wait until the
 * kernel has let it go. The process serving the device is asked first on its
 * control socket: `isboot attach` disconnects itself, the boot daemon refuses
 * (the device is the root disk) and so does this command, unless `--force`.
 * With no process answering, the device is disconnected over netlink
 * (NBD_CMD_DISCONNECT), which works whether or not its daemon is alive.
 */
import { controlPath, controlRequest } from "../control/control.ts";
import { OperationalError, UsageError } from "../errors.ts";
import { NbdKernel } from "../nbd/genl.ts";
import { nbdDevicePath, parseNbdDevice, readNbdSysfs } from "../nbd/sysfs.ts";
import { parseCommand } from "./args.ts";
import type { Command, CommandContext } from "./context.ts";

const USAGE = `usage: isboot detach DEVICE [--wait SEC] [--force]

Disconnect /dev/nbdN: the serving isboot flushes, logs out and exits. Waits
until the device is released. The root disk (served by the boot daemon) is
refused unless --force.

options:
  --wait SEC   how long to wait for the release (default 30)
  --force      disconnect even the root disk, without asking its daemon
`;

const OPTIONS = { wait: { type: "string" }, force: { type: "boolean" } } as const;

/**
 * Ask the process behind `index`'s control socket to detach. True when it
 * agreed (it disconnects the device itself); false when nobody answers (no
 * socket, or a stale one); throws when it refuses.
 */
async function askServer(index: number, dev: string): Promise<boolean> {
  const path = controlPath(index);
  let reply;
  try {
    reply = await controlRequest(path, { cmd: "detach" });
  } catch {
    return false; // nobody serves it any more: the kernel is told directly
  }
  if (reply.ok) return true;
  throw new OperationalError(
    `${dev}: ${reply.error} (isboot detach --force disconnects it anyway)`,
  );
}

async function run(args: string[], ctx: CommandContext): Promise<number> {
  const p = parseCommand(args, OPTIONS, USAGE, ctx);
  if (!p) return 0;
  if (p.positionals.length !== 1) throw new UsageError("detach: expected one DEVICE (see --help)");
  const index = parseNbdDevice(p.positionals[0]);
  const waitText = p.values.wait ?? "30";
  if (!/^\d+$/.test(waitText)) throw new UsageError(`--wait '${waitText}': expected seconds`);
  const dev = nbdDevicePath(index);
  const asked = !p.values.force && await askServer(index, dev);
  if (!asked) {
    const nbd = await NbdKernel.open({ loadModule: false, log: ctx.log });
    try {
      const st = nbd.status(index).find((d) => d.index === index);
      if (!st?.connected) throw new OperationalError(`${dev} is not connected`);
      nbd.disconnect(index);
    } finally {
      nbd.close();
    }
  }
  const deadline = Date.now() + Number(waitText) * 1000;
  for (;;) {
    const s = readNbdSysfs(index);
    if (!s.exists || (s.pid === undefined && s.sizeBytes === 0n)) break;
    if (Date.now() > deadline) {
      throw new OperationalError(`${dev}: disconnected, but the kernel still holds it`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  ctx.log.info(`${dev} detached`);
  return 0;
}

export const detachCommand: Command = {
  summary: "disconnect a kernel NBD device made by attach or boot",
  options: OPTIONS,
  run,
};
