/**
 * The NBD servers that compete: isboot serve, qemu-nbd through libiscsi, and
 * nbdkit memory as the NBD ceiling with no iSCSI at all; `isboot serve
 * memory:SIZE` isolates isboot's own NBD layer against that ceiling.
 */
import { alive, type Child, run, spawnLogged, stop } from "./proc.ts";
import { waitReady } from "./nbd_ready.ts";
import { type Digest, digestKeys } from "./tgtd.ts";

export type ContestantId = "isboot" | "qemu-nbd" | "nbdkit-memory" | "isboot-memory";

export interface ServerStart {
  /** iscsi:// URI of the LUN (ignored by nbdkit-memory). */
  uri: string;
  digest: Digest;
  socketPath: string;
  logPath: string;
  /** LUN size in bytes (nbdkit-memory makes a disk of this size). */
  size: number;
  /** A file with the LUN's initial content, copied into nbdkit-memory. */
  seedImage: string;
  isbootBin: string;
}

export interface RunningServer {
  child: Child;
  /** Spawn to NBD_OPT_GO acknowledged, in ms. */
  readyMs: number;
  size: bigint;
}

function commandFor(id: ContestantId, s: ServerStart): [string, string[]] {
  switch (id) {
    case "isboot":
      return [s.isbootBin, [
        "serve",
        s.uri,
        "--listen",
        `unix:${s.socketPath}`,
        "--header-digest",
        digestKeys(s.digest).header,
        "--data-digest",
        digestKeys(s.digest).data,
      ]];
    case "qemu-nbd":
      // libiscsi offers HeaderDigest=None,CRC32C and always DataDigest=None, so the
      // target's setting decides the header digest and data digests stay off.
      // --shared=0: any number of clients (nbdcopy opens several when multi-conn is on).
      return ["qemu-nbd", ["-f", "raw", "--socket", s.socketPath, "--shared=0", "-t", s.uri]];
    case "nbdkit-memory":
      return ["nbdkit", ["-f", "-U", s.socketPath, "memory", `size=${s.size}`]];
    case "isboot-memory":
      return [s.isbootBin, ["serve", `memory:${s.size}`, "--listen", `unix:${s.socketPath}`]];
  }
}

/**
 * Start a contestant and wait until its export answers NBD_OPT_GO.
 *
 * @example
 * const srv = await startServer("qemu-nbd", opts);
 */
export async function startServer(id: ContestantId, s: ServerStart): Promise<RunningServer> {
  try {
    await Deno.remove(s.socketPath);
  } catch { /* not there */ }
  const [cmd, args] = commandFor(id, s);
  const child = spawnLogged(id, cmd, args, s.logPath);
  try {
    const { ms, size } = await waitReady(s.socketPath, 20_000, () => alive(child.pid));
    if (id === "nbdkit-memory" || id === "isboot-memory") {
      // Same bytes as the LUN, so reads are not of never-written (cheap) memory.
      await run("nbdcopy", [s.seedImage, `nbd+unix:///?socket=${s.socketPath}`], { check: true });
    }
    return { child, readyMs: ms, size };
  } catch (e) {
    await stop(child, 1000);
    const log = await Deno.readTextFile(s.logPath).catch(() => "");
    const tail = log.trim().split("\n").slice(-3).join(" | ");
    throw new Error(`${id}: ${(e as Error).message}${tail ? ` — log: ${tail}` : ""}`);
  }
}
