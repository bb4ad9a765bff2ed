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
  /** Returns the exit status; throws IsbootError subclasses for failures. */
  run(args: string[], ctx: CommandContext): Promise<number>;
}
