import type { ParseArgsConfig } from "node:util";
import type { Logger } from "../log.ts";

/** What every subcommand receives from the dispatcher. */
export interface CommandContext {
  log: Logger;
  debug: boolean;
  /** Environment lookup (tests can substitute). */
  env: (name: string) => string | undefined;
  /** Write text to stdout. */
  out: (text: string) => void;
}

/** One subcommand: a summary for `isboot --help` and its entry point. */
export interface Command {
  summary: string;
  /**
   * The parseArgs table `run` parses, without the COMMON_OPTIONS every
   * command has (src/cli/args.ts); `ibft` includes its `encode` table. The
   * man page is checked against it.
   */
  readonly options: NonNullable<ParseArgsConfig["options"]>;
  /** Returns the exit status; throws IsbootError subclasses for failures. */
  run(args: string[], ctx: CommandContext): Promise<number>;
}
