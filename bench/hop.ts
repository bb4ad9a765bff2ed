/**
 * What one Deno process costs per hop, against C, with nothing of isboot
 * in it: a 32-byte ping-pong client (C) talks over a unix socket to a relay
 * that forwards to a TCP echo server on loopback (C), the same path as NBD
 * client -> isboot serve -> tgtd at queue depth 1. The relay is once the
 * smallest possible C program (epoll, read, write) and once the smallest
 * possible Deno program (two read/write loops). The difference is the
 * runtime's floor per request/response round trip, to set against the gap
 * between `isboot serve` and `qemu-nbd` at 4 KiB QD1 in bench/run.ts.
 * Two more Deno relays (hop/ffirelay.ts) do their socket I/O through libc
 * instead of Deno's ops, blocking in epoll_wait on a pool thread or first
 * polling epoll for a while: what a data path on FFI sockets would cost.
 *
 * Usage: deno run -A bench/hop.ts [--trips 30000] [--runs 3]   (needs cc)
 */
import { parseArgs } from "node:util";
import { freePort, median, run, sleep } from "./lib/proc.ts";

const here = new URL(".", import.meta.url).pathname;
/** How long the spinning FFI relay polls before it blocks. */
const SPIN_US = 50;

async function build(dir: string): Promise<void> {
  for (const n of ["relay", "tcpecho", "ping"]) {
    await run("cc", ["-O2", "-o", `${dir}/${n}`, `${here}hop/${n}.c`], { check: true });
  }
}

/** C, Deno's own I/O, libc through FFI blocking on a pool thread, the same polling first. */
type Relay = "c" | "deno" | "ffi" | "ffi-spin";

/** One measurement: microseconds per round trip through the given relay. */
async function trip(dir: string, relay: Relay, trips: number): Promise<number> {
  const port = freePort();
  const sock = `${dir}/relay.sock`;
  await Deno.remove(sock).catch(() => {});
  const echo = new Deno.Command(`${dir}/tcpecho`, { args: [String(port)] }).spawn();
  await sleep(200);
  const deno = (script: string, ...more: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", `${here}hop/${script}`, sock, String(port), ...more],
    }).spawn();
  const r = relay === "c"
    ? new Deno.Command(`${dir}/relay`, { args: [sock, String(port)] }).spawn()
    : relay === "deno"
    ? deno("relay.ts")
    : deno("ffirelay.ts", relay === "ffi-spin" ? String(SPIN_US) : "0");
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
    const kinds: Relay[] = ["c", "deno", "ffi", "ffi-spin"];
    const us = new Map<Relay, number[]>(kinds.map((k) => [k, []]));
    for (let i = 0; i < Number(values.runs); i++) {
      for (const k of kinds) us.get(k)!.push(await trip(dir, k, Number(values.trips)));
    }
    const m = (k: Relay) => median(us.get(k)!);
    const mc = m("c"), md = m("deno");
    const vsC = (k: Relay) => {
      const d = m(k) - mc;
      return `${m(k).toFixed(1)} (${d >= 0 ? "+" : ""}${d.toFixed(1)} against C)`;
    };
    console.log(
      `| relay (unix -> TCP echo, 32 B ping-pong) | µs per round trip (median of ${
        us.get("c")!.length
      }) |`,
    );
    console.log("| --- | --- |");
    console.log(`| C (epoll, read, write) | ${mc.toFixed(1)} |`);
    console.log(`| Deno (two read/write loops) | ${md.toFixed(1)} |`);
    console.log(
      `| Deno runtime's cost per hop | +${(md - mc).toFixed(1)} µs (${(md / mc).toFixed(2)}×) |`,
    );
    console.log(`| Deno, libc sockets via FFI, epoll_wait on a pool thread | ${vsC("ffi")} |`);
    console.log(
      `| Deno, libc sockets via FFI, epoll polled for ${SPIN_US} µs first | ${vsC("ffi-spin")} |`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) await main();
