/**
 * The boot NIC survives the booted root's network stack: one real boot (see
 * tests/e2e/lib.ts) per stack, each on the stock Debian 12 root plus what a
 * real install carries (the packages, their configuration, isboot installed
 * as `make install PREFIX=/usr` does, with the ifupdown hook):
 *
 * - ifupdown + isc-dhcp-client with the installer's `allow-hotplug` / `inet
 *   dhcp` stanza; a second dhclient renews the lease during the run;
 * - ifupdown with a static stanza for the same address; `ifdown` by hand;
 * - systemd-networkd with a catch-all `Name=en*` / `DHCP=yes` and
 *   wait-online; `networkctl renew` during the run;
 * - NetworkManager as Debian installs it; `nmcli networking off/on`;
 * - hostile: a unit that flushes the address and routes and sets the link
 *   down, three times.
 *
 * In each, a unit in the root writes to the root disk with fsync for 25 s
 * while the stack does its thing, prints `isboot status` to the serial
 * console and hands over to the check unit (marker, `@isboot`, poweroff);
 * the stack's own shutdown (ifdown, networkd, NM stopping) then runs. Passes
 * when the marker is there, poweroff completes by itself, e2fsck is clean
 * and the daemon never lost the target (no recovery, no NOP-Out timeout, no
 * ENETUNREACH). The journal and the daemon's lines go to the serial console
 * (journald ForwardToConsole, kernel.printk 7).
 *
 * ISBOOT_E2E=0 skips these (they need ~2 min each under TCG).
 */
import assert from "node:assert/strict";
import { type BootCase, bootOnce, type BootOutcome, type RootVariant } from "./lib.ts";
import { HOSTILE_ACTION, IFUPDOWN, variant } from "./workload.ts";

const enabled = Deno.env.get("ISBOOT_E2E") !== "0";
/** `make soak` sets it: the cases kept out of `make test` run too. */
const soak = Deno.env.get("ISBOOT_SOAK") === "1";

/** The name the guest gives the virtio NIC (PCI slot 3 on qemu's i440fx). */
const IFACE = "ens3";
/** What qemu's user network leases the guest (and iPXE wrote into the iBFT). */
const ADDRESS = "10.0.2.15/24";

/** A restore the daemon logged (kernel log lines, not `isboot status` text). */
const RESTORE_LINE = /isboot\[\d+\]: boot NIC guard: \S+: .*(?:added it back|set it up)/;

interface NetCase {
  name: string;
  root: RootVariant;
  /** Stack-specific checks on the outcome. */
  check(r: BootOutcome, why: string): void;
  /** The guard must have put something back. */
  hostile?: boolean;
  /** Run by `make soak` only (for `make test`'s time). */
  soak?: boolean;
}

const CASES: NetCase[] = [
  {
    // In `make soak`: `make test` runs the same hostile unit in the DHCP boot
    // (tests/e2e/dhcp_test.ts), where the guard restores a lease's address.
    soak: true,
    name: "hostile: ip addr flush, ip route flush, ip link set down",
    hostile: true,
    root: variant("net-hostile", IFUPDOWN, HOSTILE_ACTION),
    check(r, why) {
      assert.equal(r.vm.kv.get("hostile_round"), "3", why);
      assert.match(
        r.vm.serial,
        new RegExp(`boot NIC guard: ${IFACE}: .*(added it back|set it up)`),
        `no restore line${why}`,
      );
    },
  },
  {
    name: "ifupdown + dhclient, the installer's DHCP stanza; dhclient renews",
    root: variant(
      "net-ifupdown-dhcp",
      IFUPDOWN,
      `echo "ISBOOT-VM: ifup=$(systemctl is-active ifup@$iface.service)"
if dhclient -1 -v -pf /run/dhclient.renew.pid -lf /var/lib/dhcp/dhclient.$iface.leases "$iface"; then
  echo "ISBOOT-VM: renew=ok"
else
  echo "ISBOOT-VM: renew=failed"
fi`,
      {
        "/etc/network/interfaces":
          `source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\nallow-hotplug ${IFACE}\niface ${IFACE} inet dhcp\n`,
      },
    ),
    check(r, why) {
      assert.equal(r.vm.kv.get("ifup"), "active", why);
      assert.equal(r.vm.kv.get("renew"), "ok", why);
      // The daemon renewed the firmware's lease too (the iBFT names the DHCP
      // server, not the lease's times: renewed 10 s after the daemon is up).
      assert.match(r.vm.serial, new RegExp(`${IFACE}: DHCP lease renewed, \\d+ s`), why);
      // At poweroff no ifdown runs for the boot NIC (the hand-off's drop-ins):
      // no DHCP release, no flush, nothing for the guard to put back.
      assert.doesNotMatch(r.vm.serial, /DHCPRELEASE/, why);
      assert.doesNotMatch(
        r.vm.serial,
        new RegExp(`ifdown ${IFACE}: it carries the root disk`),
        why,
      );
      assert.doesNotMatch(r.vm.serial, RESTORE_LINE, why);
    },
  },
  {
    // In `make soak`: ifupdown is covered in `make test` by the installer's
    // DHCP stanza, the hand-off and the guard by the other cases.
    soak: true,
    name: "ifupdown, a static stanza for the boot address; ifdown by hand",
    root: variant(
      "net-ifupdown-static",
      IFUPDOWN,
      `echo "ISBOOT-VM: ifup=$(systemctl is-active ifup@$iface.service)"
ifdown "$iface"; echo "ISBOOT-VM: ifdown_rc=$?"`,
      {
        "/etc/network/interfaces":
          `source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\nallow-hotplug ${IFACE}\niface ${IFACE} inet static\n\taddress ${ADDRESS}\n\tgateway 10.0.2.2\n`,
      },
    ),
    check(r, why) {
      // ifup's `ip addr add` of the address the NIC already has fails (EEXIST),
      // so ifupdown never marks it up and neither ifdown nor shutdown touch it.
      assert.equal(r.vm.kv.get("ifup"), "failed", why);
      assert.doesNotMatch(r.vm.serial, RESTORE_LINE, why);
    },
  },
  {
    name: "systemd-networkd with a catch-all DHCP .network and wait-online; networkctl renew",
    root: variant(
      "net-networkd",
      // dbus: networkctl renew asks networkd over the bus (a cloud image has it).
      ["iproute2", "dbus"],
      `state=/run/systemd/netif/links/$(cat /sys/class/net/$iface/ifindex)
echo "ISBOOT-VM: network_file=$(sed -n 's/^NETWORK_FILE=//p' $state)"
echo "ISBOOT-VM: networkd_state=$(sed -n 's/^ADMIN_STATE=//p' $state)/$(sed -n 's/^OPER_STATE=//p' $state)"
networkctl renew "$iface"; echo "ISBOOT-VM: renew_rc=$?"
sleep 3
networkctl status "$iface" --no-pager | head -20`,
      {
        "/etc/systemd/network/05-catchall.network": "[Match]\nName=en*\n\n[Network]\nDHCP=yes\n",
      },
      {
        "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service":
          "/lib/systemd/system/systemd-networkd.service",
        "/etc/systemd/system/sockets.target.wants/systemd-networkd.socket":
          "/lib/systemd/system/systemd-networkd.socket",
        "/etc/systemd/system/network-online.target.wants/systemd-networkd-wait-online.service":
          "/lib/systemd/system/systemd-networkd-wait-online.service",
        "/etc/systemd/system/dbus-org.freedesktop.network1.service":
          "/lib/systemd/system/systemd-networkd.service",
      },
    ),
    check(r, why) {
      assert.equal(
        r.vm.kv.get("network_file"),
        `/run/systemd/network/0-isboot-${IFACE}.network`,
        why,
      );
      assert.equal(r.vm.kv.get("renew_rc"), "0", why);
      assert.match(r.vm.serial, new RegExp(`${IFACE}: DHCPv4 address ${ADDRESS} acquired`), why);
      // Every key of the hand-off file is one networkd 252 knows where it is.
      assert.doesNotMatch(r.vm.serial, /0-isboot-\S+\.network:\d+: Unknown key/, why);
    },
  },
  {
    name: "NetworkManager, Debian's default configuration; nmcli networking off/on",
    root: variant(
      "net-nm",
      ["network-manager", "dbus", "libpam-systemd", "iproute2"],
      `echo "ISBOOT-VM: nm_state=$(nmcli -t -f DEVICE,STATE device | sed -n "s/^$iface://p")"
nmcli networking off; echo "ISBOOT-VM: nm_off_rc=$?"
sleep 3
nmcli networking on; echo "ISBOOT-VM: nm_on_rc=$?"
nmcli device reapply "$iface"; echo "ISBOOT-VM: nm_reapply_rc=$?"`,
    ),
    check(r, why) {
      assert.equal(r.vm.kv.get("nm_state"), "unmanaged", why);
      assert.equal(r.vm.kv.get("nm_off_rc"), "0", why);
    },
  },
];

function checkCommon(r: BootOutcome, c: NetCase): string {
  const why = `\n--- serial tail ---\n${r.vm.tail}`;
  assert.equal(r.vm.timedOut, false, `VM timed out${why}`);
  assert.equal(r.vm.result, "PASS", `guest: ${r.vm.reason}${why}`);
  assert.equal(r.vm.kv.get("root"), "/dev/nbd0p1", why);
  assert.ok(Number(r.vm.kv.get("daemons")) >= 1, why);
  assert.equal(r.vm.kv.get("iface"), IFACE, why);
  assert.match(r.vm.serial, new RegExp(`boot NIC guard: watching ${IFACE}`), why);
  assert.equal(r.vm.kv.get("write_failed"), undefined, `a write failed${why}`);
  assert.ok(Number(r.vm.kv.get("writes")) > 0, why);
  assert.equal(r.vm.kv.get("addr_after"), ADDRESS, why);
  const restoresText = r.vm.kv.get("restores") ?? "";
  assert.match(restoresText, /^\d+$/, `isboot status in the guest gave no restores${why}`);
  const restores = Number(restoresText);
  if (c.hostile) assert.ok(restores > 0, `isboot status: restores ${restores}${why}`);
  // The session never lost the target. The check unit asks the host to cut the
  // connection once (lib.ts, the forced reconnect): before that, no loss at all;
  // after it, that one loss only (the same line, from the kernel's console and
  // from journald's forward), recovered, and none of the network's failures.
  const cut = r.vm.serial.indexOf("ISBOOT-VM: reconnect=now");
  assert.ok(cut > 0, `the check unit asked for no reconnect${why}`);
  const [before, after] = [r.vm.serial.slice(0, cut), r.vm.serial.slice(cut)];
  for (const bad of [/recovering/, /NOP-Out: no answer/, /ENETUNREACH/, /blocked for more than/]) {
    assert.doesNotMatch(before, bad, why);
  }
  for (const bad of [/NOP-Out: no answer/, /ENETUNREACH/, /blocked for more than/]) {
    assert.doesNotMatch(after, bad, why);
  }
  const losses = new Set(
    [...after.matchAll(/iSCSI connection to [^\n]* lost: [^\n]*; recovering/g)].map((m) => m[0]),
  );
  assert.equal(losses.size, 1, `losses after the host's cut: ${[...losses].join(" | ")}${why}`);
  assert.equal(r.vm.kv.get("journal_lost"), "1", `journalctl -t isboot: lost lines${why}`);
  assert.ok(Number(r.vm.kv.get("journal_recovered")) >= 1, `no recovery after the cut${why}`);
  assert.match(r.vm.serial, /reboot: Power down/, `poweroff did not complete${why}`);
  assert.ok(r.marker, `marker not found in the image${why}`);
  assert.equal(r.fsck.code, 0, `e2fsck -fn: ${r.fsck.output}`);
  return why;
}

for (const c of CASES) {
  Deno.test({
    // "harness image": the initramfs is built by the test and isboot is copied
    // into the root as `make install PREFIX=/usr` lays it out; the user's own
    // install steps are booted by tests/e2e/user_path_test.ts.
    name: `e2e network, harness image: ${c.name}${c.soak ? " (make soak)" : ""}`,
    ignore: !enabled || (c.soak === true && !soak),
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const bc: BootCase = {
        firmware: "bios",
        initramfs: "initramfs-tools",
        chap: "none",
        root: c.root,
      };
      const r = await bootOnce(bc, { timeoutMs: 600_000 });
      const why = checkCommon(r, c);
      c.check(r, why);
      const restoreLines = r.vm.serial.match(new RegExp(RESTORE_LINE.source, "g"));
      console.log(
        `  ${c.root.name}: switch_root ${
          r.switchRootMs !== null ? (r.switchRootMs / 1000).toFixed(1) : "?"
        } s; VM total ${(r.vm.durationMs / 1000).toFixed(1)} s; writes ${
          r.vm.kv.get("writes")
        }; restores ${r.vm.kv.get("restores")} (${restoreLines?.length ?? 0} restore lines)`,
      );
    },
  });
}
