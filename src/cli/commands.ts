import type { Command } from "./context.ts";
import { attachCommand } from "./attach.ts";
import { detachCommand } from "./detach.ts";
import { statusCommand } from "./status.ts";
import { serveCommand } from "./serve.ts";
import { ibftCommand } from "./ibft.ts";
import { discoverCommand } from "./discover.ts";
import { bootCommand } from "./boot.ts";
import { probeCommand } from "./probe.ts";
import { takeoverCommand } from "./takeover.ts";
import { dhcpCommand } from "./dhcp.ts";
import { resizeCommand } from "./resize.ts";

/**
 * The subcommand table. Each entry lives in its own file under src/cli/ and
 * is thin: parse, call the layers, print.
 */
export const COMMANDS: Record<string, Command> = {
  attach: attachCommand,
  detach: detachCommand,
  status: statusCommand,
  ibft: ibftCommand,
  discover: discoverCommand,
  probe: probeCommand,
  serve: serveCommand,
  boot: bootCommand,
  takeover: takeoverCommand,
  dhcp: dhcpCommand,
  resize: resizeCommand,
};
