import type { Command } from "./context.ts";
import { serveCommand } from "./serve.ts";
import { ibftCommand } from "./ibft.ts";

/**
 * The subcommand table. Each entry lives in its own file under src/cli/ and
 * is thin: parse, call the layers, print.
 */
export const COMMANDS: Record<string, Command> = {
  ibft: ibftCommand,
  serve: serveCommand,
};
