/**
 * isboot: boot from the iSCSI disk named by the firmware's iBFT, served to the
 * kernel as an NBD device. Entry point; see src/cli/.
 */
import { main } from "./src/cli/main.ts";

Deno.exit(await main(Deno.args));
