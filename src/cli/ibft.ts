/**
 * `isboot ibft`: locate, verify and print the iBFT; `isboot ibft encode`:
 * write a table from the JSON model (for `qemu -acpitable file=TABLE`).
 */
import { InvalidInputError, OperationalError, UsageError } from "../errors.ts";
import {
  encodeIbft,
  ibftFromJson,
  type IbftTable,
  ibftToJson,
  type LoadedIbft,
  loadIbft,
  portalText,
  REDACTED,
} from "../ibft/mod.ts";
import { parseCommand, printJson } from "./args.ts";
import type { Command, CommandContext } from "./context.ts";

const USAGE = `usage: isboot ibft [--source auto|acpi|sysfs|mem|FILE] [--json] [--show-secrets]
                   [--ignore-checksum] [--sys-root DIR] [--mem-path PATH]
       isboot ibft encode FILE.json --output TABLE

Locate, verify and print the iSCSI Boot Firmware Table.

sources (--source, default auto):
  auto    acpi, then sysfs, then mem: the first that finds a table
  acpi    SYSROOT/firmware/acpi/tables/IBFT, iBFT, BIFT (UEFI firmware, iPXE under UEFI)
  sysfs   SYSROOT/firmware/ibft/ as the kernel's iscsi_ibft module shows it
  mem     scan /dev/mem 0x80000-0xFFFFF for iBFT/BIFT (legacy BIOS, iPXE under BIOS)
  FILE    a table file (e.g. a copy of the ACPI table), or a directory laid out like
          /sys/firmware/ibft

options:
  --json             one JSON document (field names: README, "isboot ibft")
  --show-secrets     print CHAP secrets instead of "${REDACTED}"
  --ignore-checksum  decode a table whose checksum is wrong (warns); for broken firmware
  --sys-root DIR     sysfs root for acpi/sysfs (default /sys)
  --mem-path PATH    memory device or low-memory image for mem (default /dev/mem)

encode: read the JSON that 'isboot ibft --json --show-secrets' prints and write the
table (checksum included) to TABLE, e.g. for 'qemu -acpitable file=TABLE'.

exit codes: 0 ok, 1 no table found or unreadable, 2 usage, 3 malformed table or JSON`;

const OPTIONS = {
  source: { type: "string", short: "s" },
  "show-secrets": { type: "boolean" },
  "ignore-checksum": { type: "boolean" },
  "sys-root": { type: "string" },
  "mem-path": { type: "string" },
} as const;

/** `isboot ibft encode`'s options. */
const ENCODE_OPTIONS = { output: { type: "string", short: "o" } } as const;

/**
 * The readable summary. Secrets are redacted unless `showSecrets`.
 *
 * @example
 * ```ts
 * ctx.out(formatIbft(await loadIbft("auto"), false));
 * ```
 */
export function formatIbft(loaded: LoadedIbft, showSecrets: boolean): string {
  const t: IbftTable = loaded.table;
  const h = t.header;
  const lines: string[] = [];
  const flags = (x: { valid: boolean; bootSelected: boolean }) =>
    [x.valid ? "valid" : "NOT valid", x.bootSelected ? "boot-selected" : ""].filter(Boolean).join(
      ", ",
    );
  const secret = (s: string | null) => (s === null ? "none" : showSecrets ? s : REDACTED);
  const checksum = h.checksumValid === null ? "unknown" : h.checksumValid ? "ok" : "WRONG";
  lines.push(`iBFT from ${loaded.source}`);
  lines.push(
    `  header     signature ${h.signature}, ${
      h.length === null ? "length unknown" : `${h.length} bytes`
    }, revision ${h.revision}, checksum ${checksum}, OEM ${h.oemId || "-"} / ${
      h.oemTableId || "-"
    }`,
  );
  if (t.control) {
    lines.push(`  control    boot failover ${t.control.bootFailover ? "supported" : "off"}`);
  }
  const i = t.initiator;
  if (i === null) lines.push("  initiator  (none)");
  else {
    lines.push(`  initiator  ${i.name ?? "(no name)"}  [${flags(i)}]`);
    const servers = [
      ["iSNS", i.isnsServer],
      ["SLP", i.slpServer],
      ["RADIUS", i.primaryRadius],
      ["RADIUS 2", i.secondaryRadius],
    ].filter(([, v]) => v !== null).map(([k, v]) => `${k} ${v}`);
    if (servers.length) lines.push(`             ${servers.join(", ")}`);
  }
  for (const n of t.nics) {
    lines.push(
      `  nic ${String(n.index).padEnd(6)} ${n.mac}${n.pciBdf ? `  PCI ${n.pciBdf}` : ""}${
        n.vlan ? `  VLAN ${n.vlan}` : ""
      }  [${flags(n)}${n.global ? ", global" : ""}]`,
    );
    const ip = n.ip === null ? "no address" : `${n.ip}/${n.prefixLength}`;
    const extra = [
      ["gateway", n.gateway],
      ["DNS", [n.primaryDns, n.secondaryDns].filter(Boolean).join(" ") || null],
      ["DHCP server", n.dhcpServer],
      ["hostname", n.hostname],
    ].filter(([, v]) => v !== null).map(([k, v]) => `${k} ${v}`);
    lines.push(
      `             ${ip} (origin ${n.origin})${extra.length ? ", " : ""}${extra.join(", ")}`,
    );
  }
  for (const x of t.targets) {
    lines.push(
      `  target ${String(x.index).padEnd(3)} ${x.name ?? "(no name)"}  LUN ${
        x.lun ?? `raw ${x.lunRaw}`
      }  [${flags(x)}]`,
    );
    const portal = x.ip === null ? "no address" : portalText(x.ip, x.port);
    let auth = `CHAP ${x.chap}`;
    if (x.chap !== "none" || x.chapName !== null) {
      auth += `: user ${x.chapName ?? "none"}, secret ${secret(x.chapSecret)}`;
    }
    if (x.chap === "mutual" || x.reverseChapName !== null) {
      auth += `; target user ${x.reverseChapName ?? "none"}, secret ${secret(x.reverseChapSecret)}`;
    }
    const radius = [x.radiusChap ? "CHAP" : "", x.radiusReverseChap ? "reverse CHAP" : ""].filter(
      Boolean,
    );
    lines.push(
      `             ${portal} via nic ${x.nicIndex}, ${auth}${
        radius.length ? ` (RADIUS: ${radius.join(", ")})` : ""
      }`,
    );
  }
  if (t.targets.length === 0) lines.push("  targets    (none)");
  return lines.join("\n") + "\n";
}

async function runEncode(args: string[], ctx: CommandContext): Promise<number> {
  const p = parseCommand(args, ENCODE_OPTIONS, USAGE, ctx);
  if (!p) return 0;
  const [input, ...rest] = p.positionals;
  if (input === undefined || rest.length) throw new UsageError("encode needs one FILE.json");
  const output = p.values.output;
  if (!output) throw new UsageError("encode needs --output TABLE");
  let text: string;
  try {
    text = input === "-"
      ? await new Response(Deno.stdin.readable).text()
      : await Deno.readTextFile(input);
  } catch (e) {
    throw new OperationalError(`cannot read ${input}: ${e instanceof Error ? e.message : e}`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new InvalidInputError(`${input}: not JSON (${e instanceof Error ? e.message : e})`);
  }
  const bytes = encodeIbft(ibftFromJson(doc));
  try {
    await Deno.writeFile(output, bytes, { mode: 0o600 });
  } catch (e) {
    throw new OperationalError(`cannot write ${output}: ${e instanceof Error ? e.message : e}`);
  }
  ctx.log.info(`wrote ${output} (${bytes.length} bytes)`);
  return 0;
}

async function run(args: string[], ctx: CommandContext): Promise<number> {
  if (args[0] === "encode") return await runEncode(args.slice(1), ctx);
  const p = parseCommand(args, OPTIONS, USAGE, ctx, false);
  if (!p) return 0;
  const v = p.values;
  const source = v.source ?? "auto";
  if (source === "") throw new UsageError("--source needs a value");
  const loaded = await loadIbft(source, {
    ignoreChecksum: v["ignore-checksum"] ?? false,
    sysRoot: v["sys-root"],
    memPath: v["mem-path"],
  });
  for (const w of loaded.warnings) ctx.log.warn(w);
  const showSecrets = v["show-secrets"] ?? false;
  if (v.json) printJson(ctx, ibftToJson(loaded, { showSecrets }));
  else ctx.out(formatIbft(loaded, showSecrets));
  return 0;
}

/** The `ibft` command for src/cli/commands.ts. */
export const ibftCommand: Command = {
  summary: "locate, verify and print the iBFT (ibft encode: JSON model -> table)",
  options: { ...OPTIONS, ...ENCODE_OPTIONS },
  run,
};
