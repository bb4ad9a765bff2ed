/**
 * `isboot probe TARGET [--json]`: log in, open the LUN, print what it is
 * (vendor, product, revision, serial, designators, size, block sizes, write
 * protect, thin provisioning, Block Limits) and how the session runs (every
 * negotiated iSCSI parameter, authentication, login time), then log out.
 */
import { UsageError } from "../errors.ts";
import type { LunInventory } from "../scsi/lun.ts";
import { type OpenedTarget, openTarget } from "../iscsi/open_target.ts";
import { parseCommand, printJson } from "./args.ts";
import type { Command } from "./context.ts";
import { sessionConfigFromUri, TARGET_OPTIONS, TARGET_OPTIONS_HELP } from "./target_options.ts";

const USAGE = `usage: isboot probe TARGET [--json] [target options]

Log in to TARGET, print the LUN's inventory and the negotiated session, log out.
TARGET: iscsi://[user@]host[:port]/target-iqn/lun (IPv6 in brackets) or the RFC 4173
form iscsi:host:proto:port:lun:target-iqn. Secrets come from files or the environment.

options:
  --json                     one JSON document: { target, lun, luns, session, inventory }
  --debug                    log the protocol exchange and every SCSI retry (never secrets)
${TARGET_OPTIONS_HELP}
exit codes: 0 ok, 1 unreachable/refused/SCSI failure, 2 usage, 3 invalid TARGET, 4 authentication failed
`;

/** Everything `probe` reports: the session and the LUN's inventory. */
export type ProbeReport = Pick<OpenedTarget, "session" | "inventory" | "luns">;

/**
 * The JSON document `probe --json` prints. Field names are interface:
 * `session.parameters` uses RFC 7143 key names; sizes are byte counts.
 */
export function probeJson(r: ProbeReport): Record<string, unknown> {
  return {
    target: r.session.targetName,
    portal: r.session.portal,
    initiator: r.session.initiatorName,
    lun: r.inventory.lun,
    luns: r.luns,
    session: {
      isid: r.session.isid,
      tsih: r.session.tsih,
      auth: r.session.auth,
      chapAlgorithm: r.session.chapAlgorithm ?? null,
      loginMs: Math.round(r.session.loginMs * 10) / 10,
      parameters: r.session.parameters,
    },
    inventory: r.inventory,
  };
}

/** The `probe` subcommand. */
export const probeCommand: Command = {
  summary: "log in and print a LUN's inventory and the negotiated session",
  options: TARGET_OPTIONS,
  async run(args, ctx) {
    const p = parseCommand(args, TARGET_OPTIONS, USAGE, ctx);
    if (!p) return 0;
    if (p.positionals.length !== 1) throw new UsageError("probe takes one TARGET (see --help)");
    const cfg = await sessionConfigFromUri(p.positionals[0], p.values, ctx.env);
    const t = await openTarget(cfg, { log: ctx.log, reportLuns: true });
    try {
      const report: ProbeReport = { session: t.session, inventory: t.inventory, luns: t.luns };
      if (p.values.json) printJson(ctx, probeJson(report));
      else ctx.out(renderProbe(report));
    } finally {
      await t.close();
    }
    return 0;
  },
};

/** "256 MiB" style size with binary units, exact when it divides evenly. */
export function humanSize(bytes: number): string {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  if (i === 0) return `${bytes} bytes`;
  return `${Number.isInteger(v) ? v : v.toFixed(2)} ${units[i]}`;
}

const yesNo = (
  b: boolean | null | undefined,
) => (b === null || b === undefined ? "unknown" : b ? "yes" : "no");

/** Block Limits as `name value` pairs, blocks converted to bytes where it helps. */
function blockLimitLines(inv: LunInventory): string[] {
  const bl = inv.blockLimits;
  if (!bl) return ["  (Block Limits VPD page not provided)"];
  const bs = inv.logicalBlockSize;
  const blocks = (n: number | null, zeroMeans = "not reported") =>
    n === null
      ? "not reported"
      : n === 0
      ? zeroMeans
      : n === 0xffffffff
      ? "no limit"
      : `${n} blocks (${humanSize(n * bs)})`;
  const count = (n: number | null) =>
    n === null ? "not reported" : n === 0xffffffff ? "no limit" : String(n);
  return [
    `  maximum transfer length:          ${blocks(bl.maximumTransferLength)}`,
    `  optimal transfer length:          ${blocks(bl.optimalTransferLength)}`,
    `  optimal transfer granularity:     ${blocks(bl.optimalTransferLengthGranularity)}`,
    `  maximum unmap LBA count:          ${blocks(bl.maximumUnmapLbaCount)}`,
    `  maximum unmap descriptors:        ${count(bl.maximumUnmapBlockDescriptorCount)}`,
    `  optimal unmap granularity:        ${blocks(bl.optimalUnmapGranularity)}`,
    `  maximum write same length:        ${blocks(bl.maximumWriteSameLength)}`,
    `  maximum compare and write length: ${bl.maximumCompareAndWriteLength} blocks`,
  ];
}

/**
 * Render the probe report as aligned text.
 *
 * @example
 * ```ts
 * ctx.out(renderProbe({ session, inventory, luns }));
 * ```
 */
export function renderProbe(r: ProbeReport): string {
  const { session: s, inventory: inv } = r;
  const tp = inv.thinProvisioning;
  const auth = s.auth === "none"
    ? "none"
    : `CHAP (${s.chapAlgorithm ?? "?"})${s.auth === "mutual" ? ", mutual" : ""}`;
  const tpgt = s.params.targetPortalGroupTag;
  const lines = [
    `target:            ${s.targetName}`,
    `portal:            ${s.portal}${tpgt !== undefined ? `, portal group ${tpgt}` : ""}`,
    ...(s.params.targetAlias ? [`target alias:      ${s.params.targetAlias}`] : []),
    `initiator:         ${s.initiatorName}`,
    `authentication:    ${auth}`,
    `login time:        ${s.loginMs.toFixed(1)} ms`,
    `session:           ISID ${s.isid}, TSIH ${s.tsih}`,
    `LUN:               ${inv.lun}${r.luns ? ` (target has LUNs ${r.luns.join(", ")})` : ""}`,
    `vendor:            ${inv.vendor}`,
    `product:           ${inv.product}`,
    `revision:          ${inv.revision}`,
    `serial:            ${inv.serial ?? "(none)"}`,
    ...inv.identifiers.map((d, i) =>
      `${
        i === 0 ? "identifiers:      " : "                  "
      } ${d.value} (${d.type}, ${d.association})`
    ),
    `size:              ${inv.size} bytes (${humanSize(inv.size)}), ${inv.blocks} blocks`,
    `logical block:     ${inv.logicalBlockSize} bytes`,
    `physical block:    ${inv.physicalBlockSize} bytes`,
    `write protect:     ${yesNo(inv.writeProtect)}`,
    `write cache:       ${yesNo(inv.writeCacheEnabled)}, FUA ${yesNo(inv.fua)}`,
    `thin provisioning: ${tp.lbpme ? "yes" : "no"}${
      tp.provisioningType ? ` (${tp.provisioningType})` : ""
    }`,
    `  UNMAP:                            ${yesNo(tp.lbpu)}`,
    `  WRITE SAME(16) with UNMAP:        ${yesNo(tp.lbpws)}`,
    `  WRITE SAME(10) with UNMAP:        ${yesNo(tp.lbpws10)}`,
    `  unmapped blocks read zero:        ${yesNo(tp.lbprz)}`,
    `  write zeroes:                     ${
      inv.io.writeSame ? "WRITE SAME(16)" : "zero-filled WRITE"
    }`,
    `block limits:`,
    ...blockLimitLines(inv),
    `iSCSI parameters:`,
    ...Object.entries(s.parameters).map(([k, v]) => `  ${k}=${v}`),
  ];
  return lines.join("\n") + "\n";
}
