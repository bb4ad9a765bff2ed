/**
 * The root disk over two paths, booted as a SAN boot with two NICs is: two
 * qemu NICs on two networks (10.0.2.0/24 and 10.0.3.0/24), each reaching the
 * same tgtd LUN at its own portal; iPXE brings up both and hooks the disk
 * over both portals (`sanhook URI1 URI2`), writing an iBFT with two targets,
 * each associated with its NIC. isboot (harness image, see
 * tests/e2e/lib.ts) configures both NICs and logs in on both paths
 * (`isboot.multipath` default failover). In the booted root, while a unit
 * writes with fsync, the host pulls the active NIC's cable (qemu set_link
 * off) for 8 s and plugs it back. Passes when no write fails, the daemon
 * logged the path down and the commands going on the other path, the path
 * came back (standby in `isboot status`), poweroff completed and e2fsck is
 * clean. The same boot has `isboot.luns=all` on a target with three LUNs:
 * LUN 2 and 3 must come up as /dev/nbd1 and /dev/nbd2 with their sizes and
 * contents.
 *
 * ISBOOT_E2E=0 skips it (a boot under TCG, about 2-3 min).
 */
import assert from "node:assert/strict";
import { bootOnce, lunPattern, SECOND_PORTAL, TARGET_IQN } from "./lib.ts";
import { IFUPDOWN, variant } from "./workload.ts";

const enabled = Deno.env.get("ISBOOT_E2E") !== "0";
const FIRST = "10.0.2.100:3260";
const SECOND = `${SECOND_PORTAL}:3260`;

/** The target's other LUNs (isboot.luns=all): LUN 2 and LUN 3, MiB. */
const EXTRA_MIB = [8, 24];

const ACTION = `for d in /sys/block/nbd1 /sys/block/nbd2; do
  n=$(basename $d)
  echo "ISBOOT-VM: lun_$n=$(cat $d/size)/$(head -c 1048576 /dev/$n | sha256sum | cut -c1-16)/$(cat $d/backend)"
done
isboot status | grep -A1 '^/dev/nbd[12] ' | sed 's/^/ISBOOT-LUNS: /'
echo "ISBOOT-VM: link=n0:off"
sleep 8
isboot status | sed 's/^/ISBOOT-DOWN: /'
echo "ISBOOT-VM: link=n0:on"
sleep 10`;

Deno.test({
  name:
    "e2e multipath, harness image: iPXE's iBFT with two NICs and two portals; the active NIC's cable pulled for 8 s and plugged back under fsync'd writes: no failed write, the path rejoins",
  ignore: !enabled,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const r = await bootOnce({
      firmware: "bios",
      initramfs: "initramfs-tools",
      chap: "chap",
      secondPath: true,
      extraLunsMiB: EXTRA_MIB,
      append: "isboot.luns=all",
      // Debian's default stack (the network cases' package set: its root is built once).
      root: variant("multipath", IFUPDOWN, ACTION),
    }, { timeoutMs: 600_000 });
    const why = `\n--- serial tail ---\n${r.vm.tail}`;
    const serial = r.vm.serial;
    assert.equal(r.vm.timedOut, false, `VM timed out${why}`);
    assert.equal(r.vm.result, "PASS", `guest: ${r.vm.reason}${why}`);
    assert.equal(r.vm.kv.get("root"), "/dev/nbd0p1", why);
    // The plan: both NICs, the second target a second path through NIC 1.
    assert.match(serial, /nic 1: \S+, 10\.0\.3\.\d+\/24, for a second path/, why);
    assert.match(serial, /multipath \(failover\): 2 of 2 path\(s\) to naa\.\S+: /, why);
    // The cable pull: seen, the commands moved, the path back.
    assert.deepEqual(r.linkReplies, ['{"return": {}}', '{"return": {}}'], why);
    assert.match(
      serial,
      new RegExp(`multipath: path ${FIRST} is down; commands go on ${SECOND}`),
      why,
    );
    assert.match(serial, new RegExp(`ISBOOT-DOWN: +path ${FIRST} +down since `), why);
    assert.match(serial, new RegExp(`multipath: path ${FIRST} is back after`), why);
    // Each path from its own NIC's address.
    assert.match(
      serial,
      new RegExp(`ISBOOT-STATUS: +path ${FIRST} from 10\\.0\\.2\\.15 +standby `),
      why,
    );
    assert.match(
      serial,
      new RegExp(`ISBOOT-STATUS: +path ${SECOND} from 10\\.0\\.3\\.15 +active `),
      why,
    );
    // No write failed; nothing blocked; the kernel saw no I/O error.
    assert.equal(r.vm.kv.get("write_failed"), undefined, `a write failed${why}`);
    assert.ok(Number(r.vm.kv.get("writes")) > 5, why);
    for (const bad of [/blocked for more than/, /I\/O error/, /every path is down/]) {
      // The check unit's forced reconnect cuts both paths at once: "every path is
      // down" may follow it, never the cable pull.
      const before = serial.slice(0, serial.indexOf("ISBOOT-VM: reconnect=now"));
      assert.doesNotMatch(before, bad, why);
    }
    // isboot.luns=all: LUN 2 and 3 as /dev/nbd1 and /dev/nbd2, the right sizes and contents,
    // each with its own line in isboot status (tgt's controller LUN 0 left out).
    const seen = ["nbd1", "nbd2"].map((n) => r.vm.kv.get(`lun_${n}`) ?? "");
    const want = await Promise.all(EXTRA_MIB.map(async (mib, i) => {
      const lun = 2 + i;
      const first = lunPattern(lun, mib << 20).slice(0, 1 << 20);
      const h = new Uint8Array(await crypto.subtle.digest("SHA-256", first));
      const hex = Array.from(h.slice(0, 8), (b) => b.toString(16).padStart(2, "0")).join("");
      return `${(mib << 20) / 512}/${hex}/${TARGET_IQN}/${lun}`;
    }));
    assert.deepEqual(seen.sort(), want.sort(), why);
    assert.match(serial, /LUN 0 is a .*, not a disk; skipped/, why);
    for (const lun of [2, 3]) {
      assert.match(
        serial,
        new RegExp(`ISBOOT-LUNS: /dev/nbd[12] +iscsi://\\S+/${TARGET_IQN}/${lun} `),
        why,
      );
    }
    assert.match(serial, /reboot: Power down/, `poweroff did not complete${why}`);
    assert.ok(r.marker, `marker not found in the image${why}`);
    assert.equal(r.fsck.code, 0, `e2fsck -fn: ${r.fsck.output}`);
    const writes = r.vm.kv.get("writes");
    console.log(
      `  multipath: switch_root ${((r.switchRootMs ?? 0) / 1000).toFixed(1)} s; ${writes} writes`,
    );
  },
});
