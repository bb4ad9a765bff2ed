/**
 * The boot plan: which NIC to bring up and which targets to log in to, in
 * order, from a decoded iBFT, with reasons `isboot boot` can print.
 *
 * Rules (docs/ibft.md "Boot plan"):
 * 1. Targets are considered boot-selected first, then the other valid ones,
 *    each group in slot order. A target is skipped (with a reason) when its
 *    valid flag is clear, it has no name or address, or its NIC association
 *    names no NIC in the table or a NIC whose valid flag is clear.
 * 2. The boot NIC is the one the first usable target is associated with. A
 *    target reached through another NIC is kept when it names the same
 *    target and LUN as the boot disk (a second path: its NIC is brought up
 *    too, for multipath); other targets on other NICs are skipped.
 * 3. The initiator name comes from a valid initiator structure, else null
 *    (the caller falls back to `rd.iscsi.initiator=` or its own default).
 * Nothing usable is an InvalidInputError (exit 3): the table cannot boot.
 *
 * @module
 */
import { InvalidInputError } from "../errors.ts";
import type { IbftNic, IbftTable, IbftTarget } from "./model.ts";

/** One target to log in to, with the NIC it is reached through. */
export interface PlannedTarget {
  target: IbftTarget;
  nic: IbftNic;
}

/** What `isboot boot` does, decided from the iBFT. */
export interface BootPlan {
  /** The initiator's iSCSI name; null when the table has no valid one. */
  initiatorName: string | null;
  /** The boot NIC (by MAC; address, prefix, gateway, VLAN, DNS from here). */
  nic: IbftNic;
  /**
   * Every NIC to configure: the boot NIC first, then each other NIC that
   * reaches a second path to the boot disk, in table order.
   */
  nics: IbftNic[];
  /** Targets to try, in order; the first is the boot disk, the rest are alternatives. */
  targets: PlannedTarget[];
  /** Why this plan, one line each, for logs; never secrets. */
  reasons: string[];
}

/** `10.0.2.2:3260`, `[fd00::1]:3260`. */
export function portalText(ip: string, port: number): string {
  return ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/**
 * Decide the boot plan.
 *
 * @throws InvalidInputError when no target can be booted (the message says why).
 * @example
 * ```ts
 * const plan = makeBootPlan(loaded.table);
 * for (const r of plan.reasons) log.info(r);
 * await bringUp(plan.nic);
 * await login(plan.initiatorName ?? fallbackIqn, plan.targets[0].target);
 * ```
 */
export function makeBootPlan(table: IbftTable): BootPlan {
  const reasons: string[] = [];
  const nicByIndex = new Map(table.nics.map((n) => [n.index, n]));
  const ordered = [
    ...table.targets.filter((t) => t.valid && t.bootSelected),
    ...table.targets.filter((t) => t.valid && !t.bootSelected),
  ];
  for (const t of table.targets) {
    if (!t.valid) reasons.push(`target ${t.index}: skipped, its valid flag is clear`);
  }
  const usable: PlannedTarget[] = [];
  for (const t of ordered) {
    const what = `target ${t.index}${t.name ? ` (${t.name})` : ""}`;
    if (t.name === null) {
      reasons.push(`${what}: skipped, it has no target name`);
      continue;
    }
    if (t.ip === null) {
      reasons.push(`${what}: skipped, it has no address`);
      continue;
    }
    const nic = nicByIndex.get(t.nicIndex);
    if (!nic) {
      reasons.push(`${what}: skipped, its NIC ${t.nicIndex} is not in the table`);
      continue;
    }
    if (!nic.valid) {
      reasons.push(`${what}: skipped, its NIC ${t.nicIndex} is not valid`);
      continue;
    }
    usable.push({ target: t, nic });
  }
  if (usable.length === 0) {
    const why = table.targets.length === 0 ? "the table lists no targets" : reasons.join("; ");
    throw new InvalidInputError(`iBFT: nothing to boot: ${why}`);
  }
  const nic = usable[0].nic;
  const boot = usable[0].target;
  const samePath = (t: IbftTarget) => t.name === boot.name && t.lunRaw === boot.lunRaw;
  const targets: PlannedTarget[] = [];
  const nics: IbftNic[] = [nic];
  for (const p of usable) {
    const t = p.target;
    const other = p.nic.index !== nic.index;
    if (other && !samePath(t)) {
      reasons.push(
        `target ${t.index} (${t.name}): skipped, it is reached through NIC ${p.nic.index}, not the boot NIC ${nic.index}, and is not the boot disk`,
      );
      continue;
    }
    if (other && !nics.includes(p.nic)) nics.push(p.nic);
    const lun = t.lun ?? `raw ${t.lunRaw}`;
    const role = targets.length === 0
      ? " (boot disk)"
      : other
      ? ` (a second path, through NIC ${p.nic.index})`
      : " (alternative)";
    reasons.push(
      `target ${t.index}: ${t.name} LUN ${lun} at ${portalText(t.ip as string, t.port)}, ${
        t.bootSelected ? "boot-selected" : "valid"
      }, CHAP ${t.chap}${role}`,
    );
    targets.push(p);
  }
  nics.sort((a, b) => (a === nic ? -1 : b === nic ? 1 : a.index - b.index));
  const addr = nic.ip === null ? "no address in the table" : `${nic.ip}/${nic.prefixLength}`;
  reasons.unshift(
    `nic ${nic.index}: ${nic.mac}, ${addr}${
      nic.vlan ? `, VLAN ${nic.vlan}` : ""
    }, chosen as the NIC of target ${targets[0].target.index}`,
  );
  for (const n of nics.slice(1)) {
    const a = n.ip === null ? "no address in the table" : `${n.ip}/${n.prefixLength}`;
    reasons.splice(
      nics.indexOf(n),
      0,
      `nic ${n.index}: ${n.mac}, ${a}${n.vlan ? `, VLAN ${n.vlan}` : ""}, for a second path`,
    );
  }
  const ini = table.initiator;
  let initiatorName: string | null = null;
  if (ini === null) reasons.push("initiator: the table has no initiator structure");
  else if (!ini.valid) reasons.push("initiator: ignored, its valid flag is clear");
  else if (ini.name === null) reasons.push("initiator: the structure has no name");
  else {
    initiatorName = ini.name;
    reasons.unshift(`initiator: ${ini.name}`);
  }
  return { initiatorName, nic, nics, targets, reasons };
}
