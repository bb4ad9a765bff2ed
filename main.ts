/**
 * isboot: boot from the iSCSI disk named by the firmware's iBFT, served to the
 * kernel as an NBD device. Entry point; see src/cli/.
 */
import { main } from "./src/cli/main.ts";

const code = await main(Deno.args);
// Exit once this module's evaluation has ended, not inside it: deno writes the
// V8 code cache of the main module then, and the initramfs hooks make the
// image's cache by running isboot once (docs/boot.md, "Start-up").
setTimeout(() => Deno.exit(code), 0);
