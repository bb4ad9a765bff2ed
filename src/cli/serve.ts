/**
 * `isboot serve TARGET --listen unix:PATH|tcp:[HOST:]PORT`: export a LUN
 * (or an in-memory disk, `memory:SIZE`) over NBD to any number of clients.
 */
import type { BlockDevice } from "../blockdev.ts";
import { InvalidInputError, OperationalError, UsageError } from "../errors.ts";
import { MemoryDevice, parseSize } from "../memory_device.ts";
import { describeAddr, listenNbd, parseListenAddress } from "../nbd/listen.ts";
import { NbdServer } from "../nbd/server.ts";
import { denoConnStream } from "../nbd/stream.ts";
import { parseCommand } from "./args.ts";
import type { Command, CommandContext } from "./context.ts";

const USAGE = `usage: isboot serve TARGET --listen unix:PATH|tcp:[HOST:]PORT [options]

Export TARGET over NBD (fixed newstyle, structured replies, many requests in
flight) to any number of clients: qemu, libnbd tools (nbdinfo, nbdcopy, nbdsh),
nbd-client.

TARGET:
  iscsi://[user@]host[:port]/target-iqn/lun   an iSCSI LUN (secrets from files or the environment)
  memory:SIZE                                 an in-memory disk, e.g. memory:256M (tests, demos)

options:
  --listen ADDR          unix:PATH (socket created mode 0600), tcp:PORT (binds 127.0.0.1),
                         tcp:HOST:PORT or tcp:[IPV6]:PORT
  --export-name NAME     export name (default: IQN/LUN for iSCSI, "memory" for memory:);
                         clients may also ask for "" (the default export)
  --description TEXT     description shown to clients
  --read-only            refuse writes (NBD_FLAG_READ_ONLY)
  --block-size N         memory: logical block size (default 512)
  --debug                log every connection and failed request

SIGINT/SIGTERM: stop accepting, finish requests in flight, flush, exit 0.
`;

const OPTIONS = {
  listen: { type: "string" },
  "export-name": { type: "string" },
  description: { type: "string" },
  "read-only": { type: "boolean" },
  "block-size": { type: "string" },
} as const;

interface Backend {
  device: BlockDevice;
  name: string;
  description: string;
}

function openBackend(
  target: string,
  opts: { blockSize?: string; readOnly: boolean },
): Promise<Backend> {
  if (target.startsWith("memory:")) {
    const size = parseSize(target.slice(7));
    const bs = opts.blockSize === undefined ? 512 : Number(opts.blockSize);
    if (!Number.isInteger(bs) || bs < 1 || bs > 65536) {
      throw new UsageError(`--block-size '${opts.blockSize}': expected 1..65536`);
    }
    const device = new MemoryDevice({ size, blockSize: bs, readOnly: opts.readOnly });
    return Promise.resolve({
      device,
      name: "memory",
      description: `in-memory disk, ${size} bytes`,
    });
  }
  if (target.startsWith("iscsi://")) {
    throw new OperationalError("serve: iSCSI targets are not wired in yet; use memory:SIZE");
  }
  throw new InvalidInputError(`target '${target}': expected iscsi://... or memory:SIZE`);
}

async function run(args: string[], ctx: CommandContext): Promise<number> {
  const p = parseCommand(args, OPTIONS, USAGE, ctx);
  if (!p) return 0;
  const v = p.values;
  if (p.positionals.length !== 1) throw new UsageError("serve: expected one TARGET (see --help)");
  if (!v.listen) throw new UsageError("serve: --listen is required (see --help)");
  const addr = parseListenAddress(v.listen);
  const backend = await openBackend(p.positionals[0], {
    blockSize: v["block-size"],
    readOnly: v["read-only"] ?? false,
  });
  const { device } = backend;
  const log = ctx.log;
  let listener: Deno.Listener;
  try {
    listener = await listenNbd(addr);
  } catch (e) {
    await device.close();
    throw e;
  }
  const name = v["export-name"] ?? backend.name;
  const server = new NbdServer({
    exports: [{
      name,
      description: v.description ?? backend.description,
      device,
      readOnly: v["read-only"],
    }],
    log,
  });
  // Signal handlers go in before the first log line: whoever reads it may
  // send SIGTERM at once.
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    log.info("stopping: finishing requests in flight");
    try {
      listener.close();
    } catch {
      // already closed
    }
  };
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  for (const s of signals) Deno.addSignalListener(s, stop);
  log.info(
    `listening on ${describeAddr(listener.addr)}: export "${name}", ${device.size} bytes, ` +
      `block ${device.blockSize}${device.readOnly || v["read-only"] ? ", read-only" : ""}`,
  );

  const sessions = new Set<Promise<void>>();
  try {
    for await (const conn of listener) {
      if (conn.remoteAddr.transport === "tcp") (conn as Deno.TcpConn).setNoDelay(true);
      log.debug(`client from ${describeAddr(conn.remoteAddr)}`);
      const s = server.serve(denoConnStream(conn));
      sessions.add(s);
      void s.finally(() => sessions.delete(s));
    }
  } catch (e) {
    if (!stopping) throw new OperationalError(`accept failed: ${(e as Error).message}`);
  } finally {
    for (const s of signals) Deno.removeSignalListener(s, stop);
  }
  await server.shutdown();
  await Promise.allSettled([...sessions]);
  try {
    await device.flush();
  } finally {
    await device.close();
  }
  const c = server.counters;
  log.info(
    `stopped: ${c.connections} connections, ${c.requests} requests, ` +
      `${c.bytesRead} bytes read, ${c.bytesWritten} bytes written, ${c.errors} errors`,
  );
  return 0;
}

export const serveCommand: Command = {
  summary: "export a LUN (or memory:SIZE) over NBD on a unix socket or TCP",
  run,
};
