/**
 * Aggregation (medians over runs), the comparison table, and the SVG chart.
 */
import { median } from "./proc.ts";
import { type JobId, JOBS } from "./jobs.ts";
import type { Digest } from "./tgtd.ts";

export type Lun = "ram" | "null";

/** One measurement: one job, one contestant, one run. */
export interface Sample {
  run: number;
  digest: Digest;
  lun: Lun;
  contestant: string;
  job: JobId;
  value: number;
  bytes: number;
  seconds: number;
  iops?: number;
  latMeanUs?: number;
  latP99Us?: number;
  /** NBD server process (or, for iscsi-perf, the initiator itself). */
  cpuSecPerGiB?: number;
  tgtdCpuSecPerGiB?: number;
  /** Largest VmRSS (and RssAnon) seen while the job ran, and VmHWM after it, KiB. */
  rssKiB?: number;
  anonKiB?: number;
  hwmKiB?: number;
}

/** Medians of one (digest, lun, contestant, job) cell. */
export interface Cell {
  digest: Digest;
  lun: Lun;
  contestant: string;
  job: JobId;
  runs: number;
  value: number;
  latMeanUs?: number;
  latP99Us?: number;
  cpuSecPerGiB?: number;
  tgtdCpuSecPerGiB?: number;
  rssKiB?: number;
  anonKiB?: number;
  hwmKiB?: number;
}

function med(xs: (number | undefined)[]): number | undefined {
  const v = xs.filter((x): x is number => x !== undefined && Number.isFinite(x));
  return v.length ? median(v) : undefined;
}

/** Group samples by cell and take the median of every figure. */
export function summarize(samples: Sample[]): Cell[] {
  const groups = new Map<string, Sample[]>();
  for (const s of samples) {
    const k = `${s.digest}|${s.lun}|${s.contestant}|${s.job}`;
    groups.set(k, [...(groups.get(k) ?? []), s]);
  }
  return [...groups.values()].map((g) => ({
    digest: g[0].digest,
    lun: g[0].lun,
    contestant: g[0].contestant,
    job: g[0].job,
    runs: g.length,
    value: median(g.map((s) => s.value)),
    latMeanUs: med(g.map((s) => s.latMeanUs)),
    latP99Us: med(g.map((s) => s.latP99Us)),
    cpuSecPerGiB: med(g.map((s) => s.cpuSecPerGiB)),
    tgtdCpuSecPerGiB: med(g.map((s) => s.tgtdCpuSecPerGiB)),
    rssKiB: Math.max(...g.map((s) => s.rssKiB ?? 0)) || undefined,
    anonKiB: Math.max(...g.map((s) => s.anonKiB ?? 0)) || undefined,
    hwmKiB: Math.max(...g.map((s) => s.hwmKiB ?? 0)) || undefined,
  }));
}

/** One row of the comparison table (RAM LUN), ready to print or chart. */
export interface Row {
  digest: Digest;
  job: JobId;
  unit: string;
  isboot?: Cell;
  qemu?: Cell;
  nbdkit?: Cell;
  isbootMem?: Cell;
  perfRam?: Cell;
  perfNull?: Cell;
  /** min(NBD ceiling, raw-initiator figure on the same LUN): what no NBD-over-iSCSI server can beat. */
  ceiling?: number;
  isbootVsQemu?: number;
  isbootVsCeiling?: number;
  /** isboot with CRC32C over isboot without (crc32c rows only). */
  isbootDigestCost?: number;
  qemuDigestCost?: number;
}

export function rows(cells: Cell[], digests: Digest[]): Row[] {
  const find = (d: Digest, lun: Lun, c: string, j: JobId) =>
    cells.find((x) => x.digest === d && x.lun === lun && x.contestant === c && x.job === j);
  const out: Row[] = [];
  for (const digest of digests) {
    for (const job of JOBS) {
      const r: Row = {
        digest,
        job: job.id,
        unit: job.unit,
        isboot: find(digest, "ram", "isboot", job.id),
        qemu: find(digest, "ram", "qemu-nbd", job.id),
        // nbdkit has no iSCSI, so the same figure serves both digest modes.
        nbdkit: find("none", "ram", "nbdkit-memory", job.id),
        isbootMem: find("none", "ram", "isboot-memory", job.id),
        // The raw libiscsi initiator: iscsi-perf reads, qemu-img bench writes.
        perfRam: find(digest, "ram", "iscsi-perf", job.id) ??
          find(digest, "ram", "qemu-img-bench", job.id),
        perfNull: find(digest, "null", "iscsi-perf", job.id) ??
          find(digest, "null", "qemu-img-bench", job.id),
      };
      const bounds = [r.nbdkit?.value, r.perfRam?.value].filter((x): x is number =>
        x !== undefined
      );
      r.ceiling = bounds.length ? Math.min(...bounds) : undefined;
      if (r.isboot && r.qemu) r.isbootVsQemu = r.isboot.value / r.qemu.value;
      if (r.isboot && r.ceiling) r.isbootVsCeiling = r.isboot.value / r.ceiling;
      if (digest !== "none") {
        const ib0 = find("none", "ram", "isboot", job.id);
        const q0 = find("none", "ram", "qemu-nbd", job.id);
        if (r.isboot && ib0) r.isbootDigestCost = r.isboot.value / ib0.value;
        if (r.qemu && q0) r.qemuDigestCost = r.qemu.value / q0.value;
      }
      out.push(r);
    }
  }
  return out;
}

function fmtNum(x: number | undefined, unit = ""): string {
  if (x === undefined || !Number.isFinite(x)) return "—";
  const s = x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
  return s + unit;
}
const fmtRatio = (x?: number) => (x === undefined ? "—" : x.toFixed(2) + "×");
const pair = (a?: number, b?: number) => `${fmtNum(a)} / ${fmtNum(b)}`;

/** Markdown table (also readable as plain text on a terminal). */
export function table(rs: Row[]): string {
  const head = [
    "digest",
    "job",
    "unit",
    "isboot",
    "qemu-nbd",
    "nbdkit mem",
    "isboot mem",
    "raw libiscsi ram",
    "raw libiscsi null",
    "isboot/qemu",
    "isboot/ceiling",
    "digests/none isboot / qemu",
    "mean lat µs isboot / qemu",
    "p99 lat µs isboot / qemu",
    "CPU s/GiB isboot / qemu",
    "tgtd CPU s/GiB isboot / qemu",
  ];
  const lines = [head, head.map(() => "---")];
  for (const r of rs) {
    lines.push([
      r.digest,
      r.job,
      r.unit,
      fmtNum(r.isboot?.value),
      fmtNum(r.qemu?.value),
      fmtNum(r.nbdkit?.value),
      fmtNum(r.isbootMem?.value),
      fmtNum(r.perfRam?.value),
      fmtNum(r.perfNull?.value),
      fmtRatio(r.isbootVsQemu),
      fmtRatio(r.isbootVsCeiling),
      r.digest === "none" ? "" : `${fmtRatio(r.isbootDigestCost)} / ${fmtRatio(r.qemuDigestCost)}`,
      pair(r.isboot?.latMeanUs, r.qemu?.latMeanUs),
      pair(r.isboot?.latP99Us, r.qemu?.latP99Us),
      pair(r.isboot?.cpuSecPerGiB, r.qemu?.cpuSecPerGiB),
      pair(r.isboot?.tgtdCpuSecPerGiB, r.qemu?.tgtdCpuSecPerGiB),
    ]);
  }
  return lines.map((l) => `| ${l.join(" | ")} |`).join("\n");
}

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/**
 * Grouped bars per job, as a percentage of the ceiling (100% = the dashed line),
 * one panel per digest mode; each bar carries its absolute figure.
 */
export function chart(rs: Row[], title: string): string {
  const series: { key: "isboot" | "qemu" | "ceiling"; label: string; color: string }[] = [
    { key: "isboot", label: "isboot serve", color: "#2b7bb9" },
    { key: "qemu", label: "qemu-nbd (libiscsi)", color: "#e08a2c" },
    { key: "ceiling", label: "ceiling: min(nbdkit memory, raw libiscsi)", color: "#9a9a9a" },
  ];
  const digests = [...new Set(rs.map((r) => r.digest))];
  const jobsN = JOBS.length;
  const barW = 22, groupGap = 26, left = 60, top = 70, panelH = 230, panelGap = 70;
  const groupW = series.length * barW + groupGap;
  const width = Math.max(left + jobsN * groupW + 30, 780);
  const height = top + digests.length * (panelH + panelGap) + 10;
  const maxPct = 150;
  const o: string[] = [];
  o.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`,
  );
  o.push(`<rect width="100%" height="100%" fill="white"/>`);
  o.push(`<text x="${left}" y="20" font-size="15" font-weight="bold">${esc(title)}</text>`);
  series.forEach((s, i) => {
    const x = left + i * 200;
    o.push(`<rect x="${x}" y="32" width="12" height="12" fill="${s.color}"/>`);
    o.push(`<text x="${x + 16}" y="42">${esc(s.label)}</text>`);
  });
  digests.forEach((d, pi) => {
    const y0 = top + pi * (panelH + panelGap);
    const yOf = (pct: number) => y0 + panelH - Math.min(pct, maxPct) / maxPct * panelH;
    o.push(`<text x="${left}" y="${y0 - 8}" font-weight="bold">digests: ${esc(d)}</text>`);
    for (const pct of [0, 50, 100, 150]) {
      o.push(
        `<line x1="${left}" x2="${width - 20}" y1="${yOf(pct)}" y2="${yOf(pct)}" stroke="${
          pct === 100 ? "#444" : "#ddd"
        }" ${pct === 100 ? 'stroke-dasharray="4 3"' : ""}/>`,
      );
      o.push(`<text x="${left - 6}" y="${yOf(pct) + 4}" text-anchor="end">${pct}%</text>`);
    }
    rs.filter((r) => r.digest === d).forEach((r, gi) => {
      const gx = left + 10 + gi * groupW;
      series.forEach((s, si) => {
        const v = s.key === "isboot"
          ? r.isboot?.value
          : s.key === "qemu"
          ? r.qemu?.value
          : r.ceiling;
        if (v === undefined || !r.ceiling) return;
        const pct = v / r.ceiling * 100;
        const x = gx + si * barW;
        o.push(
          `<rect x="${x}" y="${yOf(pct)}" width="${barW - 3}" height="${
            y0 + panelH - yOf(pct)
          }" fill="${s.color}"><title>${
            esc(`${r.job} ${s.label}: ${fmtNum(v)} ${r.unit}`)
          }</title></rect>`,
        );
        o.push(
          `<text x="${x + (barW - 3) / 2}" y="${yOf(pct) - 3}" font-size="8" text-anchor="middle">${
            esc(fmtNum(v))
          }</text>`,
        );
      });
      o.push(
        `<text x="${gx + (series.length * barW) / 2}" y="${
          y0 + panelH + 14
        }" text-anchor="middle">${esc(r.job)}</text>`,
      );
      o.push(
        `<text x="${gx + (series.length * barW) / 2}" y="${
          y0 + panelH + 26
        }" text-anchor="middle" fill="#666">${esc(r.unit)}</text>`,
      );
    });
  });
  o.push("</svg>");
  return o.join("\n") + "\n";
}
