/**
 * The control socket of a running isboot daemon (`attach`, `boot`): one unix
 * socket per attached device, `/run/isboot/nbdN.ctl`, mode 0600 in a 0700
 * directory. `isboot status` asks every socket there; `attach --takeover`
 * asks the old daemon to let go of its device.
 *
 * Protocol: the client sends one JSON request line, the daemon answers one
 * JSON line and closes. Lines are at most 1 MiB. Requests:
 * - `{"cmd":"status"}` → `{"ok":true,"status":SessionStatus}`
 * - `{"cmd":"detach"}` → the daemon disconnects its device and exits
 * - `{"cmd":"release"}` → the daemon drains (stops reading at a request
 *   boundary, answers what it read), half-closes its NBD sockets without
 *   disconnecting (the kernel marks them dead, sends LINK_DEAD and holds
 *   I/O for DEAD_CONN_TIMEOUT) and exits: the hand-over step of a takeover
 *   (docs/kernel.md "Takeover under I/O").
 * - `{"cmd":"resize"}` → `{"ok":true,"resize":ResizeReport}`: the daemon
 *   reads its LUN's capacity again and grows the kernel device to it (`isboot
 *   resize`; docs/kernel.md, "Growing a live device"). A smaller capacity is
 *   refused, not applied: `"outcome":"refused"`.
 * - `{"cmd":"handover"}` → `{"ok":true,"handover":Handover}`: what a new
 *   isboot needs to serve the same device in this daemon's place (`isboot
 *   takeover`, run by package upgrades; docs/boot.md "Live upgrade"). It
 *   carries the CHAP secrets the daemon logged in with: the socket is root's
 *   alone (mode 0600, directory 0700), like the daemon's own memory.
 * Errors: `{"ok":false,"error":"..."}`. No other reply carries a secret.
 *
 * @example
 * ```ts
 * const srv = await ControlServer.listen(controlPath(0), async (req) => ({ ok: true, status: get() }));
 * const reply = await controlRequest(controlPath(0), { cmd: "status" });
 * ```
 */
import { OperationalError } from "../errors.ts";
import type { ResizeReport } from "../nbd/attach.ts";
import type { GuardStatus } from "../net/guard.ts";
import type { LeaseEntry } from "../net/dhcp/acquire.ts";
import { type ProcessMemory, processMemory } from "../sys/process.ts";
import { VERSION } from "../version.ts";

/** Where control sockets live. */
export const CONTROL_DIR = "/run/isboot";
/** Largest request or reply line. */
export const MAX_CONTROL_LINE = 1 << 20;

/** The control socket path of /dev/nbdN. */
export function controlPath(index: number, dir = CONTROL_DIR): string {
  return `${dir}/nbd${index}.ctl`;
}

/** What a daemon reports about itself (field names are part of `status --json`). */
export interface SessionStatus {
  pid: number;
  /** "/dev/nbdN" */
  device: string;
  /** The target as given, with any secret removed. */
  target: string;
  /** /sys/block/nbdN/backend */
  backend: string;
  startedAt: string;
  uptimeSec: number;
  sizeBytes: string;
  blockSize: number;
  readOnly: boolean;
  /** NBD connections (kernel sockets) open now. */
  connections: number;
  requests: number;
  bytesRead: number;
  bytesWritten: number;
  errors: number;
  /** Connection recoveries below the BlockDevice (iSCSI reconnects). */
  reconnects: number;
  /** Extra facts of the backend (iSCSI session parameters...), no secrets. */
  session?: Record<string, unknown>;
  /** The boot NIC guard of `isboot boot`, one entry per boot NIC (absent for `attach`). */
  guard?: GuardStatus[];
  /** With multipath: each path, in the order of the portals. */
  paths?: PathEntry[];
  /** The boot NIC's DHCP lease, when the boot's network came from DHCP. */
  lease?: LeaseEntry;
  /** The serving isboot's version. */
  version?: string;
  /** The serving process's executable (`/proc/PID/exe`; " (deleted)" once a package replaced it). */
  executable?: string;
  /** The serving process's memory now (docs/boot.md "Memory"). */
  memory?: DaemonMemory;
}

/**
 * A daemon's memory: the kernel's counts (/proc/self/status) and V8's
 * (heap in use and reserved, ArrayBuffer stores outside the heap), bytes.
 */
export interface DaemonMemory extends Partial<ProcessMemory> {
  heapUsedBytes: number;
  heapTotalBytes: number;
  externalBytes: number;
}

/**
 * This process's {@link DaemonMemory}.
 *
 * @example
 * ```ts
 * selfMemory().heapUsedBytes; // 9437184
 * ```
 */
export function selfMemory(): DaemonMemory {
  const v8 = Deno.memoryUsage();
  return {
    ...(processMemory() ?? {}),
    heapUsedBytes: v8.heapUsed,
    heapTotalBytes: v8.heapTotal,
    externalBytes: v8.external,
  };
}

/** One path of a multipath device, as `status` shows it. */
export interface PathEntry {
  /** The portal, HOST:PORT. */
  portal: string;
  /** Our address on the path (its NIC's); empty while the path has no connection. */
  local: string;
  /** "active" carries commands; "standby" is logged in and idle; "down" is reconnecting. */
  state: "active" | "standby" | "down";
  /** ISO time since which the path has been down; null while up. */
  downSince: string | null;
  isid: string;
  tsih: number;
  /** Times the path went down, and times its session logged in again. */
  failures: number;
  reconnects: number;
  /** Commands sent on the path, and the bytes they moved. */
  commands: number;
  bytes: number;
}

/**
 * How to start a daemon that serves the same device: the boot daemon hands
 * over the kernel command line it read and the iBFT it booted from (the
 * table may be gone from /sys by now); an `attach` daemon its arguments
 * (without --daemon, --device, --takeover) and the secrets it took from the
 * environment.
 */
export type Handover =
  | {
    kind: "boot";
    /** The kernel command line the boot read. */
    cmdline: string;
    /** `isboot ibft --json --show-secrets` of the table it booted from; null: none. */
    ibft: Record<string, unknown> | null;
  }
  | { kind: "attach"; args: string[]; env: Record<string, string> };

export type ControlRequest =
  | { cmd: "status" }
  | { cmd: "detach" }
  | { cmd: "release" }
  | { cmd: "handover" }
  | { cmd: "resize" };
export type ControlReply =
  | { ok: true; status?: SessionStatus; handover?: Handover; resize?: ResizeReport }
  | { ok: false; error: string };

/** What {@link sessionStatus} is made of. */
export interface StatusParts {
  /** "/dev/nbdN" */
  device: string;
  target: string;
  backend: string;
  started: Date;
  size: bigint;
  blockSize: number;
  readOnly: boolean;
  counters: {
    readonly activeConnections: number;
    readonly requests: number;
    readonly bytesRead: number;
    readonly bytesWritten: number;
    readonly errors: number;
  };
  reconnects: number;
  session?: Record<string, unknown>;
  guard?: GuardStatus[];
  paths?: PathEntry[];
  lease?: LeaseEntry;
}

/**
 * A daemon's status now, as `isboot status` shows it: its parts plus this
 * process's pid, uptime, version and executable.
 *
 * @example
 * ```ts
 * const s = sessionStatus({ device: "/dev/nbd0", target, backend, started, size, blockSize: 512,
 *   readOnly: false, counters, reconnects: 0 });
 * ```
 */
export function sessionStatus(p: StatusParts): SessionStatus {
  const c = p.counters;
  return {
    pid: Deno.pid,
    device: p.device,
    target: p.target,
    backend: p.backend,
    startedAt: p.started.toISOString(),
    uptimeSec: Math.round((Date.now() - p.started.getTime()) / 1000),
    sizeBytes: String(p.size),
    blockSize: p.blockSize,
    readOnly: p.readOnly,
    connections: c.activeConnections,
    requests: c.requests,
    bytesRead: c.bytesRead,
    bytesWritten: c.bytesWritten,
    errors: c.errors,
    reconnects: p.reconnects,
    ...(p.session ? { session: p.session } : {}),
    ...(p.guard ? { guard: p.guard } : {}),
    ...(p.paths ? { paths: p.paths } : {}),
    ...(p.lease ? { lease: p.lease } : {}),
    ...selfIdentity(),
    memory: selfMemory(),
  };
}

/** The serving process's version and executable, for {@link SessionStatus}. */
export function selfIdentity(): { version: string; executable: string } {
  let executable = "";
  try {
    executable = Deno.readLinkSync("/proc/self/exe");
  } catch { /* no /proc: leave it empty */ }
  return { version: VERSION, executable };
}

/** Parse a request line; throws OperationalError for anything unknown. */
export function parseControlRequest(line: string): ControlRequest {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    throw new OperationalError("control: request is not JSON");
  }
  const cmd = typeof v === "object" && v !== null ? (v as { cmd?: unknown }).cmd : undefined;
  if (
    cmd === "status" || cmd === "detach" || cmd === "release" || cmd === "handover" ||
    cmd === "resize"
  ) {
    return { cmd };
  }
  throw new OperationalError(`control: unknown request ${JSON.stringify(cmd)?.slice(0, 40)}`);
}

async function readLine(conn: Deno.Conn, timeoutMs: number): Promise<string> {
  const buf = new Uint8Array(65536);
  const parts: Uint8Array[] = [];
  let total = 0;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const n = await Promise.race([
      conn.read(buf),
      new Promise<"timeout">((
        r,
      ) => (timer = setTimeout(() => r("timeout"), Math.max(0, deadline - Date.now())))),
    ]).finally(() => clearTimeout(timer));
    if (n === "timeout") throw new OperationalError("control: timed out waiting for a line");
    if (n === null) break;
    const chunk = buf.slice(0, n);
    const nl = chunk.indexOf(10);
    parts.push(nl >= 0 ? chunk.subarray(0, nl) : chunk);
    total += n;
    if (nl >= 0) break;
    if (total > MAX_CONTROL_LINE) throw new OperationalError("control: line too long");
  }
  const all = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let off = 0;
  for (const p of parts) {
    all.set(p, off);
    off += p.length;
  }
  return new TextDecoder().decode(all);
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await conn.write(data.subarray(off));
}

/** A handler's answer: the reply, and what to do once it is sent. */
export interface ControlAnswer {
  reply: ControlReply;
  after?: () => void;
}

/**
 * A daemon's control socket. The handler answers each request (at once, or
 * later: `resize` waits for a READ CAPACITY); the reply is sent before
 * `after` (e.g. exiting) runs.
 */
export class ControlServer {
  readonly path: string;
  #listener: Deno.Listener;
  #loop: Promise<void>;
  #ino: number | null = null;

  private constructor(
    path: string,
    listener: Deno.Listener,
    loop: (l: Deno.Listener) => Promise<void>,
  ) {
    this.path = path;
    this.#listener = listener;
    this.#loop = loop(listener);
  }

  /**
   * Listen on `path` (replacing a stale socket), mode 0600, in a 0700 directory.
   *
   * @example
   * ```ts
   * const srv = await ControlServer.listen("/run/isboot/nbd0.ctl", (req) => ({ reply: { ok: true } }));
   * ```
   */
  static async listen(
    path: string,
    handler: (req: ControlRequest) => ControlAnswer | Promise<ControlAnswer>,
  ): Promise<ControlServer> {
    const dir = path.replace(/\/[^/]*$/, "") || "/";
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    await Deno.chmod(dir, 0o700);
    if (await isLive(path)) {
      throw new OperationalError(`control socket ${path} is in use by a running isboot`);
    }
    await Deno.remove(path).catch(() => {});
    const listener = Deno.listen({ transport: "unix", path });
    await Deno.chmod(path, 0o600);
    const ino = (await Deno.lstat(path)).ino;
    const srv = new ControlServer(path, listener, async (l) => {
      for await (const conn of l) {
        void (async () => {
          const enc = new TextEncoder();
          let after: (() => void) | undefined;
          try {
            let reply: ControlReply;
            try {
              const r = await handler(parseControlRequest(await readLine(conn, 5000)));
              reply = r.reply;
              after = r.after;
            } catch (e) {
              reply = { ok: false, error: e instanceof Error ? e.message : String(e) };
            }
            await writeAll(conn, enc.encode(JSON.stringify(reply) + "\n"));
          } catch {
            // the client went away
          } finally {
            try {
              conn.close();
            } catch { /* closed */ }
          }
          after?.();
        })();
      }
    });
    srv.#ino = ino;
    return srv;
  }

  /** Stop listening and remove the socket file. */
  async close(): Promise<void> {
    try {
      this.#listener.close();
    } catch { /* closed */ }
    await this.#loop.catch(() => {});
    // Remove only our own socket: after a takeover the path may be the new daemon's.
    const st = await Deno.lstat(this.path).catch(() => null);
    if (st && st.ino === this.#ino) await Deno.remove(this.path).catch(() => {});
  }
}

/**
 * The answer to `resize`: the report, or the failure (a READ CAPACITY that
 * failed, a kernel that refused the size) as an error reply.
 *
 * @example
 * ```ts
 * case "resize": return answerResize(() => attachment.resize());
 * ```
 */
export async function answerResize(resize: () => Promise<ResizeReport>): Promise<ControlAnswer> {
  try {
    return { reply: { ok: true, resize: await resize() } };
  } catch (e) {
    return { reply: { ok: false, error: e instanceof Error ? e.message : String(e) } };
  }
}

async function isLive(path: string): Promise<boolean> {
  try {
    const c = await Deno.connect({ transport: "unix", path });
    c.close();
    return true;
  } catch {
    return false;
  }
}

/**
 * Send one request to a daemon and return its reply. Throws
 * OperationalError when nobody answers.
 *
 * @example
 * ```ts
 * const r = await controlRequest("/run/isboot/nbd0.ctl", { cmd: "status" });
 * ```
 */
export async function controlRequest(
  path: string,
  req: ControlRequest,
  timeoutMs = 5000,
): Promise<ControlReply> {
  let conn: Deno.Conn;
  try {
    conn = await Deno.connect({ transport: "unix", path });
  } catch (e) {
    throw new OperationalError(`control socket ${path}: ${e instanceof Error ? e.message : e}`);
  }
  try {
    await writeAll(conn, new TextEncoder().encode(JSON.stringify(req) + "\n"));
    const line = await readLine(conn, timeoutMs);
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch {
      throw new OperationalError(`control socket ${path}: reply is not JSON`);
    }
    if (typeof v !== "object" || v === null || typeof (v as { ok?: unknown }).ok !== "boolean") {
      throw new OperationalError(`control socket ${path}: malformed reply`);
    }
    return v as ControlReply;
  } finally {
    try {
      conn.close();
    } catch { /* closed */ }
  }
}

/** Control sockets present in `dir` (`nbdN.ctl`), by device index. */
export async function listControlSockets(
  dir = CONTROL_DIR,
): Promise<{ index: number; path: string }[]> {
  const out: { index: number; path: string }[] = [];
  try {
    for await (const e of Deno.readDir(dir)) {
      const m = /^nbd(\d+)\.ctl$/.exec(e.name);
      if (m) out.push({ index: Number(m[1]), path: `${dir}/${e.name}` });
    }
  } catch {
    // no directory: no daemons
  }
  return out.sort((a, b) => a.index - b.index);
}

/**
 * The control socket of a device this process serves beside another (the
 * target's other LUNs, `attach --luns`, `isboot.luns=`): status, detach and
 * resize of this device alone; release and handover refused, since a
 * successor would take over `beside` only.
 *
 * @example
 * ```ts
 * const ctl = await listenBesideControl(controlPath(1), "/dev/nbd1", "/dev/nbd0", status, () => a.disconnect(), () => a.resize());
 * ```
 */
export function listenBesideControl(
  path: string,
  device: string,
  beside: string,
  status: () => SessionStatus,
  disconnect: () => void,
  resize: () => Promise<ResizeReport>,
): Promise<ControlServer> {
  return ControlServer.listen(path, (req) => {
    switch (req.cmd) {
      case "status":
        return { reply: { ok: true, status: status() } };
      case "detach":
        return { reply: { ok: true }, after: disconnect };
      case "resize":
        return answerResize(resize);
      case "release":
      case "handover":
        return {
          reply: { ok: false, error: `${device} is served with ${beside}; not handed over` },
        };
    }
  });
}
