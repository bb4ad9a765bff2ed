/**
 * The workload the network and multipath boots run in the booted root: a
 * unit that writes to the root disk with fsync while an action (the network
 * stack's move, a cable pull) runs beside it, then prints the address, the
 * write count and `isboot status` to the serial console, before the check
 * unit (tests/e2e/lib.ts) takes over.
 *
 * @example
 * ```ts
 * const root = variant("net-hostile", ["ifupdown"], "ip link set \"$iface\" down");
 * ```
 */
import type { RootVariant } from "./lib.ts";

export const WORK_UNIT = `[Unit]
Description=isboot e2e: write on the root while the network stack works
Wants=network-online.target
After=network-online.target
Before=isboot-e2e.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/isboot-e2e-work
TimeoutStartSec=400
[Install]
WantedBy=multi-user.target
`;

/**
 * The workload: fsync'd writes into a file on the root for 25 s; after the
 * third, `action` (the stack's move) runs beside them. Then the address, the
 * guard's status and the write count go to the serial console.
 */
export function workScript(action: string): string {
  return `#!/bin/sh
say() { echo "ISBOOT-VM: $*" > /dev/ttyS0; }
iface=$(head -1 /run/isboot/boot-nics)
say iface=$iface
addrs() { ip -4 -o addr show dev "$iface" | awk '{print $4}' | paste -sd, -; }
say addr_before=$(addrs)
action() {
${action}
}
writes=0
apid=
t0=$(date +%s)
# Writes from before the action until it is done, at least 10 s, at most 25 s.
while [ $(( $(date +%s) - t0 )) -lt 25 ]; do
  if [ -n "$apid" ] && ! kill -0 "$apid" 2>/dev/null && [ $(( $(date +%s) - t0 )) -ge 10 ]; then
    break
  fi
  if ! dd if=/dev/urandom of=/var/tmp/isboot-e2e-load bs=64k count=16 conv=fsync status=none; then
    say write_failed=$writes
    break
  fi
  writes=$((writes + 1))
  [ "$writes" = 3 ] && { action > /dev/ttyS0 2>&1 & apid=$!; }
done
wait
sync
say writes=$writes
say addr_after=$(addrs)
isboot status > /run/isboot-e2e-status 2>&1
sed 's/^/ISBOOT-STATUS: /' /run/isboot-e2e-status > /dev/ttyS0
say restores=$(sed -n 's/.*boot NIC guard: .*  restores \\([0-9]*\\).*/\\1/p' /run/isboot-e2e-status | head -1)
`;
}

/** The hostile action: flush the boot NIC's addresses and routes and set it down, three rounds. */
export const HOSTILE_ACTION = `for i in 1 2 3; do
  ip addr flush dev "$iface"; ip route flush dev "$iface"; ip link set "$iface" down
  echo "ISBOOT-VM: hostile_round=$i"
  sleep 4
done`;

/** The package set of the ifupdown network cases (one rootfs tarball for all of them). */
export const IFUPDOWN = ["ifupdown", "isc-dhcp-client", "iproute2"];

/** A root with `packages` and `files`, isboot installed, the workload enabled. */
export function variant(
  name: string,
  packages: string[],
  action: string,
  files: RootVariant["files"] = {},
  links: RootVariant["links"] = {},
): RootVariant {
  return {
    name,
    packages,
    installIsboot: true,
    files: {
      "/etc/sysctl.d/99-isboot-e2e.conf": "kernel.printk = 7 4 1 7\n",
      "/etc/systemd/journald.conf.d/isboot-e2e.conf":
        "[Journal]\nForwardToConsole=yes\nTTYPath=/dev/ttyS0\nMaxLevelConsole=info\n",
      "/etc/systemd/system/isboot-e2e-work.service": WORK_UNIT,
      "/usr/local/sbin/isboot-e2e-work": { text: workScript(action), mode: 0o755 },
      ...files,
    },
    links: {
      "/etc/systemd/system/multi-user.target.wants/isboot-e2e-work.service":
        "/etc/systemd/system/isboot-e2e-work.service",
      ...links,
    },
  };
}
