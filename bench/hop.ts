/**
 * What one Deno process costs per hop, against C, with nothing of isboot
 * in it: a 32-byte ping-pong client (C) talks over a unix socket to a relay
 * that forwards to a TCP echo server on loopback (C), the same path as NBD
 * client -> isboot serve -> tgtd at queue depth 1. The relay is once the
 * smallest possible C program (epoll, read, write) and once the smallest
 * possible Deno program (two read/write loops). The difference is the
 * runtime's floor per request/response round trip, to set against the gap
 * between `isboot serve` and `qemu-nbd` at 4 KiB QD1 in bench/run.ts.
 *
 * Usage: deno run -A bench/hop.ts [--trips 30000] [--runs 3]   (needs cc)
 */
import { parseArgs } from "node:util";
import { freePort, median, run, sleep } from "./lib/proc.ts";

const here = new URL(".", import.meta.url).pathname;

async function build(dir: string): Promise<void> {
  for (const n of ["relay", "tcpecho", "ping"]) {
    await run("cc", ["-O2", "-o", `${dir}/${n}`, `${here}hop/${n}.c`], { check: true });
  }
}

/** One measurement: microseconds per round trip through the given relay. */
async function trip(dir: string, relay: "c" | "deno", trips: number): Promise<number> {
  const port = freePort();
  const sock = `${dir}/relay.sock`;
  await Deno.remove(sock).catch(() => {});
  const echo = new Deno.Command(`${dir}/tcpecho`, { args: [String(port)] }).spawn();
  await sleep(200);
  const r = relay === "c"
    ? new Deno.Command(`${dir}/relay`, { args: [sock, String(port)] }).spawn()
    : new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", `${here}hop/relay.ts`, sock, String(port)],
    }).spawn();
  try {
    for (let i = 0; i < 100; i++) {
      try {
        await Deno.stat(sock);
        break;
      } catch {
        await sleep(20);
      }
    }
    const out = await run(`${dir}/ping`, [sock, String(trips)], { check: true });
    const us = Number(/([\d.]+) us per round trip/.exec(out.stdout)?.[1]);
    if (!Number.isFinite(us)) throw new Error(`ping printed: ${out.stdout}`);
    return us;
  } finally {
    for (const c of [r, echo]) {
      try {
        c.kill("SIGKILL");
      } catch { /* gone */ }
      await c.status;
    }
  }
}

async function main() {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      trips: { type: "string", default: "30000" },
      runs: { type: "string", default: "3" },
    },
  });
  const dir = await Deno.makeTempDir({ prefix: "isboot-hop-" });
  try {
    await build(dir);
    const c: number[] = [], d: number[] = [];
    for (let i = 0; i < Number(values.runs); i++) {
      c.push(await trip(dir, "c", Number(values.trips)));
      d.push(await trip(dir, "deno", Number(values.trips)));
    }
    const mc = median(c), md = median(d);
    console.log(
      `| relay (unix -> TCP echo, 32 B ping-pong) | µs per round trip (median of ${c.length}) |`,
    );
    console.log("| --- | --- |");
    console.log(`| C (epoll, read, write) | ${mc.toFixed(1)} |`);
    console.log(`| Deno (two read/write loops) | ${md.toFixed(1)} |`);
    console.log(
      `| Deno runtime's cost per hop | +${(md - mc).toFixed(1)} µs (${(md / mc).toFixed(2)}×) |`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) await main();
