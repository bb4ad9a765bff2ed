/**
 * The fault matrix: each fault × each workload, driven through an NBD
 * server in front of a private tgtd, with the fault proxy in between.
 *
 *   libnbd client (workload.py) ──NBD/unix──► isboot serve ──iSCSI──► FaultProxy ──► tgtd
 *
 * After each row: every write the client saw acknowledged is in the backing
 * file, the client saw no error, the server is still running, and its VmRSS
 * stayed under a bound. The recovery time is measured on the wire: from the
 * fault to the first SCSI status that reaches the initiator afterwards (on a
 * new connection when the fault breaks the old one).
 *
 * Run the whole matrix and refresh docs/faults.md:
 *   deno run -A tests/faults/matrix.ts --write-docs
 * ISBOOT_FAULTS_TRACE=DIR writes, for every failing row, a file in DIR with
 * the row's notes, the server's last lines and the proxy's event log.
 * Compare with qemu-nbd over libiscsi (the baseline the project aims to beat):
 *   deno run -A tests/faults/matrix.ts --server qemu-nbd
 *
 * @example
 * ```ts
 * const row = await runRow(FAULTS[0], "seq-write-fua");
 * console.log(formatTable([row]));
 * ```
 */
import { isbootCommand, ROOT } from "../helpers/cli.ts";
import { exists } from "../helpers/fs.ts";
import { startTgtd } from "../helpers/tgtd.ts";
import { Tgtd } from "../../peers/tgtd.ts";
import { FaultProxy, type PduInfo, type ProxiedConnection } from "./proxy.ts";

export type Workload = "seq-write-fua" | "rand-write-flush" | "rand-read-verify";
export const WORKLOADS: Workload[] = ["seq-write-fua", "rand-write-flush", "rand-read-verify"];

/** Which NBD server sits in front of the target. */
export type ServerKind = "isboot" | "qemu-nbd";

/** Limits of one row. */
export const LIMITS = {
  /** The fault must be over (traffic flowing again) within this. */
  recoveryMs: 30_000,
  /** Traffic kept running after recovery, to show the session is healthy. */
  afterRecoveryMs: 1_000,
  /** The server must be listening within this. */
  startMs: 20_000,
  /** Bound on the server's resident memory during the row. */
  maxRssBytes: 384 * 1024 * 1024,
  /** Stall length. */
  stallMs: 5_000,
  /** How long tgtd stays dead before it is started again. */
  downMs: 2_000,
  /**
   * LUN size for the write workloads: large enough (4096 chunks of 64 KiB)
   * that a row rarely rewrites a chunk, so a write corrupted on its way to
   * the target is rarely hidden by a later one.
   */
  lunBytes: 256 * 1024 * 1024,
  /** LUN size for the read workload (filled with random bytes first). */
  readLunBytes: 64 * 1024 * 1024,
} as const;

const IQN = "iqn.2026-11.test:faults";
const INITIATOR = "iqn.2026-11.test:faults-initiator";
/** SCSI Response (RFC 7143 §11.4) and SCSI Data-In (§11.7) opcodes. */
const OPCODE_SCSI_RESPONSE = 0x21;
/** SCSI Command (§11.3), initiator to target. */
const OPCODE_SCSI_COMMAND = 0x01;
const OPCODE_DATA_IN = 0x25;
/** Task Management Function Request and Response (§11.5, §11.6). */
const OPCODE_TMF_REQUEST = 0x02;
const OPCODE_TMF_RESPONSE = 0x22;
/** Logout Request and Response (§11.14, §11.15). */
const OPCODE_LOGOUT_REQUEST = 0x06;
const OPCODE_LOGOUT_RESPONSE = 0x26;
/** Async Message event: the target requests a logout (§11.9.1). */
const ASYNC_LOGOUT_REQUEST = 1;
/** Task management function codes (§11.5.1) and responses (§11.6.1), for the notes. */
const TMF_LOGICAL_UNIT_RESET = 5;
const TMF_NAMES: Record<number, string> = {
  1: "ABORT TASK",
  [TMF_LOGICAL_UNIT_RESET]: "LOGICAL UNIT RESET",
};
const TMF_RESPONSES: Record<number, string> = {
  0: "function complete",
  1: "task does not exist",
  2: "LUN does not exist",
  255: "function rejected",
};
/** The command timeout the hung-command row gives `isboot serve`, seconds. */
const HUNG_COMMAND_TIMEOUT_S = 5;

/** What a fault gets to work with. */
export interface FaultContext {
  proxy: FaultProxy;
  tgt: Tgtd;
  tid: number;
  workload: Workload;
  /** Appends a note to the row. */
  note(msg: string): void;
  /** Fails the row with this note (a protocol rule the fault checks was broken). */
  fail(msg: string): void;
  /** The NBD server of the row (a fault's serverArgs go to isboot only). */
  server: ServerKind;
  /** Work the fault left running (awaited before cleanup). */
  background: Promise<unknown>[];
  /** The NBD server's process id. */
  serverPid: number;
  /**
   * Set by a fault whose recovery is a sequence the proxy can see (a Logout,
   * a task management exchange): the row waits for it, then for the next
   * SCSI status, and fails when it does not come within LIMITS.recoveryMs.
   */
  recoveredBy?: Promise<void>;
}

export interface Fault {
  name: string;
  /**
   * Whether the fault must end the connection (so recovery means a new
   * login), for a workload.
   */
  breaksConnection: boolean | ((w: Workload) => boolean);
  /**
   * Injects the fault; resolves at the moment it took effect (for a
   * corruption: when the byte was flipped).
   */
  inject(ctx: FaultContext): Promise<void>;
  /** Extra `isboot serve` options the row needs (not given to qemu-nbd). */
  serverArgs?: string[];
  /**
   * Start the server in a memory cgroup of its own (cgroup v1: every page it
   * touches from its start is charged there), for a fault that limits it.
   */
  ownMemoryCgroup?: boolean;
  /** Requests the client keeps in flight (default: 8 for seq-write-fua, 16 for the others). */
  depth?: number;
  /** The fault must be overcome on the same connection: a new one fails the row. */
  keepsConnection?: boolean;
  /**
   * isboot serves over two paths (`--portal P2 --multipath failover`), the
   * second through a proxy of its own that no fault touches: recovery is
   * the next status on either path (qemu-nbd serves the first path alone).
   */
  secondPath?: boolean;
}

/** How long the memory-cap row holds the cap before the row waits for recovery. */
const MEMORY_SQUEEZE_MS = 4_000;
/**
 * What the memory-cap row lets the server grow by: nothing. With 16 MiB the
 * server grew 0-4 MiB in the 4 s; with none, before it served from a
 * reserve, the random workloads ended in an OOM kill. It now holds its
 * buffers from the start and a lazily freed slack the kernel takes back for
 * what V8 still needs (docs/faults.md, "Memory pressure").
 */
const MEMORY_HEADROOM = 0;
/** The cgroup v1 memory controller's mount. */
const MEMCG = "/sys/fs/cgroup/memory";

/**
 * Limit the memory cgroup `pid` runs in ({@link Fault.ownMemoryCgroup}:
 * every page it has touched is charged there) to what it holds now plus
 * `headroom`. `release()` lifts the limit and reads what happened.
 */
async function squeezeMemory(pid: number, headroom: number): Promise<{
  release(): Promise<{
    limitMiB: number;
    grewMiB: number;
    failcnt: number;
    oomKills: number;
    /** The server's lazily freed memory (smaps LazyFree) before and after, MiB. */
    lazyFreeMiB: [number, number];
  }>;
}> {
  const cg = (await Deno.readTextFile(`/proc/${pid}/cgroup`)).match(/^\d+:memory:(\S+)$/m)?.[1];
  const dir = cg && /\/isboot-matrix-[0-9a-f]+$/.test(cg)
    ? `${MEMCG}${cg.replace(/^.*(\/isboot-matrix-)/, "$1")}`
    : undefined;
  if (!dir) throw new Error(`the server is not in a memory cgroup of its own (${cg ?? "none"})`);
  const r = async (f: string) => (await Deno.readTextFile(`${dir}/${f}`)).trim();
  const lazyFree = async () => {
    const t = await Deno.readTextFile(`/proc/${pid}/smaps_rollup`).catch(() => "");
    return Math.round(Number(/^LazyFree:\s+(\d+) kB$/m.exec(t)?.[1] ?? 0) / 1024 * 10) / 10;
  };
  const lazy0 = await lazyFree();
  const usage = Number(await r("memory.usage_in_bytes"));
  await Deno.writeTextFile(`${dir}/memory.max_usage_in_bytes`, "0");
  await Deno.writeTextFile(`${dir}/memory.limit_in_bytes`, String(usage + headroom));
  return {
    async release() {
      const failcnt = Number(await r("memory.failcnt"));
      const peak = Number(await r("memory.max_usage_in_bytes"));
      const oomKills = Number(/^oom_kill (\d+)$/m.exec(await r("memory.oom_control"))?.[1] ?? 0);
      const lazy1 = await lazyFree();
      await Deno.writeTextFile(`${dir}/memory.limit_in_bytes`, "-1");
      return {
        limitMiB: Math.round((usage + headroom) / (1 << 20)),
        grewMiB: Math.round(Math.max(0, peak - usage) / (1 << 20)),
        failcnt,
        oomKills,
        lazyFreeMiB: [lazy0, lazy1],
      };
    },
  };
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The next PDU the proxy forwards that `match` accepts. */
function nextPdu(
  proxy: FaultProxy,
  match: (conn: ProxiedConnection, pdu: PduInfo) => boolean,
): Promise<{ conn: ProxiedConnection; pdu: PduInfo; at: number }> {
  return new Promise((resolve) => {
    const off = proxy.onPdu((conn, pdu) => {
      if (!match(conn, pdu)) return;
      off();
      resolve({ conn, pdu, at: performance.now() });
    });
  });
}

/** A SCSI status reaching the initiator: a SCSI Response, or a Data-In with the S bit. */
function isStatus(pdu: PduInfo): boolean {
  return pdu.direction === "to-initiator" &&
    (pdu.opcode === OPCODE_SCSI_RESPONSE ||
      (pdu.opcode === OPCODE_DATA_IN && (pdu.flags & 0x01) !== 0));
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** Data-carrying direction of a workload: Data-Out for writes, Data-In for reads. */
function dataDirection(w: Workload): "to-target" | "to-initiator" {
  return w === "rand-read-verify" ? "to-initiator" : "to-target";
}

export const FAULTS: Fault[] = [
  {
    name: "cut (FIN both sides)",
    breaksConnection: true,
    inject: ({ proxy }) => Promise.resolve(proxy.cut()),
  },
  {
    name: "reset (RST both sides)",
    breaksConnection: true,
    inject: ({ proxy }) => Promise.resolve(proxy.reset()),
  },
  {
    name: `stall ${LIMITS.stallMs / 1000}s`,
    breaksConnection: false,
    inject: ({ proxy }) => Promise.resolve(proxy.stall(LIMITS.stallMs)),
  },
  {
    // Only a NOP-Out that goes unanswered can find this one (RFC 7143 §11.18).
    name: "black hole (silent drop)",
    breaksConnection: true,
    inject: ({ proxy }) => Promise.resolve(proxy.blackhole()),
  },
  {
    name: "multipath, active path cut (FIN)",
    breaksConnection: false,
    secondPath: true,
    inject: ({ proxy }) => Promise.resolve(proxy.cut()),
  },
  {
    name: "multipath, active path reset (RST)",
    breaksConnection: false,
    secondPath: true,
    inject: ({ proxy }) => Promise.resolve(proxy.reset()),
  },
  {
    // Found by the path's NOP-Out (1 s of silence, 2 s to answer on a multipath path).
    name: "multipath, active path black hole",
    breaksConnection: false,
    secondPath: true,
    inject: ({ proxy }) => Promise.resolve(proxy.blackhole()),
  },
  {
    name: "corrupt header byte, target→initiator",
    breaksConnection: true,
    inject: async ({ proxy, note }) => {
      const r = await proxy.corrupt({ direction: "to-initiator", part: "header", byte: 20 });
      note(`flipped BHS byte 20 of opcode 0x${r.pdu.opcode.toString(16)}`);
    },
  },
  {
    name: "corrupt header byte, initiator→target",
    // tgtd decides what a header digest error costs; the client must not notice either way.
    breaksConnection: false,
    inject: async ({ proxy, note }) => {
      const r = await proxy.corrupt({ direction: "to-target", part: "header", byte: 20 });
      note(`flipped BHS byte 20 of opcode 0x${r.pdu.opcode.toString(16)} to target`);
    },
  },
  {
    name: "corrupt data-segment byte",
    // A DataDigest error in what we receive must end the connection (RFC 7143
    // §7.8 at ERL 0; never accept the data); in what tgtd receives, tgtd decides.
    breaksConnection: (w) => dataDirection(w) === "to-initiator",
    inject: async ({ proxy, workload, note }) => {
      const direction = dataDirection(workload);
      const r = await proxy.corrupt({
        direction,
        part: "data",
        byte: 100,
        match: (p) => p.dataSegmentLength > 100 && (p.opcode === OPCODE_DATA_IN || p.opcode <= 5),
      });
      note(`flipped data byte 100 of opcode 0x${r.pdu.opcode.toString(16)} ${direction}`);
    },
  },
  {
    // The server capped at exactly what it holds (its memory cgroup's limit;
    // no swap): any growth is reclaimed from its own pages (its lazily freed
    // slack first) or ends in an OOM kill. It must keep serving on the same
    // connection and never be killed (docs/faults.md, "Memory pressure").
    name: "memory cap (server held at its charge, 0 headroom, no swap)",
    breaksConnection: false,
    keepsConnection: true,
    ownMemoryCgroup: true,
    inject: async ({ serverPid, note, fail, background }) => {
      const squeeze = await squeezeMemory(serverPid, MEMORY_HEADROOM);
      await delay(MEMORY_SQUEEZE_MS);
      background.push(
        squeeze.release().then((r) => {
          note(
            `capped at ${r.limitMiB} MiB for ${
              MEMORY_SQUEEZE_MS / 1000
            }+ s: grew ${r.grewMiB} MiB, ` +
              `limit hit ${r.failcnt} times, lazily freed ${r.lazyFreeMiB[0]} -> ${
                r.lazyFreeMiB[1]
              } MiB`,
          );
          if (r.oomKills > 0) fail(`the server's cgroup had ${r.oomKills} OOM kill(s)`);
        }),
      );
    },
  },
  {
    name: "tgtd SIGKILL + restart",
    breaksConnection: true,
    inject: async ({ tgt, background }) => {
      await tgt.kill9();
      // Let the initiator notice and retry against a dead port first.
      background.push(delay(LIMITS.downMs).then(() => tgt.restart()));
    },
  },
  {
    name: "tgtadm delete conn",
    breaksConnection: true,
    inject: async ({ tgt, tid, note }) => {
      const n = await tgt.deleteConnections(tid);
      if (n === 0) throw new Error("tgtadm listed no connection to delete");
      note(`target deleted ${n} connection(s)`);
    },
  },
  {
    // RFC 7143 §11.9.1: new commands held, Logout within Parameter3, relogin
    // after Time2Wait, replay; the client must see nothing but a slow request.
    name: "target requests logout (Async Message)",
    breaksConnection: true,
    depth: 32,
    inject: (ctx) => {
      const { proxy, note } = ctx;
      const t0 = performance.now();
      // §11.14: after its Logout Request the initiator sends no new command
      // on that connection; count the SCSI Command PDUs that follow it.
      let loggingOut: number | undefined;
      let after = 0;
      const stop = proxy.onPdu((conn, p) => {
        if (p.direction !== "to-target") return;
        if (p.opcode === OPCODE_LOGOUT_REQUEST && loggingOut === undefined) loggingOut = conn.id;
        else if (p.opcode === OPCODE_SCSI_COMMAND && conn.id === loggingOut) after++;
      });
      const logout = nextPdu(
        proxy,
        (_, p) => p.direction === "to-target" && p.opcode === OPCODE_LOGOUT_REQUEST,
      );
      const answer = nextPdu(
        proxy,
        (_, p) => p.direction === "to-initiator" && p.opcode === OPCODE_LOGOUT_RESPONSE,
      );
      const sent = proxy.asyncMessage(ASYNC_LOGOUT_REQUEST, { p3: 5 });
      if (sent.length === 0) throw new Error("no connection in the Full Feature Phase");
      ctx.recoveredBy = logout.then(async (l) => {
        note(`Logout ${((l.at - t0) / 1000).toFixed(2)} s after the request`);
        const a = await answer;
        stop();
        note(`Logout Response ${a.pdu.byte2}`);
        if (after > 0) {
          ctx.fail(`${after} SCSI command(s) sent after the Logout Request on its connection`);
        }
      });
      return Promise.resolve();
    },
  },
  {
    // The target answers everything but one command's status: the command
    // timeout must escalate (ABORT TASK, LOGICAL UNIT RESET, reconnect) and
    // re-issue it, and the client see nothing but one slow request.
    name: "hung command (one status swallowed)",
    breaksConnection: false,
    keepsConnection: true,
    serverArgs: ["--command-timeout", String(HUNG_COMMAND_TIMEOUT_S)],
    inject: async (ctx) => {
      const { proxy, note } = ctx;
      const tmf = nextPdu(
        proxy,
        (_, p) => p.direction === "to-target" && p.opcode === OPCODE_TMF_REQUEST,
      );
      const answer = nextPdu(
        proxy,
        (_, p) => p.direction === "to-initiator" && p.opcode === OPCODE_TMF_RESPONSE,
      );
      const r = await proxy.swallow(isStatus);
      note(
        `swallowed the status (opcode 0x${r.pdu.opcode.toString(16)}) of ITT 0x${
          r.pdu.itt.toString(16)
        }${ctx.server === "isboot" ? `; --command-timeout ${HUNG_COMMAND_TIMEOUT_S}` : ""}`,
      );
      const t0 = performance.now();
      ctx.recoveredBy = tmf.then(async (q) => {
        const fn = q.pdu.flags & 0x7f;
        const a = await answer;
        note(
          `${TMF_NAMES[fn] ?? `TMF ${fn}`} ${((q.at - t0) / 1000).toFixed(2)} s later, ` +
            `answered "${TMF_RESPONSES[a.pdu.byte2] ?? a.pdu.byte2}"`,
        );
      });
    },
  },
  {
    // As above, and the answer to ABORT TASK is swallowed too: LOGICAL UNIT
    // RESET must end the hung task and the session re-issue exactly the tasks
    // the reset covered, while the client keeps commands coming (those issued
    // during the reset answer for themselves; re-issuing them as well would
    // meet their answers as protocol errors and cost the connection).
    name: "hung command, ABORT TASK unanswered (LU reset)",
    breaksConnection: false,
    keepsConnection: true,
    serverArgs: ["--command-timeout", String(HUNG_COMMAND_TIMEOUT_S)],
    inject: async (ctx) => {
      const { proxy, note } = ctx;
      const reset = nextPdu(
        proxy,
        (_, p) =>
          p.direction === "to-target" && p.opcode === OPCODE_TMF_REQUEST &&
          (p.flags & 0x7f) === TMF_LOGICAL_UNIT_RESET,
      );
      const r = await proxy.swallow(isStatus);
      const abort = proxy.swallow((p) => p.opcode === OPCODE_TMF_RESPONSE);
      note(`swallowed the status of ITT 0x${r.pdu.itt.toString(16)}`);
      const t0 = performance.now();
      ctx.recoveredBy = abort.then(async () => {
        note("swallowed the answer to ABORT TASK");
        const q = await reset;
        const a = await nextPdu(
          proxy,
          (_, p) =>
            p.direction === "to-initiator" && p.opcode === OPCODE_TMF_RESPONSE &&
            p.itt === q.pdu.itt,
        );
        note(
          `LOGICAL UNIT RESET ${((q.at - t0) / 1000).toFixed(2)} s after the status, answered "${
            TMF_RESPONSES[a.pdu.byte2] ?? a.pdu.byte2
          }"`,
        );
      });
    },
  },
];

/** One row of the matrix. */
export interface RowResult {
  fault: string;
  workload: Workload;
  server: ServerKind;
  pass: boolean;
  /** Fault to first SCSI status afterwards, ms; undefined if it never came. */
  recoveryMs?: number;
  /** The client's longest request, ms. */
  maxLatencyMs?: number;
  peakRssMiB?: number;
  /** Why it failed, and what happened. */
  notes: string[];
}

interface WorkloadReport {
  ops: number;
  errorCount: number;
  errors: string[];
  ackedWrites: number;
  lostWrites: number;
  lostOffsets: number[];
  mismatches: number;
  maxLatencyMs: number;
}

function readRss(pid: number): number | undefined {
  try {
    const s = Deno.readTextFileSync(`/proc/${pid}/status`);
    const m = s.match(/^VmRSS:\s+(\d+) kB/m);
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Keeps the last lines of a child's output, for failure notes. */
function tail(stream: ReadableStream<Uint8Array>, keep: string[], max = 40): Promise<void> {
  return (async () => {
    const dec = new TextDecoder();
    let partial = "";
    for await (const chunk of stream) {
      partial += dec.decode(chunk, { stream: true });
      const lines = partial.split("\n");
      partial = lines.pop() ?? "";
      for (const l of lines) {
        keep.push(l);
        if (keep.length > max) keep.shift();
      }
    }
    if (partial) keep.push(partial);
  })().catch(() => {});
}

function serverCommand(
  kind: ServerKind,
  proxyPort: number,
  socket: string,
  extra: string[] = [],
): { cmd: string; args: string[] } {
  if (kind === "qemu-nbd") {
    return {
      cmd: "qemu-nbd",
      args: [
        "--persistent",
        "--shared=4",
        "--socket",
        socket,
        "--image-opts",
        `driver=iscsi,transport=tcp,portal=127.0.0.1:${proxyPort},target=${IQN},lun=1,` +
        `header-digest=crc32c,initiator-name=${INITIATOR}`,
      ],
    };
  }
  const { cmd, pre } = isbootCommand();
  return {
    cmd,
    args: [
      ...pre,
      "serve",
      `iscsi://127.0.0.1:${proxyPort}/${IQN}/1`,
      "--listen",
      `unix:${socket}`,
      "--initiator",
      INITIATOR,
      "--header-digest",
      "crc32c",
      "--data-digest",
      "crc32c",
      ...extra,
    ],
  };
}

/**
 * Runs one row: fresh tgtd, proxy, server and client; injects the fault;
 * checks the outcome. Never throws for a failing row: the failure is in
 * `pass` and `notes`. Cleans up everything it started.
 */
export async function runRow(
  fault: Fault,
  workload: Workload,
  server: ServerKind = "isboot",
): Promise<RowResult> {
  const row: RowResult = { fault: fault.name, workload, server, pass: false, notes: [] };
  const note = (m: string) => row.notes.push(m);
  const dir = await Deno.makeTempDir({ prefix: "isboot-faults-" });
  let tgt: Tgtd | undefined;
  let proxy: FaultProxy | undefined;
  /** The second path's proxy, for a multipath row; never faulted. */
  let proxy2: FaultProxy | undefined;
  let child: Deno.ChildProcess | undefined;
  let childExited: Deno.CommandStatus | undefined;
  let client: Deno.ChildProcess | undefined;
  let rssTimer: ReturnType<typeof setInterval> | undefined;
  /** The server's own memory cgroup (Fault.ownMemoryCgroup), removed at the end. */
  let memcg: string | undefined;
  const serverOut: string[] = [];
  const background: Promise<unknown>[] = [];
  let failed = false;
  const fail = (m: string) => {
    failed = true;
    note(m);
  };
  try {
    tgt = await startTgtd();
    const tid = await tgt.createTarget(IQN);
    const backing = `${dir}/lun1.img`;
    const reads = workload === "rand-read-verify";
    const size = reads ? LIMITS.readLunBytes : LIMITS.lunBytes;
    await prefill(backing, size, reads);
    await tgt.addLun(tid, { lun: 1, size, path: backing });
    await tgt.setDigests(tid, "CRC32C", server === "qemu-nbd" ? "None" : "CRC32C");
    proxy = await FaultProxy.start({ targetPort: tgt.port });
    const multipath = fault.secondPath === true && server === "isboot";
    if (multipath) proxy2 = await FaultProxy.start({ targetPort: tgt.port });

    // Wire-level clock: SCSI status PDUs reaching the initiator (on either path).
    let lastStatusAt = 0;
    let secondPathStatuses = 0;
    const statusAfter: { t: number; conn?: number; resolve: () => void }[] = [];
    const onStatus = (conn: ProxiedConnection | null, pdu: PduInfo) => {
      if (!isStatus(pdu)) return;
      const now = performance.now();
      lastStatusAt = now;
      if (conn === null) secondPathStatuses++;
      for (let i = statusAfter.length - 1; i >= 0; i--) {
        const w = statusAfter[i];
        if (now > w.t && (w.conn === undefined || (conn !== null && conn.id > w.conn))) {
          statusAfter.splice(i, 1);
          w.resolve();
        }
      }
    };
    proxy.onPdu(onStatus);
    proxy2?.onPdu((_conn, pdu) => onStatus(null, pdu));
    const nextStatus = (t: number, afterConn?: number) =>
      new Promise<void>((resolve) => statusAfter.push({ t, conn: afterConn, resolve }));

    const socket = `${dir}/nbd.sock`;
    const sc = serverCommand(server, proxy.port, socket, [
      ...fault.serverArgs ?? [],
      ...(proxy2 ? ["--portal", `127.0.0.1:${proxy2.port}`, "--multipath", "failover"] : []),
    ]);
    if (fault.ownMemoryCgroup) {
      if (!(await exists(`${MEMCG}/memory.limit_in_bytes`))) {
        throw new Error(`no cgroup v1 memory controller at ${MEMCG} for the server's own cgroup`);
      }
      memcg = `${MEMCG}/isboot-matrix-${crypto.randomUUID().slice(0, 8)}`;
      await Deno.mkdir(memcg);
    }
    // In its own memory cgroup: the shell joins it, then becomes the server.
    const spawned = memcg
      ? {
        cmd: "sh",
        args: ["-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', memcg, sc.cmd, ...sc.args],
      }
      : sc;
    child = new Deno.Command(spawned.cmd, {
      args: spawned.args,
      cwd: ROOT,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const outDone = Promise.all([
      tail(child.stdout, serverOut),
      tail(child.stderr, serverOut),
    ]);
    child.status.then((s) => (childExited = s));
    const startBy = Date.now() + LIMITS.startMs;
    while (!(await exists(socket))) {
      if (childExited) {
        await outDone;
        fail(`server exited (code ${childExited.code}) before listening`);
        return row;
      }
      if (Date.now() > startBy) {
        fail(`server not listening after ${LIMITS.startMs} ms`);
        return row;
      }
      await delay(50);
    }

    const pid = child.pid;
    let peakRss = readRss(pid) ?? 0;
    rssTimer = setInterval(() => {
      const r = readRss(pid);
      if (r !== undefined) peakRss = Math.max(peakRss, r);
    }, 200);

    const stopFile = `${dir}/stop`;
    client = new Deno.Command("/usr/bin/python3", {
      args: [
        `${ROOT}tests/faults/workload.py`,
        workload,
        `nbd+unix:///?socket=${socket}`,
        backing,
        stopFile,
        String((LIMITS.recoveryMs + 30_000) / 1000),
        ...(fault.depth ? [String(fault.depth)] : []),
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const clientOut = client.output();

    // Let the workload get going on the wire before the fault.
    await withTimeout(nextStatus(performance.now()), LIMITS.startMs, "first SCSI status");
    await delay(500);
    const connAtFault = proxy.accepted;
    const ctx: FaultContext = {
      proxy,
      tgt,
      tid,
      workload,
      note,
      fail,
      server,
      background,
      serverPid: pid,
    };
    await withTimeout(fault.inject(ctx), 10_000, "injecting the fault");
    const t0 = performance.now();

    try {
      // A client that gave up (it stops after 64 errors) ends the wait early.
      const breaks = typeof fault.breaksConnection === "function"
        ? fault.breaksConnection(workload)
        : fault.breaksConnection;
      const seen = ctx.recoveredBy ?? Promise.resolve();
      const recovered = seen.then(() => {
        const t1 = Math.max(t0, performance.now());
        return breaks ? nextStatus(t1, connAtFault) : nextStatus(t1);
      }).then(() => true);
      const gaveUp = clientOut.then(() => false, () => false);
      const ok = await withTimeout(
        Promise.race([recovered, gaveUp]),
        LIMITS.recoveryMs,
        "recovery",
      );
      if (!ok) throw new Error("the client gave up after errors first");
      row.recoveryMs = Math.round(lastStatusAt - t0);
      if (multipath) {
        const before = secondPathStatuses;
        await delay(200);
        if (secondPathStatuses === before) fail("the second path carried nothing after the fault");
        else note(`I/O went on the second path (${secondPathStatuses} statuses there)`);
      }
      const relogins = proxy.accepted - connAtFault;
      if (relogins > 0) note(`${relogins} new connection(s)`);
      if (relogins > 0 && fault.keepsConnection) {
        fail("recovered by a new connection, not in place");
      }
    } catch (e) {
      fail(
        `traffic did not flow again after the fault (${(e as Error).message}; ` +
          `limit ${LIMITS.recoveryMs} ms)`,
      );
    }
    await delay(LIMITS.afterRecoveryMs);
    await Deno.writeTextFile(stopFile, "");
    const out = await withTimeout(clientOut, LIMITS.recoveryMs + 10_000, "client drain").catch(
      (e) => {
        fail(`client did not finish: ${(e as Error).message}`);
        return undefined;
      },
    );
    client = undefined;
    if (out) {
      const text = new TextDecoder().decode(out.stdout).trim();
      let rep: WorkloadReport | undefined;
      try {
        rep = JSON.parse(text.split("\n").pop() ?? "") as WorkloadReport;
      } catch {
        fail(
          `client exited ${out.code} without a report: ${
            new TextDecoder().decode(out.stderr).trim().split("\n").slice(-3).join(" | ")
          }`,
        );
      }
      if (rep) {
        row.maxLatencyMs = rep.maxLatencyMs;
        if (rep.errorCount > 0) {
          fail(`client saw ${rep.errorCount} error(s): ${rep.errors.slice(0, 2).join("; ")}`);
        }
        if (rep.lostWrites > 0) {
          fail(`${rep.lostWrites} acknowledged write(s) not in the backing file`);
        }
        if (rep.mismatches > 0) fail(`${rep.mismatches} read(s) returned wrong data`);
        if (rep.ops === 0) fail("client completed no request");
        note(`${rep.ops} requests${rep.ackedWrites ? `, ${rep.ackedWrites} chunks verified` : ""}`);
      }
    }
    if (childExited) {
      fail(`server exited (code ${childExited.code}, signal ${childExited.signal})`);
    }
    clearInterval(rssTimer);
    rssTimer = undefined;
    row.peakRssMiB = Math.round(peakRss / (1 << 20));
    if (peakRss > LIMITS.maxRssBytes) {
      fail(`server RSS peaked at ${row.peakRssMiB} MiB (bound ${LIMITS.maxRssBytes >> 20} MiB)`);
    }
    row.pass = !failed;
  } catch (e) {
    fail(`row aborted: ${(e as Error).message}`);
  } finally {
    if (rssTimer !== undefined) clearInterval(rssTimer);
    if (client) {
      try {
        client.kill("SIGKILL");
      } catch { /* gone */ }
      await client.status.catch(() => {});
    }
    if (child) {
      if (!childExited) {
        try {
          child.kill("SIGTERM");
        } catch { /* gone */ }
        const done = await Promise.race([child.status.then(() => true), delay(2000)]);
        if (!done) {
          try {
            child.kill("SIGKILL");
          } catch { /* gone */ }
        }
      }
      await child.status.catch(() => {});
    }
    if (memcg) await Deno.remove(memcg).catch(() => {});
    const late = serverOut.filter((l) => /late .* ended by task management/.test(l)).length;
    if (late) note(`${late} late answer(s) for tasks task management ended, dropped`);
    if (!row.pass && serverOut.length) {
      note(`server said: ${serverOut.slice(-4).join(" | ").slice(0, 400)}`);
    }
    const traceDir = Deno.env.get("ISBOOT_FAULTS_TRACE");
    if (!row.pass && traceDir) {
      await Deno.writeTextFile(
        `${traceDir}/${Date.now()}.txt`,
        [...row.notes, "--- server", ...serverOut, "--- proxy", ...(proxy?.events ?? [])].join(
          "\n",
        ),
      );
    }
    for (const r of await Promise.allSettled(background)) {
      if (r.status === "rejected") note(`fault's background work failed: ${r.reason}`);
    }
    await proxy?.close();
    await proxy2?.close();
    await tgt?.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  return row;
}

/** A sparse LUN file, or one full of random bytes for the read workload. */
async function prefill(path: string, size: number, random: boolean): Promise<void> {
  const f = await Deno.open(path, { create: true, write: true, truncate: true });
  try {
    await f.truncate(size);
    if (!random) return;
    const buf = new Uint8Array(1 << 20);
    for (let off = 0; off < size; off += buf.length) {
      for (let i = 0; i < buf.length; i += 65536) {
        crypto.getRandomValues(buf.subarray(i, i + 65536));
      }
      let w = 0;
      while (w < buf.length) w += await f.write(buf.subarray(w));
    }
  } finally {
    f.close();
  }
}

/** The matrix as a Markdown table. */
export function formatTable(rows: RowResult[]): string {
  const lines = [
    "| fault | workload | result | recovery time | client's longest request | server peak RSS | notes |",
    "|---|---|---|---|---|---|---|",
  ];
  for (const r of rows) {
    const cells = [
      r.fault,
      r.workload,
      r.pass ? "pass" : "**FAIL**",
      r.recoveryMs === undefined ? "—" : `${(r.recoveryMs / 1000).toFixed(2)} s`,
      r.maxLatencyMs === undefined ? "—" : `${(r.maxLatencyMs / 1000).toFixed(2)} s`,
      r.peakRssMiB === undefined ? "—" : `${r.peakRssMiB} MiB`,
      r.notes.join("; ").replaceAll("|", "\\|").replaceAll("\n", " "),
    ];
    lines.push(`| ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

/**
 * Replaces the server's table in docs/faults.md, between the markers
 * `<!-- fault-matrix:SERVER:begin -->` and `<!-- fault-matrix:SERVER:end -->`.
 */
export async function writeDocsTable(rows: RowResult[], server: ServerKind): Promise<void> {
  const BEGIN = `<!-- fault-matrix:${server}:begin -->`;
  const END = `<!-- fault-matrix:${server}:end -->`;
  const path = `${ROOT}docs/faults.md`;
  const doc = await Deno.readTextFile(path);
  const a = doc.indexOf(BEGIN);
  const b = doc.indexOf(END);
  if (a < 0 || b < a) throw new Error(`${path}: table markers missing`);
  const stamp = `Last run: ${new Date().toISOString().slice(0, 16)}Z, server \`${server}\`, ` +
    `${rows.filter((r) => r.pass).length}/${rows.length} rows pass.`;
  const body = `${BEGIN}\n${stamp}\n\n${formatTable(rows)}\n${END}`;
  await Deno.writeTextFile(path, doc.slice(0, a) + body + doc.slice(b + END.length));
  // Keep the file as `deno fmt` wants it (make check runs fmt --check).
  await new Deno.Command(Deno.execPath(), { args: ["fmt", "--quiet", path] }).output();
}

if (import.meta.main) {
  const args = Deno.args;
  const server: ServerKind = args.includes("--server")
    ? (args[args.indexOf("--server") + 1] as ServerKind)
    : "isboot";
  const only = args.includes("--only") ? args[args.indexOf("--only") + 1] : undefined;
  const rows: RowResult[] = [];
  for (const f of FAULTS) {
    for (const w of WORKLOADS) {
      if (only && !`${f.name} ${w}`.includes(only)) continue;
      const r = await runRow(f, w, server);
      console.error(`${r.pass ? "pass" : "FAIL"}  ${f.name} × ${w}  ${r.notes.join("; ")}`);
      rows.push(r);
    }
  }
  console.log(formatTable(rows));
  if (args.includes("--write-docs")) await writeDocsTable(rows, server);
  Deno.exit(rows.every((r) => r.pass) ? 0 : 1);
}
