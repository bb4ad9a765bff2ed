/**
 * resolveBoot over real iPXE tables (tests/fixtures/ibft) and command lines;
 * loginWithRetry's order, backoff, CHAP refusal and deadline.
 */
import assert from "node:assert/strict";
import { assertEquals, assertThrows } from "../helpers/assert.ts";
import { parseBootCmdline } from "../../src/boot/cmdline.ts";
import { resolveBoot } from "../../src/boot/spec.ts";
import { loadIbft } from "../../src/ibft/sources.ts";
import { formatIp } from "../../src/net/addr.ts";
import { AuthError, InvalidInputError, OperationalError } from "../../src/errors.ts";
import { type BootBackend, loginWithRetry } from "../../src/boot/sequence.ts";
import { Logger } from "../../src/log.ts";
import { MemoryDevice } from "../../src/memory_device.ts";
import type { BootTarget } from "../../src/boot/spec.ts";

const FIX = new URL("../fixtures/", import.meta.url).pathname;

Deno.test("spec: iPXE mutual-CHAP table: NIC by MAC, target with both secrets, plan lines carry no secret", async () => {
  const loaded = await loadIbft(`${FIX}ibft/ipxe-bios-mutual-chap.bin`);
  const spec = resolveBoot(parseBootCmdline("ip=ibft"), loaded);
  assertEquals(spec.initiator, "iqn.2026-11.test:client");
  assertEquals(spec.nics.length, 1);
  const nic = spec.nics[0];
  assertEquals(nic.mac, "52:54:00:12:34:56");
  assertEquals(formatIp(nic.address!), "10.0.2.15");
  assertEquals(nic.prefixLength, 24);
  assertEquals(nic.origin, "dhcp");
  assertEquals(spec.targets.map((t) => [t.label, t.host, t.port, t.lun, t.targetName]), [
    ["iBFT target 0", "10.0.2.2", 3260, 1, "iqn.2026-11.test:disk1"],
  ]);
  assertEquals(spec.targets[0].chapUser, "ibft-initiator");
  assertEquals(spec.targets[0].mutualSecret, "targetsecret987");
  const text = spec.lines.join("\n");
  assert.match(
    text,
    /iBFT target 0: iqn\.2026-11\.test:disk1 LUN 1 at 10\.0\.2\.2:3260, mutual CHAP/,
  );
  assert.doesNotMatch(text, /initsecret1234|targetsecret987/);
  assert.ok(spec.lines.length <= 8, text);
});

Deno.test("spec: rd.iscsi.initiator overrides; netroot targets follow iBFT ones; sysfs tree source", async () => {
  const loaded = await loadIbft(`${FIX}ibft-sysfs/ipxe-bios-plain`);
  const spec = resolveBoot(
    parseBootCmdline(
      "rd.iscsi.firmware rd.iscsi.initiator=iqn.2026-11.test:other netroot=iscsi:10.0.2.9::3261:2:iqn.x:y",
    ),
    loaded,
  );
  assertEquals(spec.initiator, "iqn.2026-11.test:other");
  assertEquals(spec.targets.map((t) => `${t.label} ${t.host}:${t.port}/${t.lun}`), [
    "iBFT target 0 10.0.2.2:3260/1",
    "netroot 0 10.0.2.9:3261/2",
  ]);
});

Deno.test("spec: netroot without iBFT needs a static ip= and an initiator", () => {
  const line = "netroot=iscsi:u:p@192.0.2.1::::iqn.t:d ip=192.0.2.5:::255.255.255.0::eth0:none";
  assertThrows(
    () => resolveBoot(parseBootCmdline(line), null),
    InvalidInputError,
    "no initiator name",
  );
  const spec = resolveBoot(parseBootCmdline(`${line} rd.iscsi.initiator=iqn.2026-11.test:c`), null);
  assertEquals(spec.nics[0].ifname, "eth0");
  assertEquals(spec.nics[0].mac, null);
  assertEquals(spec.targets[0].chapSecret, "p");
  assertThrows(
    () =>
      resolveBoot(
        parseBootCmdline("netroot=iscsi:192.0.2.1::::iqn.t:d rd.iscsi.initiator=iqn.a:b"),
        null,
      ),
    InvalidInputError,
    "no network to configure",
  );
});

const T = (label: string): BootTarget => ({
  label,
  host: "192.0.2.1",
  port: 3260,
  lun: 1,
  targetName: `iqn.t:${label}`,
});
const quiet = new Logger({ quiet: true, sink: () => {} });

function backend(
  script: Record<string, Array<"ok" | "auth" | "down">>,
  calls: string[],
): BootBackend {
  return {
    login(t) {
      calls.push(t.label);
      const r = script[t.label].shift() ?? "down";
      if (r === "ok") {
        return Promise.resolve(
          new MemoryDevice({ size: 1n << 20n, blockSize: 512, readOnly: false }),
        );
      }
      return Promise.reject(
        r === "auth" ? new AuthError("CHAP refused") : new OperationalError("connection refused"),
      );
    },
    attach: () => Promise.reject(new Error("unused")),
  };
}

Deno.test("login retry: targets in order, rounds with backoff, a CHAP refusal is not retried", async () => {
  const calls: string[] = [];
  const b = backend({ a: ["auth"], b: ["down", "down", "ok"] }, calls);
  const r = await loginWithRetry(
    [T("a"), T("b")],
    b,
    { initiator: "iqn.i:x", recoveryTimeoutMs: 1, log: quiet },
    Date.now() + 5000,
    [10, 20],
  );
  assertEquals(r.target.label, "b");
  assertEquals(calls, ["a", "b", "b", "b"]);
});

Deno.test("login retry: all refused -> AuthError; unreachable -> OperationalError at the deadline", async () => {
  await assert.rejects(
    loginWithRetry(
      [T("a")],
      backend({ a: ["auth"] }, []),
      { initiator: "iqn.i:x", recoveryTimeoutMs: 1, log: quiet },
      Date.now() + 5000,
      [10],
    ),
    AuthError,
  );
  const t0 = Date.now();
  await assert.rejects(
    loginWithRetry(
      [T("a")],
      backend({ a: [] }, []),
      { initiator: "iqn.i:x", recoveryTimeoutMs: 1, log: quiet },
      Date.now() + 300,
      [50],
    ),
    /no target answered within the boot timeout; last: a \(iqn\.t:a at 192\.0\.2\.1:3260\): connection refused/,
  );
  assert.ok(Date.now() - t0 < 1000);
});

Deno.test("spec: a second path through the iBFT's other NIC: both NICs, the second without a default route, each naming its targets", async () => {
  const loaded = await loadIbft(`${FIX}ibft/ipxe-bios-two-targets.bin`);
  const t = loaded.table;
  t.nics.push({
    ...t.nics[0],
    index: 1,
    mac: "52:54:00:00:00:01",
    ip: "10.0.3.15",
    gateway: "10.0.3.2",
  });
  Object.assign(t.targets[1], {
    name: t.targets[0].name,
    lun: t.targets[0].lun,
    lunRaw: t.targets[0].lunRaw,
    nicIndex: 1,
    ip: "198.51.100.7",
  });
  const spec = resolveBoot(parseBootCmdline("ip=ibft"), loaded);
  assertEquals(spec.nics.map((n) => [n.mac, n.defaultRoute ?? true, n.targets?.map(formatIp)]), [
    ["52:54:00:12:34:56", true, ["10.0.2.2"]],
    ["52:54:00:00:00:01", false, ["198.51.100.7"]],
  ]);
  assertEquals(spec.targets.map((x) => [x.host, x.targetName, x.lun]), [
    ["10.0.2.2", t.targets[0].name, t.targets[0].lun],
    ["198.51.100.7", t.targets[0].name, t.targets[0].lun],
  ]);
  assert.match(
    spec.lines.join("\n"),
    /nic 1: 52:54:00:00:00:01, 10\.0\.3\.15\/24, for a second path/,
  );
});

Deno.test("spec: a DHCP boot: no NIC or target until the lease; the iBFT's NIC wins over ip=dhcp", async () => {
  const s = resolveBoot(
    parseBootCmdline("ip=dhcp netroot=dhcp rd.iscsi.initiator=iqn.2026-12.test:h"),
    null,
  );
  assertEquals(s.nics, []);
  assertEquals(s.targets, []);
  assertEquals(s.dhcp, { requests: [{}], rootPath: true, vlans: [] });
  assert.match(
    s.lines.join("\n"),
    /network from DHCP on any interface with carrier; target from its root path/,
  );
  // ip=IFACE:dhcp with a netroot=iscsi: target: the address from DHCP, the target from the line.
  const t = resolveBoot(
    parseBootCmdline(
      "ip=ens3:dhcp netroot=iscsi:192.0.2.1::3260:1:iqn.2026-12.test:d rd.iscsi.initiator=iqn.2026-12.test:h",
    ),
    null,
  );
  assertEquals(t.dhcp, { requests: [{ iface: "ens3" }], rootPath: false, vlans: [] });
  assertEquals(t.targets.length, 1);
  // No initiator name: refused before anything is touched.
  assertThrows(
    () => resolveBoot(parseBootCmdline("netroot=dhcp"), null),
    InvalidInputError,
    "initiator",
  );
  // With an iBFT NIC, its network is used; netroot=dhcp then has no lease to read.
  const loaded = await loadIbft(`${FIX}ibft/ipxe-bios-chap.bin`);
  assertEquals(resolveBoot(parseBootCmdline("ip=dhcp"), loaded).dhcp, undefined);
  assertThrows(
    () => resolveBoot(parseBootCmdline("netroot=dhcp"), loaded),
    InvalidInputError,
    "netroot=dhcp needs the network from DHCP",
  );
});
