/**
 * A private tgtd for the benchmark: loopback portal on a random port, its own
 * control number, targets on a RAM file (tmpfs) and on tgt's null store.
 */
import { alive, type Child, freePort, run, sleep, spawnLogged } from "./proc.ts";

/** none; header (HeaderDigest only, what libiscsi can do); crc32c (header and data). */
export type Digest = "none" | "header" | "crc32c";

/** The iSCSI HeaderDigest and DataDigest values of a digest mode. */
export function digestKeys(d: Digest): { header: "none" | "crc32c"; data: "none" | "crc32c" } {
  return { header: d === "none" ? "none" : "crc32c", data: d === "crc32c" ? "crc32c" : "none" };
}

export interface TargetSpec {
  tid: number;
  iqn: string;
  /** "rdwr" with a file path, or "null" (tgt's bs_null: 1 TiB that reads zeros, drops writes). */
  bstype: "rdwr" | "null";
  backing: string;
}

/** Started tgtd with the controls the bench needs. */
export class Tgtd {
  private readonly tids: number[] = [];
  private constructor(
    readonly child: Child,
    readonly control: number,
    readonly port: number,
  ) {}

  /**
   * Start tgtd in the foreground on 127.0.0.1 with a random port and control number.
   *
   * @example
   * const t = await Tgtd.start("/tmp/bench/tgtd.log");
   */
  static async start(logPath: string): Promise<Tgtd> {
    for (let attempt = 0; attempt < 5; attempt++) {
      // tgtd takes control numbers up to 32767; stay clear of small ones others pick.
      const control = 8000 + Math.floor(Math.random() * 24000);
      if (existsSync(`/var/run/tgtd/socket.${control}`)) continue;
      const port = freePort();
      const child = spawnLogged("tgtd", "tgtd", [
        "-f",
        "-C",
        String(control),
        "--iscsi",
        `portal=127.0.0.1:${port}`,
      ], logPath);
      const t = new Tgtd(child, control, port);
      for (let i = 0; i < 100; i++) {
        if (!alive(child.pid)) break;
        const r = await run("tgtadm", ["-C", String(control), "--mode", "system", "--op", "show"]);
        if (r.code === 0) return t;
        await sleep(20);
      }
      await t.stop();
    }
    const tail = (await Deno.readTextFile(logPath).catch(() => "")).trim().split("\n").slice(-2);
    throw new Error(`tgtd did not start: ${tail.join(" | ")}`);
  }

  private adm(args: string[]) {
    return run("tgtadm", ["-C", String(this.control), "--lld", "iscsi", ...args], { check: true });
  }

  /** Create a target with LUN 1 and open it to any initiator on loopback. */
  async addTarget(t: TargetSpec): Promise<void> {
    const tid = String(t.tid);
    await this.adm(["--mode", "target", "--op", "new", "--tid", tid, "--targetname", t.iqn]);
    this.tids.push(t.tid);
    await this.adm([
      "--mode",
      "logicalunit",
      "--op",
      "new",
      "--tid",
      tid,
      "--lun",
      "1",
      "--bstype",
      t.bstype,
      "--backing-store",
      t.backing,
    ]);
    await this.adm([
      "--mode",
      "target",
      "--op",
      "bind",
      "--tid",
      tid,
      "--initiator-address",
      "ALL",
    ]);
  }

  /**
   * Require or refuse CRC32C header and data digests on a target.
   * Applies to logins made afterwards.
   */
  async setDigests(tid: number, d: Digest): Promise<void> {
    const k = digestKeys(d);
    for (const [name, v] of [["HeaderDigest", k.header], ["DataDigest", k.data]]) {
      const value = v === "crc32c" ? "CRC32C" : "None";
      await this.adm([
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
  }

  /** iscsi:// URI of LUN 1 of a target, as qemu, libiscsi and isboot take it. */
  uri(iqn: string): string {
    return `iscsi://127.0.0.1:${this.port}/${iqn}/1`;
  }

  /**
   * tgtd ignores SIGTERM: delete the targets (tgt refuses `system delete` while
   * any exist, even with --force), ask it to exit, then SIGKILL after a grace period.
   */
  async stop(): Promise<void> {
    if (alive(this.child.pid)) {
      const c = String(this.control);
      for (const tid of this.tids) {
        await run("tgtadm", [
          "-C",
          c,
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
      await run("tgtadm", ["-C", c, "--mode", "system", "--op", "delete"]);
    }
    const gone = await Promise.race([
      this.child.exited.then(() => true),
      sleep(2000).then(() => false),
    ]);
    if (!gone) {
      try {
        this.child.proc.kill("SIGKILL");
      } catch { /* gone */ }
      await this.child.exited;
    }
  }
}

function existsSync(p: string): boolean {
  try {
    Deno.statSync(p);
    return true;
  } catch {
    return false;
  }
}
