import { parseArgs, type ParseArgsConfig } from "node:util";
import { UsageError } from "../errors.ts";
import type { CommandContext } from "./context.ts";

type Options = NonNullable<ParseArgsConfig["options"]>;

/** Options every subcommand accepts. */
export const COMMON_OPTIONS = {
  help: { type: "boolean", short: "h" },
  debug: { type: "boolean" },
  json: { type: "boolean" },
} as const satisfies Options;

/**
 * Parse a subcommand's arguments with node:util parseArgs, turning its errors
 * into UsageError (exit 2). Returns null when `--help` was given, after
 * printing `usage`.
 *
 * @example
 * ```ts
 * const p = parseCommand(args, { output: { type: "string" } }, USAGE, ctx);
 * if (!p) return 0;
 * ```
 */
export function parseCommand<O extends Options>(
  args: string[],
  options: O,
  usage: string,
  ctx: CommandContext,
  allowPositionals = true,
) {
  type Config = {
    args: string[];
    options: O & typeof COMMON_OPTIONS;
    allowPositionals: boolean;
    strict: true;
  };
  let parsed: ReturnType<typeof parseArgs<Config>>;
  try {
    parsed = parseArgs<Config>({
      args,
      options: { ...COMMON_OPTIONS, ...options },
      allowPositionals,
      strict: true,
    });
  } catch (e) {
    const msg = e instanceof Error ? e.message.split("\n")[0] : String(e);
    throw new UsageError(`${msg} (see --help)`);
  }
  if ((parsed.values as { help?: boolean }).help) {
    ctx.out(usage.endsWith("\n") ? usage : usage + "\n");
    return null;
  }
  return parsed;
}

/** Print one JSON document on stdout. */
export function printJson(ctx: CommandContext, value: unknown): void {
  ctx.out(JSON.stringify(value, null, 2) + "\n");
}
