/**
 * Hand the boot NIC to the real root's network stack so that it leaves the
 * interface configured: the root disk is behind it, and a manager that
 * flushes or downs it hangs the machine. One writer per stack; each writes
 * under /run, which survives switch_root (the initramfs's /run is moved).
 *
 * - initramfs-tools/ifupdown: `/run/net-IFACE.conf`, the shell-variable file
 *   initramfs-tools' ipconfig writes (DEVICE, IPV4ADDR, ..., PROTO); scripts
 *   in the real root (and open-iscsi, resolvconf) read it. PROTO=dhcp when the
 *   firmware's address was a lease, so the root can renew it.
 *   ifupdown 0.8 ignores what its pre-down scripts return, so nothing can
 *   refuse an `ifdown`; so that shutdown runs none for the boot links (no
 *   DHCP release, no flush), two systemd drop-ins:
 *   `/run/systemd/system/ifup@IFACE.service.d/isboot.conf` empties the
 *   instance's `ExecStop=` (`ifdown IFACE`), and
 *   `/run/systemd/system/networking.service.d/isboot.conf` replaces Debian's
 *   `ifdown -a --read-environment --exclude=lo` with one that also excludes
 *   the boot links. Without ifupdown installed systemd ignores both.
 * - systemd-networkd: `/run/systemd/network/0-isboot-IFACE.network`.
 *   networkd applies the first .network file that matches a link, in the
 *   strcmp order of the file names across /etc, /run and /usr/lib (the
 *   directory only decides between files of the same name), so the name must
 *   sort before any catch-all (`00-*`...`99-*`, `10-netplan-*`): "0-" does.
 *   `KeepConfiguration=yes` always, also for a lease: with `dhcp` networkd
 *   drops, on start, every foreign address without a lifetime, which is what
 *   the boot address is; only `yes` makes it skip dropping foreign addresses,
 *   routes and neighbours altogether. `ActivationPolicy=always-up` ([Link]) has
 *   networkd set the link up again if anything downs it. A VLAN's parent
 *   gets its own file naming the VLAN.
 * - NetworkManager: `/run/NetworkManager/conf.d/10-isboot.conf` adding the
 *   links to `unmanaged-devices` (`+=`: the list packages ship under /usr/lib
 *   is kept), and `/run/udev/rules.d/00-isboot-nm.rules` setting
 *   NM_UNMANAGED on them: /etc/NetworkManager files are read after /run, and
 *   one that sets `unmanaged-devices=` would replace ours, while the udev
 *   property holds whatever NM's configuration says.
 *
 * @example
 * ```ts
 * await writeHandoff("/", nic, ["ifupdown", "networkd", "nm"]);
 * ```
 */
import { formatIp, type IpAddress } from "./addr.ts";
import type { ConfiguredNic } from "./configure.ts";

/** A network stack of the real root that can be handed the boot NIC. */
export type HandoffKind = "ifupdown" | "networkd" | "nm";
/** Every {@link HandoffKind}: what `isboot.handoff=all` (the default) means. */
export const HANDOFF_KINDS: readonly HandoffKind[] = ["ifupdown", "networkd", "nm"];

function netmask(prefix: number): string {
  const b = [0, 0, 0, 0];
  for (let i = 0; i < prefix; i++) b[i >> 3] |= 0x80 >> (i & 7);
  return b.join(".");
}

function broadcast(a: IpAddress, prefix: number): string {
  const b = Array.from(a.bytes);
  for (let i = prefix; i < 32; i++) b[i >> 3] |= 0x80 >> (i & 7);
  return b.join(".");
}

/** initramfs-tools' /run/net-IFACE.conf (the variables ipconfig writes). */
export function netConf(nic: ConfiguredNic): string {
  const c = nic.config;
  const v4 = c.address?.family === 4 ? c.address : null;
  const dns4 = c.dns.filter((d) => d.family === 4).map(formatIp);
  const v6 = c.address?.family === 6 ? c.address : null;
  const q = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;
  const lines = [
    `DEVICE=${q(nic.ifname)}`,
    `PROTO=${c.origin === "dhcp" ? "dhcp" : "none"}`,
    `IPV4ADDR=${v4 ? formatIp(v4) : "0.0.0.0"}`,
    `IPV4BROADCAST=${v4 ? broadcast(v4, c.prefixLength) : "0.0.0.0"}`,
    `IPV4NETMASK=${v4 ? netmask(c.prefixLength) : "0.0.0.0"}`,
    `IPV4GATEWAY=${c.gateway?.family === 4 ? formatIp(c.gateway) : "0.0.0.0"}`,
    `IPV4DNS0=${dns4[0] ?? "0.0.0.0"}`,
    `IPV4DNS1=${dns4[1] ?? "0.0.0.0"}`,
    `HOSTNAME=${q(c.hostname ?? "")}`,
    `DNSDOMAIN=''`,
    `ROOTSERVER=0.0.0.0`,
    `ROOTPATH=''`,
  ];
  if (v6) {
    lines.push(`IPV6ADDR=${formatIp(v6)}`, `IPV6PREFIX=${c.prefixLength}`);
    if (c.gateway?.family === 6) lines.push(`IPV6GATEWAY=${formatIp(c.gateway)}`);
    const dns6 = c.dns.filter((d) => d.family === 6).map(formatIp);
    if (dns6.length) lines.push(`IPV6DNS0=${dns6[0]}`);
  }
  return lines.join("\n") + "\n";
}

/**
 * systemd drop-ins that keep shutdown from running `ifdown` on the boot
 * links: path under /run/systemd/system -> contents.
 *
 * @example
 * ```ts
 * ifupdownDropIns([nic]).get("ifup@ens3.service.d/isboot.conf"); // "...ExecStop=\n"
 * ```
 */
export function ifupdownDropIns(nics: readonly ConfiguredNic[]): Map<string, string> {
  const names = [...new Set(nics.flatMap((n) => [n.ifname, n.parentName]))];
  const head =
    "# written by isboot: these links carry the root disk; no ifdown for them at shutdown.";
  const files = new Map<string, string>();
  for (const n of names) {
    files.set(`ifup@${n}.service.d/isboot.conf`, `${head}\n[Service]\nExecStop=\n`);
  }
  if (names.length) {
    files.set(
      "networking.service.d/isboot.conf",
      `${head}\n[Service]\nExecStop=\nExecStop=/sbin/ifdown -a --read-environment --exclude=lo${
        names.map((n) => ` --exclude=${n}`).join("")
      }\n`,
    );
  }
  return files;
}

/**
 * The .network file name for `ifname`: "0-" sorts before every "NN-" name
 * (strcmp: '-' is below every digit), which is how catch-alls are named.
 */
export function networkdFileName(ifname: string): string {
  return `0-isboot-${ifname}.network`;
}

/** systemd-networkd .network files: name -> contents (the VLAN parent's too). */
export function networkdFiles(nic: ConfiguredNic): Map<string, string> {
  const c = nic.config;
  const files = new Map<string, string>();
  const dhcp = c.origin === "dhcp";
  const family = c.address?.family;
  const net = [
    "# written by isboot: this link carries the root disk; networkd must keep it configured.",
    "[Match]",
    `Name=${nic.ifname}`,
    "",
    // A [Link] setting: networkd 252 ignores it, with a warning, under [Network].
    "[Link]",
    "ActivationPolicy=always-up",
    "",
    "[Network]",
    "KeepConfiguration=yes",
    ...(dhcp ? [`DHCP=${family === 6 ? "ipv6" : "ipv4"}`] : []),
    ...(!dhcp && c.address ? [`Address=${formatIp(c.address)}/${c.prefixLength}`] : []),
    ...(!dhcp && c.gateway ? [`Gateway=${formatIp(c.gateway)}`] : []),
    ...c.dns.map((d) => `DNS=${formatIp(d)}`),
    "IgnoreCarrierLoss=yes",
    ...(family === 4 ? ["LinkLocalAddressing=no"] : []),
    ...(dhcp ? ["", `[${family === 6 ? "DHCPv6" : "DHCPv4"}]`, "SendRelease=no"] : []),
  ];
  files.set(networkdFileName(nic.ifname), net.join("\n") + "\n");
  if (nic.parentName !== nic.ifname) {
    files.set(
      networkdFileName(nic.parentName),
      [
        "# written by isboot: parent of the VLAN that carries the root disk.",
        "[Match]",
        `Name=${nic.parentName}`,
        "",
        "[Link]",
        "ActivationPolicy=always-up",
        "",
        "[Network]",
        `VLAN=${nic.ifname}`,
        "KeepConfiguration=yes",
        "LinkLocalAddressing=no",
        "IgnoreCarrierLoss=yes",
        "",
      ].join("\n"),
    );
  }
  return files;
}

/** NetworkManager conf.d snippet marking the boot links unmanaged. */
export function nmConf(nics: readonly ConfiguredNic[]): string {
  const names = [...new Set(nics.flatMap((n) => [n.ifname, n.parentName]))];
  return [
    "# written by isboot: these links carry the root disk; NetworkManager must leave them alone.",
    "[keyfile]",
    `unmanaged-devices+=${names.map((n) => `interface-name:${n}`).join(";")}`,
    "",
  ].join("\n");
}

/** udev rules giving the boot links NM_UNMANAGED=1, which NetworkManager honours over its configuration. */
export function nmUdevRules(nics: readonly ConfiguredNic[]): string {
  const names = [...new Set(nics.flatMap((n) => [n.ifname, n.parentName]))];
  return [
    "# written by isboot: these links carry the root disk; NetworkManager must leave them alone.",
    ...names.map((n) =>
      `ACTION!="remove", SUBSYSTEM=="net", KERNEL=="${n}", ENV{NM_UNMANAGED}="1"`
    ),
    "",
  ].join("\n");
}

/**
 * Write the hand-off files for `kinds` under `root` (normally "/", whose /run
 * becomes the real root's /run). Returns the paths written.
 */
export async function writeHandoff(
  root: string,
  nics: readonly ConfiguredNic[],
  kinds: readonly HandoffKind[],
): Promise<string[]> {
  const written: string[] = [];
  const put = async (dir: string, name: string, text: string) => {
    const d = `${root.replace(/\/$/, "")}${dir}`;
    await Deno.mkdir(d, { recursive: true });
    await Deno.writeTextFile(`${d}/${name}`, text);
    written.push(`${d}/${name}`);
  };
  for (const nic of nics) {
    if (kinds.includes("ifupdown")) await put("/run", `net-${nic.ifname}.conf`, netConf(nic));
    if (kinds.includes("networkd")) {
      for (const [name, text] of networkdFiles(nic)) await put("/run/systemd/network", name, text);
    }
  }
  if (kinds.includes("ifupdown")) {
    for (const [path, text] of ifupdownDropIns(nics)) {
      const slash = path.lastIndexOf("/");
      await put(`/run/systemd/system/${path.slice(0, slash)}`, path.slice(slash + 1), text);
    }
  }
  if (kinds.includes("nm") && nics.length) {
    await put("/run/NetworkManager/conf.d", "10-isboot.conf", nmConf(nics));
    await put("/run/udev/rules.d", "00-isboot-nm.rules", nmUdevRules(nics));
  }
  return written;
}
