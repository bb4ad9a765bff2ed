/**
 * The full decode of every shared fixture (tests/fixtures/ibft/README.md),
 * checked field by field against the hex dumps: iPXE's table with the
 * initiator at 0x50, NIC 0 at 0xa0, target 0 at 0x180 (target 1 at 0x1c0)
 * and the strings from 0x200.
 */
import type { IbftNic, IbftTable, IbftTarget } from "../../src/ibft/model.ts";

export const FIXTURES = new URL("../fixtures/", import.meta.url).pathname;

const nic0: IbftNic = {
  index: 0,
  valid: true,
  bootSelected: true,
  global: false,
  ip: "10.0.2.15",
  prefixLength: 24,
  origin: "dhcp",
  gateway: "10.0.2.2",
  primaryDns: "10.0.2.3",
  secondaryDns: null,
  dhcpServer: "10.0.2.2",
  vlan: 0,
  mac: "52:54:00:12:34:56",
  pciBdf: "00:03.0", // 0x0018: bus 0, device 3, function 0
  hostname: null,
};

const target0: IbftTarget = {
  index: 0,
  valid: true,
  bootSelected: true,
  radiusChap: false,
  radiusReverseChap: false,
  ip: "10.0.2.2",
  port: 3260,
  lun: 1,
  lunRaw: "0001000000000000",
  chap: "none",
  nicIndex: 0,
  name: "iqn.2026-11.test:disk1",
  chapName: null,
  chapSecret: null,
  reverseChapName: null,
  reverseChapSecret: null,
};

function table(length: number, targets: IbftTarget[]): IbftTable {
  return {
    header: {
      signature: "iBFT",
      length,
      revision: 1,
      checksumValid: true,
      oemId: "FENSYS",
      oemTableId: "iPXE",
    },
    control: { bootFailover: false },
    initiator: {
      name: "iqn.2026-11.test:client",
      valid: true,
      bootSelected: true,
      isnsServer: null,
      slpServer: null,
      primaryRadius: null,
      secondaryRadius: null,
    },
    nics: [nic0],
    targets,
  };
}

/** file name in tests/fixtures/ibft -> its full decode. */
export const EXPECTED: Record<string, IbftTable> = {
  "ipxe-bios-plain.bin": table(559, [target0]),
  "ipxe-uefi-plain.bin": table(559, [target0]),
  "ipxe-bios-chap.bin": table(589, [{
    ...target0,
    chap: "chap",
    chapName: "ibft-initiator",
    chapSecret: "initsecret1234",
  }]),
  "ipxe-bios-mutual-chap.bin": table(617, [{
    ...target0,
    chap: "mutual",
    chapName: "ibft-initiator",
    chapSecret: "initsecret1234",
    reverseChapName: "ibft-target",
    reverseChapSecret: "targetsecret987",
  }]),
  "ipxe-bios-two-targets.bin": table(582, [target0, {
    ...target0,
    index: 1,
    name: "iqn.2026-11.test:disk2",
  }]),
};

/** sysfs tree in tests/fixtures/ibft-sysfs -> the binary fixture it shows. */
export const SYSFS_OF: Record<string, string> = {
  "ipxe-bios-plain": "ipxe-bios-plain.bin",
  "ipxe-bios-mutual-chap": "ipxe-bios-mutual-chap.bin",
};

/**
 * What the sysfs view cannot show, set to what readSysfsIbft reports for it:
 * the table length, the control structure, and the NIC's PCI location (the
 * fixtures were copied without the `device` link).
 */
export function asSysfsSees(t: IbftTable): IbftTable {
  const c = structuredClone(t);
  c.header.length = null;
  c.control = null;
  for (const n of c.nics) n.pciBdf = null;
  return c;
}
