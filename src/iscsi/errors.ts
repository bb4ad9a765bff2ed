import { InvalidInputError } from "../errors.ts";

/**
 * A target broke the protocol (malformed PDU, unknown ITT, Data-In past the
 * buffer, digest mismatch, ...). It ends the connection it arrived on; the
 * session turns it into recovery or, today, into failed commands. Exit 3 when
 * it reaches the CLI (malformed input from the network).
 *
 * @example
 * ```ts
 * throw new IscsiProtocolError("Data-In for unknown ITT 0x12");
 * ```
 */
export class IscsiProtocolError extends InvalidInputError {}
