/**
 * Lun: one SCSI direct-access logical unit behind a ScsiTransport, as a
 * BlockDevice (src/blockdev.ts). open() learns the device (INQUIRY, VPD pages,
 * READ CAPACITY, MODE SENSE); the I/O methods check each request once
 * (alignment, range, write protect), split it into commands that respect the
 * Block Limits VPD page and the transport's hint, and issue them all at once:
 * the transport, not this class, decides how many are on the wire. The size
 * grows in place when the target's capacity grows (refreshSize(), run by
 * hand or on UNIT ATTENTION 2A/09 CAPACITY DATA HAS CHANGED); it never
 * shrinks (docs/scsi.md, "Capacity changes").
 */
import type { BlockDevice, BlockDeviceLimits, SizeRefresh } from "../blockdev.ts";
import type { Logger } from "../log.ts";
import * as cdb from "./cdb.ts";
import { SENSE_KEY, TYPE_DISK, VPD } from "./constants.ts";
import {
  BlockRequestError,
  ClosedError,
  ReadOnlyError,
  ScsiDataError,
  UnsupportedError,
} from "./errors.ts";
import {
  type BlockDeviceCharacteristics,
  type BlockLimits,
  type Capacity,
  type Designator,
  type LogicalBlockProvisioning,
  type ModeSenseInfo,
  parseBlockDeviceCharacteristics,
  parseBlockLimits,
  parseDeviceIdentification,
  parseLogicalBlockProvisioning,
  parseModeSense10,
  parseReadCapacity10,
  parseReadCapacity16,
  parseReportLuns,
  parseStandardInquiry,
  parseSupportedVpdPages,
  parseUnitSerialNumber,
  parseVpdHeader,
  type ReportLuns,
  type StandardInquiry,
} from "./responses.ts";
import {
  DEFAULT_RETRY_POLICY,
  executeWithRetry,
  type RetryHooks,
  type RetryPolicy,
} from "./retry.ts";
import { SenseError } from "./sense.ts";
import type { ScsiCommand, ScsiResponse, ScsiTransport } from "./transport.ts";

/** Largest request one read()/write() call accepts (NBD's customary 32 MiB maximum). */
export const MAX_REQUEST_BYTES = 32 * 1024 * 1024;
/** Per-command size when neither the target nor the transport states a limit. */
export const DEFAULT_COMMAND_BYTES = 1024 * 1024;
/** Per-command cap for WRITE SAME when the target states no MAXIMUM WRITE SAME LENGTH. */
const DEFAULT_WRITE_SAME_BYTES = 64 * 1024 * 1024;

/** Options for Lun.open(). */
export interface LunOptions {
  /** Retry policy overrides. */
  retry?: Partial<RetryPolicy>;
  /** Retry hooks (tests swap the clock). */
  retryHooks?: RetryHooks;
  log?: Logger;
  /** Upper bound on bytes per SCSI command, below what the target allows. */
  maxCommandBytes?: number;
  /** close() also closes the transport (openTarget() sets this). */
  closeTransport?: boolean;
}

/** Everything open() learned, JSON-ready (numbers are exact below 2^53). */
export interface LunInventory {
  lun: number;
  peripheralDeviceType: number;
  deviceType: string;
  vendor: string;
  product: string;
  revision: string;
  /** Unit Serial Number VPD page, or null when the page is absent. */
  serial: string | null;
  /** Device Identification VPD designators. */
  identifiers: Designator[];
  /** Size in bytes (as a number: exact up to 8 PiB). */
  size: number;
  blocks: number;
  logicalBlockSize: number;
  physicalBlockSize: number;
  lowestAlignedLba: number;
  writeProtect: boolean;
  /** DPOFUA: FUA writes are honoured natively. */
  fua: boolean;
  writeCacheEnabled: boolean | null;
  removable: boolean;
  commandQueuing: boolean;
  scsiVersion: number;
  protectionEnabled: boolean;
  /** READ CAPACITY(16) or (10); READ/WRITE use the same size. */
  commandSize: 10 | 16;
  vpdPages: number[];
  thinProvisioning: {
    /** LBPME from READ CAPACITY(16). */
    lbpme: boolean;
    /**
     * Unmapped blocks read as zeros: every report agrees (READ CAPACITY(16)'s
     * LBPRZ bit, the VPD LBPRZ field xx1b). Only then does writeZeroes unmap.
     */
    lbprz: boolean;
    /** UNMAP supported. */
    lbpu: boolean;
    /** WRITE SAME(16) with UNMAP supported. */
    lbpws: boolean;
    lbpws10: boolean;
    provisioningType: string | null;
  };
  blockLimits: BlockLimits | null;
  blockDeviceCharacteristics: BlockDeviceCharacteristics | null;
  /** What this Lun does with requests. */
  io: {
    maxCommandBytes: number;
    canUnmap: boolean;
    /** WRITE SAME(16) used for writeZeroes (false: written as zero data). */
    writeSame: boolean;
  };
}

/**
 * A SCSI disk LUN as a BlockDevice.
 *
 * @example
 * ```ts
 * const lun = await Lun.open(session, 1, { log });
 * const data = await lun.read(0n, 4096);
 * await lun.write(4096n, data, { fua: true });
 * console.log(lun.inventory.vendor, lun.size);
 * await lun.close();
 * ```
 */
export class Lun implements BlockDevice {
  readonly blockSize: number;
  readonly readOnly: boolean;
  readonly limits: BlockDeviceLimits;
  readonly inventory: LunInventory;

  readonly #transport: ScsiTransport;
  readonly #lun: number;
  readonly #policy: RetryPolicy;
  readonly #hooks: RetryHooks;
  readonly #bsBig: bigint;
  #blocks: number;
  #size: bigint;
  readonly #log: Logger | undefined;
  readonly #resizeListeners = new Set<(r: SizeRefresh) => void>();
  /** The refreshSize() queued behind the running one (callers meanwhile share it). */
  #refreshQueued: Promise<SizeRefresh> | null = null;
  #refreshTail: Promise<unknown> = Promise.resolve();
  readonly #use16: boolean;
  readonly #fua: boolean;
  /** Blocks per READ/WRITE command (also the split alignment). */
  readonly #cmdBlocks: number;
  readonly #unmapMaxBlocks: number;
  readonly #unmapMaxDescriptors: number;
  readonly #writeSameMaxBlocks: number;
  readonly #unmapViaWriteSame: boolean;
  readonly #closeTransport: boolean;
  #writeSame: boolean;
  #closed = false;
  #zeroBlock: Uint8Array | null = null;

  private constructor(
    transport: ScsiTransport,
    lun: number,
    policy: RetryPolicy,
    hooks: RetryHooks,
    closeTransport: boolean,
    inv: LunInventory,
    cmdBlocks: number,
    log: Logger | undefined,
  ) {
    this.#transport = transport;
    this.#log = log;
    this.#lun = lun;
    this.#policy = policy;
    this.#hooks = hooks;
    this.#closeTransport = closeTransport;
    this.inventory = inv;
    this.blockSize = inv.logicalBlockSize;
    this.#bsBig = BigInt(inv.logicalBlockSize);
    this.#blocks = inv.blocks;
    this.#size = BigInt(inv.blocks) * this.#bsBig;
    this.readOnly = inv.writeProtect;
    this.#use16 = inv.commandSize === 16;
    this.#fua = inv.fua;
    this.#cmdBlocks = cmdBlocks;
    const bl = inv.blockLimits;
    const tp = inv.thinProvisioning;
    // SBC-3 §6.6.3: 0xFFFFFFFF = no limit; 0 = UNMAP not implemented, but a
    // target that sets LBPU is trusted over an unset field.
    this.#unmapMaxBlocks = bl?.maximumUnmapLbaCount ? bl.maximumUnmapLbaCount : 0xffff_ffff;
    this.#unmapMaxDescriptors = Math.max(
      1,
      Math.min(bl?.maximumUnmapBlockDescriptorCount || 1, 4095),
    );
    const wsMax = bl?.maximumWriteSameLength ?? 0;
    const wsDefault = Math.max(1, Math.floor(DEFAULT_WRITE_SAME_BYTES / this.blockSize));
    this.#writeSameMaxBlocks = Math.min(wsMax > 0 ? wsMax : wsDefault, 0xffff_ffff);
    this.#writeSame = inv.io.writeSame;
    this.#unmapViaWriteSame = tp.lbpws && tp.lbprz;
    this.limits = {
      maxTransfer: MAX_REQUEST_BYTES,
      optimalTransfer: cmdBlocks * this.blockSize,
      canUnmap: inv.io.canUnmap,
      canWriteZeroes: !this.readOnly,
    };
  }

  /** LUN number. */
  get lun(): number {
    return this.#lun;
  }

  /** Size in bytes: what READ CAPACITY said at open(), or since, when it grew. */
  get size(): bigint {
    return this.#size;
  }

  /**
   * READ CAPACITY again (the command size open() chose) and grow to the
   * size the target reports. A smaller size is refused (logged, and said in
   * `refused`): the Lun keeps serving its size, since the data past the new
   * end may still be in use above (a mounted filesystem). A changed logical
   * block length is a ScsiDataError: nothing above can follow that in place.
   * Calls made while one runs share the next one, so a burst of UNIT
   * ATTENTIONs (one per path) costs at most two commands.
   *
   * @example
   * ```ts
   * const r = await lun.refreshSize();
   * if (r.newSize > r.oldSize) console.log(`grew to ${r.newSize} bytes`);
   * ```
   */
  refreshSize(): Promise<SizeRefresh> {
    if (this.#refreshQueued) return this.#refreshQueued;
    const next = this.#refreshTail.then(() => {
      this.#refreshQueued = null;
      return this.#readCapacityAgain();
    });
    this.#refreshQueued = next;
    this.#refreshTail = next.catch(() => {});
    return next;
  }

  /**
   * Call `listener` each time the size grows. Returns its removal.
   *
   * @example
   * ```ts
   * const off = lun.onResize((r) => log.info(`${r.oldSize} -> ${r.newSize}`));
   * ```
   */
  onResize(listener: (r: SizeRefresh) => void): () => void {
    this.#resizeListeners.add(listener);
    return () => this.#resizeListeners.delete(listener);
  }

  async #readCapacityAgain(): Promise<SizeRefresh> {
    if (this.#closed) throw new ClosedError(`LUN ${this.#lun}: capacity re-read after close`);
    const cap = this.#use16
      ? parseReadCapacity16(
        (await this.#run({ cdb: cdb.readCapacity16(32), dataInLength: 32 })).data,
      )
      : parseReadCapacity10((await this.#run({ cdb: cdb.readCapacity10(), dataInLength: 8 })).data);
    if (cap.logicalBlockLength !== this.blockSize) {
      throw new ScsiDataError(
        `LUN ${this.#lun}: the logical block length changed from ${this.blockSize} to ` +
          `${cap.logicalBlockLength} bytes; only a new login can serve that`,
      );
    }
    if (!this.#use16 && cap.needs16) {
      throw new ScsiDataError(
        `LUN ${this.#lun}: the LUN grew past what READ CAPACITY(10) can describe, and ` +
          "refuses (16); only a new login can serve that",
      );
    }
    const oldSize = this.#size;
    const reportedSize = BigInt(cap.blocks) * this.#bsBig;
    if (cap.blocks < this.#blocks) {
      const refused = `LUN ${this.#lun}: the target reports ${reportedSize} bytes, less than ` +
        `the ${oldSize} served; a LUN is never shrunk under its user: still serving ${oldSize} bytes`;
      this.#log?.warn(refused);
      return { oldSize, newSize: oldSize, reportedSize, refused };
    }
    const r: SizeRefresh = { oldSize, newSize: reportedSize, reportedSize, refused: null };
    if (cap.blocks === this.#blocks) return r;
    this.#blocks = cap.blocks;
    this.#size = reportedSize;
    this.inventory.blocks = cap.blocks;
    this.inventory.size = cap.blocks * this.blockSize;
    this.#log?.info(`LUN ${this.#lun}: capacity grew from ${oldSize} to ${reportedSize} bytes`);
    for (const l of this.#resizeListeners) {
      try {
        l(r);
      } catch (e) {
        this.#log?.error(
          `LUN ${this.#lun}: resize listener: ${e instanceof Error ? e.message : e}`,
        );
      }
    }
    return r;
  }

  /** UNIT ATTENTION 2A/09 on some command: the target's capacity changed. */
  #capacityChanged(): void {
    this.#log?.info(
      `LUN ${this.#lun}: the target reports that its capacity changed; reading it again`,
    );
    this.refreshSize().catch((e) =>
      this.#log?.error(
        `LUN ${this.#lun}: capacity re-read failed: ${e instanceof Error ? e.message : e}`,
      )
    );
  }

  /**
   * Learn the LUN through `transport`: INQUIRY (it must be a connected
   * disk), TEST UNIT READY (consumes the UNIT ATTENTION a new nexus gets),
   * the VPD pages it lists, READ CAPACITY, MODE SENSE. Throws
   * UnsupportedError for a LUN that is not a disk, SenseError when a
   * required command fails, ScsiDataError for malformed answers.
   *
   * @example
   * ```ts
   * const lun = await Lun.open(session, 1, { log, retry: { notReadyTimeoutMs: 60_000 } });
   * lun.inventory.serial; // "beaf11"
   * ```
   */
  static async open(transport: ScsiTransport, lun: number, opts: LunOptions = {}): Promise<Lun> {
    const policy = { ...DEFAULT_RETRY_POLICY, ...opts.retry };
    const log = opts.log;
    // Set once open() is done: a UNIT ATTENTION before that is about a size
    // open() has yet to read.
    const opened: { lun?: Lun } = {};
    const hooks: RetryHooks = {
      ...opts.retryHooks,
      onRetry: (e) => {
        log?.debug(`LUN ${lun}: ${e.command}: retry ${e.attempt} (${e.reason}: ${e.detail})`);
        // CAPACITY DATA HAS CHANGED (ASC/ASCQ 2Ah/09h, a UNIT ATTENTION of
        // SPC-4 §5.14 the target raises on each I_T nexus): whichever
        // command it came on, the size is read again, beside that command.
        if (
          opened.lun && e.reason === "unit-attention" && e.sense?.asc === 0x2a &&
          e.sense.ascq === 0x09
        ) {
          opened.lun.#capacityChanged();
        }
        opts.retryHooks?.onRetry?.(e);
      },
    };
    const run = (c: Omit<ScsiCommand, "lun">) =>
      executeWithRetry(transport, { ...c, lun }, policy, hooks);
    const optional = async <T>(what: string, f: () => Promise<T>): Promise<T | null> => {
      try {
        return await f();
      } catch (e) {
        if (e instanceof SenseError || e instanceof ScsiDataError) {
          log?.debug(`LUN ${lun}: ${what} unavailable: ${e.message}`);
          return null;
        }
        throw e;
      }
    };

    // INQUIRY first: it is exempt from UNIT ATTENTION (SPC-4 §5.14) and tells
    // whether there is a disk at all (tgt's LUN 0 is a controller).
    const inqData = (await run({ cdb: cdb.inquiry(undefined, 96), dataInLength: 96 })).data;
    const inq: StandardInquiry = parseStandardInquiry(inqData);
    if (inq.peripheralQualifier !== 0) {
      throw new UnsupportedError(
        `LUN ${lun}: no logical unit connected (peripheral qualifier ${inq.peripheralQualifier})`,
      );
    }
    if (inq.peripheralDeviceType !== TYPE_DISK) {
      throw new UnsupportedError(`LUN ${lun} is a ${inq.deviceTypeName}, not a disk`);
    }
    await run({ cdb: cdb.testUnitReady() });

    const vpd = async (page: number): Promise<Uint8Array> => {
      let alloc = 252;
      for (;;) {
        const r = await run({ cdb: cdb.inquiry(page, alloc), dataInLength: alloc });
        const { body, fullLength } = parseVpdHeader(r.data, page);
        if (fullLength <= r.data.length || alloc >= 0xffff) return body;
        alloc = Math.min(0xffff, fullLength);
      }
    };
    const pages = (await optional(
      "VPD page 0x00",
      () => vpd(VPD.SUPPORTED_PAGES).then(parseSupportedVpdPages),
    )) ??
      [];
    const has = (p: number) => pages.includes(p);
    const serial = has(VPD.UNIT_SERIAL_NUMBER)
      ? await optional(
        "Unit Serial Number",
        () => vpd(VPD.UNIT_SERIAL_NUMBER).then(parseUnitSerialNumber),
      )
      : null;
    const identifiers = has(VPD.DEVICE_IDENTIFICATION)
      ? await optional(
        "Device Identification",
        () => vpd(VPD.DEVICE_IDENTIFICATION).then(parseDeviceIdentification),
      )
      : null;
    const blockLimits = has(VPD.BLOCK_LIMITS)
      ? await optional("Block Limits", () => vpd(VPD.BLOCK_LIMITS).then(parseBlockLimits))
      : null;
    const bdc = has(VPD.BLOCK_DEVICE_CHARACTERISTICS)
      ? await optional(
        "Block Device Characteristics",
        () => vpd(VPD.BLOCK_DEVICE_CHARACTERISTICS).then(parseBlockDeviceCharacteristics),
      )
      : null;
    const lbp: LogicalBlockProvisioning | null = has(VPD.LOGICAL_BLOCK_PROVISIONING)
      ? await optional(
        "Logical Block Provisioning",
        () => vpd(VPD.LOGICAL_BLOCK_PROVISIONING).then(parseLogicalBlockProvisioning),
      )
      : null;

    // READ CAPACITY(16) first (SBC-3 devices; needed past 2 TiB), (10) for
    // devices that refuse it (SBC-3 §4.4).
    let cap: Capacity;
    let commandSize: 10 | 16 = 16;
    try {
      cap = parseReadCapacity16(
        (await run({ cdb: cdb.readCapacity16(32), dataInLength: 32 })).data,
      );
    } catch (e) {
      // Only a refused command falls back; malformed (16) data is an error.
      if (!(e instanceof SenseError)) throw e;
      log?.debug(`LUN ${lun}: READ CAPACITY(16) refused (${e.message}); trying (10)`);
      cap = parseReadCapacity10((await run({ cdb: cdb.readCapacity10(), dataInLength: 8 })).data);
      if (cap.needs16) {
        throw new ScsiDataError(
          `LUN ${lun}: READ CAPACITY(10) says the LUN needs (16), which was refused`,
        );
      }
      commandSize = 10;
    }
    if (cap.blocks === 0) throw new ScsiDataError(`LUN ${lun}: capacity is zero blocks`);

    // MODE SENSE(10) for WP and DPOFUA (SBC-3 §6.5.1): the Caching page
    // first (also tells WCE), all pages if that is refused.
    const mode: ModeSenseInfo | null = (await optional(
      "MODE SENSE(10) page 0x08",
      async () =>
        parseModeSense10(
          (await run({ cdb: cdb.modeSense10(0x08, 0xff), dataInLength: 0xff })).data,
        ),
    )) ??
      (await optional(
        "MODE SENSE(10) page 0x3f",
        async () =>
          parseModeSense10(
            (await run({ cdb: cdb.modeSense10(0x3f, 0xfff0), dataInLength: 0xfff0 })).data,
          ),
      ));

    const bs = cap.logicalBlockLength;
    // Per-command size: the smallest of the Block Limits maximum, the
    // transport's hint and our own default, rounded down to the optimal
    // granularity so that split commands start on its boundaries.
    let cmdBytes = opts.maxCommandBytes ?? DEFAULT_COMMAND_BYTES;
    if (blockLimits && blockLimits.maximumTransferLength > 0) {
      cmdBytes = Math.min(cmdBytes, blockLimits.maximumTransferLength * bs);
    }
    if (transport.maxTransferHint > 0) cmdBytes = Math.min(cmdBytes, transport.maxTransferHint);
    let cmdBlocks = Math.max(1, Math.floor(cmdBytes / bs));
    if (commandSize === 10) cmdBlocks = Math.min(cmdBlocks, 0xffff);
    const gran = blockLimits?.optimalTransferLengthGranularity ?? 0;
    if (gran > 1 && cmdBlocks >= gran) cmdBlocks -= cmdBlocks % gran;

    const lbpme = cap.lbpme || (lbp !== null && lbp.provisioningType === "thin");
    // Zeroing by UNMAP is only right when unmapped blocks read as zeros
    // (NBD: a zeroed range MUST read back as zeros). Both READ CAPACITY(16)'s
    // LBPRZ bit and the VPD page's LBPRZ field say so; a target that
    // contradicts itself is taken at its word that does not promise zeros,
    // because the cost of that reading is only a WRITE SAME that writes.
    const zeroReports: boolean[] = [];
    if (commandSize === 16) zeroReports.push(cap.lbprz);
    if (lbp) zeroReports.push(lbp.lbprz);
    const lbprz = zeroReports.length > 0 && zeroReports.every((z) => z);
    const writeProtect = mode?.writeProtect ?? false;
    const inv: LunInventory = {
      lun,
      peripheralDeviceType: inq.peripheralDeviceType,
      deviceType: inq.deviceTypeName,
      vendor: inq.vendor,
      product: inq.product,
      revision: inq.revision,
      serial,
      identifiers: identifiers ?? [],
      size: cap.blocks * bs,
      blocks: cap.blocks,
      logicalBlockSize: bs,
      physicalBlockSize: bs * 2 ** cap.logicalBlocksPerPhysicalBlockExponent,
      lowestAlignedLba: cap.lowestAlignedLba,
      writeProtect,
      fua: mode?.dpoFua ?? false,
      writeCacheEnabled: mode?.writeCacheEnabled ?? null,
      removable: inq.removable,
      commandQueuing: inq.cmdQue,
      scsiVersion: inq.version,
      protectionEnabled: cap.protectionEnabled,
      commandSize,
      vpdPages: pages,
      thinProvisioning: {
        lbpme,
        lbprz,
        lbpu: lbp?.lbpu ?? false,
        lbpws: lbp?.lbpws ?? false,
        lbpws10: lbp?.lbpws10 ?? false,
        provisioningType: lbp?.provisioningType ?? null,
      },
      blockLimits,
      blockDeviceCharacteristics: bdc,
      io: {
        maxCommandBytes: cmdBlocks * bs,
        canUnmap: !writeProtect && lbpme && (lbp?.lbpu ?? false),
        writeSame: !writeProtect,
      },
    };
    log?.debug(
      `LUN ${lun}: ${inv.vendor} ${inv.product} ${inv.revision}, ${inv.blocks} x ${bs} bytes` +
        `${writeProtect ? ", write-protected" : ""}, ${cmdBlocks} blocks per command`,
    );
    const created = new Lun(
      transport,
      lun,
      policy,
      hooks,
      opts.closeTransport ?? false,
      inv,
      cmdBlocks,
      log,
    );
    opened.lun = created;
    return created;
  }

  #run(c: Omit<ScsiCommand, "lun">): Promise<ScsiResponse> {
    return executeWithRetry(this.#transport, { ...c, lun: this.#lun }, this.#policy, this.#hooks);
  }

  /**
   * Check a request once and turn it into LBA numbers: the only BigInt work
   * a request does.
   */
  #range(op: string, offset: bigint, length: number): { lba: number; blocks: number } {
    if (this.#closed) throw new ClosedError(`LUN ${this.#lun}: ${op} after close`);
    if (!Number.isSafeInteger(length) || length < 0) {
      throw new BlockRequestError(`${op}: invalid length ${length}`);
    }
    if (offset < 0n) throw new BlockRequestError(`${op}: negative offset ${offset}`);
    const bs = this.blockSize;
    if (offset % this.#bsBig !== 0n) {
      throw new BlockRequestError(
        `${op}: offset ${offset} is not a multiple of the block size ${bs}`,
      );
    }
    if (length % bs !== 0) {
      throw new BlockRequestError(
        `${op}: length ${length} is not a multiple of the block size ${bs}`,
      );
    }
    const q = offset / this.#bsBig;
    const blocks = length / bs;
    if (q > BigInt(this.#blocks) || Number(q) + blocks > this.#blocks) {
      throw new BlockRequestError(
        `${op}: ${length} bytes at offset ${offset} go past the end of the device (${this.size} bytes)`,
      );
    }
    return { lba: Number(q), blocks };
  }

  #checkWritable(op: string): void {
    if (this.readOnly) {
      throw new ReadOnlyError(`LUN ${this.#lun}: ${op}: the LUN is write-protected`);
    }
  }

  /**
   * Split [lba, lba+blocks) at multiples of `step` (absolute LBAs, so that
   * commands start on the device's preferred boundaries) and run `f` on
   * every piece concurrently.
   */
  async #split(
    lba: number,
    blocks: number,
    step: number,
    f: (lba: number, blocks: number, index: number) => Promise<void>,
  ): Promise<void> {
    const end = lba + blocks;
    if (blocks <= step && Math.floor(lba / step) === Math.floor((end - 1) / step)) {
      return f(lba, blocks, 0);
    }
    const jobs: Promise<void>[] = [];
    let at = lba;
    while (at < end) {
      const next = Math.min(end, (Math.floor(at / step) + 1) * step);
      jobs.push(f(at, next - at, at - lba));
      at = next;
    }
    // allSettled: every command finishes before the request reports, so a
    // caller never reuses a buffer a command still reads.
    const results = await Promise.allSettled(jobs);
    for (const r of results) if (r.status === "rejected") throw r.reason;
  }

  #rwCdb(write: boolean, lba: number, blocks: number, fua: boolean): Uint8Array {
    return this.#use16
      ? cdb.rw16(write, lba, blocks, { fua })
      : cdb.rw10(write, lba, blocks, { fua });
  }

  /** Read `length` bytes at `offset` (both multiples of blockSize). */
  async read(offset: bigint, length: number): Promise<Uint8Array> {
    const { lba, blocks } = this.#range("read", offset, length);
    const buf = new Uint8Array(length);
    await this.#readBlocks(lba, blocks, buf);
    return buf;
  }

  /**
   * Read `into.length` bytes at `offset` straight into `into`
   * (BlockDevice.readInto): each READ's Data-In lands in its slice of
   * `into` (ScsiCommand.dataInBuffer), nothing is allocated per request.
   */
  async readInto(offset: bigint, into: Uint8Array): Promise<void> {
    const { lba, blocks } = this.#range("read", offset, into.length);
    await this.#readBlocks(lba, blocks, into);
  }

  async #readBlocks(lba: number, blocks: number, buf: Uint8Array): Promise<void> {
    if (blocks === 0) return;
    const bs = this.blockSize;
    await this.#split(lba, blocks, this.#cmdBlocks, async (l, n, rel) => {
      const want = n * bs;
      const into = buf.subarray(rel * bs, rel * bs + want);
      const r = await this.#run({
        cdb: this.#rwCdb(false, l, n, false),
        dataInLength: want,
        dataInBuffer: into,
      });
      if (r.data.length !== want || r.residualUnderflow !== 0) {
        throw new ScsiDataError(`READ at LBA ${l}: ${r.data.length} of ${want} bytes returned`);
      }
      if (r.data.buffer !== into.buffer || r.data.byteOffset !== into.byteOffset) into.set(r.data);
    });
  }

  /**
   * Write `data` at `offset`. With `fua`, the data is on stable storage when
   * this resolves: FUA on each command when the device honours it (DPOFUA),
   * else a SYNCHRONIZE CACHE of the range afterwards.
   */
  async write(offset: bigint, data: Uint8Array, opts: { fua?: boolean } = {}): Promise<void> {
    const { lba, blocks } = this.#range("write", offset, data.length);
    this.#checkWritable("write");
    if (blocks === 0) return;
    const bs = this.blockSize;
    const fua = (opts.fua ?? false) && this.#fua;
    await this.#split(lba, blocks, this.#cmdBlocks, async (l, n, rel) => {
      const r = await this.#run({
        cdb: this.#rwCdb(true, l, n, fua),
        dataOut: data.subarray(rel * bs, (rel + n) * bs),
      });
      if (r.residualUnderflow !== 0) {
        throw new ScsiDataError(
          `WRITE at LBA ${l}: target took ${n * bs - r.residualUnderflow} of ${n * bs} bytes`,
        );
      }
    });
    if (opts.fua && !fua) await this.#syncRange(lba, blocks);
  }

  async #syncRange(lba: number, blocks: number): Promise<void> {
    const c = this.#use16 || lba > 0xffff_ffff || blocks > 0xffff
      ? cdb.synchronizeCache16(lba, blocks)
      : cdb.synchronizeCache10(lba, blocks);
    await this.#run({ cdb: c });
  }

  /** SYNCHRONIZE CACHE of the whole device (SBC-3 §5.22: 0 blocks = to the end). */
  async flush(): Promise<void> {
    if (this.#closed) throw new ClosedError(`LUN ${this.#lun}: flush after close`);
    try {
      await this.#run({ cdb: cdb.synchronizeCache10(0, 0) });
    } catch (e) {
      if (!(e instanceof SenseError) || e.errno !== "EOPNOTSUPP") throw e;
      await this.#run({ cdb: cdb.synchronizeCache16(0, 0) });
    }
  }

  /** Deallocate a range (UNMAP, SBC-3 §5.29), within the Block Limits counts. */
  async trim(offset: bigint, length: number): Promise<void> {
    const { lba, blocks } = this.#range("trim", offset, length);
    this.#checkWritable("trim");
    if (!this.limits.canUnmap) {
      throw new UnsupportedError(`LUN ${this.#lun}: the LUN does not support UNMAP`);
    }
    if (blocks === 0) return;
    // One command covers at most maxBlocks blocks in at most maxDescriptors
    // descriptors of at most 2^32-1 blocks each.
    const perDescriptor = Math.min(this.#unmapMaxBlocks, 0xffff_ffff);
    const perCommand = Math.min(this.#unmapMaxBlocks, perDescriptor * this.#unmapMaxDescriptors);
    await this.#split(lba, blocks, perCommand, async (l, n) => {
      const extents: cdb.UnmapExtent[] = [];
      for (let at = l; at < l + n; at += perDescriptor) {
        extents.push({ lba: at, blocks: Math.min(perDescriptor, l + n - at) });
      }
      const { cdb: c, parameterList } = cdb.unmap(extents);
      await this.#run({ cdb: c, dataOut: parameterList });
    });
  }

  /**
   * Zero a range. WRITE SAME(16) with one zero block (with UNMAP when
   * `mayTrim` and the device both unmaps by WRITE SAME and reads unmapped
   * blocks as zeros); plain zero WRITEs if the device refuses WRITE SAME,
   * from then on with `limits.canWriteZeroes` false. With `fast`, no zero
   * WRITEs: UnsupportedError (EOPNOTSUPP) instead.
   */
  async writeZeroes(
    offset: bigint,
    length: number,
    opts: { mayTrim?: boolean; fast?: boolean } = {},
  ): Promise<void> {
    const { lba, blocks } = this.#range("writeZeroes", offset, length);
    this.#checkWritable("writeZeroes");
    if (blocks === 0) return;
    const bs = this.blockSize;
    if (!this.#writeSame && opts.fast) throw this.#noFastZero();
    if (this.#writeSame) {
      const zero = this.#zeroBlock ??= new Uint8Array(bs);
      const unmapBit = (opts.mayTrim ?? false) && this.#unmapViaWriteSame;
      try {
        await this.#split(lba, blocks, this.#writeSameMaxBlocks, async (l, n) => {
          await this.#run({ cdb: cdb.writeSame16(l, n, { unmap: unmapBit }), dataOut: zero });
        });
        return;
      } catch (e) {
        if (!(e instanceof SenseError) || e.errno !== "EOPNOTSUPP") throw e;
        // INVALID COMMAND OPERATION CODE: no WRITE SAME(16); remember and
        // write zeros instead (the partial WRITE SAME is harmless: zeros).
        this.#writeSame = false;
        this.inventory.io.writeSame = false;
        this.limits.canWriteZeroes = false;
        if (opts.fast) throw this.#noFastZero();
      }
    }
    const zeros = new Uint8Array(Math.min(blocks, this.#cmdBlocks) * bs);
    await this.#split(lba, blocks, this.#cmdBlocks, async (l, n) => {
      await this.#run({ cdb: this.#rwCdb(true, l, n, false), dataOut: zeros.subarray(0, n * bs) });
    });
  }

  #noFastZero(): UnsupportedError {
    return new UnsupportedError(
      `LUN ${this.#lun}: fast zeroing not possible: the LUN refuses WRITE SAME(16)`,
    );
  }

  /** Stop accepting requests; with closeTransport, close the transport (log out) too. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#closeTransport) await this.#transport.close();
  }
}

/**
 * REPORT LUNS through any LUN (SPC-4 §6.33), growing the allocation when the
 * list is longer than the first guess.
 *
 * @example
 * ```ts
 * const { luns } = await reportLuns(session, 0); // [0, 1, 2]
 * ```
 */
export async function reportLuns(
  transport: ScsiTransport,
  lun = 0,
  policy: Readonly<RetryPolicy> = DEFAULT_RETRY_POLICY,
): Promise<ReportLuns> {
  let alloc = 8 + 8 * 64;
  for (;;) {
    const r = await executeWithRetry(transport, {
      lun,
      cdb: cdb.reportLuns(alloc),
      dataInLength: alloc,
    }, policy);
    const parsed = parseReportLuns(r.data);
    if (parsed.fullLength <= r.data.length || alloc >= 0x10_0000) return parsed;
    alloc = Math.min(0x10_0000, parsed.fullLength);
  }
}

/** SENSE_KEY re-exported for callers that inspect SenseError.sense. */
export { SENSE_KEY };
