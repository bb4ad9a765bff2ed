/**
 * `isboot discover PORTAL [--json]`: SendTargets discovery (docs/iscsi.md).
 */
import { discoverTargets } from "../iscsi/discovery.ts";
import { formatPortal, parsePortal } from "../iscsi/uri.ts";
import { UsageError } from "../errors.ts";
import { parseCommand, printJson } from "./args.ts";
import type { Command } from "./context.ts";
import { parseTargetOptions, TARGET_OPTIONS, TARGET_OPTIONS_HELP } from "./target_options.ts";

const USAGE = `usage: isboot discover PORTAL [--json] [target options]

List the targets a portal offers (iSCSI SendTargets discovery).
PORTAL is host[:port]; IPv6 addresses in brackets: [fd00::1]:3260. Default port 3260.

options:
  --json                     one JSON document: { portal, targets: [ { name, portals: [ { host, port, tpgt } ] } ] }
  --debug                    log the protocol exchange (never secrets)
${TARGET_OPTIONS_HELP}`;

/** The `discover` subcommand. */
export const discoverCommand: Command = {
  summary: "list the targets of a portal (SendTargets discovery)",
  options: TARGET_OPTIONS,
  async run(args, ctx) {
    const p = parseCommand(args, TARGET_OPTIONS, USAGE, ctx);
    if (!p) return 0;
    if (p.positionals.length !== 1) throw new UsageError("discover takes one PORTAL (see --help)");
    const portal = parsePortal(p.positionals[0]);
    const opts = await parseTargetOptions(p.values, ctx.env);
    const targets = await discoverTargets({ portal, ...opts }, ctx.log);
    if (p.values.json) {
      printJson(ctx, { portal: formatPortal(portal), targets });
      return 0;
    }
    if (targets.length === 0) {
      ctx.out(`no targets at ${formatPortal(portal)}\n`);
      return 0;
    }
    let text = "";
    for (const t of targets) {
      text += `${t.name}\n`;
      for (const a of t.portals) {
        text += `  ${formatPortal(a)}${a.tpgt !== null ? `  portal group ${a.tpgt}` : ""}\n`;
      }
    }
    ctx.out(text);
    return 0;
  },
};
