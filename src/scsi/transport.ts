/**
 * What the SCSI layer needs from a transport (the iSCSI session implements
 * it). The SCSI layer builds CDBs and interprets status and sense; the
 * transport moves bytes, keeps many commands in flight, and hides connection
 * recovery: a command that could not be delivered is retried below this
 * interface until the recovery timeout, then rejected with OperationalError.
 * A transport that is one path of several (multipath) rejects with
 * {@link PathDownError} instead, at once, so that the command goes on
 * another path.
 */
import { OperationalError } from "../errors.ts";

/**
 * The path this command was sent on is down: the command was not carried
 * out (or may have been, and may be sent again: a block command is
 * idempotent). Send it on another path. Only a transport configured as one
 * path of several throws it.
 */
export class PathDownError extends OperationalError {}
export interface ScsiCommand {
  /** LUN number (the transport encodes it into the 8-byte SAM LUN field). */
  lun: number;
  /** The CDB, 6 to 16 bytes. */
  cdb: Uint8Array;
  /** Data-Out payload (writes). */
  dataOut?: Uint8Array;
  /** Expected Data-In length in bytes (reads). */
  dataInLength?: number;
  /**
   * Optional caller-owned buffer of at least dataInLength bytes: the transport
   * places Data-In directly into it (no copy) and returns a view of it.
   */
  dataInBuffer?: Uint8Array;
}

export interface ScsiResponse {
  /** SAM status byte: 0x00 GOOD, 0x02 CHECK CONDITION, 0x08 BUSY, 0x28 TASK SET FULL, ... */
  status: number;
  /** Data-In actually received (a view; length = dataInLength - underflow). */
  data: Uint8Array;
  /** Bytes expected but not transferred (iSCSI residual underflow), else 0. */
  residualUnderflow: number;
  /** Bytes the target had beyond the expected length (residual overflow), else 0. */
  residualOverflow: number;
  /** Sense data (without the 2-byte SenseLength prefix), when status carries it. */
  sense?: Uint8Array;
}

export interface ScsiTransport {
  execute(cmd: ScsiCommand): Promise<ScsiResponse>;
  /** Largest Data-In or Data-Out one command should carry, in bytes (0 = no limit known). */
  readonly maxTransferHint: number;
  close(): Promise<void>;
}
