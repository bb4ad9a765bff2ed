/**
 * `make demo`: one real boot with the VM's console on this terminal — iPXE
 * writes the iBFT, isboot in an initramfs-tools initramfs logs in with CHAP,
 * systemd boots from /dev/nbd0p1 and powers off — then the host-side checks.
 * Usage: deno run -A tests/e2e/demo.ts [bios|uefi] [initramfs-tools|dracut] [none|chap|mutual]
 */
import { type BootCase, bootOnce } from "./lib.ts";

const [fw = "bios", kind = "initramfs-tools", chap = "chap"] = Deno.args;
const c = { firmware: fw, initramfs: kind, chap } as BootCase;
const enc = new TextEncoder();
console.log(
  `isboot demo: ${c.firmware} firmware, ${c.initramfs} initramfs, CHAP ${c.chap}; building what is missing...`,
);
const r = await bootOnce(c, { onLine: (l) => Deno.stdout.writeSync(enc.encode(l + "\n")) });
const s = (ms: number | null) => (ms === null ? "?" : `${(ms / 1000).toFixed(2)} s`);
console.log(`
guest result:             ${r.vm.result}${r.vm.reason ? ` (${r.vm.reason})` : ""}
marker in the image:      ${r.marker ? "found" : "MISSING"}
e2fsck -fn on the image:  ${r.fsck.code === 0 ? "clean" : `exit ${r.fsck.code}`}
kernel start -> switch_root:       ${s(r.switchRootMs)}
isboot start -> /dev/nbd0 ready:   ${s(r.isbootReadyMs)}
whole VM run:                      ${s(r.vm.durationMs)}`);
Deno.exit(r.vm.result === "PASS" && r.marker && r.fsck.code === 0 ? 0 : 1);
