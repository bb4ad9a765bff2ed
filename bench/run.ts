/**
 * `make bench`: isboot serve against qemu-nbd (libiscsi) and the ceilings, in
 * one run, on one tgtd. See docs/performance.md for what is measured and why.
 *
 * Usage: deno run -A bench/run.ts [--quick] [--runs N] [--runtime S] [--size MiB]
 *          [--digests none,crc32c]
 *          [--contestants isboot,qemu-nbd,nbdkit-memory,isboot-memory,iscsi-perf,qemu-img-bench]
 *          [--jobs seqread,...] [--isboot dist/isboot] [--out docs/bench] [--no-write]
 */
import { parseArgs } from "node:util";
import { cpuSeconds, median, memoryKiB, run, sleep, stop } from "./lib/proc.ts";
import { type Digest, lunUri, setDigestMode, Tgtd } from "./lib/tgtd.ts";
import {
  ISCSI_PERF_JOBS,
  JOBS,
  type JobSpec,
  type LoadResult,
  nbdUri,
  QEMU_IMG_BENCH_JOBS,
  runFio,
  runIscsiPerf,
  runNbdcopy,
  runQemuImgBench,
} from "./lib/jobs.ts";
import { type ContestantId, type RunningServer, startServer } from "./lib/servers.ts";
import { chart, rows, type Sample, summarize, table } from "./lib/report.ts";

const GiB = 2 ** 30;
const RAM_IQN = "iqn.2026-11.isboot.bench:ram";
const NULL_IQN = "iqn.2026-11.isboot.bench:null";

interface Options {
  runs: number;
  runtime: number;
  /** Seconds of unmeasured writes through each server before its jobs (0: none). */
  warmup: number;
  sizeMiB: number;
  digests: Digest[];
  contestants: string[];
  jobs: JobSpec[];
  isboot: string;
  out: string | null;
  quick: boolean;
}

function options(): Options {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean", default: false },
      runs: { type: "string" },
      runtime: { type: "string" },
      warmup: { type: "string" },
      size: { type: "string" },
      digests: { type: "string", default: "none,header,crc32c" },
      contestants: {
        type: "string",
        default: "isboot,qemu-nbd,nbdkit-memory,isboot-memory,iscsi-perf,qemu-img-bench",
      },
      jobs: { type: "string", default: JOBS.map((j) => j.id).join(",") },
      isboot: { type: "string", default: "dist/isboot" },
      out: { type: "string", default: "docs/bench" },
      "no-write": { type: "boolean", default: false },
    },
  });
  const q = values.quick;
  const int = (s: string | undefined, d: number, name: string, min = 1) => {
    const n = s === undefined ? d : Number(s);
    if (!Number.isInteger(n) || n < min) {
      throw new Error(`--${name} wants an integer of at least ${min}`);
    }
    return n;
  };
  const digests = values.digests.split(",").filter(Boolean);
  for (const d of digests) {
    if (d !== "none" && d !== "header" && d !== "crc32c") throw new Error(`bad digest ${d}`);
  }
  const jobIds = values.jobs.split(",").filter(Boolean);
  const jobs = jobIds.map((id) => {
    const j = JOBS.find((x) => x.id === id);
    if (!j) throw new Error(`unknown job ${id} (have ${JOBS.map((x) => x.id).join(", ")})`);
    return j;
  });
  return {
    quick: q,
    runs: int(values.runs, q ? 1 : 3, "runs"),
    runtime: int(values.runtime, q ? 3 : 8, "runtime"),
    warmup: int(values.warmup, q ? 1 : 2, "warmup", 0),
    sizeMiB: int(values.size, q ? 256 : 1024, "size"),
    digests: digests as Digest[],
    contestants: values.contestants.split(",").filter(Boolean),
    jobs,
    isboot: values.isboot,
    out: values["no-write"] ? null : values.out,
  };
}

/** Fill a tmpfs file with incompressible, non-zero bytes so no layer can shortcut. */
async function makeImage(path: string, size: number): Promise<void> {
  const chunk = new Uint8Array(4 << 20);
  for (let i = 0; i < chunk.length; i += 65536) {
    crypto.getRandomValues(chunk.subarray(i, i + 65536));
  }
  const f = await Deno.open(path, { create: true, write: true, truncate: true });
  try {
    for (let off = 0, n = 0; off < size; off += chunk.length, n++) {
      new DataView(chunk.buffer).setUint32(0, n); // every chunk distinct
      const part = chunk.subarray(0, Math.min(chunk.length, size - off));
      for (let w = 0; w < part.length;) w += await f.write(part.subarray(w));
    }
  } finally {
    f.close();
  }
}

/** Run one load against a running server and attribute CPU and memory. */
async function measure(
  job: JobSpec,
  srv: RunningServer,
  tgtdPid: number,
  socketPath: string,
  o: Options,
  workDir: string,
): Promise<Omit<Sample, "run" | "digest" | "lun" | "contestant" | "job">> {
  const pid = srv.child.pid;
  const c0 = cpuSeconds(pid), t0 = cpuSeconds(tgtdPid);
  let rss = 0, anon = 0;
  const sampler = setInterval(() => {
    const m = memoryKiB(pid);
    rss = Math.max(rss, m.rss);
    anon = Math.max(anon, m.anon);
  }, 200);
  let r: LoadResult;
  try {
    r = job.id === "nbdcopy"
      ? await runNbdcopy(nbdUri(socketPath), o.sizeMiB * 2 ** 20, o.runtime / 2)
      : await runFio(job, nbdUri(socketPath), o.runtime, workDir);
  } finally {
    clearInterval(sampler);
  }
  const c1 = cpuSeconds(pid), t1 = cpuSeconds(tgtdPid);
  const mem = memoryKiB(pid);
  const gib = r.bytes / GiB;
  return {
    ...r,
    cpuSecPerGiB: gib > 0 ? (c1 - c0) / gib : undefined,
    tgtdCpuSecPerGiB: gib > 0 ? (t1 - t0) / gib : undefined,
    rssKiB: Math.max(rss, mem.rss),
    anonKiB: Math.max(anon, mem.anon),
    hwmKiB: mem.hwm,
  };
}

/**
 * Unmeasured sequential writes through a freshly started server, so every job
 * measures steady state. Without them the first jobs pay for first touches
 * that have nothing to do with the contestant: until large buffers have been
 * freed, glibc's malloc in tgtd and in qemu-nbd maps and unmaps every 256 KiB
 * buffer (strace of one cold nbdcopy of 1 GiB: 4096 mmap and 4096 munmap in
 * each), and stops once its dynamic mmap threshold has risen. Measured: after
 * 1 GiB of 1 MiB writes, tgtd's CPU per GiB read by nbdcopy fell from about
 * 1.45 to 0.6-0.9 s and qemu-nbd's from 1.0 to 0.4 s; isboot's did not
 * change. tgtd keeps that state, so it would also favour whichever contestant
 * runs second.
 */
async function warmUp(socketPath: string, seconds: number, workDir: string, errors: string[]) {
  const job = JOBS.find((j) => j.id === "seqwrite")!;
  try {
    await runFio(job, nbdUri(socketPath), seconds, workDir);
  } catch (e) {
    errors.push(`warm-up: ${(e as Error).message}`);
  }
}

function log(msg: string) {
  console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}`);
}

/** Wall times and max RSS of repeated short commands, gathered over all runs. */
interface Timing {
  ms: number[];
  kib: number[];
  ok: boolean;
  error?: string;
  stdout: string;
}

async function timeCmd(into: Timing, cmd: string, args: string[], n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const r = await run("/usr/bin/time", ["-f", "BENCHRSS %M", cmd, ...args]);
    const m = /BENCHRSS (\d+)/.exec(r.stderr);
    into.ms.push(r.ms);
    if (m) into.kib.push(Number(m[1]));
    into.ok = r.code === 0;
    into.error = r.code === 0
      ? undefined
      : r.stderr.replace(/BENCHRSS.*\n?/, "").trim().split("\n").pop();
    into.stdout = r.stdout;
  }
}

function timingSummary(t: Timing) {
  return {
    ok: t.ok,
    n: t.ms.length,
    medianMs: t.ms.length ? median(t.ms) : undefined,
    medianMaxRssKiB: t.kib.length ? median(t.kib) : undefined,
    error: t.error,
  };
}

async function main() {
  const o = options();
  const workDir = await Deno.makeTempDir({ prefix: "isboot-bench-" });
  const image = `/dev/shm/isboot-bench-${Deno.pid}.img`;
  const size = o.sizeMiB * 2 ** 20;
  const samples: Sample[] = [];
  const errors: string[] = [];
  const readyMs: Record<string, number[]> = {};
  let tgtd: Tgtd | null = null;
  let server: RunningServer | null = null;
  const cleanup = async () => {
    if (server) await stop(server.child).catch(() => {});
    server = null;
    if (tgtd) await tgtd.stop().catch(() => {});
    tgtd = null;
    await Deno.remove(image).catch(() => {});
    await Deno.remove(workDir, { recursive: true }).catch(() => {});
  };
  const onSignal = () => {
    log("interrupted: cleaning up");
    cleanup().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);

  const extras: Record<string, unknown> = {};
  try {
    log(
      `${o.runs} run(s), ${o.runtime} s a job, LUN ${o.sizeMiB} MiB, digests ${
        o.digests.join("+")
      }`,
    );
    await makeImage(image, size);
    const t = await Tgtd.start();
    tgtd = t;
    const ramTid = await t.createTarget(RAM_IQN);
    await t.addLun(ramTid, { lun: 1, path: image });
    const nullTid = await t.createTarget(NULL_IQN);
    await t.addLun(nullTid, { lun: 1, bstype: "null" });
    log(`tgtd pid ${t.pid} on ${t.portal}, control ${t.control}`);

    const want = (c: string) => o.contestants.includes(c);
    const newTiming = (): Timing => ({ ms: [], kib: [], ok: false, stdout: "" });
    const tVersion = newTiming(), tProbe = newTiming(), tInq = newTiming();
    for (let runNo = 1; runNo <= o.runs; runNo++) {
      // Start-up and login figures, a few in every run (no load running).
      await setDigestMode(t, ramTid, "none");
      if (want("isboot")) {
        await timeCmd(tVersion, o.isboot, ["--version"], 3);
        await timeCmd(tProbe, o.isboot, ["probe", lunUri(t, RAM_IQN), "--json"], 3);
        try {
          extras.isbootProbeJson = JSON.parse(tProbe.stdout);
        } catch { /* not JSON (or failed) */ }
      }
      await timeCmd(tInq, "iscsi-inq", [lunUri(t, RAM_IQN)], 3);
      extras.isbootVersion = timingSummary(tVersion);
      extras.isbootProbe = timingSummary(tProbe);
      extras.iscsiInq = timingSummary(tInq);
      for (const digest of o.digests) {
        await setDigestMode(t, ramTid, digest);
        await setDigestMode(t, nullTid, digest);
        const order: ContestantId[] = (
          ["isboot", "qemu-nbd", "nbdkit-memory", "isboot-memory"] as ContestantId[]
        ).filter((c) => want(c) && !(c.endsWith("-memory") && digest !== "none"));
        // Alternate the order between runs so drift on a shared machine hits both alike.
        if (runNo % 2 === 0) order.reverse();
        for (const c of order) {
          const socketPath = `${workDir}/${c}.sock`;
          log(`run ${runNo} digest ${digest}: ${c}`);
          try {
            server = await startServer(c, {
              uri: lunUri(t, RAM_IQN),
              digest,
              socketPath,
              logPath: `${workDir}/${c}-${digest}-run${runNo}.log`,
              size,
              seedImage: image,
              isbootBin: o.isboot,
            });
          } catch (e) {
            errors.push(`run ${runNo} ${digest} ${(e as Error).message}`);
            log(`  ${(e as Error).message}`);
            continue;
          }
          (readyMs[`${c}/${digest}`] ??= []).push(server.readyMs);
          if (server.size !== BigInt(size)) {
            errors.push(`${c}: export size ${server.size} != LUN size ${size}`);
          }
          if (o.warmup > 0) await warmUp(socketPath, o.warmup, workDir, errors);
          for (const job of o.jobs) {
            try {
              const m = await measure(job, server, t.pid, socketPath, o, workDir);
              samples.push({ run: runNo, digest, lun: "ram", contestant: c, job: job.id, ...m });
              log(
                `  ${job.id}: ${m.value.toFixed(1)} ${job.unit}, cpu ${
                  m.cpuSecPerGiB?.toFixed(2)
                } s/GiB`,
              );
            } catch (e) {
              errors.push(`run ${runNo} ${digest} ${c} ${job.id}: ${(e as Error).message}`);
              log(`  ${job.id}: ${(e as Error).message}`);
            }
          }
          await stop(server.child);
          server = null;
        }
        if (want("iscsi-perf")) {
          for (const job of o.jobs.filter((j) => ISCSI_PERF_JOBS[j.id])) {
            for (const [lun, iqn] of [["ram", RAM_IQN], ["null", NULL_IQN]] as const) {
              try {
                const r = await runIscsiPerf(job, lunUri(t, iqn), o.runtime);
                samples.push({
                  run: runNo,
                  digest,
                  lun,
                  contestant: "iscsi-perf",
                  job: job.id,
                  ...r,
                  cpuSecPerGiB: r.bytes > 0 ? r.clientCpuSeconds / (r.bytes / GiB) : undefined,
                });
                log(`  iscsi-perf ${lun} ${job.id}: ${r.value.toFixed(1)} ${job.unit}`);
              } catch (e) {
                errors.push(
                  `run ${runNo} ${digest} iscsi-perf ${lun} ${job.id}: ${(e as Error).message}`,
                );
              }
            }
          }
        }
        if (want("qemu-img-bench")) {
          for (const job of o.jobs.filter((j) => QEMU_IMG_BENCH_JOBS[j.id])) {
            for (const [lun, iqn] of [["ram", RAM_IQN], ["null", NULL_IQN]] as const) {
              try {
                const r = await runQemuImgBench(job, lunUri(t, iqn), size, o.runtime);
                samples.push({
                  run: runNo,
                  digest,
                  lun,
                  contestant: "qemu-img-bench",
                  job: job.id,
                  ...r,
                  cpuSecPerGiB: r.bytes > 0 ? r.clientCpuSeconds / (r.bytes / GiB) : undefined,
                });
                log(`  qemu-img bench ${lun} ${job.id}: ${r.value.toFixed(1)} ${job.unit}`);
              } catch (e) {
                errors.push(
                  `run ${runNo} ${digest} qemu-img bench ${lun} ${job.id}: ${(e as Error).message}`,
                );
              }
            }
          }
        }
        await sleep(100);
      }
    }
  } finally {
    await cleanup();
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }

  const cells = summarize(samples);
  const rs = rows(cells, o.digests).filter((r) => o.jobs.some((j) => j.id === r.job));
  const isbootCells = cells.filter((c) => c.contestant === "isboot");
  extras.readyMsMedian = Object.fromEntries(
    Object.entries(readyMs).map(([k, v]) => [k, median(v)]),
  );
  extras.isbootServeMaxRssKiB = Math.max(0, ...isbootCells.map((c) => c.rssKiB ?? 0)) || undefined;
  extras.isbootServeHwmKiB = Math.max(0, ...isbootCells.map((c) => c.hwmKiB ?? 0)) || undefined;
  extras.isbootServeMaxAnonKiB = Math.max(0, ...isbootCells.map((c) => c.anonKiB ?? 0)) ||
    undefined;
  const qemuCells = cells.filter((c) => c.contestant === "qemu-nbd");
  extras.qemuNbdMaxRssKiB = Math.max(0, ...qemuCells.map((c) => c.rssKiB ?? 0)) || undefined;
  extras.qemuNbdMaxAnonKiB = Math.max(0, ...qemuCells.map((c) => c.anonKiB ?? 0)) || undefined;

  const md = table(rs);
  const git = await run("git", ["describe", "--always", "--dirty"]).catch(() => null);
  const meta = {
    date: new Date().toISOString(),
    commit: git?.code === 0 ? git.stdout.trim() : undefined,
    host: { cpus: navigator.hardwareConcurrency, kernel: Deno.osRelease(), load: Deno.loadavg() },
    options: { ...o, jobs: o.jobs.map((j) => j.id) },
  };
  console.log(`\n${md}\n`);
  console.log(extrasText(extras));
  if (errors.length) console.log(`\nerrors (${errors.length}):\n- ${errors.join("\n- ")}`);
  if (o.out) {
    await Deno.mkdir(o.out, { recursive: true });
    await Deno.writeTextFile(
      `${o.out}/results.json`,
      JSON.stringify({ meta, rows: rs, cells, samples, extras, errors }, null, 2) + "\n",
    );
    await Deno.writeTextFile(
      `${o.out}/chart.svg`,
      chart(rs, `isboot bench ${meta.date.slice(0, 16)}Z: % of ceiling (medians of ${o.runs})`),
    );
    await Deno.writeTextFile(
      `${o.out}/table.md`,
      `<!-- written by bench/run.ts ${meta.date} -->\n${md}\n\n${extrasText(extras)}\n`,
    );
    console.log(`\nwrote ${o.out}/results.json, chart.svg, table.md`);
  }
}

function extrasText(x: Record<string, unknown>): string {
  const g = (k: string) =>
    x[k] as Record<string, number | string | boolean | undefined> | undefined;
  const ms = (
    v?: number | string | boolean,
  ) => (typeof v === "number" ? `${v.toFixed(1)} ms` : "—");
  const mib = (
    v?: number | string | unknown,
  ) => (typeof v === "number" ? `${(v / 1024).toFixed(1)} MiB` : "—");
  const ready = (x.readyMsMedian ?? {}) as Record<string, number>;
  return [
    "| figure | isboot | libiscsi / qemu-nbd |",
    "| --- | --- | --- |",
    `| start-up (\`--version\`), wall | ${ms(g("isbootVersion")?.medianMs)} | — |`,
    `| start-up max RSS | ${mib(g("isbootVersion")?.medianMaxRssKiB)} | — |`,
    `| login + inventory (\`isboot probe\` / \`iscsi-inq\`), wall | ${
      ms(g("isbootProbe")?.medianMs)
    }${g("isbootProbe")?.ok === false ? " (failed)" : ""} | ${ms(g("iscsiInq")?.medianMs)} |`,
    `| spawn to NBD export ready (\`serve\` / \`qemu-nbd\`), no digests | ${
      ms(ready["isboot/none"])
    } | ${ms(ready["qemu-nbd/none"])} |`,
    `| steady RSS under load (max VmRSS) | ${mib(x.isbootServeMaxRssKiB)} | ${
      mib(x.qemuNbdMaxRssKiB)
    } |`,
    `| steady anonymous RSS under load (max RssAnon: no file pages) | ${
      mib(x.isbootServeMaxAnonKiB)
    } | ${mib(x.qemuNbdMaxAnonKiB)} |`,
    `| VmHWM after load | ${mib(x.isbootServeHwmKiB)} | — |`,
  ].join("\n");
}

if (import.meta.main) {
  try {
    await main();
  } catch (e) {
    console.error(`bench: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
