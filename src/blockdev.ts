/**
 * The interface between the storage layers (iSCSI/SCSI, in-memory, ...) and
 * the NBD server (design.md §2). Many requests may be in flight at once.
 * Connection loss is handled below this interface: callers see a slower
 * request, not an error, until the configured recovery timeout ends.
 */
export interface BlockDeviceLimits {
  /** Largest single request in bytes the device accepts in one call. */
  maxTransfer: number;
  /** Preferred request size in bytes, if the device states one. */
  optimalTransfer?: number;
  /** trim() is supported (SCSI UNMAP). */
  canUnmap: boolean;
  /** writeZeroes() is supported (SCSI WRITE SAME). */
  canWriteZeroes: boolean;
}

export interface BlockDevice {
  /** Size in bytes. */
  readonly size: bigint;
  /** Logical block size in bytes. */
  readonly blockSize: number;
  readonly readOnly: boolean;
  readonly limits: BlockDeviceLimits;
  read(offset: bigint, length: number): Promise<Uint8Array>;
  write(offset: bigint, data: Uint8Array, opts?: { fua?: boolean }): Promise<void>;
  flush(): Promise<void>;
  trim(offset: bigint, length: number): Promise<void>;
  writeZeroes(offset: bigint, length: number, opts?: { mayTrim?: boolean }): Promise<void>;
  close(): Promise<void>;
}
