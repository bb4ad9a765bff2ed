/**
 * A stock root as users have it: open-iscsi installed for data LUNs, and a
 * unit doing what upstream open-iscsi's udev rule does when the iBFT's sysfs
 * view appears (`iscsiadm -m fw -l`, its iscsi_fw_login), after loading
 * iscsi_ibft as other distributions' init scripts do. The root is the stock
 * one plus `make install`'s files (modprobe.d/isboot.conf among them).
 *
 * Passes when the module stays unloaded (isboot's modprobe.d line refuses it
 * while isboot serves), iscsiadm finds no firmware target and logs in
 * nowhere, exactly one block device carries the root filesystem's UUID, and
 * the boot ends like every e2e boot: marker, `@isboot`, poweroff, e2fsck clean.
 *
 * ISBOOT_E2E=0 skips it (~2 min under TCG).
 */
import assert from "node:assert/strict";
import { bootOnce, ROOT_UUID, type RootVariant } from "./lib.ts";

const enabled = Deno.env.get("ISBOOT_E2E") !== "0";

const FW_LOGIN = `#!/bin/sh
say() { echo "ISBOOT-VM: $*" > /dev/ttyS0; }
modprobe iscsi_ibft 2>/run/fw-modprobe.err
say fw_modprobe=$?
say fw_modprobe_err=$(head -1 /run/fw-modprobe.err)
say fw_sysfs=$([ -d /sys/firmware/ibft ] && echo present || echo absent)
iscsiadm -m fw -l >/run/fw-login.out 2>&1
say fw_login=$?
say fw_login_out=$(tr '\\n' ' ' < /run/fw-login.out | cut -c1-300)
say kernel_sessions=$(iscsiadm -m session 2>/dev/null | grep -c .)
udevadm settle
say root_devices=$(blkid -t UUID=${ROOT_UUID} -o device | sort | paste -sd, -)
`;

const FW_UNIT = `[Unit]
Description=isboot e2e: log in to the firmware's targets as open-iscsi's udev rule does
After=iscsid.service open-iscsi.service
Wants=iscsid.service
Before=isboot-e2e.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/isboot-e2e-fw-login
[Install]
WantedBy=multi-user.target
`;

const OPEN_ISCSI: RootVariant = {
  name: "open-iscsi",
  packages: ["open-iscsi", "kmod"],
  installIsboot: true,
  files: {
    "/usr/local/sbin/isboot-e2e-fw-login": { text: FW_LOGIN, mode: 0o755 },
    "/etc/systemd/system/isboot-e2e-fw-login.service": FW_UNIT,
  },
  links: {
    "/etc/systemd/system/multi-user.target.wants/isboot-e2e-fw-login.service":
      "/etc/systemd/system/isboot-e2e-fw-login.service",
  },
};

Deno.test({
  name:
    // "harness image": initramfs built by the test, isboot and modprobe.d/isboot.conf copied in
    // as `make install PREFIX=/usr` lays them out (the plain install: user_path_test.ts).
    "e2e stock root, harness image: open-iscsi + iscsiadm -m fw -l after boot: no second session, one root disk",
  ignore: !enabled,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const r = await bootOnce({
      firmware: "bios",
      initramfs: "initramfs-tools",
      chap: "none",
      root: OPEN_ISCSI,
    });
    const why = `\n--- serial tail ---\n${r.vm.tail}`;
    assert.equal(r.vm.timedOut, false, `VM timed out${why}`);
    assert.equal(r.vm.result, "PASS", `guest: ${r.vm.reason}${why}`);
    const kv = r.vm.kv;
    assert.notEqual(kv.get("fw_modprobe"), "0", `iscsi_ibft was loaded${why}`);
    assert.match(kv.get("fw_modprobe_err") ?? "", /isboot: not loading iscsi_ibft/, why);
    assert.equal(kv.get("fw_sysfs"), "absent", why);
    assert.notEqual(kv.get("fw_login"), "0", `iscsiadm -m fw -l logged in${why}`);
    assert.equal(kv.get("kernel_sessions"), "0", `a kernel-initiator session${why}`);
    assert.equal(kv.get("root_devices"), "/dev/nbd0p1", `root filesystem devices${why}`);
    assert.match(r.vm.serial, /reboot: Power down/, `poweroff did not complete${why}`);
    assert.ok(r.marker, `marker not found in the image${why}`);
    assert.equal(r.fsck.code, 0, `e2fsck -fn: ${r.fsck.output}`);
  },
});
