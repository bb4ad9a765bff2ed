/**
 * The NBD handshake, server side: the fixed newstyle negotiation
 * (proto.md), which ends with the export and settings of the
 * transmission phase.
 * @module
 */
import { concatBytes } from "../bytes.ts";
import type { Logger } from "../log.ts";
import {
  NBD_FLAG_C_NO_ZEROES,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_NAME,
  NBD_KNOWN_CLIENT_FLAGS,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_NAMES,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_OPTION_HEADER_SIZE,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_SHUTDOWN,
  NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_SERVER,
} from "./constants.ts";
import { blockSizes, type NbdExport, transmissionFlags } from "./export.ts";
import {
  decodeString,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeOptionError,
  encodeOptionReply,
  encodeServerEntry,
  parseInfoRequest,
  parseOptionHeader,
} from "./protocol.ts";
import type { BufferedReader } from "./reader.ts";
import type { ByteStream } from "./stream.ts";

/** Option data beyond this is discarded and refused (a GO with a 4096-byte name is ~4.2 KiB). */
export const MAX_OPTION_DATA = 16 * 1024;
/** Receive buffer while negotiating: the largest option we read, plus its header. */
export const HANDSHAKE_BUFFER_SIZE = MAX_OPTION_DATA + 4096;

/** What {@link negotiate} needs besides the connection and the exports. */
export interface NegotiateOptions {
  log: Logger;
  /** Prefix of log lines. */
  label: string;
  /** True once the server shuts down: options are then refused with NBD_REP_ERR_SHUTDOWN. */
  stopping: () => boolean;
}

/** The outcome of a handshake: the export and how transmission runs. */
export interface Negotiated {
  export: NbdExport;
  /** Transmission flags sent to the client. */
  flags: number;
  /** The client asked for structured replies. */
  structured: boolean;
}

/** The export a client names; "" is the first. */
function findExport(exports: readonly NbdExport[], name: string): NbdExport | undefined {
  if (name === "") return exports[0];
  return exports.find((e) => e.name === name);
}

function flagsFor(e: NbdExport, structured: boolean): number {
  return transmissionFlags(e.device, { readOnly: e.readOnly, structuredReplies: structured });
}

/**
 * Fixed newstyle option haggling (proto.md "Fixed newstyle negotiation"),
 * from the greeting to NBD_OPT_GO or NBD_OPT_EXPORT_NAME. Returns the export
 * and settings for transmission, or null when the connection ends (ABORT,
 * EOF, a protocol violation, or an NBD_OPT_EXPORT_NAME we cannot satisfy).
 * A bad option magic throws.
 *
 * @example
 * ```ts
 * const reader = new BufferedReader(stream, HANDSHAKE_BUFFER_SIZE);
 * const chosen = await negotiate(stream, reader, exports, { log, label, stopping: () => false });
 * if (chosen) reader.grow(READ_BUFFER_SIZE); // then the transmission phase
 * ```
 */
export async function negotiate(
  stream: ByteStream,
  reader: BufferedReader,
  exports: readonly NbdExport[],
  opts: NegotiateOptions,
): Promise<Negotiated | null> {
  const { log, label } = opts;
  await stream.write(encodeGreeting());
  if (!(await reader.ensure(4))) return null;
  const clientFlags = reader.u32(reader.start);
  reader.start += 4;
  if ((clientFlags & ~NBD_KNOWN_CLIENT_FLAGS) !== 0) {
    // proto.md "Client flags": the server MUST drop the connection.
    log.debug(`${label}: unknown client flags 0x${clientFlags.toString(16)}`);
    return null;
  }
  const noZeroes = (clientFlags & NBD_FLAG_C_NO_ZEROES) !== 0;
  let structured = false;

  for (;;) {
    if (!(await reader.ensure(NBD_OPTION_HEADER_SIZE))) return null;
    const hdr = parseOptionHeader(reader.buf, reader.start); // bad magic: throws, connection ends
    reader.start += NBD_OPTION_HEADER_SIZE;
    const { option, length } = hdr;
    log.debug(() => `${label}: option ${NBD_OPT_NAMES[option] ?? option}, ${length} bytes`);

    if (length > MAX_OPTION_DATA) {
      // Discard without holding it in memory, then refuse.
      if (option === NBD_OPT_EXPORT_NAME) return null; // cannot answer: hard disconnect
      if (!(await reader.skip(length))) return null;
      await stream.write(encodeOptionError(option, NBD_REP_ERR_TOO_BIG, "option data too long"));
      continue;
    }
    if (!(await reader.ensure(length))) return null;
    const data = reader.buf.slice(reader.start, reader.start + length);
    reader.start += length;

    if (opts.stopping() && option !== NBD_OPT_ABORT) {
      if (option === NBD_OPT_EXPORT_NAME) return null;
      await stream.write(
        encodeOptionError(option, NBD_REP_ERR_SHUTDOWN, "server is shutting down"),
      );
      continue;
    }

    switch (option) {
      case NBD_OPT_EXPORT_NAME: {
        const name = decodeString(data);
        const e = name === null ? undefined : findExport(exports, name);
        if (!e) {
          // proto.md: an export that does not exist MUST terminate the session.
          log.debug(`${label}: NBD_OPT_EXPORT_NAME for unknown export`);
          return null;
        }
        const flags = flagsFor(e, structured);
        await stream.write(encodeExportNameReply(e.device.size, flags, noZeroes));
        return { export: e, flags, structured };
      }
      case NBD_OPT_ABORT:
        try {
          await stream.write(encodeOptionReply(option, NBD_REP_ACK));
        } catch {
          // the client may close without waiting for the ACK (proto.md)
        }
        return null;
      case NBD_OPT_LIST: {
        if (length !== 0) {
          await stream.write(
            encodeOptionError(option, NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data"),
          );
          break;
        }
        for (const e of exports) {
          await stream.write(
            encodeOptionReply(
              option,
              NBD_REP_SERVER,
              encodeServerEntry(e.name, e.description ?? ""),
            ),
          );
        }
        await stream.write(encodeOptionReply(option, NBD_REP_ACK));
        break;
      }
      case NBD_OPT_STRUCTURED_REPLY:
        if (length !== 0) {
          await stream.write(
            encodeOptionError(
              option,
              NBD_REP_ERR_INVALID,
              "NBD_OPT_STRUCTURED_REPLY takes no data",
            ),
          );
          break;
        }
        structured = true;
        await stream.write(encodeOptionReply(option, NBD_REP_ACK));
        break;
      case NBD_OPT_INFO:
      case NBD_OPT_GO: {
        const req = parseInfoRequest(data);
        if (!req) {
          await stream.write(
            encodeOptionError(option, NBD_REP_ERR_INVALID, "malformed NBD_OPT_INFO/GO data"),
          );
          break;
        }
        const e = findExport(exports, req.name);
        if (!e) {
          await stream.write(
            encodeOptionError(
              option,
              NBD_REP_ERR_UNKNOWN,
              `no export named "${req.name.slice(0, 256)}"`,
            ),
          );
          break;
        }
        const flags = flagsFor(e, structured);
        const replies: Uint8Array[] = [
          encodeOptionReply(option, NBD_REP_INFO, encodeInfoExport(e.device.size, flags)),
        ];
        if (req.infos.includes(NBD_INFO_NAME)) {
          replies.push(
            encodeOptionReply(option, NBD_REP_INFO, encodeInfoString(NBD_INFO_NAME, e.name)),
          );
        }
        if (req.infos.includes(NBD_INFO_DESCRIPTION) && e.description) {
          replies.push(
            encodeOptionReply(
              option,
              NBD_REP_INFO,
              encodeInfoString(NBD_INFO_DESCRIPTION, e.description),
            ),
          );
        }
        // NBD_INFO_BLOCK_SIZE is sent even when not asked for (proto.md
        // allows it): clients that honour it never send unaligned or
        // oversized requests.
        replies.push(
          encodeOptionReply(option, NBD_REP_INFO, encodeInfoBlockSize(blockSizes(e.device))),
        );
        replies.push(encodeOptionReply(option, NBD_REP_ACK));
        await stream.write(concatBytes(replies));
        if (option === NBD_OPT_GO) return { export: e, flags, structured };
        break;
      }
      default:
        // STARTTLS, meta contexts, extended headers and anything unknown.
        await stream.write(
          encodeOptionError(
            option,
            NBD_REP_ERR_UNSUP,
            `option ${NBD_OPT_NAMES[option] ?? option} not supported`,
          ),
        );
    }
  }
}
