/**
 * Where does `isboot serve` spend its CPU? Runs it from the source tree under
 * the V8 inspector, drives one fio job against it, and samples with the CDP
 * Profiler (Deno has no --cpu-prof). Prints self time by function and by file
 * and writes the .cpuprofile (open it in Chrome DevTools or speedscope).
 *
 * Usage: deno run -A bench/profile.ts [--target memory|iscsi] [--digest none|header|crc32c]
 *          [--job randwrite-qd32] [--runtime 8] [--size 256] [--out /tmp/isboot.cpuprofile]
 */
import { parseArgs } from "node:util";
import { alive, cpuSeconds, freePort, sleep, spawnLogged, stop } from "./lib/proc.ts";
import { JOBS, nbdUri, runFio, runNbdcopy } from "./lib/jobs.ts";
import { waitReady } from "./lib/nbd_ready.ts";
import { type Digest, digestKeys, lunUri, setDigestMode, Tgtd } from "./lib/tgtd.ts";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** A minimal Chrome DevTools Protocol client over the inspector's WebSocket. */
class Cdp {
  private next = 1;
  private pending = new Map<number, (v: Record<string, unknown>) => void>();
  private constructor(private ws: WebSocket) {
    ws.onmessage = (ev) => {
      const m = JSON.parse(ev.data as string);
      if (m.id && this.pending.has(m.id)) {
        this.pending.get(m.id)!(m.error ? { error: m.error } : m.result);
        this.pending.delete(m.id);
      }
    };
  }
  static async connect(port: number): Promise<Cdp> {
    let url = "";
    for (let i = 0; i < 200 && !url; i++) {
      try {
        const list = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
        url = list[0]?.webSocketDebuggerUrl ?? "";
      } catch { /* not up yet */ }
      if (!url) await sleep(25);
    }
    if (!url) throw new Error("inspector did not come up");
    const ws = new WebSocket(url);
    await new Promise((res, rej) => {
      ws.onopen = res;
      ws.onerror = rej;
    });
    return new Cdp(ws);
  }
  send(method: string, params: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    const id = this.next++;
    this.ws.send(JSON.stringify({ id, method, params }));
    return new Promise((r) => this.pending.set(id, r));
  }
  close() {
    this.ws.close();
  }
}

/** Self time per function and per file from a CDP profile. */
export function summarizeProfile(p: Profile, top = 25): string {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  p.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0)));
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const fn = new Map<string, number>();
  const file = new Map<string, number>();
  for (const [id, us] of self) {
    const f = byId.get(id)!.callFrame;
    const short = f.url.replace(/^file:\/\/\/work\/main\//, "").replace(
      /^.*node_modules\//,
      "npm:",
    );
    const key = `${f.functionName || "(anonymous)"} ${short}:${f.lineNumber + 1}`;
    fn.set(key, (fn.get(key) ?? 0) + us);
    const fk = short || `(${f.functionName})`;
    file.set(fk, (file.get(fk) ?? 0) + us);
  }
  const fmt = (m: Map<string, number>) =>
    [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, us]) =>
      `${(us / total * 100).toFixed(1).padStart(5)}%  ${
        (us / 1000).toFixed(0).padStart(6)
      } ms  ${k}`
    ).join("\n");
  return `sampled ${(total / 1e6).toFixed(2)} s\n-- self time by function --\n${
    fmt(fn)
  }\n-- by file --\n${fmt(file)}`;
}

async function main() {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      target: { type: "string", default: "memory" },
      digest: { type: "string", default: "none" },
      job: { type: "string", default: "randwrite-qd32" },
      runtime: { type: "string", default: "8" },
      size: { type: "string", default: "256" },
      out: { type: "string", default: "/tmp/isboot-serve.cpuprofile" },
      deno: { type: "string", default: Deno.execPath() },
    },
  });
  const job = JOBS.find((j) => j.id === values.job);
  if (!job) throw new Error(`unknown job ${values.job}`);
  const size = Number(values.size) * 2 ** 20;
  const work = await Deno.makeTempDir({ prefix: "isboot-prof-" });
  const sock = `${work}/s.sock`;
  let tgtd: Tgtd | null = null;
  let target = `memory:${size}`;
  const digest = values.digest as Digest;
  try {
    if (values.target === "iscsi") {
      const iqn = "iqn.2026-11.isboot.bench:prof";
      tgtd = await Tgtd.start();
      const tid = await tgtd.createTarget(iqn);
      await tgtd.addLun(tid, { lun: 1, size });
      await setDigestMode(tgtd, tid, digest);
      target = lunUri(tgtd, iqn);
    }
    const port = freePort();
    const args = [
      "run",
      "-A",
      `--inspect=127.0.0.1:${port}`,
      "main.ts",
      "serve",
      target,
      "--listen",
      `unix:${sock}`,
    ];
    if (values.target === "iscsi") {
      const k = digestKeys(digest);
      args.push("--header-digest", k.header, "--data-digest", k.data);
    }
    const child = spawnLogged("isboot", values.deno, args, `${work}/serve.log`);
    try {
      await waitReady(sock, 20_000, () => alive(child.pid));
      const cdp = await Cdp.connect(port);
      await cdp.send("Profiler.enable");
      await cdp.send("Profiler.setSamplingInterval", { interval: 200 });
      await cdp.send("Profiler.start");
      const c0 = cpuSeconds(child.pid);
      const r = job.id === "nbdcopy"
        ? await runNbdcopy(nbdUri(sock), size, Number(values.runtime))
        : await runFio(job, nbdUri(sock), Number(values.runtime), work);
      const cpu = cpuSeconds(child.pid) - c0;
      const { profile } = await cdp.send("Profiler.stop") as { profile: Profile };
      cdp.close();
      await Deno.writeTextFile(values.out, JSON.stringify(profile));
      console.log(
        `${job.id} on ${values.target} (${digest}): ${r.value.toFixed(1)} ${job.unit}, server CPU ${
          (cpu / (r.bytes / 2 ** 30)).toFixed(2)
        } s/GiB (${cpu.toFixed(2)} s over ${r.seconds.toFixed(1)} s)`,
      );
      console.log(summarizeProfile(profile));
      console.log(`profile: ${values.out}`);
    } finally {
      await stop(child);
    }
  } finally {
    if (tgtd) await tgtd.stop();
    await Deno.remove(work, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) await main();
