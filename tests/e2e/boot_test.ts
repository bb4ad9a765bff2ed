/**
 * The real boot, end to end (see tests/e2e/lib.ts): firmware iBFT -> isboot
 * in a dracut- or initramfs-tools-built initramfs -> /dev/nbd0p1 as root ->
 * systemd -> marker + '@isboot' check -> poweroff -> marker and e2fsck on the
 * host. Prints kernel-start->switch_root and isboot start->device-ready.
 *
 * ISBOOT_E2E=0 skips these (they need ~1.5 min each under TCG).
 */
import assert from "node:assert/strict";
import { type BootCase, bootOnce } from "./lib.ts";

const enabled = Deno.env.get("ISBOOT_E2E") !== "0";

/** `make soak` sets it: the boots kept out of `make test` run too. */
const soak = Deno.env.get("ISBOOT_SOAK") === "1";

/**
 * These run in `make soak` only: `make test` boots images built by the user's
 * own steps with the same check unit (tests/e2e/user_path_test.ts):
 * initramfs-tools BIOS with CHAP and UEFI, dracut BIOS with mutual CHAP.
 */
const CASES: (BootCase & { soak?: boolean })[] = [
  { firmware: "bios", initramfs: "initramfs-tools", chap: "chap", soak: true },
  { firmware: "uefi", initramfs: "dracut", chap: "mutual", soak: true },
  { firmware: "bios", initramfs: "dracut", chap: "none", soak: true },
  { firmware: "uefi", initramfs: "initramfs-tools", chap: "none", soak: true },
];

for (const c of CASES) {
  Deno.test({
    // "harness image": the initramfs is built by the test with ISBOOT_BIN, not
    // by the root's own tools; tests/e2e/user_path_test.ts boots the plain path.
    name: `e2e boot, harness image${
      c.soak ? " (make soak)" : ""
    }: ${c.firmware.toUpperCase()} + ${c.initramfs} + ${
      c.chap === "none" ? "no CHAP" : c.chap === "chap" ? "CHAP" : "mutual CHAP"
    }`,
    ignore: !enabled || (c.soak === true && !soak),
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const r = await bootOnce(c);
      const why = `\n--- serial tail ---\n${r.vm.tail}`;
      assert.equal(r.vm.timedOut, false, `VM timed out${why}`);
      assert.equal(r.vm.result, "PASS", `guest: ${r.vm.reason}${why}`);
      assert.equal(r.vm.kv.get("root"), "/dev/nbd0p1", why);
      assert.ok(Number(r.vm.kv.get("daemons")) >= 1, why);
      assert.equal(r.vm.kv.get("oom"), "-1000", why);
      // The NIC was handed to the real root's network stacks; `isboot status` can reach the daemon.
      const handoff = r.vm.kv.get("handoff") ?? "";
      for (
        const f of [
          /\/run\/net-\S+\.conf\b/,
          /\/run\/systemd\/network\/0-isboot-\S+\.network\b/,
          /\/run\/NetworkManager\/conf\.d\/10-isboot\.conf\b/,
        ]
      ) assert.match(handoff, f, why);
      assert.match(r.vm.kv.get("control") ?? "", /\bnbd0\.ctl\b/, why);
      assert.match(r.vm.serial, /reboot: Power down/, `poweroff did not complete${why}`);
      // The root-storage daemon steps, as real root in the initramfs: none may be skipped.
      const flusher = /PR_SET_IO_FLUSHER: done \(([^)]*)\)/.exec(r.vm.serial);
      assert.ok(flusher, `IO_FLUSHER not set${why}`);
      assert.match(r.vm.serial, /mlock file mappings: done/, why);
      assert.doesNotMatch(r.vm.serial, /isboot: warning: .*skipped/, why);
      assert.ok(r.marker, `marker not found in the image${why}`);
      // After switch_root the daemon's lines are in the journal under its own
      // identifier, and a connection cut by the host is recovered.
      assert.deepEqual(r.cutCodes, [0], `the host cut no iSCSI connection${why}`);
      assert.equal(r.vm.kv.get("journal_serving"), "1", `journalctl -t isboot${why}`);
      assert.ok(
        Number(r.vm.kv.get("journal_lost")) >= 1,
        `journalctl -t isboot: no lost line${why}`,
      );
      assert.ok(
        Number(r.vm.kv.get("journal_recovered")) >= 1,
        `journalctl -t isboot: no recovery${why}`,
      );
      assert.match(r.marker, /after the reconnect/, `no write after the reconnect${why}`);
      assert.equal(r.fsck.code, 0, `e2fsck -fn: ${r.fsck.output}`);
      console.log(
        `  ${c.firmware}/${c.initramfs}/${c.chap}: kernel start -> switch_root ${
          r.switchRootMs !== null ? (r.switchRootMs / 1000).toFixed(2) : "?"
        } s; isboot start -> /dev/nbd0 ready ${
          r.isbootReadyMs !== null ? (r.isbootReadyMs / 1000).toFixed(2) : "?"
        } s; ` +
          `VM total ${(r.vm.durationMs / 1000).toFixed(1)} s; IO_FLUSHER ${flusher[1]}`,
      );
      const split = /isboot: time: (.*)$/m.exec(r.vm.serial);
      if (split) console.log(`    isboot ${split[1]}`);
    },
  });
}
