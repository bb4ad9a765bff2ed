/**
 * A private Linux SCSI target (`tgtd` from Debian `tgt`) for tests and the
 * benchmark (bench/lib/tgtd.ts).
 *
 * Each {@link Tgtd} runs its own `tgtd -f -C N --iscsi portal=ADDR:PORT` on
 * 127.0.0.1 or [::1] with a free port and a private control number N, so
 * several test files (and several engineers) can run targets side by side.
 * The VM tests start it inside a network namespace instead, on a fixed port
 * and without the TCP probe (`launch`, `port`, `tcpProbe` in
 * {@link TgtdOptions}; tests/vm/lib.ts).
 *
 * Everything is configured with `tgtadm -C N --lld iscsi`; every configuring
 * call is recorded so that {@link Tgtd.restart} can bring a killed target
 * back with the same targets, LUNs (same backing files), accounts and
 * parameters, as the fault tests need.
 *
 * Cleanup: {@link withTgtd} stops the daemon and removes its temp directory
 * even when the test body throws. tgtd ignores SIGTERM, so {@link Tgtd.stop}
 * deletes every target (`--force`), asks the daemon to exit with
 * `--mode system --op delete`, and sends SIGKILL after a grace period.
 *
 * @example
 * ```ts
 * await withTgtd(async (tgt) => {
 *   const tid = await tgt.createTarget("iqn.2026-11.test:disk1");
 *   const lun = await tgt.addLun(tid, { lun: 1, size: 8 << 20 });
 *   // connect to tgt.host:tgt.port, then compare with Deno.readFile(lun.path)
 * });
 * ```
 */

/** Options for {@link Tgtd.start}. */
export interface TgtdOptions {
  /** Listen address: "127.0.0.1" (default) or "::1". */
  host?: "127.0.0.1" | "::1";
  /** Listen port (default: one that is free on this host). */
  port?: number;
  /**
   * Turns the daemon's shell command line (it `exec`s tgtd, output to the
   * log) into the command to spawn; default `sh -c LINE` with null stdio.
   * The command must exec too, so that the child's PID is tgtd's.
   *
   * @example
   * ```ts
   * const launch = (line: string) =>
   *   new Deno.Command("ip", { args: ["netns", "exec", "ns1", "sh", "-c", line] });
   * const tgt = await Tgtd.start({ launch, port: 3260, tcpProbe: false });
   * ```
   */
  launch?: (line: string) => Deno.Command;
  /**
   * Also wait until the portal accepts TCP (default true). Turn it off when
   * this process cannot reach the portal (tgtd in a network namespace): then
   * tgtadm's `iscsi: ready` alone says the daemon is up.
   */
  tcpProbe?: boolean;
}

/** A LUN created by {@link Tgtd.addLun}. */
export interface TgtLun {
  tid: number;
  lun: number;
  /** Backing file (in the daemon's temp directory unless given; /dev/null for the null store). */
  path: string;
  size: number;
  blockSize: number;
}

/** One iSCSI connection as `tgtadm --mode target --op show` lists it. */
export interface TgtConnection {
  tid: number;
  sid: number;
  cid: number;
  initiator: string;
  address: string;
}

const decoder = new TextDecoder();

/** Size of tgt's null backing store (NULL_BS_DEV_SIZE in tgt's bs_null.c): 1 TiB. */
const NULL_STORE_SIZE = 2 ** 40;

function shLaunch(line: string): Deno.Command {
  return new Deno.Command("sh", {
    args: ["-c", line],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  });
}

async function run(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  const o = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  return { code: o.code, out: decoder.decode(o.stdout) + decoder.decode(o.stderr) };
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A port that was free a moment ago (random start so parallel runs rarely collide). */
function freePort(host: string): number {
  for (let i = 0; i < 50; i++) {
    const port = 20000 + Math.floor(Math.random() * 30000);
    try {
      const l = Deno.listen({ hostname: host, port });
      l.close();
      return port;
    } catch {
      // taken: try another
    }
  }
  throw new Error("tgtd helper: no free port found");
}

function controlInUse(n: number): boolean {
  try {
    Deno.statSync(`/var/run/tgtd/socket.${n}`);
    return true;
  } catch {
    return false;
  }
}

/**
 * Daemons started by this process and not yet stopped: if a test leaks one
 * (no finally), the unload handler below still kills it on exit.
 */
const LIVE = new Set<Deno.ChildProcess>();
globalThis.addEventListener("unload", () => {
  for (const c of LIVE) {
    try {
      c.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
});

/** A running private tgtd. Make one with {@link Tgtd.start} or {@link withTgtd}. */
export class Tgtd {
  readonly host: "127.0.0.1" | "::1";
  port: number;
  readonly control: number;
  /** Temp directory holding backing files and the daemon's log. */
  readonly dir: string;
  readonly #launch: (line: string) => Deno.Command;
  readonly #tcpProbe: boolean;
  #child: Deno.ChildProcess | null = null;
  /** Every configuring tgtadm call, replayed by restart(). */
  #config: string[][] = [];
  #tids = new Set<number>();
  #nextTid = 1;
  #stopped = false;

  private constructor(
    host: "127.0.0.1" | "::1",
    port: number,
    control: number,
    dir: string,
    opts: TgtdOptions,
  ) {
    this.host = host;
    this.port = port;
    this.control = control;
    this.dir = dir;
    this.#launch = opts.launch ?? shLaunch;
    this.#tcpProbe = opts.tcpProbe ?? true;
  }

  /** The portal as users write it: `127.0.0.1:PORT` or `[::1]:PORT`. */
  get portal(): string {
    return this.host.includes(":") ? `[${this.host}]:${this.port}` : `${this.host}:${this.port}`;
  }

  /** Path of the daemon's combined stdout/stderr (useful when a test fails). */
  get logPath(): string {
    return `${this.dir}/tgtd.log`;
  }

  /**
   * tgtd's process ID (it changes with {@link Tgtd.restart}); throws when the
   * daemon is not running.
   *
   * @example
   * ```ts
   * const stat = await Deno.readTextFile(`/proc/${tgt.pid}/stat`);
   * ```
   */
  get pid(): number {
    if (!this.#child) throw new Error("tgtd helper: tgtd is not running");
    return this.#child.pid;
  }

  /**
   * Start a private tgtd and wait until it answers tgtadm and (unless
   * `tcpProbe` is false) accepts TCP.
   *
   * @example
   * ```ts
   * const tgt = await Tgtd.start({ host: "::1" });
   * try { ... } finally { await tgt.stop(); }
   * ```
   */
  static async start(opts: TgtdOptions = {}): Promise<Tgtd> {
    const host = opts.host ?? "127.0.0.1";
    const dir = await Deno.makeTempDir({ prefix: "isboot-tgtd-" });
    let lastErr: unknown;
    for (let attempt = 0; attempt < 5; attempt++) {
      let control = 0;
      // tgtd accepts control numbers up to 32767.
      do control = 1000 + Math.floor(Math.random() * 31000); while (controlInUse(control));
      const t = new Tgtd(host, opts.port ?? freePort(host), control, dir, opts);
      try {
        await t.#spawn();
        return t;
      } catch (e) {
        lastErr = e;
        await t.#kill();
      }
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw new Error(`tgtd helper: could not start tgtd: ${String(lastErr)}`);
  }

  async #spawn(): Promise<void> {
    // exec keeps the PID, so killing the child kills tgtd itself.
    this.#child = this.#launch(
      `exec tgtd -f -C ${this.control} --iscsi portal=${this.portal} >>'${this.logPath}' 2>&1`,
    ).spawn();
    const child = this.#child;
    LIVE.add(child);
    let exited = false;
    child.status.then(() => {
      exited = true;
      LIVE.delete(child);
    });
    const deadline = Date.now() + 10000;
    while (Date.now() < deadline) {
      if (exited) throw new Error(`tgtd exited early; log: ${await this.#logTail()}`);
      const r = await run("tgtadm", [
        "-C",
        String(this.control),
        "--mode",
        "system",
        "--op",
        "show",
      ]);
      if (r.code === 0 && /iscsi: ready/.test(r.out)) {
        if (!this.#tcpProbe) return;
        try {
          const c = await Deno.connect({ hostname: this.host, port: this.port });
          c.close();
          return;
        } catch {
          // not listening yet
        }
      }
      await delay(20);
    }
    throw new Error(`tgtd not ready after 10 s; log: ${await this.#logTail()}`);
  }

  async #logTail(): Promise<string> {
    try {
      return (await Deno.readTextFile(this.logPath)).split("\n").slice(-5).join(" | ");
    } catch {
      return "(no log)";
    }
  }

  /**
   * Run `tgtadm -C N ARGS...` and return its output; throws when it fails.
   * Configuring calls should go through {@link configure} so restart() can replay them.
   */
  async tgtadm(args: string[]): Promise<string> {
    const r = await run("tgtadm", ["-C", String(this.control), ...args]);
    if (r.code !== 0) throw new Error(`tgtadm ${args.join(" ")}: exit ${r.code}: ${r.out.trim()}`);
    return r.out;
  }

  /** Run a configuring `tgtadm --lld iscsi ARGS...` and remember it for restart(). */
  async configure(args: string[]): Promise<void> {
    const full = ["--lld", "iscsi", ...args];
    await this.tgtadm(full);
    this.#config.push(full);
  }

  /**
   * Create a target; by default every initiator may log in (ACL `ALL`).
   * Returns its tid.
   */
  async createTarget(iqn: string, opts: { bindAll?: boolean } = {}): Promise<number> {
    const tid = this.#nextTid++;
    await this.configure([
      "--mode",
      "target",
      "--op",
      "new",
      "--tid",
      String(tid),
      "--targetname",
      iqn,
    ]);
    this.#tids.add(tid);
    if (opts.bindAll ?? true) {
      await this.configure([
        "--mode",
        "target",
        "--op",
        "bind",
        "--tid",
        String(tid),
        "--initiator-address",
        "ALL",
      ]);
    }
    return tid;
  }

  /**
   * Add a LUN backed by a file: a new sparse temp file of `size` bytes unless
   * `path` names an existing one (then `size` defaults to the file's).
   * `bstype: "null"` uses tgt's null backing store instead: no file, 1 TiB
   * that reads as zeros and drops writes. `blockSize` sets the logical block
   * size (tgt's `blocksize=` device parameter, e.g. 4096); `readOnly` makes
   * the LUN write-protected; `thin` turns on tgt's thin provisioning (UNMAP);
   * `lbppbe` sets the logical blocks per physical block exponent (e.g. 3:
   * 512-byte logical on 4096-byte physical blocks, READ CAPACITY(16)).
   *
   * @example
   * ```ts
   * const lun = await tgt.addLun(tid, { lun: 1, size: 8 << 20 });
   * await tgt.addLun(tid, { lun: 2, bstype: "null" });
   * ```
   */
  async addLun(
    tid: number,
    o: {
      lun: number;
      size?: number;
      blockSize?: number;
      readOnly?: boolean;
      thin?: boolean;
      lbppbe?: number;
      path?: string;
      bstype?: "rdwr" | "null";
    },
  ): Promise<TgtLun> {
    const isNull = o.bstype === "null";
    const path = isNull ? "/dev/null" : o.path ?? `${this.dir}/t${tid}-lun${o.lun}.img`;
    let size = o.size;
    if (isNull) size = NULL_STORE_SIZE;
    else if (o.path) size ??= (await Deno.stat(path)).size;
    else {
      if (size === undefined) throw new Error("tgtd helper: addLun needs a size for a new file");
      const f = await Deno.open(path, { create: true, write: true, truncate: true });
      await f.truncate(size);
      f.close();
    }
    const args = [
      "--mode",
      "logicalunit",
      "--op",
      "new",
      "--tid",
      String(tid),
      "--lun",
      String(o.lun),
      "--backing-store",
      path,
    ];
    if (isNull) args.push("--bstype", "null");
    if (o.blockSize) args.push("--blocksize", String(o.blockSize));
    await this.configure(args);
    const params: string[] = [];
    if (o.readOnly) params.push("readonly=1");
    if (o.thin) params.push("thin_provisioning=1");
    if (o.lbppbe !== undefined) params.push(`lbppbe=${o.lbppbe}`);
    if (params.length) {
      await this.configure([
        "--mode",
        "logicalunit",
        "--op",
        "update",
        "--tid",
        String(tid),
        "--lun",
        String(o.lun),
        "--params",
        params.join(","),
      ]);
    }
    return { tid, lun: o.lun, path, size, blockSize: o.blockSize ?? 512 };
  }

  /**
   * CHAP accounts. `incoming` authenticates the initiator to the target
   * (one-way CHAP); add `outgoing` as well for mutual CHAP (the target proves
   * itself with it). Pass tid 0 to bind an account to discovery sessions.
   */
  async addChap(
    tid: number,
    incoming: { user: string; secret: string },
    outgoing?: { user: string; secret: string },
  ): Promise<void> {
    for (const [acct, out] of [[incoming, false], [outgoing, true]] as const) {
      if (!acct) continue;
      await this.configure([
        "--mode",
        "account",
        "--op",
        "new",
        "--user",
        acct.user,
        "--password",
        acct.secret,
      ]);
      const bind = ["--mode", "account", "--op", "bind", "--tid", String(tid), "--user", acct.user];
      if (out) bind.push("--outgoing");
      await this.configure(bind);
    }
  }

  /** Set a target's iSCSI parameter, e.g. ("HeaderDigest", "CRC32C"). */
  async setParam(tid: number, name: string, value: string): Promise<void> {
    await this.configure([
      "--mode",
      "target",
      "--op",
      "update",
      "--tid",
      String(tid),
      "--name",
      name,
      "--value",
      value,
    ]);
  }

  /** Require (or, with "None", forbid) CRC32C header and data digests on a target. */
  async setDigests(tid: number, header: "CRC32C" | "None", data: "CRC32C" | "None"): Promise<void> {
    await this.setParam(tid, "HeaderDigest", header);
    await this.setParam(tid, "DataDigest", data);
  }

  /** The connections tgtd currently has on a target (from `--mode target --op show`). */
  async connections(tid: number): Promise<TgtConnection[]> {
    const out = await this.tgtadm(["--lld", "iscsi", "--mode", "target", "--op", "show"]).catch(
      () => "",
    );
    const conns: TgtConnection[] = [];
    let inTarget = false;
    let sid = -1;
    let initiator = "";
    let cur: TgtConnection | null = null;
    for (const line of out.split("\n")) {
      const t = line.trim();
      let m: RegExpMatchArray | null;
      if ((m = line.match(/^Target (\d+):/))) {
        inTarget = Number(m[1]) === tid;
        cur = null;
      } else if (!inTarget) continue;
      else if ((m = t.match(/^I_T nexus: (\d+)/))) sid = Number(m[1]);
      else if ((m = t.match(/^Initiator: (\S+)/))) initiator = m[1];
      else if ((m = t.match(/^Connection: (\d+)/))) {
        cur = { tid, sid, cid: Number(m[1]), initiator, address: "" };
        conns.push(cur);
      } else if ((m = t.match(/^IP Address: (\S+)/)) && cur) cur.address = m[1];
    }
    return conns;
  }

  /** Drop every connection on a target from the target side (`--mode conn --op delete`). */
  async deleteConnections(tid: number): Promise<number> {
    const conns = await this.connections(tid);
    for (const c of conns) {
      await this.tgtadm([
        "--lld",
        "iscsi",
        "--mode",
        "conn",
        "--op",
        "delete",
        "--tid",
        String(tid),
        "--sid",
        String(c.sid),
        "--cid",
        String(c.cid),
      ]);
    }
    return conns.length;
  }

  /** Kill tgtd with SIGKILL (no cleanup on its side: connections just die). */
  async kill9(): Promise<void> {
    await this.#kill();
  }

  async #kill(): Promise<void> {
    const c = this.#child;
    this.#child = null;
    if (!c) return;
    try {
      c.kill("SIGKILL");
    } catch {
      // already gone
    }
    await c.status;
  }

  /**
   * Start tgtd again on the same address, port and control number and replay
   * the configuration (same targets, LUNs on the same backing files,
   * accounts, parameters). Kills a still-running daemon first.
   */
  async restart(): Promise<void> {
    await this.#kill();
    const deadline = Date.now() + 10000;
    for (;;) {
      try {
        await this.#spawn();
        break;
      } catch (e) {
        await this.#kill();
        if (Date.now() > deadline) throw e;
        await delay(100);
      }
    }
    for (const args of this.#config) await this.tgtadm(args);
  }

  /** Stop the daemon (targets deleted with --force, system delete, SIGKILL) and remove the temp dir. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    const c = this.#child;
    if (c) {
      for (const tid of this.#tids) {
        await run("tgtadm", [
          "-C",
          String(this.control),
          "--lld",
          "iscsi",
          "--mode",
          "target",
          "--op",
          "delete",
          "--force",
          "--tid",
          String(tid),
        ]);
      }
      await run("tgtadm", ["-C", String(this.control), "--mode", "system", "--op", "delete"]);
      const done = await Promise.race([c.status.then(() => true), delay(1000).then(() => false)]);
      if (!done) await this.#kill();
      else this.#child = null;
    }
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/**
 * Run `fn` with a fresh private tgtd and always stop it afterwards.
 *
 * @example
 * ```ts
 * Deno.test("login", () => withTgtd(async (tgt) => { ... }, { host: "::1" }));
 * ```
 */
export async function withTgtd<T>(
  fn: (tgt: Tgtd) => Promise<T>,
  opts: TgtdOptions = {},
): Promise<T> {
  const tgt = await Tgtd.start(opts);
  try {
    return await fn(tgt);
  } finally {
    await tgt.stop();
  }
}
