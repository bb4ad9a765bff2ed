/** parseIpArg (src/net/ip_arg.ts): the kernel command line's ip= in dracut's static form. */
import assert from "node:assert/strict";
import { parseIpArg } from "../../src/net/ip_arg.ts";
import { InvalidInputError } from "../../src/errors.ts";
import { formatIp } from "../../src/net/addr.ts";

Deno.test("ip arg: static ip= in dracut form", () => {
  const s = parseIpArg(
    "192.168.7.10::192.168.7.1:255.255.255.0:box:eth1:none:9000:52-54-00-AA-BB-CC",
  );
  if (s === "ibft") throw new Error("unexpected");
  assert.deepEqual(formatIp(s.address), "192.168.7.10");
  assert.deepEqual(s.prefixLength, 24);
  assert.deepEqual(formatIp(s.gateway!), "192.168.7.1");
  assert.deepEqual(s.hostname, "box");
  assert.deepEqual(s.iface, "eth1");
  assert.deepEqual(s.mtu, 9000);
  assert.deepEqual(s.mac, "52:54:00:aa:bb:cc");
  const v6 = parseIpArg("[fd00::10/64]::[fd00::1]:::eth0:none");
  if (v6 === "ibft") throw new Error("unexpected");
  assert.deepEqual(v6.prefixLength, 64);
  assert.deepEqual(formatIp(v6.gateway!), "fd00::1");
  assert.throws(() => parseIpArg("10.0.0.1::10.0.0.254:255.0.255.0::eth0:none"), InvalidInputError);
  assert.throws(() => parseIpArg("10.0.0.1:::24::eth0:dhcp"), InvalidInputError);
  assert.throws(() => parseIpArg("eth0:dhcp"), InvalidInputError);
});
