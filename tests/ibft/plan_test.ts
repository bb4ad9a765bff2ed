import assert from "node:assert/strict";
import { InvalidInputError } from "../../src/errors.ts";
import { makeBootPlan } from "../../src/ibft/plan.ts";
import type { IbftTable } from "../../src/ibft/model.ts";
import { EXPECTED } from "./expected.ts";

const model = (name: string): IbftTable => structuredClone(EXPECTED[name]);

Deno.test("ibft plan: the mutual-CHAP fixture boots target 0 through NIC 0 with its secrets", () => {
  const plan = makeBootPlan(model("ipxe-bios-mutual-chap.bin"));
  assert.equal(plan.initiatorName, "iqn.2026-11.test:client");
  assert.equal(plan.nic.mac, "52:54:00:12:34:56");
  assert.equal(plan.targets.length, 1);
  const t = plan.targets[0].target;
  assert.deepStrictEqual(
    [t.ip, t.port, t.name, t.lun, t.chapName, t.chapSecret, t.reverseChapName, t.reverseChapSecret],
    [
      "10.0.2.2",
      3260,
      "iqn.2026-11.test:disk1",
      1,
      "ibft-initiator",
      "initsecret1234",
      "ibft-target",
      "targetsecret987",
    ],
  );
  assert.deepStrictEqual(plan.reasons, [
    "initiator: iqn.2026-11.test:client",
    "nic 0: 52:54:00:12:34:56, 10.0.2.15/24, chosen as the NIC of target 0",
    "target 0: iqn.2026-11.test:disk1 LUN 1 at 10.0.2.2:3260, boot-selected, CHAP mutual (boot disk)",
  ]);
  assert.doesNotMatch(plan.reasons.join("\n"), /initsecret|targetsecret/);
});

Deno.test("ibft plan: two targets keep slot order; boot-selected ones come first", () => {
  const m = model("ipxe-bios-two-targets.bin");
  assert.deepStrictEqual(makeBootPlan(m).targets.map((p) => p.target.index), [0, 1]);
  m.targets[0].bootSelected = false;
  const plan = makeBootPlan(m);
  assert.deepStrictEqual(plan.targets.map((p) => p.target.index), [1, 0]);
  assert.match(plan.reasons.join("\n"), /target 1: .*disk2.*boot-selected.*\(boot disk\)/);
  assert.match(plan.reasons.join("\n"), /target 0: .*disk1.*, valid, .*\(alternative\)/);
});

Deno.test("ibft plan: invalid targets and targets without name, address or NIC are skipped, with reasons", () => {
  const m = model("ipxe-bios-two-targets.bin");
  m.targets[0].valid = false;
  m.targets.push({ ...m.targets[1], index: 2, nicIndex: 7 });
  m.targets.push({ ...m.targets[1], index: 3, ip: null });
  m.targets.push({ ...m.targets[1], index: 4, name: null });
  const plan = makeBootPlan(m);
  assert.deepStrictEqual(plan.targets.map((p) => p.target.index), [1]);
  const r = plan.reasons.join("\n");
  assert.match(r, /target 0: skipped, its valid flag is clear/);
  assert.match(r, /target 2 \(iqn.2026-11.test:disk2\): skipped, its NIC 7 is not in the table/);
  assert.match(r, /target 3 .*: skipped, it has no address/);
  assert.match(r, /target 4: skipped, it has no target name/);
});

Deno.test("ibft plan: the NIC association is honoured; targets on another NIC are left out", () => {
  const m = model("ipxe-bios-two-targets.bin");
  m.nics.push({ ...m.nics[0], index: 1, mac: "52:54:00:00:00:01", ip: "192.0.2.10", vlan: 5 });
  m.targets[0].bootSelected = false;
  m.targets[1].nicIndex = 1; // boot-selected, through NIC 1
  const plan = makeBootPlan(m);
  assert.equal(plan.nic.index, 1);
  assert.deepStrictEqual(plan.targets.map((p) => [p.target.index, p.nic.index]), [[1, 1]]);
  assert.match(plan.reasons[1], /^nic 1: 52:54:00:00:00:01, 192.0.2.10\/24, VLAN 5, chosen/);
  assert.match(
    plan.reasons.join("\n"),
    /target 0 .*: skipped, it is reached through NIC 0, not the boot NIC 1, and is not the boot disk/,
  );
  assert.deepStrictEqual(plan.nics.map((n) => n.index), [1]);
  m.nics[1].valid = false;
  const fallback = makeBootPlan(m);
  assert.equal(fallback.nic.index, 0);
  assert.match(fallback.reasons.join("\n"), /target 1 .*: skipped, its NIC 1 is not valid/);
});

Deno.test("ibft plan: the boot disk through the other NIC too is a second path: both NICs come up, boot NIC first", () => {
  const m = model("ipxe-bios-two-targets.bin");
  m.nics.push({ ...m.nics[0], index: 1, mac: "52:54:00:00:00:01", ip: "10.0.3.15", vlan: 0 });
  // Target 1 becomes the boot disk's second path: same name and LUN, through NIC 1.
  Object.assign(m.targets[1], {
    name: m.targets[0].name,
    lunRaw: m.targets[0].lunRaw,
    lun: m.targets[0].lun,
    nicIndex: 1,
    ip: "10.0.3.100",
    bootSelected: false,
  });
  const plan = makeBootPlan(m);
  assert.deepStrictEqual(plan.nics.map((n) => n.index), [0, 1]);
  assert.equal(plan.nic.index, 0);
  assert.deepStrictEqual(plan.targets.map((p) => [p.target.index, p.nic.index]), [[0, 0], [1, 1]]);
  const r = plan.reasons.join("\n");
  assert.match(r, /nic 1: 52:54:00:00:00:01, 10.0.3.15\/24, for a second path/);
  assert.match(
    r,
    /target 1: .* at 10.0.3.100:3260, valid, CHAP .* \(a second path, through NIC 1\)/,
  );
});

Deno.test("ibft plan: IPv6 portals in brackets, raw LUNs, missing initiator", () => {
  const m = model("ipxe-bios-plain.bin");
  Object.assign(m.targets[0], { ip: "fd00::2", lun: null, lunRaw: "0415000000000000" });
  m.initiator!.valid = false;
  const plan = makeBootPlan(m);
  assert.equal(plan.initiatorName, null);
  assert.match(plan.reasons.join("\n"), /LUN raw 0415000000000000 at \[fd00::2\]:3260/);
  assert.match(plan.reasons.join("\n"), /initiator: ignored, its valid flag is clear/);
  m.initiator = null;
  assert.match(makeBootPlan(m).reasons.join("\n"), /initiator: the table has no initiator/);
});

Deno.test("ibft plan: nothing bootable is InvalidInputError saying why", () => {
  const m = model("ipxe-bios-plain.bin");
  m.targets[0].valid = false;
  assert.throws(() => makeBootPlan(m), (e: unknown) => {
    assert.ok(e instanceof InvalidInputError);
    assert.match(e.message, /^iBFT: nothing to boot: target 0: skipped, its valid flag is clear$/);
    return true;
  });
  m.targets = [];
  assert.throws(() => makeBootPlan(m), /nothing to boot: the table lists no targets/);
});
