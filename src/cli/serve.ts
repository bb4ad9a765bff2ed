/**
 * `isboot serve TARGET --listen unix:PATH|tcp:[HOST:]PORT`: export a LUN
 * (or an in-memory disk, `memory:SIZE`) over NBD to any number of clients.
 */
import type { BlockDevice } from "../blockdev.ts";
import { InvalidInputError, OperationalError, UsageError } from "../errors.ts";
import { MemoryDevice, parseSize } from "../memory_device.ts";
import { describeAddr, listenNbd, type NbdListener, parseListenAddress } from "../nbd/listen.ts";
import { IoBudget, reserveIoBuffers } from "../nbd/buffers.ts";
import { NbdServer } from "../nbd/server.ts";
import { limitMallocRetention } from "../sys/process.ts";
import { openTarget } from "../iscsi/open_target.ts";
import { blockSizeOption, parseCommand } from "./args.ts";
import type { Command, CommandContext } from "./context.ts";
import {
  MULTIPATH_HELP,
  MULTIPATH_OPTION,
  multipathFor,
  sessionConfigFromUri,
  TARGET_OPTIONS,
  TARGET_OPTIONS_HELP,
} from "./target_options.ts";

const USAGE = `usage: isboot serve TARGET --listen unix:PATH|tcp:[HOST:]PORT [options]

Export TARGET over NBD (fixed newstyle, structured replies, many requests in
flight) to any number of clients: qemu, libnbd tools (nbdinfo, nbdcopy, nbdsh),
nbd-client.

TARGET:
  iscsi://[user@]host[:port]/target-iqn/lun   an iSCSI LUN (IPv6 in brackets; also the RFC 4173
                                              form iscsi:host:proto:port:lun:target-iqn)
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

${TARGET_OPTIONS_HELP}${MULTIPATH_HELP}
Each new client is told the LUN's size as READ CAPACITY says it then: a LUN
grown on the target reaches new clients; connected ones keep the size they
were told (NBD cannot tell them of a change).
SIGINT/SIGTERM: stop accepting, finish requests in flight, flush, log out, exit 0.
exit codes: 0 ok, 1 unreachable/refused/cannot listen, 2 usage, 3 invalid TARGET, 4 authentication failed
`;

const OPTIONS = {
  listen: { type: "string" },
  "export-name": { type: "string" },
  description: { type: "string" },
  "read-only": { type: "boolean" },
  "block-size": { type: "string" },
  ...TARGET_OPTIONS,
  ...MULTIPATH_OPTION,
} as const;

interface Backend {
  device: BlockDevice;
  name: string;
  description: string;
  /** Flush is done by the caller; this releases the device (and logs out). */
  close(): Promise<void>;
}

type Values = ReturnType<typeof parseValues>;
function parseValues(args: string[], ctx: CommandContext) {
  return parseCommand(args, OPTIONS, USAGE, ctx);
}

async function openBackend(
  target: string,
  values: NonNullable<Values>["values"],
  listen: string,
  ctx: CommandContext,
): Promise<Backend> {
  if (target.startsWith("memory:")) {
    const size = parseSize(target.slice(7));
    const bs = blockSizeOption(values["block-size"], 1) ?? 512;
    const device = new MemoryDevice({ size, blockSize: bs, readOnly: values["read-only"] });
    return {
      device,
      name: "memory",
      description: `in-memory disk, ${size} bytes`,
      close: () => device.close(),
    };
  }
  if (target.startsWith("iscsi:")) {
    if (values["block-size"] !== undefined) {
      throw new UsageError("--block-size is for memory: targets; a LUN has its own");
    }
    // A stable ISID per listening address: a restarted `serve` reinstates
    // its own stale session (RFC 7143 §4.2.7.x) without touching others'.
    const cfg = await sessionConfigFromUri(target, values, ctx.env, {
      isidPurpose: `serve ${listen}`,
    });
    const t = await openTarget(cfg, {
      log: ctx.log,
      multipath: multipathFor(values.multipath, values.portal),
    });
    const inv = t.inventory;
    const what = [inv.vendor, inv.product, inv.revision].filter((x) => x).join(" ");
    return {
      device: t.device,
      name: `${cfg.targetName}/${cfg.lun}`,
      description: what || `${cfg.targetName} LUN ${cfg.lun}`,
      close: () => t.close(),
    };
  }
  throw new InvalidInputError(`target '${target}': expected iscsi://... or memory:SIZE`);
}

async function run(args: string[], ctx: CommandContext): Promise<number> {
  const p = parseValues(args, ctx);
  if (!p) return 0;
  const v = p.values;
  if (p.positionals.length !== 1) throw new UsageError("serve: expected one TARGET (see --help)");
  if (!v.listen) throw new UsageError("serve: --listen is required (see --help)");
  const addr = parseListenAddress(v.listen);
  limitMallocRetention(); // a long-lived server: freed I/O buffers go back to the kernel
  const backend = await openBackend(p.positionals[0], v, v.listen, ctx);
  const { device } = backend;
  const log = ctx.log;
  let listener: NbdListener;
  try {
    listener = await listenNbd(addr);
  } catch (e) {
    await backend.close();
    throw e;
  }
  const name = v["export-name"] ?? backend.name;
  // Every request's buffers come from a reserve filled now, before the first
  // client: serving allocates nothing large (docs/boot.md, "Memory").
  const budget = new IoBudget();
  reserveIoBuffers(budget, log);
  const server = new NbdServer({
    exports: [{
      name,
      description: v.description ?? backend.description,
      device,
      readOnly: v["read-only"],
    }],
    log,
    budget,
    // A LUN grown on the target is what the next client is told (docs/nbd.md).
    refreshSizeOnConnect: true,
  });
  // Signal handlers go in before the first log line: whoever reads it may
  // send SIGTERM at once.
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    log.info("stopping: finishing requests in flight");
    listener.close();
  };
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  for (const s of signals) Deno.addSignalListener(s, stop);
  log.info(
    `listening on ${describeAddr(listener.addr)}: export "${name}", ${device.size} bytes, ` +
      `block ${device.blockSize}${device.readOnly || v["read-only"] ? ", read-only" : ""}`,
  );

  const sessions = new Set<Promise<void>>();
  try {
    for await (const stream of listener) {
      log.debug("client connected");
      const s = server.serve(stream);
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
  let flushError: unknown = null;
  try {
    if (!device.readOnly) await device.flush();
  } catch (e) {
    flushError = e;
  } finally {
    await backend.close();
  }
  const c = server.counters;
  log.info(
    `stopped: ${c.connections} connections, ${c.requests} requests, ` +
      `${c.bytesRead} bytes read, ${c.bytesWritten} bytes written, ${c.errors} errors`,
  );
  if (flushError !== null) {
    throw new OperationalError(`flush at exit failed: ${(flushError as Error).message}`);
  }
  return 0;
}

export const serveCommand: Command = {
  summary: "export a LUN (or memory:SIZE) over NBD on a unix socket or TCP",
  options: OPTIONS,
  run,
};
