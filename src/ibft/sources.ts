/**
 * Where an iBFT comes from: the ACPI tables, the kernel's sysfs view, a scan
 * of low memory through /dev/mem, or a file. `auto` tries them in the
 * kernel's order (drivers/firmware/iscsi_ibft_find.c looks in ACPI first,
 * then low memory; sysfs is what iscsi_ibft made of either).
 *
 * Every root is injectable ({@link SourceRoots}) so tests point them at a
 * temp tree or a file standing in for /dev/mem.
 *
 * @module
 */
import { InvalidInputError, OperationalError } from "../errors.ts";
import {
  ACPI_TABLE_NAMES,
  HEADER,
  IBFT_MAX_LENGTH,
  IBFT_MEM_SIGNATURES,
  MEM_SCAN,
  SYSFS_ACPI_TABLES_DIR,
  SYSFS_IBFT_DIR,
} from "./constants.ts";
import { decodeIbft, type DecodeOptions } from "./decode.ts";
import type { LoadedIbft } from "./model.ts";
import { readSysfsIbft, sysfsIbftPresent } from "./sysfs.ts";

/** Paths the sources read; defaults are the real system's. */
export interface SourceRoots {
  /** sysfs mount point (default `/sys`). */
  sysRoot?: string;
  /** Physical memory device (default `/dev/mem`); file offset = physical address. */
  memPath?: string;
}

/** Options for {@link loadIbft} and the single sources. */
export interface LoadOptions extends SourceRoots {
  /** Accept a table whose checksum is wrong (a warning is added). */
  ignoreChecksum?: boolean;
}

/** A source that found nothing; `auto` moves on to the next one. */
export class IbftNotFoundError extends OperationalError {}

function decodeOpts(o: LoadOptions, allowTrailing = false): DecodeOptions {
  return { ignoreChecksum: o.ignoreChecksum, allowTrailing };
}

function checksumWarnings(loaded: LoadedIbft): LoadedIbft {
  if (loaded.table.header.checksumValid === false) {
    loaded.warnings.push(
      `iBFT checksum is wrong (${loaded.source}); decoded anyway because of --ignore-checksum`,
    );
  }
  return loaded;
}

/** Prefix a decode error with where the bytes came from. */
function located<T>(where: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof InvalidInputError) throw new InvalidInputError(`${where}: ${e.message}`);
    throw e;
  }
}

async function readIfExists(path: string): Promise<Uint8Array | null> {
  try {
    return await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    // ACPI tables are root-only; `auto` should still get to sysfs, which is not.
    if (e instanceof Deno.errors.PermissionDenied) {
      throw new IbftNotFoundError(`${path}: permission denied (needs root)`);
    }
    throw new OperationalError(`cannot read ${path}: ${e instanceof Error ? e.message : e}`);
  }
}

/**
 * The ACPI table: `SYSROOT/firmware/acpi/tables/{IBFT,iBFT,BIFT}`, the
 * first that exists. UEFI firmware (and iPXE under UEFI) publishes it here.
 *
 * @throws IbftNotFoundError when none exists; InvalidInputError when it is malformed.
 * @example
 * ```ts
 * const { table } = await loadAcpi({ sysRoot: "/sys" });
 * ```
 */
export async function loadAcpi(o: LoadOptions = {}): Promise<LoadedIbft> {
  const dir = `${o.sysRoot ?? "/sys"}/${SYSFS_ACPI_TABLES_DIR}`;
  for (const name of ACPI_TABLE_NAMES) {
    const path = `${dir}/${name}`;
    const bytes = await readIfExists(path);
    if (bytes === null) continue;
    const table = located(path, () => decodeIbft(bytes, decodeOpts(o)));
    return checksumWarnings({ source: `acpi:${path}`, table, warnings: [] });
  }
  throw new IbftNotFoundError(`no ACPI table ${ACPI_TABLE_NAMES.join("/")} in ${dir}`);
}

/**
 * The kernel's parse: `SYSROOT/firmware/ibft/` (needs `modprobe iscsi_ibft`).
 * On a BIOS machine booted by iPXE this is often the only source.
 *
 * @throws IbftNotFoundError when the directory is absent or empty.
 * @example
 * ```ts
 * const { table } = await loadSysfs({ sysRoot: "/sys" });
 * ```
 */
export async function loadSysfs(o: LoadOptions = {}): Promise<LoadedIbft> {
  const dir = `${o.sysRoot ?? "/sys"}/${SYSFS_IBFT_DIR}`;
  return await loadSysfsDir(dir);
}

/** {@link loadSysfs} on an explicit directory laid out like /sys/firmware/ibft. */
export async function loadSysfsDir(dir: string): Promise<LoadedIbft> {
  if (!(await sysfsIbftPresent(dir))) {
    throw new IbftNotFoundError(`${dir} is absent or empty`);
  }
  return { source: `sysfs:${dir}`, table: await readSysfsIbft(dir), warnings: [] };
}

/** Read [start, end) of a file at those offsets; bytes the file lacks read as zeros. */
async function readRange(f: Deno.FsFile, start: number, end: number): Promise<Uint8Array> {
  const buf = new Uint8Array(end - start);
  await f.seek(start, Deno.SeekMode.Start);
  let got = 0;
  while (got < buf.length) {
    const n = await f.read(buf.subarray(got));
    if (n === null || n === 0) break;
    got += n;
  }
  return buf;
}

/**
 * Scan low memory for the table as the kernel's early scan does: 0x80000 to
 * 0xFFFFF in 16-byte steps, skipping 0xA0000-0xBFFFF (VGA, never RAM), for
 * the signatures `iBFT` and `BIFT`. Legacy BIOS firmware and iPXE under
 * BIOS put the table there. Candidates that do not decode are skipped; if
 * none decodes, the first one's error is thrown.
 *
 * @throws IbftNotFoundError when nothing is there (with the 4.11 explanation
 * when the whole area reads as zeros); InvalidInputError for a bad table.
 * @example
 * ```ts
 * const { source } = await loadMem({ memPath: "/dev/mem" }); // "mem:/dev/mem@0x9e620"
 * ```
 */
export async function loadMem(o: LoadOptions = {}): Promise<LoadedIbft> {
  const path = o.memPath ?? "/dev/mem";
  let f: Deno.FsFile;
  try {
    f = await Deno.open(path, { read: true });
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound
      ? "does not exist"
      : e instanceof Deno.errors.PermissionDenied
      ? "permission denied (needs root)"
      : `cannot be opened (${e instanceof Error ? e.message : e})`;
    throw new IbftNotFoundError(`${path} ${why}`);
  }
  const regions: { start: number; bytes: Uint8Array }[] = [];
  try {
    for (
      const [start, end] of [[MEM_SCAN.START, MEM_SCAN.HOLE_START], [
        MEM_SCAN.HOLE_END,
        MEM_SCAN.END,
      ]]
    ) {
      regions.push({ start, bytes: await readRange(f, start, end) });
    }
  } catch (e) {
    throw new IbftNotFoundError(
      `${path} cannot be read at 0x80000-0xfffff (${e instanceof Error ? e.message : e})`,
    );
  } finally {
    f.close();
  }
  if (regions.every((r) => r.bytes.every((b) => b === 0))) {
    throw new IbftNotFoundError(
      `${path} reads as all zeros at 0x80000-0xfffff: kernels since 4.11 return zeros for RAM below 1 MiB, so a table there cannot be seen through /dev/mem; use --source sysfs after modprobe iscsi_ibft`,
    );
  }
  const sigs = IBFT_MEM_SIGNATURES.map((s) => Array.from(s, (c) => c.charCodeAt(0)));
  let firstError: InvalidInputError | null = null;
  for (const { start, bytes } of regions) {
    for (let off = 0; off + HEADER.LENGTH <= bytes.length; off += MEM_SCAN.STEP) {
      if (!sigs.some((s) => s.every((c, k) => bytes[off + k] === c))) continue;
      const where = `${path} at 0x${(start + off).toString(16)}`;
      try {
        // The table must lie inside this region: it cannot run into the VGA hole or past 1 MiB.
        const window = bytes.subarray(off, Math.min(bytes.length, off + IBFT_MAX_LENGTH));
        const table = located(where, () => decodeIbft(window, decodeOpts(o, true)));
        return checksumWarnings({
          source: `mem:${path}@0x${(start + off).toString(16)}`,
          table,
          warnings: [],
        });
      } catch (e) {
        if (!(e instanceof InvalidInputError)) throw e;
        firstError ??= e;
      }
    }
  }
  if (firstError) throw firstError;
  throw new IbftNotFoundError(`no iBFT/BIFT signature in ${path} at 0x80000-0xfffff`);
}

/**
 * A table in a file (a dump of /sys/firmware/acpi/tables/iBFT, or what
 * `isboot ibft encode` wrote). The file must be exactly the table.
 *
 * @example
 * ```ts
 * const { table } = await loadFile("tests/fixtures/ibft/ipxe-bios-plain.bin");
 * ```
 */
export async function loadFile(path: string, o: LoadOptions = {}): Promise<LoadedIbft> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new OperationalError(`${path}: no such file`);
    throw new OperationalError(`cannot read ${path}: ${e instanceof Error ? e.message : e}`);
  }
  const table = located(path, () => decodeIbft(bytes, decodeOpts(o)));
  return checksumWarnings({ source: `file:${path}`, table, warnings: [] });
}

/**
 * Try acpi, sysfs, mem in that order; the first that finds a table wins (a
 * malformed table found is an error, not a reason to look elsewhere).
 *
 * @throws IbftNotFoundError listing what was tried and suggesting `modprobe iscsi_ibft`.
 * @example
 * ```ts
 * const loaded = await loadAuto({});
 * ```
 */
export async function loadAuto(o: LoadOptions = {}): Promise<LoadedIbft> {
  const tried: string[] = [];
  for (const [name, fn] of [["acpi", loadAcpi], ["sysfs", loadSysfs], ["mem", loadMem]] as const) {
    try {
      return await fn(o);
    } catch (e) {
      if (!(e instanceof IbftNotFoundError)) throw e;
      tried.push(`${name}: ${e.message}`);
    }
  }
  throw new IbftNotFoundError(
    `no iBFT found (tried ${
      tried.join("; ")
    }); if the firmware booted from iSCSI, try 'modprobe iscsi_ibft'`,
  );
}

/** What `--source` accepts besides a file name. */
export const SOURCE_NAMES = ["auto", "acpi", "sysfs", "mem"] as const;

/**
 * Load by `--source` value: `auto`, `acpi`, `sysfs`, `mem`, or a path (a
 * directory is read as a sysfs tree, anything else as a table file).
 *
 * @example
 * ```ts
 * const loaded = await loadIbft("auto", { ignoreChecksum: false });
 * ```
 */
export async function loadIbft(source: string, o: LoadOptions = {}): Promise<LoadedIbft> {
  switch (source) {
    case "auto":
      return await loadAuto(o);
    case "acpi":
      return await loadAcpi(o);
    case "sysfs":
      return await loadSysfs(o);
    case "mem":
      return await loadMem(o);
  }
  let isDir = false;
  try {
    isDir = (await Deno.stat(source)).isDirectory;
  } catch {
    // loadFile reports the missing file
  }
  return isDir ? await loadSysfsDir(source) : await loadFile(source, o);
}
