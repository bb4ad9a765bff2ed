/**
 * `isboot detach DEVICE`: disconnect a kernel NBD device (NBD_CMD_DISCONNECT
 * over netlink; works whether or not its daemon is alive) and wait until the
 * kernel has let it go.
 */
import { OperationalError, UsageError } from "../errors.ts";
import { nbdDevicePath, NbdKernel, parseNbdDevice, readNbdSysfs } from "../nbd/kernel.ts";
import { parseCommand } from "./args.ts";
import type { Command, CommandContext } from "./context.ts";

const USAGE = `usage: isboot detach DEVICE [--wait SEC]

Disconnect /dev/nbdN: the kernel sends NBD_CMD_DISC to the serving isboot,
which flushes, logs out and exits. Waits until the device is released.

options:
  --wait SEC   how long to wait for the release (default 30)
`;

const OPTIONS = { wait: { type: "string" } } as const;

async function run(args: string[], ctx: CommandContext): Promise<number> {
  const p = parseCommand(args, OPTIONS, USAGE, ctx);
  if (!p) return 0;
  if (p.positionals.length !== 1) throw new UsageError("detach: expected one DEVICE (see --help)");
  const index = parseNbdDevice(p.positionals[0]);
  const waitText = p.values.wait ?? "30";
  if (!/^\d+$/.test(waitText)) throw new UsageError(`--wait '${waitText}': expected seconds`);
  const dev = nbdDevicePath(index);
  const nbd = await NbdKernel.open({ loadModule: false, log: ctx.log });
  try {
    const st = nbd.status(index).find((d) => d.index === index);
    if (!st?.connected) throw new OperationalError(`${dev} is not connected`);
    nbd.disconnect(index);
  } finally {
    nbd.close();
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
