import assert from "node:assert/strict";
import { InvalidInputError } from "../../src/errors.ts";
import { decodeIbft, ibftChecksum } from "../../src/ibft/decode.ts";
import {
  IbftNotFoundError,
  loadAcpi,
  loadAuto,
  loadIbft,
  loadMem,
  loadSysfs,
} from "../../src/ibft/sources.ts";
import { asSysfsSees, EXPECTED, FIXTURES } from "./expected.ts";

const PLAIN = Deno.readFileSync(`${FIXTURES}ibft/ipxe-bios-plain.bin`);
const MUTUAL = Deno.readFileSync(`${FIXTURES}ibft/ipxe-bios-mutual-chap.bin`);

/** Run `fn` with a fresh temp directory, removed afterwards even on failure. */
async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "isboot-ibft-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function copyTree(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const e of Deno.readDir(from)) {
    if (e.isDirectory) await copyTree(`${from}/${e.name}`, `${to}/${e.name}`);
    else await Deno.copyFile(`${from}/${e.name}`, `${to}/${e.name}`);
  }
}

/** A 1 MiB image standing in for /dev/mem, with `tables` placed at physical addresses. */
async function memImage(path: string, tables: [number, Uint8Array][]): Promise<void> {
  const img = new Uint8Array(0x100000);
  // Ordinary low memory is not all zeros: BIOS data, option ROM code.
  for (let i = 0xc0000; i < 0xc8000; i++) img[i] = (i * 31) & 0xff;
  for (const [at, bytes] of tables) img.set(bytes, at);
  await Deno.writeFile(path, img);
}

async function rejectsWith<E extends Error>(
  p: Promise<unknown>,
  cls: new (...a: never[]) => E,
  message: RegExp,
): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${e}`);
    assert.match((e as Error).message, message);
    return true;
  });
}

Deno.test("ibft source acpi: tries IBFT, iBFT, BIFT in that order", () =>
  withTemp(async (root) => {
    const dir = `${root}/firmware/acpi/tables`;
    await Deno.mkdir(dir, { recursive: true });
    await rejectsWith(
      loadAcpi({ sysRoot: root }),
      IbftNotFoundError,
      /no ACPI table IBFT\/iBFT\/BIFT/,
    );
    await Deno.writeFile(`${dir}/BIFT`, MUTUAL);
    assert.equal((await loadAcpi({ sysRoot: root })).source, `acpi:${dir}/BIFT`);
    await Deno.writeFile(`${dir}/iBFT`, PLAIN);
    const got = await loadAcpi({ sysRoot: root });
    assert.equal(got.source, `acpi:${dir}/iBFT`);
    assert.deepStrictEqual(got.table, EXPECTED["ipxe-bios-plain.bin"]);
    await Deno.writeFile(`${dir}/IBFT`, MUTUAL);
    assert.equal((await loadAcpi({ sysRoot: root })).source, `acpi:${dir}/IBFT`);
  }));

Deno.test("ibft source acpi: a malformed ACPI table is an error naming the file", () =>
  withTemp(async (root) => {
    const dir = `${root}/firmware/acpi/tables`;
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeFile(`${dir}/iBFT`, MUTUAL.subarray(0, 300));
    await rejectsWith(
      loadAcpi({ sysRoot: root }),
      InvalidInputError,
      /tables\/iBFT: iBFT header: length: 617, but only 300 bytes/,
    );
  }));

Deno.test("ibft source sysfs: a tree with the kernel's device link gives the PCI location", () =>
  withTemp(async (root) => {
    const dir = `${root}/firmware/ibft`;
    await copyTree(`${FIXTURES}ibft-sysfs/ipxe-bios-mutual-chap`, dir);
    await Deno.symlink("../../../devices/pci0000:00/0000:00:03.0", `${dir}/ethernet0/device`);
    const got = await loadSysfs({ sysRoot: root });
    assert.equal(got.source, `sysfs:${dir}`);
    const want = asSysfsSees(EXPECTED["ipxe-bios-mutual-chap.bin"]);
    want.nics[0].pciBdf = "00:03.0";
    assert.deepStrictEqual(got.table, want);
  }));

Deno.test("ibft source sysfs: hidden empty fields, IPv6 in %pI6 form, unpadded lun", () =>
  withTemp(async (root) => {
    const dir = `${root}/firmware/ibft`;
    await copyTree(`${FIXTURES}ibft-sysfs/ipxe-bios-plain`, dir);
    // What the kernel prints for an IPv6 target, a flat LUN 0x105 and a VLAN.
    await Deno.writeTextFile(
      `${dir}/target0/ip-addr`,
      "2001:0db8:0000:0000:0000:0000:0000:0002\n",
    );
    await Deno.writeTextFile(`${dir}/target0/lun`, "415000000\n");
    await Deno.writeTextFile(`${dir}/ethernet0/vlan`, "10\n");
    await Deno.remove(`${dir}/ethernet0/gateway`);
    const t = (await loadSysfs({ sysRoot: root })).table;
    assert.equal(t.targets[0].ip, "2001:db8::2");
    assert.equal(t.targets[0].lunRaw, "4105000000000000");
    assert.equal(t.targets[0].lun, 261);
    assert.equal(t.nics[0].vlan, 10);
    assert.equal(t.nics[0].gateway, null);
    assert.equal(t.targets[0].chapName, null);
  }));

Deno.test("ibft source sysfs: an ambiguous lun text is an error that says why", () =>
  withTemp(async (root) => {
    const dir = `${root}/firmware/ibft`;
    await copyTree(`${FIXTURES}ibft-sysfs/ipxe-bios-plain`, dir);
    // Ten digits: two bytes took two digits, and many splits fit; none is a plain LUN.
    await Deno.writeTextFile(`${dir}/target0/lun`, "1234567890\n");
    await rejectsWith(
      loadSysfs({ sysRoot: root }),
      InvalidInputError,
      /sysfs target0\/lun: "1234567890" cannot be read back unambiguously.*unpadded %x/,
    );
  }));

Deno.test("ibft source sysfs: absent or empty directory is not-found", () =>
  withTemp(async (root) => {
    await rejectsWith(
      loadSysfs({ sysRoot: root }),
      IbftNotFoundError,
      /firmware\/ibft is absent or empty/,
    );
    await Deno.mkdir(`${root}/firmware/ibft`, { recursive: true });
    await rejectsWith(loadSysfs({ sysRoot: root }), IbftNotFoundError, /absent or empty/);
  }));

Deno.test("ibft source mem: finds the table at its 16-byte boundary below the VGA hole", () =>
  withTemp(async (dir) => {
    const mem = `${dir}/mem`;
    await memImage(mem, [[0x9e620, MUTUAL]]);
    const got = await loadMem({ memPath: mem });
    assert.equal(got.source, `mem:${mem}@0x9e620`);
    assert.deepStrictEqual(got.table, EXPECTED["ipxe-bios-mutual-chap.bin"]);
  }));

Deno.test("ibft source mem: scans above the hole, and only at 16-byte boundaries", () =>
  withTemp(async (dir) => {
    const mem = `${dir}/mem`;
    await memImage(mem, [[0x80008, MUTUAL], [0xf0010, PLAIN]]);
    const got = await loadMem({ memPath: mem });
    assert.equal(got.source, `mem:${mem}@0xf0010`);
    assert.deepStrictEqual(got.table, EXPECTED["ipxe-bios-plain.bin"]);
  }));

Deno.test("ibft source mem: a table in the 0xA0000-0xBFFFF hole is not looked at", () =>
  withTemp(async (dir) => {
    const mem = `${dir}/mem`;
    await memImage(mem, [[0xa0000, PLAIN], [0xb0100, MUTUAL]]);
    await rejectsWith(
      loadMem({ memPath: mem }),
      IbftNotFoundError,
      /no iBFT\/BIFT signature in .* at 0x80000-0xfffff/,
    );
  }));

Deno.test("ibft source mem: a stray signature is skipped for the real table after it", () =>
  withTemp(async (dir) => {
    const mem = `${dir}/mem`;
    const stray = new TextEncoder().encode("iBFT and some text that is not a table at all...");
    const bift = MUTUAL.slice();
    bift.set([0x42, 0x49, 0x46, 0x54], 0); // "BIFT", then fix the checksum
    bift[9] = 0;
    bift[9] = (0x100 - ibftChecksum(bift)) & 0xff;
    await memImage(mem, [[0x90000, stray], [0x9f000, bift]]);
    const got = await loadMem({ memPath: mem });
    assert.equal(got.source, `mem:${mem}@0x9f000`);
    assert.equal(got.table.header.signature, "BIFT");
  }));

Deno.test("ibft source mem: only a broken candidate is that candidate's error", () =>
  withTemp(async (dir) => {
    const mem = `${dir}/mem`;
    const broken = MUTUAL.slice();
    broken[0x24] ^= 0x01; // a reserved header byte: only the checksum is now wrong
    await memImage(mem, [[0x9e620, broken]]);
    await rejectsWith(
      loadMem({ memPath: mem }),
      InvalidInputError,
      /at 0x9e620: iBFT header: checksum/,
    );
    const loaded = await loadMem({ memPath: mem, ignoreChecksum: true });
    assert.equal(loaded.table.header.checksumValid, false);
    assert.match(loaded.warnings.join(), /checksum is wrong/);
  }));

Deno.test("ibft source mem: a table running into the hole is rejected, not read across it", () =>
  withTemp(async (dir) => {
    const mem = `${dir}/mem`;
    await memImage(mem, [[0xa0000 - 0x100, MUTUAL]]);
    await rejectsWith(loadMem({ memPath: mem }), InvalidInputError, /at 0x9ff00: .*truncated/);
  }));

Deno.test("ibft source mem: an all-zero area says kernels since 4.11 return zeros", () =>
  withTemp(async (dir) => {
    const mem = `${dir}/mem`;
    await Deno.writeFile(mem, new Uint8Array(0x100000));
    await rejectsWith(
      loadMem({ memPath: mem }),
      IbftNotFoundError,
      /reads as all zeros at 0x80000-0xfffff: kernels since 4\.11 return zeros for RAM below 1 MiB/,
    );
  }));

Deno.test("ibft source mem: a missing device is not-found", async () => {
  await rejectsWith(
    loadMem({ memPath: "/nonexistent/mem" }),
    IbftNotFoundError,
    /\/nonexistent\/mem does not exist/,
  );
});

Deno.test("ibft source auto: acpi before sysfs before mem", () =>
  withTemp(async (root) => {
    const mem = `${root}/mem`;
    await memImage(mem, [[0x9e620, MUTUAL]]);
    const o = { sysRoot: root, memPath: mem };
    assert.equal((await loadAuto(o)).source, `mem:${mem}@0x9e620`);
    await copyTree(`${FIXTURES}ibft-sysfs/ipxe-bios-plain`, `${root}/firmware/ibft`);
    assert.equal((await loadAuto(o)).source, `sysfs:${root}/firmware/ibft`);
    await Deno.mkdir(`${root}/firmware/acpi/tables`, { recursive: true });
    await Deno.writeFile(`${root}/firmware/acpi/tables/iBFT`, PLAIN);
    assert.equal((await loadAuto(o)).source, `acpi:${root}/firmware/acpi/tables/iBFT`);
    assert.equal((await loadIbft("auto", o)).source, `acpi:${root}/firmware/acpi/tables/iBFT`);
  }));

Deno.test("ibft source auto: a malformed table found first is an error, not skipped", () =>
  withTemp(async (root) => {
    await Deno.mkdir(`${root}/firmware/acpi/tables`, { recursive: true });
    await Deno.writeFile(`${root}/firmware/acpi/tables/iBFT`, PLAIN.subarray(0, 100));
    const mem = `${root}/mem`;
    await memImage(mem, [[0x9e620, MUTUAL]]);
    await rejectsWith(loadAuto({ sysRoot: root, memPath: mem }), InvalidInputError, /truncated/);
  }));

Deno.test("ibft source auto: nothing found lists what was tried and suggests modprobe", () =>
  withTemp(async (root) => {
    const mem = `${root}/mem`;
    await Deno.writeFile(mem, new Uint8Array(0x100000));
    await rejectsWith(
      loadAuto({ sysRoot: root, memPath: mem }),
      IbftNotFoundError,
      /^no iBFT found \(tried acpi: no ACPI table .*; sysfs: .*absent or empty; mem: .*4\.11.*\); if the firmware booted from iSCSI, try 'modprobe iscsi_ibft'$/,
    );
  }));

Deno.test("ibft source FILE: a directory is read as a sysfs tree, a file as a table", async () => {
  const dirLoaded = await loadIbft(`${FIXTURES}ibft-sysfs/ipxe-bios-plain`);
  assert.equal(dirLoaded.source, `sysfs:${FIXTURES}ibft-sysfs/ipxe-bios-plain`);
  const fileLoaded = await loadIbft(`${FIXTURES}ibft/ipxe-bios-plain.bin`);
  assert.equal(fileLoaded.source, `file:${FIXTURES}ibft/ipxe-bios-plain.bin`);
  assert.deepStrictEqual(fileLoaded.table, decodeIbft(PLAIN));
  assert.deepStrictEqual(dirLoaded.table, asSysfsSees(fileLoaded.table));
});
