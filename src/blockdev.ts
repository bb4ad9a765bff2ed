/**
 * The interface between the storage layers (iSCSI/SCSI, in-memory, ...) and
 * the NBD server (docs/architecture.md). Many requests may be in flight at once.
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
  /**
   * writeZeroes() zeroes natively (SCSI WRITE SAME), faster than writing
   * zeros. It may turn false at run time, when the device refuses the
   * command it was believed to have; the device then updates this field.
   */
  canWriteZeroes: boolean;
}

/**
 * What re-reading a device's size found ({@link BlockDevice.refreshSize}).
 * A device only ever grows in place: a smaller size from the backing store
 * is refused (`refused` says why) and the device keeps serving its old
 * size, so that nothing below a mounted filesystem disappears.
 */
export interface SizeRefresh {
  /** Size served before the re-read, bytes. */
  oldSize: bigint;
  /** Size served now, bytes (oldSize unless it grew). */
  newSize: bigint;
  /** Size the backing store reports, bytes. */
  reportedSize: bigint;
  /** Why the reported size was not taken (a shrink); null when it was, or did not change. */
  refused: string | null;
}

export interface BlockDevice {
  /**
   * Size in bytes. It may grow while the device is open (refreshSize());
   * it never shrinks.
   */
  readonly size: bigint;
  /** Logical block size in bytes. */
  readonly blockSize: number;
  readonly readOnly: boolean;
  readonly limits: BlockDeviceLimits;
  read(offset: bigint, length: number): Promise<Uint8Array>;
  /**
   * Optional zero-copy read: fill all of `into` with the `into.length` bytes
   * at `offset` (same rules as read()), so a caller can reuse its own
   * buffers instead of getting a fresh one per request (the NBD server pools
   * them: RSS under a 1 MiB read stream stays flat). Resolves once every
   * byte is in place, and the device no longer touches `into` after that.
   * After a rejection the contents are undefined and the caller drops
   * `into` rather than reuse it (a command may still be on its way below,
   * as with write()'s data). Devices without it are read with read().
   *
   * @example
   * ```ts
   * const buf = new Uint8Array(4096);
   * if (dev.readInto) await dev.readInto(0n, buf);
   * else buf.set(await dev.read(0n, buf.length));
   * ```
   */
  readInto?(offset: bigint, into: Uint8Array): Promise<void>;
  write(offset: bigint, data: Uint8Array, opts?: { fua?: boolean }): Promise<void>;
  flush(): Promise<void>;
  trim(offset: bigint, length: number): Promise<void>;
  /**
   * Zero a range. `mayTrim`: the device may deallocate it, provided it
   * still reads back as zeros. `fast` (NBD_CMD_FLAG_FAST_ZERO): zero only if
   * that is faster than writing zeros; a device that would have to write
   * them as data rejects at once with an error whose `errno` is
   * "EOPNOTSUPP" and leaves the range as it was.
   *
   * @example
   * ```ts
   * await dev.writeZeroes(0n, 1 << 20, { mayTrim: true, fast: true }); // or EOPNOTSUPP
   * ```
   */
  writeZeroes(
    offset: bigint,
    length: number,
    opts?: { mayTrim?: boolean; fast?: boolean },
  ): Promise<void>;
  close(): Promise<void>;
  /**
   * Optional: ask the backing store for its size again and grow to it
   * (a SCSI LUN: READ CAPACITY). Listeners of onResize() hear of growth.
   *
   * @example
   * ```ts
   * const r = await dev.refreshSize?.(); // { oldSize: 64 MiB, newSize: 128 MiB, refused: null }
   * ```
   */
  refreshSize?(): Promise<SizeRefresh>;
  /**
   * Optional: call `listener` after the device grew, whether a refreshSize()
   * call or the device itself (a SCSI UNIT ATTENTION, CAPACITY DATA HAS
   * CHANGED) found the new size. Returns a function that removes it.
   *
   * @example
   * ```ts
   * const off = dev.onResize?.((r) => console.log(`now ${r.newSize} bytes`));
   * off?.();
   * ```
   */
  onResize?(listener: (r: SizeRefresh) => void): () => void;
}
