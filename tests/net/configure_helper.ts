/**
 * Runs configureNic/writeResolver/writeHandoff (or adoptNic, with "adopt") inside the network namespace the
 * test put it in (`ip netns exec NS deno run -A configure_helper.ts JSON`), and
 * prints the result as JSON. Errors print as the CLI would: `isboot: ...`, exit 1.
 */
import { parseIp } from "../../src/net/addr.ts";
import { adoptNic, configureNic, type NicConfig, writeResolver } from "../../src/net/configure.ts";
import { writeHandoff } from "../../src/net/handoff.ts";
import { Rtnetlink } from "../../src/net/rtnetlink.ts";
import { Logger } from "../../src/log.ts";
import { reportError } from "../../src/cli/main.ts";

interface Input {
  mac: string | null;
  ifname?: string;
  vlan: number;
  address: string | null;
  prefixLength: number;
  gateway: string | null;
  dns: string[];
  hostname: string | null;
  origin: "dhcp" | "static";
  linkTimeoutMs: number;
  outDir: string;
  /** Take the NIC as it is (adoptNic) instead of configuring it; write nothing. */
  adopt?: boolean;
  defaultRoute?: boolean;
  targets?: string[];
  optional?: boolean;
}

const input = JSON.parse(Deno.args[0]) as Input;
const log = new Logger();
const ip = (s: string | null) => (s === null ? null : parseIp(s));
const cfg: NicConfig = {
  mac: input.mac,
  ...(input.ifname ? { ifname: input.ifname } : {}),
  vlan: input.vlan,
  address: ip(input.address),
  prefixLength: input.prefixLength,
  gateway: ip(input.gateway),
  dns: input.dns.map((d) => parseIp(d)!),
  hostname: input.hostname,
  origin: input.origin,
  ...(input.defaultRoute === false ? { defaultRoute: false } : {}),
  ...(input.optional ? { optional: true } : {}),
  ...(input.targets ? { targets: input.targets.map((t) => parseIp(t)!) } : {}),
};
const rt = Rtnetlink.open();
try {
  if (input.adopt) {
    const nic = adoptNic(rt, cfg);
    console.log(JSON.stringify({ ifname: nic.ifname, parentName: nic.parentName, files: [] }));
    Deno.exit(0);
  }
  const nic = await configureNic(rt, cfg, { linkTimeoutMs: input.linkTimeoutMs, log });
  await writeResolver(`${input.outDir}/etc`, cfg.dns, cfg.hostname, false);
  const files = await writeHandoff(input.outDir, [nic], ["ifupdown", "networkd", "nm"]);
  console.log(JSON.stringify({ ifname: nic.ifname, parentName: nic.parentName, files }));
} catch (e) {
  Deno.exit(reportError(e, log, false));
} finally {
  rt.close();
}
