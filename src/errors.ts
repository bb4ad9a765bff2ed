/**
 * Typed errors. Every failure the CLI reports is one of these; the CLI maps
 * `exitCode` to the process exit status (README, "Exit codes") and prints `message`
 * as one line. Messages never contain secrets.
 *
 * @example
 * ```ts
 * throw new InvalidInputError("iBFT: target 0: length 53, expected 54");
 * ```
 */
export class IsbootError extends Error {
  /** Process exit status for this kind of failure. */
  readonly exitCode: number = 1;
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Exit 1: something outside us failed (unreachable, I/O error, target refused). */
export class OperationalError extends IsbootError {
  override readonly exitCode: number = 1;
}

/** Exit 2: the command line is wrong. */
export class UsageError extends IsbootError {
  override readonly exitCode: number = 2;
}

/** Exit 3: input data is malformed (iBFT, URI, config, PDU, NBD request). */
export class InvalidInputError extends IsbootError {
  override readonly exitCode: number = 3;
}

/** Exit 4: authentication failed (CHAP refused, or the target failed mutual CHAP). */
export class AuthError extends IsbootError {
  override readonly exitCode: number = 4;
}

/** Exit codes, named. */
export const EXIT = {
  OK: 0,
  OPERATIONAL: 1,
  USAGE: 2,
  INVALID_INPUT: 3,
  AUTH: 4,
} as const;
