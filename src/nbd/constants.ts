/**
 * NBD protocol constants, in one place. Names and values are those of the
 * NBD protocol document (NetworkBlockDevice/nbd `doc/proto.md`, "Values").
 * Every number on the wire is big-endian ("network byte order").
 *
 * @example
 * ```ts
 * import { NBD_CMD_READ, NBD_FLAG_HAS_FLAGS } from "./constants.ts";
 * ```
 * @module
 */

// ---- Magics (proto.md "Handshake", "Transmission") ----

/** "NBDMAGIC", the first 8 bytes the server sends (also `INIT_PASSWD`). */
export const NBDMAGIC_HI = 0x4e42444d;
export const NBDMAGIC_LO = 0x41474943;
/** "IHAVEOPT": newstyle magic, sent by the server and before every option. */
export const IHAVEOPT_HI = 0x49484156;
export const IHAVEOPT_LO = 0x454f5054;
/** Magic in front of every option reply (0x3e889045565a9). */
export const NBD_REP_MAGIC_HI = 0x0003e889;
export const NBD_REP_MAGIC_LO = 0x045565a9;
/** Magic of every compact transmission request. */
export const NBD_REQUEST_MAGIC = 0x25609513;
/** Magic of the 64-bit extended request header (not negotiated by us). */
export const NBD_EXTENDED_REQUEST_MAGIC = 0x21e41c71;
/** Magic of a simple reply. */
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
/** Magic of a structured reply chunk. */
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

// ---- Handshake flags (server, 16 bits) and client flags (32 bits) ----

export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;
/** Client flags this server understands; any other bit closes the connection. */
export const NBD_KNOWN_CLIENT_FLAGS = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;

// ---- Transmission flags (16 bits) ----

export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_RESIZE = 1 << 9;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;

// ---- Options (handshake) ----

export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_PEEK_EXPORT = 4;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;
export const NBD_OPT_EXTENDED_HEADERS = 11;

// ---- Option replies ----

export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
/** Bit 31 marks an error reply. */
export const NBD_REP_FLAG_ERROR = 0x80000000;
export const NBD_REP_ERR_UNSUP = NBD_REP_FLAG_ERROR + 1;
export const NBD_REP_ERR_POLICY = NBD_REP_FLAG_ERROR + 2;
export const NBD_REP_ERR_INVALID = NBD_REP_FLAG_ERROR + 3;
export const NBD_REP_ERR_PLATFORM = NBD_REP_FLAG_ERROR + 4;
export const NBD_REP_ERR_TLS_REQD = NBD_REP_FLAG_ERROR + 5;
export const NBD_REP_ERR_UNKNOWN = NBD_REP_FLAG_ERROR + 6;
export const NBD_REP_ERR_SHUTDOWN = NBD_REP_FLAG_ERROR + 7;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = NBD_REP_FLAG_ERROR + 8;
export const NBD_REP_ERR_TOO_BIG = NBD_REP_FLAG_ERROR + 9;

// ---- Info types (NBD_REP_INFO, NBD_OPT_INFO/GO) ----

export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// ---- Commands ----

export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;
export const NBD_CMD_RESIZE = 8;

// ---- Command flags ----

export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;
export const NBD_CMD_FLAG_PAYLOAD_LEN = 1 << 5;

// ---- Structured replies ----

export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_ERROR = (1 << 15) + 1;
export const NBD_REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2;

// ---- Error values (proto.md "Error values"; not host errno) ----

export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;
/** Every error value the protocol allows on the wire. */
export const NBD_ERRORS: ReadonlySet<number> = new Set([
  NBD_EPERM,
  NBD_EIO,
  NBD_ENOMEM,
  NBD_EINVAL,
  NBD_ENOSPC,
  NBD_EOVERFLOW,
  NBD_ENOTSUP,
  NBD_ESHUTDOWN,
]);

// ---- Sizes ----

/** Compact request header: magic, flags, type, handle, offset, length. */
export const NBD_REQUEST_SIZE = 28;
/** Simple reply header: magic, error, handle. */
export const NBD_SIMPLE_REPLY_SIZE = 16;
/** Structured reply chunk header: magic, flags, type, handle, length. */
export const NBD_STRUCTURED_REPLY_SIZE = 20;
/** Option request header: IHAVEOPT, option, length. */
export const NBD_OPTION_HEADER_SIZE = 16;
/** Option reply header: magic, option, type, length. */
export const NBD_OPTION_REPLY_HEADER_SIZE = 20;
/** Largest payload we accept or send: 32 MiB, what every client assumes (proto.md). */
export const NBD_MAX_PAYLOAD = 32 * 1024 * 1024;
/** Strings (export names, descriptions, messages) MUST be no longer than this. */
export const NBD_MAX_STRING = 4096;
/** Zero padding after NBD_OPT_EXPORT_NAME unless NO_ZEROES was negotiated. */
export const NBD_EXPORT_NAME_PADDING = 124;
/** IANA port for newstyle NBD. */
export const NBD_DEFAULT_PORT = 10809;

/** Human names for logging. */
export const NBD_CMD_NAMES: Readonly<Record<number, string>> = {
  [NBD_CMD_READ]: "READ",
  [NBD_CMD_WRITE]: "WRITE",
  [NBD_CMD_DISC]: "DISC",
  [NBD_CMD_FLUSH]: "FLUSH",
  [NBD_CMD_TRIM]: "TRIM",
  [NBD_CMD_CACHE]: "CACHE",
  [NBD_CMD_WRITE_ZEROES]: "WRITE_ZEROES",
  [NBD_CMD_BLOCK_STATUS]: "BLOCK_STATUS",
  [NBD_CMD_RESIZE]: "RESIZE",
};

export const NBD_OPT_NAMES: Readonly<Record<number, string>> = {
  [NBD_OPT_EXPORT_NAME]: "EXPORT_NAME",
  [NBD_OPT_ABORT]: "ABORT",
  [NBD_OPT_LIST]: "LIST",
  [NBD_OPT_PEEK_EXPORT]: "PEEK_EXPORT",
  [NBD_OPT_STARTTLS]: "STARTTLS",
  [NBD_OPT_INFO]: "INFO",
  [NBD_OPT_GO]: "GO",
  [NBD_OPT_STRUCTURED_REPLY]: "STRUCTURED_REPLY",
  [NBD_OPT_LIST_META_CONTEXT]: "LIST_META_CONTEXT",
  [NBD_OPT_SET_META_CONTEXT]: "SET_META_CONTEXT",
  [NBD_OPT_EXTENDED_HEADERS]: "EXTENDED_HEADERS",
};
