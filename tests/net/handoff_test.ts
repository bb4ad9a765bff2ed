/** The hand-off files' contents for the cases the netns tests cannot make here (VLAN). */
import assert from "node:assert/strict";
import { parseIp } from "../../src/net/addr.ts";
import type { ConfiguredNic } from "../../src/net/configure.ts";
import { netConf, networkdFiles, nmConf } from "../../src/net/handoff.ts";

const vlanNic: ConfiguredNic = {
  config: {
    mac: "52:54:00:12:34:56",
    vlan: 100,
    address: parseIp("192.0.2.20"),
    prefixLength: 26,
    gateway: parseIp("192.0.2.1"),
    dns: [parseIp("192.0.2.53")!],
    hostname: "node7",
    origin: "static",
  },
  ifname: "eth0.100",
  index: 5,
  parentName: "eth0",
  parentIndex: 2,
};

Deno.test("handoff: VLAN: the VLAN link keeps its address, the parent names the VLAN", () => {
  const files = networkdFiles(vlanNic);
  assert.deepEqual([...files.keys()], ["0-isboot-eth0.100.network", "0-isboot-eth0.network"]);
  const v = files.get("0-isboot-eth0.100.network")!;
  assert.match(v, /^Name=eth0\.100$/m);
  assert.match(v, /^KeepConfiguration=yes$/m);
  assert.match(v, /^Address=192\.0\.2\.20\/26$/m);
  assert.match(v, /^Gateway=192\.0\.2\.1$/m);
  const p = files.get("0-isboot-eth0.network")!;
  assert.match(p, /^VLAN=eth0\.100$/m);
  assert.match(p, /^KeepConfiguration=yes$/m);
  const conf = netConf(vlanNic);
  assert.match(conf, /^DEVICE='eth0\.100'$/m);
  assert.match(conf, /^IPV4NETMASK=255\.255\.255\.192$/m);
  assert.match(conf, /^IPV4BROADCAST=192\.0\.2\.63$/m);
  assert.match(conf, /^HOSTNAME='node7'$/m);
  assert.match(
    nmConf([vlanNic]),
    /^unmanaged-devices\+=interface-name:eth0\.100;interface-name:eth0$/m,
  );
});

Deno.test("handoff: shell quoting in net-IFACE.conf keeps a hostile hostname inert", () => {
  const nic = { ...vlanNic, config: { ...vlanNic.config, hostname: "x'; reboot; '" } };
  const conf = netConf(nic);
  assert.match(conf, /^HOSTNAME='x'\\''; reboot; '\\'''$/m);
});
