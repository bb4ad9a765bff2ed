/**
 * A DHCP server for the tests: dnsmasq in a network namespace of its own, on
 * a bridge (10.9.0.1/24) whose ports are veth pairs into client namespaces.
 * Nothing leaves the namespaces; {@link withSegment} deletes them.
 */
import { Collected, sh } from "./netns.ts";

/**
 * dnsmasq's arguments for a DHCP-only server in the foreground on `iface`,
 * logging every exchange to stderr, with `options` (`--dhcp-option=` values)
 * and the root path (option 17).
 */
export function dnsmasqArgs(
  o: { iface: string; leaseFile: string; range: string; rootPath: string; options: string[] },
): string[] {
  return [
    "--no-daemon",
    "--conf-file=/dev/null",
    "--port=0",
    `--interface=${o.iface}`,
    "--bind-interfaces",
    "--log-dhcp",
    "--log-facility=-",
    `--dhcp-leasefile=${o.leaseFile}`,
    `--dhcp-range=${o.range}`,
    ...o.options.map((v) => `--dhcp-option=${v}`),
    `--dhcp-option=option:root-path,${o.rootPath}`,
  ];
}

/** The root path the server hands out unless told another (option 17). */
export const ROOT_PATH = "iscsi:10.9.0.1::3260:1:iqn.2026-12.test:dhcp-root";

/** A segment: the server's namespace with bridge br0 (10.9.0.1/24) and dnsmasq on it. */
export class Segment {
  readonly id = crypto.randomUUID().slice(0, 6);
  readonly server = `isboot-dhs-${this.id}`;
  readonly clients: string[] = [];
  ports = 0;
  readonly dir = Deno.makeTempDirSync({ prefix: "isboot-dhcp-" });
  dnsmasq: Deno.ChildProcess | null = null;
  log: Collected | null = null;

  async up(): Promise<void> {
    await sh("ip", ["netns", "add", this.server]);
    await sh("ip", ["-n", this.server, "link", "add", "br0", "type", "bridge"]);
    await sh("ip", ["-n", this.server, "addr", "add", "10.9.0.1/24", "dev", "br0"]);
    await sh("ip", ["-n", this.server, "link", "set", "br0", "up"]);
    await sh("ip", ["-n", this.server, "link", "set", "lo", "up"]);
  }

  /**
   * A client namespace with interface `ifname` (MAC `mac`) on the bridge;
   * returns the namespace. In `existing` (the caller deletes it), or in a new
   * one deleted by {@link down}.
   */
  async client(mac: string, existing?: string, ifname = "c0"): Promise<string> {
    const n = this.ports++;
    const ns = existing ?? `isboot-dhc${n}-${this.id}`;
    if (!existing) {
      await sh("ip", ["netns", "add", ns]);
      this.clients.push(ns);
    }
    await sh("ip", [
      "-n",
      this.server,
      "link",
      "add",
      `p${n}`,
      "type",
      "veth",
      "peer",
      "name",
      ifname,
      "address",
      mac,
      "netns",
      ns,
    ]);
    await sh("ip", ["-n", this.server, "link", "set", `p${n}`, "master", "br0", "up"]);
    return ns;
  }

  /** Start dnsmasq (DHCP only) with `extra` arguments; waits until it listens. */
  async startDnsmasq(
    range: string,
    extra: string[] = [],
    rootPath: string = ROOT_PATH,
  ): Promise<void> {
    this.dnsmasq = new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        this.server,
        "dnsmasq",
        ...dnsmasqArgs({
          iface: "br0",
          leaseFile: `${this.dir}/leases`,
          range,
          rootPath,
          options: [
            "option:router,10.9.0.1",
            "option:dns-server,10.9.0.53",
            "option:domain-name,san.example",
            "option:mtu,1400",
          ],
        }),
        ...extra,
      ],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    this.log = new Collected(this.dnsmasq.stderr);
    await this.log.until(/DHCP, IP range/, 10_000);
  }

  async down(): Promise<void> {
    if (this.dnsmasq) {
      try {
        this.dnsmasq.kill("SIGTERM");
      } catch { /* gone */ }
      await this.dnsmasq.status;
      await this.log?.done;
    }
    for (const ns of [...this.clients, this.server]) {
      await sh("ip", ["netns", "del", ns]).catch(() => {});
    }
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/** Run `fn` with a segment, torn down afterwards (dnsmasq's log printed on failure). */
export async function withSegment(fn: (s: Segment) => Promise<void>): Promise<void> {
  const s = new Segment();
  try {
    await s.up();
    await fn(s);
  } catch (e) {
    if (s.log) console.error(`--- dnsmasq ---\n${s.log.text}`);
    throw e;
  } finally {
    await s.down();
  }
}
