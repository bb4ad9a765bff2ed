/**
 * Minimal leveled logger. One instance is made by the CLI and passed down;
 * there is no global logger. Lines go to a sink (stderr by default; the boot
 * daemon swaps in /dev/kmsg). Callers never pass secrets to it.
 *
 * @example
 * ```ts
 * const log = new Logger({ debug: false });
 * log.info("logged in to iqn.2026-11.test:disk1");
 * ```
 */
export type LogLevel = "error" | "warn" | "info" | "debug";

export type LogSink = (level: LogLevel, line: string) => void;

const encoder = new TextEncoder();

/**
 * Writes `isboot: LINE` to stderr. A daemon outlives the terminal or pipe it
 * was started from: a line it can no longer write is dropped, never thrown.
 */
export const stderrSink: LogSink = (_level, line) => {
  try {
    Deno.stderr.writeSync(encoder.encode(`isboot: ${line}\n`));
  } catch { /* stderr is gone (closed pipe, hung-up terminal) */ }
};

export class Logger {
  readonly debugEnabled: boolean;
  #sink: LogSink;
  #quiet: boolean;

  constructor(opts: { debug?: boolean; quiet?: boolean; sink?: LogSink } = {}) {
    this.debugEnabled = opts.debug ?? false;
    this.#quiet = opts.quiet ?? false;
    this.#sink = opts.sink ?? stderrSink;
  }

  /** Replace where lines go (e.g. /dev/kmsg once the daemon owns the console). */
  setSink(sink: LogSink): void {
    this.#sink = sink;
  }

  error(msg: string): void {
    this.#sink("error", msg);
  }
  warn(msg: string): void {
    this.#sink("warn", `warning: ${msg}`);
  }
  info(msg: string): void {
    if (!this.#quiet) this.#sink("info", msg);
  }
  debug(msg: string | (() => string)): void {
    if (this.debugEnabled) this.#sink("debug", typeof msg === "function" ? msg() : msg);
  }
}
