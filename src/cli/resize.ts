/**
 * `isboot resize DEVICE [--json]`: the isboot serving /dev/nbdN (`attach` or
 * the boot daemon) reads its LUN's capacity again and grows the kernel
 * device to it in place, so that `resize2fs` can grow a mounted filesystem
 * (docs/kernel.md, "Growing a live device"). Asked over the device's control
 * socket, like `status` and `detach`.
 */
import { controlPath, controlRequest } from "../control/control.ts";
import { InvalidInputError, OperationalError, UsageError } from "../errors.ts";
import type { ResizeReport } from "../nbd/attach.ts";
import { nbdDevicePath, parseNbdDevice } from "../nbd/sysfs.ts";
import { parseCommand, printJson } from "./args.ts";
import type { Command, CommandContext } from "./context.ts";

const USAGE = `usage: isboot resize DEVICE [--json]

Grow /dev/nbdN to its LUN's size now: the isboot serving it (attach, or the
boot daemon) sends READ CAPACITY and gives the kernel the new size; then
\`resize2fs DEVICE\` (or growpart, pvresize...) grows what is on it. Prints the
old and new size. A LUN that reports less than the device's size is refused:
the device keeps its size (nothing is taken from under a mounted filesystem).
Growth the target announces (UNIT ATTENTION CAPACITY DATA HAS CHANGED) is
applied without this command; tgt announces none.

--json prints one document:
  { "device", "oldSizeBytes", "newSizeBytes", "reportedSizeBytes",
    "outcome": "grown" | "unchanged" | "refused", "detail" }

exit codes: 0 grown or unchanged, 1 no isboot serves DEVICE or the re-read
failed, 2 usage, 3 the LUN reports a smaller size (refused)
`;

const OPTIONS = {} as const;

/** How long READ CAPACITY may take (the LUN may be becoming ready, or its target recovering). */
const RESIZE_TIMEOUT_MS = 90_000;

/**
 * The text line for a resize report.
 *
 * @example
 * ```ts
 * formatResize({ device: "/dev/nbd0", oldSizeBytes: "67108864", newSizeBytes: "134217728",
 *   reportedSizeBytes: "134217728", outcome: "grown", detail: null });
 * // "/dev/nbd0: 67108864 -> 134217728 bytes"
 * ```
 */
export function formatResize(r: ResizeReport): string {
  switch (r.outcome) {
    case "grown":
      return `${r.device}: ${r.oldSizeBytes} -> ${r.newSizeBytes} bytes`;
    case "unchanged":
      return `${r.device}: ${r.newSizeBytes} bytes (unchanged)`;
    case "refused":
      return `${r.device}: ${r.newSizeBytes} bytes (the LUN reports ${r.reportedSizeBytes}: refused)`;
  }
}

async function run(args: string[], ctx: CommandContext): Promise<number> {
  const p = parseCommand(args, OPTIONS, USAGE, ctx);
  if (!p) return 0;
  if (p.positionals.length !== 1) throw new UsageError("resize: expected one DEVICE (see --help)");
  const index = parseNbdDevice(p.positionals[0]);
  const dev = nbdDevicePath(index);
  const path = controlPath(index);
  let reply;
  try {
    reply = await controlRequest(path, { cmd: "resize" }, RESIZE_TIMEOUT_MS);
  } catch (e) {
    throw new OperationalError(
      `${dev}: no isboot serves it (${e instanceof Error ? e.message : e})`,
    );
  }
  if (!reply.ok) throw new OperationalError(`${dev}: ${reply.error}`);
  const r = reply.resize;
  if (!r) {
    throw new OperationalError(`${dev}: the daemon did not report a resize (an older isboot?)`);
  }
  if ((p.values as { json?: boolean }).json) printJson(ctx, r);
  else ctx.out(formatResize(r) + "\n");
  if (r.outcome === "refused") throw new InvalidInputError(r.detail ?? `${dev}: refused`);
  return 0;
}

export const resizeCommand: Command = {
  summary: "grow a kernel NBD device to its LUN's new size (attach, boot)",
  options: OPTIONS,
  run,
};
