import { IsbootError, UsageError } from "../errors.ts";
import { Logger } from "../log.ts";
import { VERSION } from "../version.ts";
import { COMMANDS } from "./commands.ts";
import type { CommandContext } from "./context.ts";

const encoder = new TextEncoder();

function usage(): string {
  const names = Object.keys(COMMANDS).sort();
  const width = Math.max(8, ...names.map((n) => n.length));
  const lines = names.map((n) => `  ${n.padEnd(width)}  ${COMMANDS[n].summary}`);
  return [
    "usage: isboot <command> [options]",
    "",
    "Boot from the iSCSI disk named by the firmware's iBFT, served to the kernel over NBD.",
    "",
    "commands:",
    ...lines,
    "",
    "options: --help, --version, --debug; each command has --help.",
    "exit codes: 0 ok, 1 operational failure, 2 usage, 3 invalid input, 4 authentication failed",
    "",
  ].join("\n");
}

/**
 * Run the CLI and return the exit status. Never throws: every error becomes a
 * one-line `isboot: ...` message on stderr (a stack trace only with --debug).
 */
export async function main(argv: string[], env = (n: string) => Deno.env.get(n)): Promise<number> {
  const debug = argv.includes("--debug") || env("ISBOOT_DEBUG") === "1";
  const log = new Logger({ debug });
  const ctx: CommandContext = {
    log,
    debug,
    env,
    out: (text) => writeAll(Deno.stdout, encoder.encode(text)),
  };
  try {
    const [name, ...rest] = argv.filter((a, i) => !(a === "--debug" && i === 0));
    if (name === undefined || name === "--help" || name === "-h" || name === "help") {
      ctx.out(usage());
      return name === undefined ? 2 : 0;
    }
    if (name === "--version" || name === "-V") {
      ctx.out(`isboot ${VERSION}\n`);
      return 0;
    }
    const cmd = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
    if (!cmd) throw new UsageError(`unknown command '${name}' (see isboot --help)`);
    return await cmd.run(rest, ctx);
  } catch (e) {
    return reportError(e, log, debug);
  }
}

/** Map an error to its exit status and print it as one line. */
export function reportError(e: unknown, log: Logger, debug: boolean): number {
  if (e instanceof IsbootError) {
    log.error(oneLine(e.message));
    if (debug && e.stack) log.debug(e.stack);
    return e.exitCode;
  }
  const msg = e instanceof Error ? e.message : String(e);
  log.error(`internal error: ${oneLine(msg)}${debug ? "" : " (run with --debug for details)"}`);
  if (debug && e instanceof Error && e.stack) log.debug(e.stack);
  return 1;
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, "; ");
}

function writeAll(w: { writeSync(p: Uint8Array): number }, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) off += w.writeSync(data.subarray(off));
}
