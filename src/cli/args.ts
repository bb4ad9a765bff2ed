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

/**
 * An integer option in `min..max`; undefined when absent; a usage error
 * (exit 2) naming the option and the range otherwise.
 *
 * @example
 * ```ts
 * intOption("connections", "4", 1, 16); // 4
 * ```
 */
export function intOption(
  name: string,
  text: string | undefined,
  min: number,
  max: number,
): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`--${name} '${text}': expected an integer ${min}..${max}`);
  }
  return n;
}

/**
 * `--block-size N` of a memory: disk: a power of two in `min..65536`
 * (serve takes any NBD block size from 1; attach from 512, the kernel's
 * smallest).
 *
 * @example
 * ```ts
 * blockSizeOption("4096", 512); // 4096
 * ```
 */
export function blockSizeOption(text: string | undefined, min: number): number | undefined {
  const n = text === undefined ? undefined : Number(text);
  if (
    text !== undefined && (!/^\d+$/.test(text) || n! < min || n! > 65536 || (n! & (n! - 1)) !== 0)
  ) {
    throw new UsageError(`--block-size '${text}': expected a power of two, ${min}..65536`);
  }
  return n;
}
