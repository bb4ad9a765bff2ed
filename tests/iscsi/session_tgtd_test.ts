/**
 * The iSCSI initiator against a real target: a private tgtd per test
 * (peers/tgtd.ts). Raw READ(16)/WRITE(16) CDBs go through the
 * Session (the ScsiTransport the SCSI layer uses) with 32+ commands in
 * flight, and every byte is checked against tgtd's backing file, with and
 * without CRC32C digests and with unsolicited data (InitialR2T=No) as well
 * as R2T-driven writes. Logins cover no auth, one-way and mutual CHAP for
 * every algorithm tgt 1.0.85 implements (MD5, and SHA-1 under its CHAP_A=7
 * numbering), wrong secrets, digests the target requires, IPv6, target
 * pings (NOP-In), our pings, task management and logout.
 */
import assert from "node:assert/strict";
import { AuthError, OperationalError } from "../../src/errors.ts";
import { Logger } from "../../src/log.ts";
import { discoverTargets } from "../../src/iscsi/discovery.ts";
import type { ChapAlgorithmName } from "../../src/iscsi/chap.ts";
import { TMF_ABORT_TASK, TMF_LOGICAL_UNIT_RESET } from "../../src/iscsi/constants.ts";
import { loginSession, type Session } from "../../src/iscsi/session.ts";
import { type SessionConfig } from "../../src/iscsi/session_config.ts";
import { type Tgtd, withTgtd } from "../../peers/tgtd.ts";
import { fillRandom } from "../helpers/bytes.ts";

const IQN = "iqn.2026-11.test.isboot:iscsi";
const INITIATOR = "iqn.2026-11.test.isboot:initiator";
const MiB = 1 << 20;
const enc = new TextEncoder();

/** A logger that keeps every line, so tests can search them for secrets. */
function captureLog(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: new Logger({ debug: true, sink: (_l, line) => lines.push(line) }), lines };
}

function config(tgt: Tgtd, extra: Partial<SessionConfig> = {}): SessionConfig {
  return {
    portal: { host: tgt.host, port: tgt.port },
    targetName: IQN,
    lun: 1,
    initiatorName: INITIATOR,
    chapAlgorithms: ["sha3-256", "sha256", "sha1", "md5"],
    headerDigest: "prefer-none",
    dataDigest: "prefer-none",
    ...extra,
  };
}

async function shmFile(size: number): Promise<string> {
  const dir = await Deno.stat("/dev/shm").then(() => "/dev/shm").catch(() => undefined);
  const path = await Deno.makeTempFile({ dir, prefix: "isboot-iscsi-", suffix: ".img" });
  await Deno.truncate(path, size);
  return path;
}

function rw16(op: 0x88 | 0x8a, lba: number, blocks: number): Uint8Array {
  const c = new Uint8Array(16);
  c[0] = op;
  const v = new DataView(c.buffer);
  v.setUint32(2, Math.floor(lba / 2 ** 32));
  v.setUint32(6, lba >>> 0);
  v.setUint32(10, blocks);
  return c;
}

/** TEST UNIT READY until the power-on UNIT ATTENTION is consumed. */
async function ready(s: Session, lun = 1): Promise<void> {
  for (let i = 0; i < 5; i++) {
    const r = await s.execute({ lun, cdb: new Uint8Array(6) });
    if (r.status === 0) return;
  }
  throw new Error("LUN never became ready");
}

/**
 * Random writes then random reads, `depth` in flight, never two overlapping
 * writes at once; checks the backing file and every read against a shadow copy.
 */
async function workload(
  s: Session,
  path: string,
  size: number,
  opts: { depth: number; ops: number; maxLen: number; seed: number },
) {
  const shadow = new Uint8Array(size);
  const bs = 512;
  let rnd = opts.seed;
  const next = () => {
    rnd ^= rnd << 13;
    rnd ^= rnd >>> 17;
    rnd ^= rnd << 5;
    return (rnd >>> 0) / 2 ** 32;
  };
  let maxInFlight = 0;
  const busy: [number, number][] = [];
  const overlaps = (a: number, n: number) => busy.some(([b, m]) => a < b + m && b < a + n);
  const pick = () => {
    const blocks = 1 + Math.floor(next() * (opts.maxLen / bs));
    const lba = Math.floor(next() * (size / bs - blocks));
    return { off: lba * bs, len: blocks * bs, lba, blocks };
  };
  async function run(write: boolean): Promise<void> {
    let issued = 0;
    const inflight = new Set<Promise<void>>();
    while (issued < opts.ops || inflight.size) {
      while (issued < opts.ops && inflight.size < opts.depth) {
        let r = pick();
        while (write && overlaps(r.off, r.len)) r = pick();
        issued++;
        const entry: [number, number] = [r.off, r.len];
        if (write) busy.push(entry);
        const p = (async () => {
          if (write) {
            const data = new Uint8Array(r.len);
            fillRandom(data, issued * 7919 + opts.seed);
            const resp = await s.execute({
              lun: 1,
              cdb: rw16(0x8a, r.lba, r.blocks),
              dataOut: data,
            });
            assert.equal(resp.status, 0, `WRITE(16) status ${resp.status}`);
            shadow.set(data, r.off);
            busy.splice(busy.indexOf(entry), 1);
          } else {
            const buf = new Uint8Array(r.len + 512);
            const resp = await s.execute({
              lun: 1,
              cdb: rw16(0x88, r.lba, r.blocks),
              dataInLength: r.len,
              dataInBuffer: buf,
            });
            assert.equal(resp.status, 0);
            assert.equal(resp.data.length, r.len);
            assert.equal(resp.data.buffer, buf.buffer, "Data-In placed in the caller's buffer");
            assert.ok(
              Buffer.from(resp.data).equals(Buffer.from(shadow.subarray(r.off, r.off + r.len))),
              `read at ${r.off}+${r.len} differs`,
            );
          }
        })();
        inflight.add(p);
        p.finally(() => inflight.delete(p));
        maxInFlight = Math.max(maxInFlight, s.outstanding.inFlight);
      }
      await Promise.race(inflight);
    }
  }
  await run(true);
  const file = await Deno.readFile(path);
  assert.equal(file.length, size);
  assert.ok(
    Buffer.from(file).equals(Buffer.from(shadow)),
    "backing file differs from what was written",
  );
  await run(false);
  return { maxInFlight };
}

import { Buffer } from "node:buffer";

Deno.test("tgtd: login without auth, 32+ random READ(16)/WRITE(16) in flight verified against the backing file, NOP-Out, logout", async () => {
  const size = 64 * MiB;
  const path = await shmFile(size);
  try {
    await withTgtd(async (tgt) => {
      const tid = await tgt.createTarget(IQN);
      await tgt.addLun(tid, { lun: 1, size, path });
      const s = await loginSession(config(tgt), new Logger({ quiet: true, sink: () => {} }));
      try {
        assert.equal(s.info.auth, "none");
        assert.ok(s.info.tsih > 0);
        assert.equal(s.info.params.maxRecvDataSegmentLength, 262144);
        assert.equal(s.info.params.errorRecoveryLevel, 0);
        assert.equal((await tgt.connections(tid)).length, 1);
        await ready(s);
        // INQUIRY with a 255-byte allocation: tgt sends less, reported as residual underflow.
        const inq = await s.execute({
          lun: 1,
          cdb: Uint8Array.of(0x12, 0, 0, 0, 255, 0),
          dataInLength: 255,
        });
        assert.equal(inq.status, 0);
        assert.ok(inq.residualUnderflow > 0);
        assert.equal(inq.data.length + inq.residualUnderflow, 255);
        assert.equal(new TextDecoder().decode(inq.data.subarray(8, 11)), "IET");
        const { maxInFlight } = await workload(s, path, size, {
          depth: 48,
          ops: 400,
          maxLen: 512 * 1024,
          seed: 11,
        });
        assert.ok(maxInFlight >= 32, `only ${maxInFlight} commands in flight`);
        // A ping is an immediate NOP-Out: answered, and no CmdSN taken (§11.18).
        const before = s.window;
        const rtt = await s.ping();
        assert.ok(Number.isFinite(rtt) && rtt >= 0 && rtt < 5000, `ping round trip ${rtt} ms`);
        assert.deepEqual(s.window.cmdSN, before.cmdSN, "a ping took a CmdSN");
        assert.equal(s.reconnects, 0, "the session reconnected under the workload");
        assert.equal(s.state, "open");
      } finally {
        await s.close();
      }
      assert.deepEqual(await tgt.connections(tid), [], "logout left a connection on the target");
      assert.equal(await s.ended, null);
      assert.equal(s.state, "closed");
      await assert.rejects(s.execute({ lun: 1, cdb: new Uint8Array(6) }), OperationalError);
    });
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("tgtd: CRC32C header and data digests wanted by the target, unsolicited data and R2T", async () => {
  const size = 48 * MiB;
  const path = await shmFile(size);
  try {
    await withTgtd(async (tgt) => {
      const tid = await tgt.createTarget(IQN);
      await tgt.addLun(tid, { lun: 1, size, path });
      await tgt.setDigests(tid, "CRC32C", "CRC32C");
      // Small segments and bursts so one write takes immediate data, unsolicited
      // Data-Out up to FirstBurstLength and then several R2Ts.
      for (
        const [k, v] of [
          ["InitialR2T", "No"],
          ["ImmediateData", "Yes"],
          ["FirstBurstLength", "65536"],
          ["MaxBurstLength", "131072"],
          ["MaxRecvDataSegmentLength", "16384"],
          ["MaxOutstandingR2T", "4"],
        ]
      ) {
        await tgt.setParam(tid, k, v);
      }
      // tgt's CRC32C setting is a preference: our default offer (None,CRC32C) takes it.
      const s = await loginSession(config(tgt), new Logger({ quiet: true, sink: () => {} }));
      try {
        const p = s.info.params;
        assert.equal(p.headerDigest, true);
        assert.equal(p.dataDigest, true);
        assert.equal(p.initialR2T, false);
        assert.equal(p.immediateData, true);
        assert.equal(p.firstBurstLength, 65536);
        assert.equal(p.maxBurstLength, 131072);
        assert.equal(p.maxXmitDataSegmentLength, 16384);
        await ready(s);
        const { maxInFlight } = await workload(s, path, size, {
          depth: 40,
          ops: 250,
          maxLen: 1024 * 1024,
          seed: 23,
        });
        assert.ok(maxInFlight >= 32, `only ${maxInFlight} commands in flight`);
      } finally {
        await s.close();
      }
    });
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("tgtd: requiring CRC32C from a target that refuses digests fails login cleanly", async () => {
  await withTgtd(async (tgt) => {
    const tid = await tgt.createTarget(IQN);
    await tgt.addLun(tid, { lun: 1, size: MiB });
    await tgt.setDigests(tid, "None", "None");
    await assert.rejects(
      loginSession(
        config(tgt, { headerDigest: "crc32c", dataDigest: "crc32c" }),
        new Logger({ quiet: true, sink: () => {} }),
      ),
      (e) => e instanceof OperationalError && /HeaderDigest=None/.test(e.message),
    );
    await assert.rejects(
      loginSession(
        config(tgt, { targetName: IQN + "-missing" }),
        new Logger({ quiet: true, sink: () => {} }),
      ),
      (e) => e instanceof OperationalError && /target not found \(0x0203\)/.test(e.message),
    );
    const s = await loginSession(
      config(tgt, { headerDigest: "none", dataDigest: "none" }),
      new Logger({ quiet: true, sink: () => {} }),
    );
    assert.equal(s.info.params.headerDigest, false);
    await s.close();
  });
});

Deno.test("tgtd: one-way and mutual CHAP with every algorithm tgt implements; secrets never logged", async () => {
  await withTgtd(async (tgt) => {
    const tid = await tgt.createTarget(IQN);
    await tgt.addLun(tid, { lun: 1, size: MiB });
    const chap = { user: "alice", secret: "alice-secret-12" };
    const mutual = { user: "target-one", secret: "target-secret-34" };
    await tgt.addChap(tid, chap, mutual);
    const cases: [readonly ChapAlgorithmName[], boolean, string][] = [
      [["md5"], false, "md5"],
      [["md5"], true, "md5"],
      // tgt numbers SHA-1 as CHAP_A=7: we retry that way when sha1 is allowed.
      [["sha3-256", "sha256", "sha1", "md5"], false, "sha1 (as CHAP_A=7)"],
      [["sha3-256", "sha256", "sha1", "md5"], true, "sha1 (as CHAP_A=7)"],
    ];
    for (const [algs, withMutual, want] of cases) {
      const { log, lines } = captureLog();
      const s = await loginSession(
        config(tgt, {
          chapAlgorithms: algs,
          chap: { user: chap.user, secret: enc.encode(chap.secret) },
          ...(withMutual
            ? { mutual: { user: mutual.user, secret: enc.encode(mutual.secret) } }
            : {}),
        }),
        log,
      );
      try {
        assert.equal(s.info.auth, withMutual ? "mutual" : "chap");
        assert.equal(s.info.chapAlgorithm, want);
        await ready(s);
      } finally {
        await s.close();
      }
      const all = lines.join("\n") + JSON.stringify(s.info);
      assert.ok(
        !all.includes(chap.secret) && !all.includes(mutual.secret),
        "a secret reached the log",
      );
    }
    // SHA-256 alone cannot work with tgt (its 7 is SHA-1): a clear AuthError.
    await assert.rejects(
      loginSession(
        config(tgt, {
          chapAlgorithms: ["sha256"],
          chap: { user: chap.user, secret: enc.encode(chap.secret) },
        }),
        new Logger({ quiet: true, sink: () => {} }),
      ),
      (e) => e instanceof AuthError && /sha1/.test(e.message),
    );
  });
});

Deno.test("tgtd: wrong secrets and a target that fails mutual CHAP are AuthError without secrets", async () => {
  await withTgtd(async (tgt) => {
    const tid = await tgt.createTarget(IQN);
    await tgt.addLun(tid, { lun: 1, size: MiB });
    await tgt.addChap(tid, { user: "alice", secret: "alice-secret-12" }, {
      user: "target-one",
      secret: "target-secret-34",
    });
    const tries: [Partial<SessionConfig>, string[]][] = [
      [{ chap: { user: "alice", secret: enc.encode("WRONG-secret-99") } }, ["WRONG-secret-99"]],
      [{ chap: { user: "mallory", secret: enc.encode("alice-secret-12") } }, ["alice-secret-12"]],
      [{
        chap: { user: "alice", secret: enc.encode("alice-secret-12") },
        mutual: { user: "target-one", secret: enc.encode("NOT-the-target-56") },
      }, ["alice-secret-12", "NOT-the-target-56"]],
      [{}, []], // no credentials at all for a target that requires CHAP
    ];
    for (const [extra, secrets] of tries) {
      const { log, lines } = captureLog();
      await assert.rejects(
        loginSession(config(tgt, { chapAlgorithms: ["md5"], ...extra }), log),
        (e) => {
          assert.ok(e instanceof AuthError, `${e}`);
          assert.equal(e.exitCode, 4);
          for (const sec of secrets) {
            assert.ok(!e.message.includes(sec), e.message);
            assert.ok(!lines.join("\n").includes(sec));
          }
          return true;
        },
      );
    }
    // Same secret both ways is refused before anything is sent (RFC 7143 §12.1.3).
    await assert.rejects(
      loginSession(
        config(tgt, {
          chap: { user: "alice", secret: enc.encode("same-secret-123") },
          mutual: { user: "target-one", secret: enc.encode("same-secret-123") },
        }),
        new Logger({ quiet: true, sink: () => {} }),
      ),
      AuthError,
    );
  });
});

Deno.test("tgtd on ::1: IPv6 portal, discovery of several targets, target NOP-In pings answered, task management", async () => {
  await withTgtd(async (tgt) => {
    const names = ["a", "b", "c"].map((n) => `${IQN}-${n}`);
    for (const n of names) {
      const tid = await tgt.createTarget(n);
      await tgt.addLun(tid, { lun: 1, size: MiB });
    }
    const found = await discoverTargets({
      portal: { host: "::1", port: tgt.port },
      initiatorName: INITIATOR,
      chapAlgorithms: ["md5"],
      headerDigest: "prefer-none",
      dataDigest: "prefer-none",
    }, new Logger({ quiet: true, sink: () => {} }));
    assert.deepEqual(found.map((t) => t.name).sort(), names);
    for (const t of found) assert.deepEqual(t.portals, [{ host: "::1", port: tgt.port, tpgt: 1 }]);

    // The target pings every second and drops us after 2 unanswered pings.
    await tgt.setParam(1, "nop_interval", "1");
    await tgt.setParam(1, "nop_count", "2");
    const s = await loginSession(
      config(tgt, { targetName: names[0] }),
      new Logger({ quiet: true, sink: () => {} }),
    );
    try {
      assert.match(s.info.portal, /^\[::1\]:\d+$/);
      await ready(s);
      const statBefore = s.window.expStatSN;
      const connBefore = await tgt.connections(1);
      assert.equal(connBefore.length, 1);
      await new Promise((r) => setTimeout(r, 3500));
      // Had a ping gone unanswered, the target would have dropped the
      // connection and the session would have logged in again (recovery is
      // on): the same single connection and no reconnect say it did not.
      assert.deepEqual(
        await tgt.connections(1),
        connBefore,
        "target dropped us: NOP-In not answered",
      );
      assert.equal(s.reconnects, 0, "the session reconnected: a NOP-In went unanswered");
      assert.equal(s.state, "open");
      await ready(s);
      assert.ok(s.window.expStatSN !== statBefore);
      assert.equal(await s.taskManagement(TMF_LOGICAL_UNIT_RESET, 1), 0);
      // ABORT TASK for a task the target does not have: "function complete" or "task does not exist".
      assert.ok(
        [0, 1].includes(
          await s.taskManagement(TMF_ABORT_TASK, 1, { itt: 0x12345, cmdSN: s.window.cmdSN }),
        ),
      );
    } finally {
      await s.close();
    }
  }, { host: "::1" });
});

Deno.test("tgtd: with recovery off (recoveryTimeoutMs 0), a connection deleted by the target fails commands with OperationalError", async () => {
  await withTgtd(async (tgt) => {
    const tid = await tgt.createTarget(IQN);
    await tgt.addLun(tid, { lun: 1, size: 8 * MiB });
    const s = await loginSession(
      config(tgt, { recoveryTimeoutMs: 0 }),
      new Logger({ quiet: true, sink: () => {} }),
    );
    await ready(s);
    assert.equal(await tgt.deleteConnections(tid), 1);
    const r = s.execute({ lun: 1, cdb: rw16(0x88, 0, 8), dataInLength: 4096 });
    await assert.rejects(r, OperationalError);
    assert.ok((await s.ended) instanceof OperationalError);
    assert.equal(s.state, "failed");
    await assert.rejects(s.execute({ lun: 1, cdb: new Uint8Array(6) }), OperationalError);
    await s.close();
  });
});
