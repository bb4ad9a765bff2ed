import { assertEquals, assertThrows } from "./assert.ts";
import fc from "fast-check";
import { fuzzOptions } from "../helpers/fuzz.ts";
import {
  BOOT_DEFAULTS,
  parseBootCmdline,
  parseIpArg,
  parseNetRoot,
  splitKernelCmdline,
} from "../../src/boot/cmdline.ts";
import { InvalidInputError } from "../../src/errors.ts";
import { formatIp } from "../../src/net/addr.ts";

Deno.test("cmdline: splits like the kernel's next_arg, quotes removed", () => {
  assertEquals(splitKernelCmdline('  a b=c  d="x y" "e f" g="h" i=j"k l"m -- init args\n'), [
    { name: "a", value: null },
    { name: "b", value: "c" },
    { name: "d", value: "x y" },
    { name: "e f", value: null },
    { name: "g", value: "h" },
    { name: "i", value: 'j"k l"m' },
  ]);
  // An '=' first in an argument is part of the name (kernel keeps equals==0 as "none").
  assertEquals(splitKernelCmdline("=a=b =c"), [{ name: "=a", value: "b" }, {
    name: "=c",
    value: null,
  }]);
  assertEquals(splitKernelCmdline('a="'), [{ name: "a", value: "" }]);
  assertEquals(splitKernelCmdline(""), []);
});

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

Deno.test("cmdline: RFC 4173 netroot with credentials, IPv6 and hex LUN", () => {
  assertEquals(parseNetRoot("iscsi:10.0.2.2::3260:1:iqn.2026-11.test:disk1"), {
    server: "10.0.2.2",
    port: 3260,
    lun: 1,
    targetName: "iqn.2026-11.test:disk1",
  });
  assertEquals(parseNetRoot("iscsi:u:p:ru:rp@[fd00::2]:6::0001000000000000:iqn.x:y"), {
    server: "fd00::2",
    port: 3260,
    lun: 1,
    targetName: "iqn.x:y",
    chapUser: "u",
    chapSecret: "p",
    mutualUser: "ru",
    mutualSecret: "rp",
  });
  assertEquals(parseNetRoot("iscsi:host.example::::iqn").lun, 0);
  assertEquals(parseNetRoot("iscsi:h:::10:iqn").lun, 16);
  assertEquals(parseNetRoot("iscsi:h:::0002-0000:iqn").lun, 2);
  for (
    const bad of [
      "nfs:1.2.3.4:/x",
      "iscsi:1.2.3.4",
      "iscsi::::1:iqn.x",
      "iscsi:1.2.3.4:17::1:iqn.x",
      "iscsi:1.2.3.4::70000:1:iqn.x",
      "iscsi:1.2.3.4::3260:1:",
      "iscsi:[1.2.3.4]::3260:1:iqn.x",
      "iscsi:u@1.2.3.4::3260:1:iqn.x",
    ]
  ) assertThrows(() => parseNetRoot(bad), InvalidInputError, undefined, bad);
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

Deno.test("cmdline: static ip= in dracut form", () => {
  const s = parseIpArg(
    "192.168.7.10::192.168.7.1:255.255.255.0:box:eth1:none:9000:52-54-00-AA-BB-CC",
  );
  if (s === "ibft") throw new Error("unexpected");
  assertEquals(formatIp(s.address), "192.168.7.10");
  assertEquals(s.prefixLength, 24);
  assertEquals(formatIp(s.gateway!), "192.168.7.1");
  assertEquals(s.hostname, "box");
  assertEquals(s.iface, "eth1");
  assertEquals(s.mtu, 9000);
  assertEquals(s.mac, "52:54:00:aa:bb:cc");
  const v6 = parseIpArg("[fd00::10/64]::[fd00::1]:::eth0:none");
  if (v6 === "ibft") throw new Error("unexpected");
  assertEquals(v6.prefixLength, 64);
  assertEquals(formatIp(v6.gateway!), "fd00::1");
  assertThrows(() => parseIpArg("10.0.0.1::10.0.0.254:255.0.255.0::eth0:none"), InvalidInputError);
  assertThrows(() => parseIpArg("10.0.0.1:::24::eth0:dhcp"), InvalidInputError);
  assertThrows(() => parseIpArg("eth0:dhcp"), InvalidInputError);
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

const token = fc.stringMatching(/^[A-Za-z0-9._\/:,@+-]{1,12}$/);
const spaced = fc.stringMatching(/^[A-Za-z0-9 ._=-]{0,12}$/);

Deno.test("cmdline property: join then split returns the arguments", () => {
  fc.assert(
    fc.property(
      fc.array(fc.record({ name: token, value: fc.option(spaced, { nil: null }) }), {
        maxLength: 8,
      }),
      fc.array(fc.constantFrom(" ", "  ", "\t", "\n"), { minLength: 9, maxLength: 9 }),
      (args, seps) => {
        const names = args.filter((a) => a.name !== "--").map((a) => ({ ...a }));
        const line = names.map((a, i) =>
          (a.value === null ? a.name : `${a.name}="${a.value}"`) + seps[i]
        ).join("");
        assertEquals(splitKernelCmdline(line), names);
      },
    ),
    fuzzOptions(300),
  );
});

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

Deno.test("cmdline property: netroot format/parse round trip", () => {
  const ipv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((t) => t.join("."));
  const iqn = fc.stringMatching(/^iqn\.20[0-9]{2}-[01][0-9]\.[a-z]{1,8}(:[a-z0-9.:-]{1,20})?$/);
  fc.assert(
    fc.property(
      ipv4,
      fc.integer({ min: 1, max: 65535 }),
      fc.nat(16383),
      iqn,
      (ip, port, lun, name) => {
        const n = parseNetRoot(`iscsi:${ip}::${port}:${lun.toString(16)}:${name}`);
        assertEquals(n, { server: ip, port, lun, targetName: name });
      },
    ),
    fuzzOptions(300),
  );
});
