import { assertEquals, assertThrows } from "../helpers/assert.ts";
import fc from "fast-check";
import { fuzzOptions } from "../helpers/fuzz.ts";
import { BOOT_DEFAULTS, parseBootCmdline } from "../../src/boot/cmdline.ts";
import { splitKernelCmdline } from "../../src/boot/kernel_args.ts";
import { InvalidInputError } from "../../src/errors.ts";

Deno.test("cmdline: iBFT boot with every isboot option", () => {
  const c = parseBootCmdline(
    "BOOT_IMAGE=/vmlinuz root=UUID=1234 ro rd.iscsi.firmware=1 ip=ibft " +
      "rd.iscsi.initiator=iqn.2026-11.test:client isboot.device=nbd3 isboot.timeout=60 " +
      "isboot.link-timeout=5 isboot.recovery_timeout=0.5 isboot.header_digest=CRC32C " +
      "isboot.data_digest=none isboot.debug isboot.source=sysfs isboot.handoff=networkd,nm " +
      "isboot.future=1 isboot.poll-us=50 isboot.command-timeout=12",
  );
  assertEquals(c.firmware, true);
  assertEquals(c.ipFromIbft, true);
  assertEquals(c.requested, true);
  assertEquals(c.disabled, false);
  assertEquals(c.initiator, "iqn.2026-11.test:client");
  assertEquals(c.device, "/dev/nbd3");
  assertEquals(c.timeoutMs, 60_000);
  assertEquals(c.linkTimeoutMs, 5_000);
  assertEquals(c.recoveryTimeoutMs, 500);
  assertEquals(c.commandTimeoutMs, 12_000);
  assertEquals(c.headerDigest, "crc32c");
  assertEquals(c.dataDigest, "none");
  assertEquals(c.debug, true);
  assertEquals(c.source, "sysfs");
  assertEquals(c.handoff, ["networkd", "nm"]);
  assertEquals(c.root, "UUID=1234");
  assertEquals(c.unknown, ["isboot.future"]);
  assertEquals(c.pollUs, 50);
  assertEquals(parseBootCmdline("isboot.poll_us=0").pollUs, 0);
  assertEquals(parseBootCmdline("root=/dev/sda1").pollUs, undefined);
  for (
    const bad of [
      "isboot.poll_us",
      "isboot.poll_us=-1",
      "isboot.poll_us=1000001",
      "isboot.poll_us=5ms",
    ]
  ) {
    assertThrows(() => parseBootCmdline(bad), InvalidInputError, "poll_us", bad);
  }
});

Deno.test("cmdline: defaults, and nothing requested without iSCSI options", () => {
  const c = parseBootCmdline("root=/dev/sda1 quiet ip=dhcp");
  assertEquals(c.requested, false);
  assertEquals(c.firmware, false);
  assertEquals(c.timeoutMs, BOOT_DEFAULTS.timeoutMs);
  // The root disk waits for its target without limit unless told otherwise.
  assertEquals(c.recoveryTimeoutMs, Infinity);
  assertEquals(parseBootCmdline("isboot.recovery_timeout=forever").recoveryTimeoutMs, Infinity);
  assertEquals(parseBootCmdline("isboot.recovery_timeout=0").recoveryTimeoutMs, 0);
  // A hung command is escalated and re-issued after 30 s unless told otherwise.
  assertEquals(c.commandTimeoutMs, 30_000);
  assertEquals(BOOT_DEFAULTS.commandTimeoutMs, 30_000);
  assertEquals(parseBootCmdline("isboot.command_timeout=none").commandTimeoutMs, 0);
  assertEquals(parseBootCmdline("isboot.command_timeout=0").commandTimeoutMs, 0);
  assertEquals(parseBootCmdline("isboot.command_timeout=2.5").commandTimeoutMs, 2_500);
  // Several paths to the root disk are used at once unless told otherwise.
  assertEquals(c.multipath, "failover");
  assertEquals(parseBootCmdline("isboot.multipath=round-robin").multipath, "round-robin");
  assertEquals(parseBootCmdline("isboot.multipath=off").multipath, "off");
  // No other LUN unless asked for.
  assertEquals(c.luns, undefined);
  assertEquals(parseBootCmdline("isboot.luns=all").luns, "all");
  assertEquals(parseBootCmdline("isboot.luns=3,1,3").luns, [3, 1]);
  for (const bad of ["isboot.luns=", "isboot.luns=1,,2", "isboot.luns=16384", "isboot.luns=x"]) {
    assertThrows(
      () => parseBootCmdline(bad),
      InvalidInputError,
      "expected all or LUN numbers",
      bad,
    );
  }
  assertThrows(
    () => parseBootCmdline("isboot.multipath=both"),
    InvalidInputError,
    "expected failover, round-robin or off",
  );
  for (
    const bad of [
      "isboot.command_timeout",
      "isboot.command_timeout=-1",
      "isboot.command_timeout=5s",
    ]
  ) {
    assertThrows(() => parseBootCmdline(bad), InvalidInputError, "command_timeout", bad);
  }
  assertEquals(c.handoff, ["ifupdown", "networkd", "nm"]);
  assertEquals(c.ip, []);
  assertEquals(parseBootCmdline("isboot=off rd.iscsi.firmware").disabled, true);
  assertEquals(parseBootCmdline("rd.iscsi.firmware=0").firmware, false);
  assertEquals(parseBootCmdline("rd.iscsi.ibft").firmware, true);
  assertEquals(parseBootCmdline("isboot.timeout=5 isboot.timeout=7").timeoutMs, 7000);
});

Deno.test("cmdline: rd.iscsi.username/password apply to netroot without credentials", () => {
  const c = parseBootCmdline(
    "netroot=iscsi:10.0.2.2::::iqn.t:d rd.iscsi.username=u rd.iscsi.password=s " +
      "rd.iscsi.in.username=tu rd.iscsi.in.password=ts",
  );
  assertEquals(c.requested, true);
  assertEquals(c.netroots[0].chapUser, "u");
  assertEquals(c.netroots[0].mutualSecret, "ts");
});

Deno.test("cmdline: bad isboot values are one-line InvalidInputError", () => {
  for (
    const line of [
      "isboot.timeout=abc",
      "isboot.timeout",
      "isboot.device=/dev/sda",
      "isboot.header_digest=md5",
      "isboot.source=floppy",
      "isboot.handoff=networkd,wicked",
      "rd.iscsi.initiator=bob",
      "nameserver=dns.example",
    ]
  ) {
    const e = assertThrows(() => parseBootCmdline(line), InvalidInputError, undefined, line);
    assertEquals(e.message.includes("\n"), false);
  }
});

// --- property tests --------------------------------------------------------

Deno.test("cmdline property: arbitrary text never throws anything but InvalidInputError", () => {
  const alphabet = fc.constantFrom(
    ..."ab= \t\"'-.:[]@/0123456789".split(""),
    "isboot.timeout=",
    "isboot.device=",
    "netroot=iscsi:",
    "ip=",
    "rd.iscsi.initiator=",
    "isboot.handoff=",
  );
  fc.assert(
    fc.property(fc.array(alphabet, { maxLength: 40 }), (parts) => {
      const line = parts.join("");
      const args = splitKernelCmdline(line);
      if (args.some((a) => a.name === "--" && a.value === null)) throw new Error("'--' kept");
      try {
        parseBootCmdline(line);
      } catch (e) {
        if (!(e instanceof InvalidInputError)) throw e;
        if (e.message.includes("\n")) throw new Error("multi-line message");
      }
    }),
    fuzzOptions(500),
  );
});

Deno.test("cmdline: the DHCP forms: ip=dhcp, ip=IFACE:dhcp[:MTU[:MAC]], netroot=dhcp, rd.neednet", () => {
  const any = parseBootCmdline(
    "ip=dhcp netroot=dhcp rd.neednet=1 rd.iscsi.initiator=iqn.2026-12.test:h",
  );
  assertEquals(any.dhcp, [{}]);
  assertEquals(any.netrootDhcp, true);
  assertEquals(any.requested, true);
  // netroot=dhcp alone implies DHCP on any interface, as in dracut.
  assertEquals(parseBootCmdline("netroot=dhcp").dhcp, [{}]);
  // ip=dhcp alone asks isboot for nothing (it may be for another tool).
  assertEquals(parseBootCmdline("ip=dhcp").requested, false);
  assertEquals(parseBootCmdline("ip=on ip=any").dhcp, [{}, {}]);
  const named = parseBootCmdline("ip=ens3:dhcp ip=ens4:dhcp:9000:52:54:00:AA:BB:CC netroot=dhcp");
  assertEquals(named.dhcp, [{ iface: "ens3" }, {
    iface: "ens4",
    mtu: 9000,
    mac: "52:54:00:aa:bb:cc",
  }]);
  // IPv6 autoconf forms are noted, not acted on.
  const six = parseBootCmdline("ip=dhcp6 ip=ens3:auto6");
  assertEquals(six.dhcp, []);
  assertEquals(six.ipIgnored, ["dhcp6", "ens3:auto6"]);
  assertThrows(() => parseBootCmdline("ip=ens3:dhcp:12"), InvalidInputError, "bad MTU");
  assertThrows(() => parseBootCmdline("ip=ens3:dhcp:1500:zz"), InvalidInputError, "bad MAC");
  // The static form still parses, and its autoconf field cannot ask for DHCP.
  assertEquals(parseBootCmdline("ip=10.0.0.5::10.0.0.1:255.255.255.0:h:ens3:none").ip.length, 1);
  assertThrows(
    () => parseBootCmdline("ip=10.0.0.5::10.0.0.1:255.255.255.0:h:ens3:dhcp"),
    InvalidInputError,
    "ip=IFACE:dhcp",
  );
});

Deno.test("cmdline: vlan=NAME:PHYS for a DHCP request on a VLAN", () => {
  const c = parseBootCmdline("vlan=eth0.5:eth0 vlan=vlan0042:ens3 ip=eth0.5:dhcp netroot=dhcp");
  assertEquals(c.vlans, [
    { name: "eth0.5", parent: "eth0", id: 5 },
    { name: "vlan0042", parent: "ens3", id: 42 },
  ]);
  assertEquals(c.dhcp, [{ iface: "eth0.5" }]);
  for (const bad of ["vlan=eth0", "vlan=foo:eth0", "vlan=eth0.0:eth0", "vlan=eth0.4095:eth0"]) {
    assertThrows(() => parseBootCmdline(bad), InvalidInputError, "vlan=", bad);
  }
});
