/**
 * Configures a NIC and runs the boot NIC guard on it inside the network
 * namespace the test put it in (`ip netns exec NS deno run -A guard_helper.ts JSON`).
 * Log lines go to stderr; each line `status` on stdin is answered with the
 * guard's status as one JSON line on stdout; end of stdin stops the guard.
 * ISBOOT_TEST_GUARD_OFF=1 runs everything but the guard, to show that each
 * test fails without it.
 */
import { parseIp } from "../../src/net/addr.ts";
import { configureNic, type NicConfig } from "../../src/net/configure.ts";
import { NicGuard } from "../../src/net/guard.ts";
import { startBootGuard } from "../../src/boot/guard.ts";
import { Rtnetlink, RTPROT_STATIC } from "../../src/net/rtnetlink.ts";
import { Logger } from "../../src/log.ts";

interface Input {
  mac: string;
  vlan?: number;
  address: string;
  prefixLength: number;
  gateway: string | null;
  targets: string[];
  recvBufferBytes?: number;
  /** Start it the way the boot daemon does (src/boot/guard.ts), writing under this root. */
  root?: string;
}

const input = JSON.parse(Deno.args[0]) as Input;
const log = new Logger({ debug: true });
const cfg: NicConfig = {
  mac: input.mac,
  vlan: input.vlan ?? 0,
  address: parseIp(input.address),
  prefixLength: input.prefixLength,
  gateway: input.gateway ? parseIp(input.gateway) : null,
  dns: [],
  hostname: null,
  origin: "static",
};
const rt = Rtnetlink.open();
const nic = await configureNic(rt, cfg, { linkTimeoutMs: 5000, log });
const off = Deno.env.get("ISBOOT_TEST_GUARD_OFF") === "1";
if (off) {
  // The same starting state the guard makes (its host route), so that the
  // tests then fail on what they check, not on a missing start-up line.
  rt.addRoute({
    index: nic.index,
    family: 4,
    dst: parseIp(input.targets[0]),
    dstLen: 32,
    gateway: cfg.gateway,
    protocol: RTPROT_STATIC,
  });
  log.info(
    `boot NIC guard: OFF; added route ${
      input.targets[0]
    }/32 via ${input.gateway} dev ${nic.ifname} for the target`,
  );
}
rt.close();
const guard = off ? null : input.root
  ? await startBootGuard(
    [nic],
    input.targets.map((host, i) => ({
      label: `target ${i}`,
      host,
      port: 3260,
      lun: 0,
      targetName: "iqn.2026-11.test:guard",
    })),
    { log, root: input.root },
  )
  : NicGuard.start([nic], input.targets.map((t) => parseIp(t)!), {
    log,
    ...(input.recvBufferBytes !== undefined ? { recvBufferBytes: input.recvBufferBytes } : {}),
  });
log.info("helper ready");
const enc = new TextEncoder();
let buf = "";
for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
  buf += chunk;
  let nl;
  while ((nl = buf.indexOf("\n")) >= 0) {
    const line = buf.slice(0, nl);
    buf = buf.slice(nl + 1);
    if (line === "status") {
      Deno.stdout.writeSync(enc.encode(JSON.stringify(guard?.status() ?? []) + "\n"));
    }
  }
}
await guard?.stop();
