/**
 * The benchmark's load: fio jobs through its nbd engine (libnbd), nbdcopy of
 * the whole export, and libiscsi's iscsi-perf as the raw initiator figure.
 */
import { run } from "./proc.ts";

export type JobId =
  | "seqread"
  | "seqwrite"
  | "randread-qd1"
  | "randread-qd32"
  | "randwrite-qd32"
  | "nbdcopy";

export interface JobSpec {
  id: JobId;
  /** What the headline figure is. */
  unit: "MB/s" | "IOPS";
  rw?: "read" | "write" | "randread" | "randwrite";
  bs?: number;
  iodepth?: number;
}

/** The benchmark's jobs, in table order. */
export const JOBS: readonly JobSpec[] = [
  { id: "seqread", unit: "MB/s", rw: "read", bs: 1 << 20, iodepth: 8 },
  { id: "seqwrite", unit: "MB/s", rw: "write", bs: 1 << 20, iodepth: 8 },
  { id: "randread-qd1", unit: "IOPS", rw: "randread", bs: 4096, iodepth: 1 },
  { id: "randread-qd32", unit: "IOPS", rw: "randread", bs: 4096, iodepth: 32 },
  { id: "randwrite-qd32", unit: "IOPS", rw: "randwrite", bs: 4096, iodepth: 32 },
  { id: "nbdcopy", unit: "MB/s" },
];

/** What one job run measured on the client side. */
export interface LoadResult {
  /** Headline: MB/s (10^6 bytes) or IOPS, per the job's unit. */
  value: number;
  bytes: number;
  seconds: number;
  iops?: number;
  latMeanUs?: number;
  latP99Us?: number;
}

/** nbd+unix URI for a unix socket, as libnbd (fio, nbdcopy) takes it. */
export function nbdUri(socketPath: string): string {
  return `nbd+unix:///?socket=${socketPath}`;
}

interface FioLat {
  mean: number;
  percentile?: Record<string, number>;
}
interface FioDir {
  io_bytes: number;
  bw_bytes: number;
  iops: number;
  runtime: number;
  lat_ns: FioLat;
}

/**
 * Run one fio job against an NBD export and parse its JSON output.
 *
 * @example
 * const r = await runFio(JOBS[0], "nbd+unix:///?socket=/tmp/s", 10, "/tmp/w");
 */
export async function runFio(
  job: JobSpec,
  uri: string,
  runtimeS: number,
  workDir: string,
): Promise<LoadResult> {
  const jobFile = `${workDir}/${job.id}.fio`;
  const outFile = `${workDir}/${job.id}.json`;
  await Deno.writeTextFile(
    jobFile,
    [
      "[global]",
      "ioengine=nbd",
      `uri=${uri}`,
      "time_based=1",
      `runtime=${runtimeS}`,
      "lat_percentiles=1",
      "percentile_list=50:99",
      // fio's random map is not needed and costs fio CPU that the server would lack.
      "norandommap=1",
      "randrepeat=0",
      `[${job.id}]`,
      `rw=${job.rw}`,
      `bs=${job.bs}`,
      `iodepth=${job.iodepth}`,
      "",
    ].join("\n"),
  );
  const r = await run("fio", ["--output-format=json", `--output=${outFile}`, jobFile]);
  if (r.code !== 0) {
    throw new Error(
      `fio ${job.id} exited ${r.code}: ${(r.stderr || r.stdout).trim().slice(0, 300)}`,
    );
  }
  const out = JSON.parse(await Deno.readTextFile(outFile));
  const j = out.jobs[0];
  if (j.error) throw new Error(`fio ${job.id} reported error ${j.error}`);
  const dir: FioDir = job.rw === "read" || job.rw === "randread" ? j.read : j.write;
  const seconds = dir.runtime / 1000;
  const lat = dir.lat_ns;
  const p99 = lat.percentile?.["99.000000"];
  return {
    value: job.unit === "IOPS" ? dir.iops : dir.bw_bytes / 1e6,
    bytes: dir.io_bytes,
    seconds,
    iops: dir.iops,
    latMeanUs: lat.mean / 1000,
    latP99Us: p99 !== undefined ? p99 / 1000 : undefined,
  };
}

/**
 * Copy the whole export to `null:` with nbdcopy (extents off, so every byte is
 * read), repeated until at least `minSeconds` have passed.
 */
export async function runNbdcopy(
  uri: string,
  size: number,
  minSeconds: number,
): Promise<LoadResult> {
  let seconds = 0, bytes = 0;
  do {
    const r = await run("nbdcopy", ["--no-extents", uri, "null:"]);
    if (r.code !== 0) throw new Error(`nbdcopy exited ${r.code}: ${r.stderr.trim().slice(0, 300)}`);
    seconds += r.ms / 1000;
    bytes += size;
  } while (seconds < minSeconds);
  return { value: bytes / seconds / 1e6, bytes, seconds };
}

/** iscsi-perf (libiscsi) equivalents of the read jobs; it cannot write. */
export const ISCSI_PERF_JOBS: Partial<Record<JobId, string[]>> = {
  "seqread": ["-b", "2048", "-m", "8"],
  "randread-qd1": ["-b", "8", "-m", "1", "-r"],
  "randread-qd32": ["-b", "8", "-m", "32", "-r"],
};

/**
 * Run iscsi-perf for `runtimeS` seconds; also its own CPU (user+sys) per GiB,
 * which is what a userspace initiator costs without any NBD hop.
 */
export async function runIscsiPerf(
  job: JobSpec,
  uri: string,
  runtimeS: number,
): Promise<LoadResult & { clientCpuSeconds: number }> {
  const args = ISCSI_PERF_JOBS[job.id];
  if (!args) throw new Error(`iscsi-perf has no ${job.id} job`);
  const r = await run("/usr/bin/time", [
    "-f",
    "BENCHCPU %U %S",
    "iscsi-perf",
    "-t",
    String(runtimeS),
    "-i",
    "iqn.2026-11.bench:iscsi-perf",
    ...args,
    uri,
  ]);
  const text = r.stdout + r.stderr;
  const avg = [...text.matchAll(/iops average (\d+)/g)].pop();
  const cpu = /BENCHCPU ([\d.]+) ([\d.]+)/.exec(text);
  if (r.code !== 0 || !avg) {
    throw new Error(`iscsi-perf exited ${r.code}: ${text.trim().slice(-300)}`);
  }
  const iops = Number(avg[1]);
  const bytes = iops * job.bs! * runtimeS;
  return {
    value: job.unit === "IOPS" ? iops : iops * job.bs! / 1e6,
    bytes,
    seconds: runtimeS,
    iops,
    // Little's law: with `depth` commands always in flight, mean latency = depth / IOPS.
    latMeanUs: iops > 0 ? Number(args[3]) / iops * 1e6 : undefined,
    clientCpuSeconds: cpu ? Number(cpu[1]) + Number(cpu[2]) : NaN,
  };
}

/**
 * `qemu-img bench` (qemu's block layer on libiscsi, no NBD) for the write jobs,
 * which iscsi-perf cannot do. It has no random mode: the 4 KiB job writes
 * sequentially at depth 32, which costs a RAM-backed target the same.
 */
export const QEMU_IMG_BENCH_JOBS: Partial<Record<JobId, { bs: number; depth: number }>> = {
  "seqwrite": { bs: 1 << 20, depth: 8 },
  "randwrite-qd32": { bs: 4096, depth: 32 },
};

/** Run `qemu-img bench -w` in passes over the LUN until `runtimeS` has passed. */
export async function runQemuImgBench(
  job: JobSpec,
  uri: string,
  lunBytes: number,
  runtimeS: number,
): Promise<LoadResult & { clientCpuSeconds: number }> {
  const p = QEMU_IMG_BENCH_JOBS[job.id];
  if (!p) throw new Error(`qemu-img bench has no ${job.id} job`);
  // One pass: the whole LUN, at most 64 Ki requests, so a pass stays short.
  const count = Math.max(1, Math.min(Math.floor(lunBytes / p.bs), 65536));
  let seconds = 0, requests = 0, cpu = 0;
  do {
    const r = await run("/usr/bin/time", [
      "-f",
      "BENCHCPU %U %S",
      "qemu-img",
      "bench",
      "-f",
      "raw",
      "-w",
      "-d",
      String(p.depth),
      "-s",
      String(p.bs),
      "-c",
      String(count),
      uri,
    ]);
    const text = r.stdout + r.stderr;
    const done = /Run completed in ([\d.]+) seconds/.exec(text);
    const c = /BENCHCPU ([\d.]+) ([\d.]+)/.exec(text);
    if (r.code !== 0 || !done) {
      throw new Error(`qemu-img bench exited ${r.code}: ${text.trim().slice(-300)}`);
    }
    seconds += Number(done[1]);
    requests += count;
    if (c) cpu += Number(c[1]) + Number(c[2]);
  } while (seconds < runtimeS);
  const iops = requests / seconds;
  return {
    value: job.unit === "IOPS" ? iops : iops * p.bs / 1e6,
    bytes: requests * p.bs,
    seconds,
    iops,
    latMeanUs: p.depth / iops * 1e6, // Little's law
    clientCpuSeconds: cpu,
  };
}
