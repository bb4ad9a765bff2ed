/**
 * Read the kernel-parsed iBFT that the `iscsi_ibft` module shows under
 * `/sys/firmware/ibft/` into the same {@link IbftTable} the decoder makes.
 *
 * The kernel (drivers/firmware/iscsi_ibft.c) prints one value and a newline
 * per file (`subnet-mask` has none), hides attributes whose field is zero or
 * empty, prints the LUN with an unpadded `%x` per byte and IPv6 addresses
 * uncompressed (`%pI6`). What sysfs cannot show, the model leaves null:
 * `header.length`, `control`, and `nics[].pciBdf` unless the `device` link
 * names the PCI function. The kernel verified the checksum and revision
 * before showing anything, so `header.checksumValid` is true and
 * `header.revision` 1. See docs/ibft.md for the LUN ambiguity.
 *
 * @module
 */
import { InvalidInputError } from "../errors.ts";
import { CHAP_TYPE, FLAG, ORIGINS } from "./constants.ts";
import {
  formatAddress,
  lunFromSysfs,
  lunNumber,
  lunToHex,
  parseAddress,
  parseBdf,
} from "./fields.ts";
import type { ChapType, IbftInitiator, IbftNic, IbftTable, IbftTarget } from "./model.ts";

function fail(file: string, problem: string): never {
  throw new InvalidInputError(`iBFT sysfs ${file}: ${problem}`);
}

/** One kernel attribute directory (initiator, ethernetN, targetN, acpi_header). */
class AttrDir {
  readonly dir: string;
  readonly name: string;

  constructor(dir: string, name: string) {
    this.dir = dir;
    this.name = name;
  }

  /** The value without its trailing newline; undefined when the kernel hid the file. */
  async text(attr: string): Promise<string | undefined> {
    let raw: string;
    try {
      raw = await Deno.readTextFile(`${this.dir}/${attr}`);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    }
    const v = raw.endsWith("\n") ? raw.slice(0, -1) : raw;
    // deno-lint-ignore no-control-regex
    if (/[\u0000-\u001f\u007f\ufffd]/.test(v)) fail(`${this.name}/${attr}`, "not text");
    return v;
  }

  async str(attr: string): Promise<string | null> {
    const v = await this.text(attr);
    return v === undefined || v === "" ? null : v;
  }

  async required(attr: string): Promise<string> {
    const v = await this.text(attr);
    if (v === undefined) fail(`${this.name}/${attr}`, "missing");
    return v;
  }

  async int(attr: string, max: number, fallback?: number): Promise<number> {
    const v = fallback === undefined ? await this.required(attr) : await this.text(attr);
    if (v === undefined) return fallback as number;
    if (!/^[0-9]{1,6}$/.test(v) || Number(v) > max) {
      fail(`${this.name}/${attr}`, `"${v}" is not an integer 0..${max}`);
    }
    return Number(v);
  }

  async address(attr: string): Promise<string | null> {
    const v = await this.text(attr);
    if (v === undefined) return null;
    const b = parseAddress(v);
    if (!b) fail(`${this.name}/${attr}`, "not an address");
    return formatAddress(b);
  }
}

async function readInitiator(d: AttrDir): Promise<IbftInitiator> {
  const flags = await d.int("flags", 255);
  return {
    name: await d.str("initiator-name"),
    valid: (flags & FLAG.BLOCK_VALID) !== 0,
    bootSelected: (flags & FLAG.FIRMWARE_BOOT_SELECTED) !== 0,
    isnsServer: await d.address("isns-server"),
    slpServer: await d.address("slp-server"),
    primaryRadius: await d.address("pri-radius-server"),
    secondaryRadius: await d.address("sec-radius-server"),
  };
}

/** `bus:dev.fn` from the `device` link (…/0000:00:03.0), when the kernel made one. */
async function pciBdf(d: AttrDir): Promise<string | null> {
  let target: string;
  try {
    target = await Deno.readLink(`${d.dir}/device`);
  } catch {
    return null;
  }
  const base = target.split("/").pop() ?? "";
  const v = parseBdf(base);
  if (v === undefined) return null;
  return base.replace(/^0000:/, "").toLowerCase();
}

async function readNic(d: AttrDir, slot: number): Promise<IbftNic> {
  const index = await d.int("index", 255);
  if (index !== slot) fail(`${d.name}/index`, `${index}, expected ${slot}`);
  const flags = await d.int("flags", 255);
  const originCode = await d.int("origin", 255);
  const origin = ORIGINS[originCode];
  if (origin === undefined) fail(`${d.name}/origin`, `${originCode} is not a defined origin`);
  const ip = await d.address("ip-addr");
  const prefixLength = await d.int("prefix-len", ip !== null && !ip.includes(":") ? 32 : 128, 0);
  const mac = (await d.required("mac")).toLowerCase();
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(mac)) fail(`${d.name}/mac`, "not a MAC address");
  return {
    index,
    valid: (flags & FLAG.BLOCK_VALID) !== 0,
    bootSelected: (flags & FLAG.FIRMWARE_BOOT_SELECTED) !== 0,
    global: (flags & FLAG.NIC_GLOBAL) !== 0,
    ip,
    prefixLength,
    origin,
    gateway: await d.address("gateway"),
    primaryDns: await d.address("primary-dns"),
    secondaryDns: await d.address("secondary-dns"),
    dhcpServer: await d.address("dhcp"),
    vlan: (await d.int("vlan", 0xffff, 0)) & 0x0fff,
    mac,
    pciBdf: await pciBdf(d),
    hostname: await d.str("hostname"),
  };
}

const CHAP_NAMES: Record<number, ChapType> = {
  [CHAP_TYPE.NONE]: "none",
  [CHAP_TYPE.CHAP]: "chap",
  [CHAP_TYPE.MUTUAL]: "mutual",
};

async function readTarget(d: AttrDir, slot: number): Promise<IbftTarget> {
  const index = await d.int("index", 255);
  if (index !== slot) fail(`${d.name}/index`, `${index}, expected ${slot}`);
  const flags = await d.int("flags", 255);
  const chapCode = await d.int("chap-type", 255, 0);
  const chap = CHAP_NAMES[chapCode];
  if (chap === undefined) fail(`${d.name}/chap-type`, `${chapCode} is not 0, 1 or 2`);
  const lunText = await d.required("lun");
  const lun = lunFromSysfs(lunText);
  if (!lun) {
    fail(
      `${d.name}/lun`,
      `"${lunText}" cannot be read back unambiguously (the kernel prints each byte with an unpadded %x); read the table with --source acpi or mem`,
    );
  }
  return {
    index,
    valid: (flags & FLAG.BLOCK_VALID) !== 0,
    bootSelected: (flags & FLAG.FIRMWARE_BOOT_SELECTED) !== 0,
    radiusChap: (flags & FLAG.TARGET_RADIUS_CHAP) !== 0,
    radiusReverseChap: (flags & FLAG.TARGET_RADIUS_REVERSE_CHAP) !== 0,
    ip: await d.address("ip-addr"),
    port: await d.int("port", 0xffff, 0),
    lun: lunNumber(lun),
    lunRaw: lunToHex(lun),
    chap,
    nicIndex: await d.int("nic-assoc", 255, 0),
    name: await d.str("target-name"),
    chapName: await d.str("chap-name"),
    chapSecret: await d.str("chap-secret"),
    reverseChapName: await d.str("rev-chap-name"),
    reverseChapSecret: await d.str("rev-chap-name-secret"),
  };
}

/**
 * Whether `dir` looks like an iscsi_ibft sysfs directory (has any entry).
 */
export async function sysfsIbftPresent(dir: string): Promise<boolean> {
  try {
    for await (const _ of Deno.readDir(dir)) return true;
  } catch {
    return false;
  }
  return false;
}

/**
 * Read `/sys/firmware/ibft` (or a tree laid out like it) into the model.
 *
 * @throws InvalidInputError naming the file that is wrong.
 * @example
 * ```ts
 * const table = await readSysfsIbft("/sys/firmware/ibft");
 * ```
 */
export async function readSysfsIbft(dir: string): Promise<IbftTable> {
  const entries: string[] = [];
  for await (const e of Deno.readDir(dir)) entries.push(e.name);
  const slotsOf = (prefix: string) =>
    entries
      .map((n) => new RegExp(`^${prefix}([0-9]{1,3})$`).exec(n))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[1]))
      .sort((a, b) => a - b);

  const hdr = new AttrDir(`${dir}/acpi_header`, "acpi_header");
  const signature = (await hdr.text("signature")) ?? "iBFT";
  const table: IbftTable = {
    header: {
      signature,
      length: null,
      revision: 1,
      checksumValid: true,
      oemId: (await hdr.text("oem_id")) ?? "",
      oemTableId: (await hdr.text("oem_table_id")) ?? "",
    },
    control: null,
    initiator: entries.includes("initiator")
      ? await readInitiator(new AttrDir(`${dir}/initiator`, "initiator"))
      : null,
    nics: [],
    targets: [],
  };
  for (const n of slotsOf("ethernet")) {
    table.nics.push(await readNic(new AttrDir(`${dir}/ethernet${n}`, `ethernet${n}`), n));
  }
  for (const n of slotsOf("target")) {
    table.targets.push(await readTarget(new AttrDir(`${dir}/target${n}`, `target${n}`), n));
  }
  return table;
}
