/**
 * Sense data (SPC-4 §4.5): fixed format (response codes 0x70/0x71) and
 * descriptor format (0x72/0x73), decoded with bounds checks into one typed
 * shape, plus the typed error the SCSI layer throws for a failed command.
 */
import { OperationalError } from "../errors.ts";
import { ASC_NAMES, OP_NAMES, SENSE_KEY, SENSE_KEY_NAMES, STATUS_NAMES } from "./constants.ts";

/** Decoded sense data. */
export interface SenseData {
  /** "fixed" (0x70/0x71) or "descriptor" (0x72/0x73). */
  format: "fixed" | "descriptor";
  /** false for deferred errors (0x71/0x73): they belong to an earlier command. */
  current: boolean;
  senseKey: number;
  asc: number;
  ascq: number;
  /** INFORMATION field (often the failing LBA), when the target marked it valid. */
  information: bigint | null;
  /** Sense-key specific bytes (SKSV set), e.g. the field pointer of ILLEGAL REQUEST. */
  senseKeySpecific: number | null;
}

/**
 * Decode sense data. Returns null when the bytes are too short or the
 * response code is not one SPC-4 defines; a truncated tail is tolerated
 * (targets may send only the first 14 or 18 bytes).
 *
 * @example
 * ```ts
 * const s = parseSense(new Uint8Array([0x70, 0, 0x06, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x29, 0]));
 * // s.senseKey === 6 (UNIT ATTENTION), s.asc === 0x29
 * ```
 */
export function parseSense(b: Uint8Array): SenseData | null {
  if (b.length < 1) return null;
  const code = b[0] & 0x7f;
  if (code === 0x70 || code === 0x71) {
    if (b.length < 3) return null;
    // Additional sense length (byte 7) may claim more than was sent: read
    // only what both allow.
    const end = b.length >= 8 ? Math.min(b.length, 8 + b[7]) : b.length;
    const valid = (b[0] & 0x80) !== 0;
    const information = valid && end >= 7 ? BigInt(readU32(b, 3)) : null;
    let sks: number | null = null;
    if (end >= 18 && (b[15] & 0x80) !== 0) sks = ((b[15] & 0x7f) << 16) | (b[16] << 8) | b[17];
    return {
      format: "fixed",
      current: code === 0x70,
      senseKey: b[2] & 0x0f,
      asc: end > 12 ? b[12] : 0,
      ascq: end > 13 ? b[13] : 0,
      information,
      senseKeySpecific: sks,
    };
  }
  if (code === 0x72 || code === 0x73) {
    if (b.length < 4) return null;
    const end = b.length >= 8 ? Math.min(b.length, 8 + b[7]) : b.length;
    let information: bigint | null = null;
    let sks: number | null = null;
    // Walk the descriptor list (SPC-4 §4.5.2.1); stop at anything that
    // would run past the end rather than trusting the lengths.
    let p = 8;
    while (p + 2 <= end) {
      const type = b[p];
      const len = b[p + 1];
      if (p + 2 + len > end) break;
      if (type === 0x00 && len >= 0x0a && (b[p + 2] & 0x80) !== 0) {
        information = (BigInt(readU32(b, p + 4)) << 32n) | BigInt(readU32(b, p + 8));
      } else if (type === 0x02 && len >= 0x06 && (b[p + 4] & 0x80) !== 0) {
        sks = ((b[p + 4] & 0x7f) << 16) | (b[p + 5] << 8) | b[p + 6];
      }
      p += 2 + len;
    }
    return {
      format: "descriptor",
      current: code === 0x72,
      senseKey: b[1] & 0x0f,
      asc: b[2],
      ascq: b[3],
      information,
      senseKeySpecific: sks,
    };
  }
  return null;
}

function readU32(b: Uint8Array, o: number): number {
  return ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
}

/** Name of a sense key, e.g. "UNIT ATTENTION". */
export function senseKeyName(key: number): string {
  return SENSE_KEY_NAMES[key & 0x0f];
}

/**
 * Name of an ASC/ASCQ pair from SPC-4 Annex D, or a generic text with the
 * hex codes when it is not in our table.
 *
 * @example
 * ```ts
 * ascName(0x29, 0x00); // "Power on, reset, or bus device reset occurred"
 * ```
 */
export function ascName(asc: number, ascq: number): string {
  const exact = ASC_NAMES.get((asc << 8) | ascq);
  if (exact) return exact;
  if (asc === 0x04) return `Logical unit not ready (ascq 0x${hex2(ascq)})`;
  return `asc 0x${hex2(asc)} ascq 0x${hex2(ascq)}`;
}

/**
 * One-line description of sense data:
 * `"ILLEGAL REQUEST: Logical block address out of range (21/00)"`.
 */
export function describeSense(s: SenseData): string {
  const info = s.information !== null ? `, information 0x${s.information.toString(16)}` : "";
  const deferred = s.current ? "" : " (deferred)";
  return `${senseKeyName(s.senseKey)}: ${ascName(s.asc, s.ascq)} (${hex2(s.asc)}/${
    hex2(s.ascq)
  })${info}${deferred}`;
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, "0");
}

/** Name of a SAM status byte. */
export function statusName(status: number): string {
  return STATUS_NAMES[status] ?? `status 0x${hex2(status)}`;
}

/** Name of the command a CDB carries. */
export function cdbName(cdb: Uint8Array): string {
  return OP_NAMES[cdb[0]] ?? `opcode 0x${hex2(cdb[0])}`;
}

/**
 * POSIX error names a block-device consumer (the NBD server) maps to its own
 * error codes. Every error the SCSI layer throws from a BlockDevice method
 * carries one as `errno`.
 */
export type BlockErrno = "EIO" | "EINVAL" | "EPERM" | "ENOSPC" | "EOPNOTSUPP";

/**
 * A SCSI command ended with a status other than GOOD after the retry policy
 * gave up. `sense` is present for CHECK CONDITION with decodable sense.
 *
 * @example
 * ```ts
 * try { await lun.write(0n, data); } catch (e) {
 *   if (e instanceof SenseError && e.sense?.senseKey === SENSE_KEY.DATA_PROTECT) { ... }
 * }
 * ```
 */
export class SenseError extends OperationalError {
  /** The POSIX error this failure means for a block-device consumer. */
  readonly errno: BlockErrno;
  constructor(
    readonly command: string,
    readonly status: number,
    readonly sense: SenseData | null,
  ) {
    super(
      `${command}: ${
        sense ? describeSense(sense) : statusName(status) +
          (status === 0x02 ? " without usable sense data" : "")
      }`,
    );
    this.errno = senseErrno(sense);
  }
}

/** Map sense to the errno a block consumer should report (Linux sd does the same). */
export function senseErrno(sense: SenseData | null): BlockErrno {
  if (!sense) return "EIO";
  const code = (sense.asc << 8) | sense.ascq;
  if (sense.senseKey === SENSE_KEY.DATA_PROTECT) {
    return code === 0x2707 ? "ENOSPC" : "EPERM";
  }
  if (sense.senseKey === SENSE_KEY.ILLEGAL_REQUEST) {
    if (sense.asc === 0x20) return "EOPNOTSUPP";
    if (sense.asc === 0x21 || sense.asc === 0x24 || sense.asc === 0x26) return "EINVAL";
  }
  return "EIO";
}
