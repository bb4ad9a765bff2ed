/**
 * CmdSN and StatSN are 32-bit serial numbers (RFC 7143 §4.2.2.1, compared
 * by RFC 1982 serial arithmetic): a session that runs long enough crosses
 * 2^32 -> 0 in both. The fake target of tests/helpers/fake_target/
 * starts them just below 2^32 (a real target would need 2^32 commands to
 * get there); more commands than the CmdSN window holds then go through
 * the wrap at once. A session that compared the numbers as plain integers
 * would stall once MaxCmdSN wrapped (the window looks closed) or drop the
 * responses after the StatSN wrap as old ones.
 */
import assert from "node:assert/strict";
import { Logger } from "../../src/log.ts";
import { loginSession } from "../../src/iscsi/session.ts";
import { rw16 } from "../../src/scsi/cdb.ts";
import { FakeTarget } from "../helpers/fake_target/mod.ts";

const quiet = new Logger({ quiet: true, sink: () => {} });
const TWO32 = 2 ** 32;
/** First CmdSN and StatSN: the wrap comes after 40 commands and 30 responses. */
const FIRST_CMDSN = TWO32 - 40;
const FIRST_STATSN = TWO32 - 30;
/** Commands: a few WRITEs, then more READs than twice the fake's window of 32 at once. */
const WRITES = 8;
const READS = 96;
const N = WRITES + READS;

/** `p`, or a failure after `ms`: a session that stalls at the wrap must fail, not hang. */
async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done in ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** `n` consecutive serial numbers from `first`, mod 2^32. */
const serial = (first: number, n: number) =>
  Array.from({ length: n }, (_, i) => (first + i) % TWO32);

Deno.test("session: commands run across the CmdSN and StatSN wrap, in order, none lost", async () => {
  const t = await FakeTarget.start({
    scenario: "normal",
    firstCmdSN: FIRST_CMDSN,
    firstStatSN: FIRST_STATSN,
  });
  const s = await loginSession({
    portal: { host: "127.0.0.1", port: t.port },
    targetName: t.iqn,
    lun: t.lun,
    initiatorName: "iqn.2026-11.test.isboot:wrap",
    chapAlgorithms: ["md5"],
    headerDigest: "prefer-none",
    dataDigest: "prefer-none",
    // Pings would take StatSNs of their own; a lost connection must fail the test.
    nopIntervalMs: 0,
    recoveryTimeoutMs: 0,
  }, quiet);
  try {
    assert.equal(s.window.cmdSN, FIRST_CMDSN, "the session starts at the target's ExpCmdSN");
    const loginStatSNs = t.sequence[0].statSNs.length;
    // WRITEs one at a time (each waits for its R2T and Data-Out, so
    // concurrent writes could finish in another order), then READs all at once.
    const block = (i: number) => new Uint8Array(512).fill((i * 7 + 1) & 0xff);
    for (let i = 0; i < WRITES; i++) {
      const w = await within(
        5000,
        `write ${i}`,
        s.execute({ lun: t.lun, cdb: rw16(true, 16 + i, 1), dataOut: block(i) }),
      );
      assert.equal(w.status, 0);
    }
    const done: number[] = [];
    const reads = Array.from(
      { length: READS },
      (_, i) =>
        s.execute({ lun: t.lun, cdb: rw16(false, 16 + (i % WRITES), 1), dataInLength: 512 })
          .then((x) => (done.push(i), x)),
    );
    const results = await within(10_000, "reads across the wrap", Promise.all(reads));
    assert.deepEqual(results.map((r) => r.status), new Array(READS).fill(0));
    for (const [i, r] of results.entries()) {
      assert.deepEqual(r.data, block(i % WRITES), `read ${i} returned another block`);
    }
    // The target answers in the order it receives; so must they complete.
    assert.deepEqual(done, serial(0, READS), "commands completed out of order");
    const seq = t.sequence;
    assert.equal(seq.length, 1, "the session reconnected");
    assert.deepEqual(seq[0].cmdSNs, serial(FIRST_CMDSN, N), "CmdSNs as the target received them");
    assert.ok(seq[0].cmdSNs.includes(TWO32 - 1) && seq[0].cmdSNs.includes(0));
    assert.deepEqual(seq[0].outOfWindow, [], "commands sent past MaxCmdSN");
    const statSNs = seq[0].statSNs;
    assert.deepEqual(statSNs, serial(FIRST_STATSN, loginStatSNs + N));
    assert.ok(statSNs.includes(TWO32 - 1) && statSNs.includes(0));
    assert.deepEqual(
      [s.window.cmdSN, s.window.expStatSN],
      [(FIRST_CMDSN + N) % TWO32, (statSNs.at(-1)! + 1) % TWO32],
    );
    assert.equal(s.state, "open");
  } finally {
    await s.close();
    await t.close();
  }
});
