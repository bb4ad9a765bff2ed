/**
 * The bench's tgtd: the private tgtd the tests use too (peers/tgtd.ts: loopback
 * portal on a free port, its own control number), plus the digest modes the
 * bench compares and the iscsi:// URIs its contestants take.
 *
 * @example
 * ```ts
 * const t = await Tgtd.start();
 * const tid = await t.createTarget("iqn.2026-11.isboot.bench:null");
 * await t.addLun(tid, { lun: 1, bstype: "null" });
 * await setDigestMode(t, tid, "crc32c");
 * console.log(lunUri(t, "iqn.2026-11.isboot.bench:null"), "served by pid", t.pid);
 * ```
 */
import { Tgtd } from "../../peers/tgtd.ts";

export { Tgtd };

/** none; header (HeaderDigest only, what libiscsi can do); crc32c (header and data). */
export type Digest = "none" | "header" | "crc32c";

/** The iSCSI HeaderDigest and DataDigest values of a digest mode. */
export function digestKeys(d: Digest): { header: "none" | "crc32c"; data: "none" | "crc32c" } {
  return { header: d === "none" ? "none" : "crc32c", data: d === "crc32c" ? "crc32c" : "none" };
}

/**
 * Require or refuse CRC32C header and data digests on a target, as a digest
 * mode says. Applies to logins made afterwards.
 *
 * @example
 * ```ts
 * await setDigestMode(t, 1, "header");
 * ```
 */
export async function setDigestMode(t: Tgtd, tid: number, d: Digest): Promise<void> {
  const k = digestKeys(d);
  const tgt = (v: "none" | "crc32c") => v === "crc32c" ? "CRC32C" : "None";
  await t.setDigests(tid, tgt(k.header), tgt(k.data));
}

/**
 * iscsi:// URI of LUN 1 of a target, as qemu, libiscsi and isboot take it.
 *
 * @example
 * ```ts
 * lunUri(t, "iqn.2026-11.isboot.bench:ram"); // "iscsi://127.0.0.1:PORT/iqn.2026-11.isboot.bench:ram/1"
 * ```
 */
export function lunUri(t: Tgtd, iqn: string): string {
  return `iscsi://${t.portal}/${iqn}/1`;
}
