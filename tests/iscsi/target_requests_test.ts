/**
 * What a target asks of the initiator in full feature phase, and what a
 * target that stops answering does to it, from the scripted target with a
 * RAM disk (tests/helpers/fake_target/): a logout request under load (§11.9.1 event
 * 1), a renegotiation request (event 4), Rejects by reason (§11.17.1) and
 * a command that never completes (ABORT TASK, LOGICAL UNIT RESET,
 * reconnect). Recovery is on (the root disk's default: wait forever), and
 * no request may see an error unless the reason says it must.
 */
import assert from "node:assert/strict";
import { OperationalError } from "../../src/errors.ts";
import { Logger } from "../../src/log.ts";
import { loginSession, type Session } from "../../src/iscsi/session.ts";
import type { ScsiCommand } from "../../src/scsi/transport.ts";
import {
  type FakeConn,
  FakeDisk,
  type FakePdu,
  fakeSessionConfig,
  FakeTarget,
} from "../helpers/fake_target/mod.ts";
import { until } from "../helpers/wait.ts";

const quiet = new Logger({ quiet: true, sink: () => {} });
const BLOCK = 512;

function cdb16(op: number, lba: number, blocks: number): Uint8Array {
  const cdb = new Uint8Array(16);
  const v = new DataView(cdb.buffer);
  cdb[0] = op;
  v.setUint32(6, lba);
  v.setUint32(10, blocks);
  return cdb;
}

function read16(lba: number, blocks: number): ScsiCommand {
  return { lun: 1, cdb: cdb16(0x88, lba, blocks), dataInLength: blocks * BLOCK };
}

function write16(lba: number, data: Uint8Array): ScsiCommand {
  return { lun: 1, cdb: cdb16(0x8a, lba, data.length / BLOCK), dataOut: data };
}

/** Write i's contents: its number, then a byte that differs from its neighbours'. */
function pattern(i: number, bytes: number): Uint8Array {
  const d = new Uint8Array(bytes).fill((i % 251) + 1);
  new DataView(d.buffer).setUint32(0, i);
  return d;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `n` writes of `blocks` blocks each, `depth` at a time; rejects on the first error. */
async function writeLoad(s: Session, n: number, blocks: number, depth: number): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      const r = await s.execute(write16(i * blocks, pattern(i, blocks * BLOCK)));
      assert.equal(r.status, 0, `write ${i}`);
    }
  };
  await Promise.all(Array.from({ length: depth }, worker));
}

function checkDisk(disk: FakeDisk, n: number, blocks: number): void {
  for (let i = 0; i < n; i++) {
    const got = disk.bytes.subarray(i * blocks * BLOCK, (i + 1) * blocks * BLOCK);
    assert.deepEqual(got, pattern(i, blocks * BLOCK), `write ${i} is not on the disk`);
  }
}

Deno.test("target requests logout under a QD32 write load: commands held, Logout, relogin, replay; every write lands", async () => {
  const disk = new FakeDisk(8192);
  let asked = false;
  let rejected = 0;
  let logouts = 0;
  let commandsAfterLogout = 0;
  const fake = new FakeTarget(async (c, index) => {
    const first = await c.acceptLogin();
    if (index > 0) return disk.serve(c, first);
    let n = 0;
    let held: FakePdu | null = null;
    let loggedOut = false;
    await disk.serve(c, first, async (pdu, d) => {
      if (pdu.opcode === 0x06) {
        logouts++;
        loggedOut = true;
        return false;
      }
      if (pdu.opcode !== 0x01) return false;
      if (loggedOut) commandsAfterLogout++;
      d.take(pdu);
      if (asked) {
        // §11.9.1: the target may reject new I/O with "Waiting for Logout".
        rejected++;
        await d.reject(pdu, 0x0c);
        return true;
      }
      if (++n === 40) {
        held = pdu; // still in flight when the request goes out
        return true;
      }
      if (n === 41) {
        // The request crosses command 41 on the wire: 41 and whatever
        // follows it is rejected; 40 completes while the initiator drains.
        asked = true;
        await d.asyncMessage(1, { p3: 5 });
        rejected++;
        await d.reject(pdu, 0x0c);
        const late = held as FakePdu;
        setTimeout(() => void disk.execute(d, late).catch(() => {}), 100);
        return true;
      }
      return false;
    });
  });
  try {
    const s = await loginSession(fakeSessionConfig(fake.port), quiet);
    await writeLoad(s, 256, 16, 32);
    checkDisk(disk, 256, 16);
    assert.ok(asked && rejected > 0, `rejected ${rejected}`);
    assert.equal(logouts, 1);
    assert.equal(commandsAfterLogout, 0);
    assert.equal(s.reconnects, 1);
    assert.equal(disk.conns.length, 2);
    await s.close();
    assert.deepEqual(fake.errors, []);
  } finally {
    await fake.close();
  }
});

Deno.test("Rejects that mean 'not now' are resent: the CmdSN taken (fresh CmdSN) or left as a gap (same CmdSN)", async () => {
  for (const taken of [true, false]) {
    const disk = new FakeDisk(64);
    disk.bytes.fill(0x77);
    const seen: { cmdSN: number; itt: number }[] = [];
    const fake = new FakeTarget(async (c) => {
      const first = await c.acceptLogin();
      let rejects = 0;
      await disk.serve(c, first, async (pdu, d) => {
        if (pdu.opcode !== 0x01) return false;
        seen.push({ cmdSN: pdu.cmdSN, itt: pdu.itt });
        if (rejects < 2) {
          if (taken) d.take(pdu);
          // Long operation reject, then immediate command reject: both "resend later".
          await d.reject(pdu, rejects++ === 0 ? 0x0a : 0x06);
          return true;
        }
        return false;
      });
    });
    try {
      const s = await loginSession(fakeSessionConfig(fake.port), quiet);
      const r = await s.execute(read16(0, 1));
      assert.equal(r.status, 0);
      assert.ok(r.data.every((x) => x === 0x77));
      assert.equal(seen.length, 3, JSON.stringify(seen));
      const sns = seen.map((x) => x.cmdSN);
      if (taken) assert.deepEqual(sns, [sns[0], sns[0] + 1, sns[0] + 2]);
      else assert.deepEqual(sns, [sns[0], sns[0], sns[0]]);
      assert.equal(s.reconnects, 0);
      await s.close();
      assert.deepEqual(fake.errors, []);
    } finally {
      await fake.close();
    }
  }
});

Deno.test("Rejects that cannot be resent fail the command with the reason named; the session goes on", async () => {
  const disk = new FakeDisk(64);
  const reasons = [0x05, 0x09, 0x04];
  const fake = new FakeTarget(async (c) => {
    const first = await c.acceptLogin();
    let n = 0;
    await disk.serve(c, first, async (pdu, d) => {
      if (pdu.opcode !== 0x01 || n >= reasons.length) return false;
      d.take(pdu);
      await d.reject(pdu, reasons[n++]);
      return true;
    });
  });
  try {
    const s = await loginSession(fakeSessionConfig(fake.port), quiet);
    for (const name of ["command not supported", "invalid PDU field", "protocol error"]) {
      await assert.rejects(
        s.execute(read16(0, 1)),
        (e) => e instanceof OperationalError && e.message.includes(name),
        name,
      );
    }
    assert.equal((await s.execute(read16(0, 1))).status, 0);
    assert.equal(s.reconnects, 0);
    await s.close();
  } finally {
    await fake.close();
  }
});

Deno.test("a renegotiation request (AsyncEvent 4) is answered by Logout and a new login; nothing fails", async () => {
  const disk = new FakeDisk(64);
  const seen: string[] = [];
  let asked = false;
  const fake = new FakeTarget(async (c, index) => {
    const first = await c.acceptLogin();
    seen.push(`login ${index + 1}`);
    await disk.serve(c, first, async (pdu, d) => {
      if (pdu.opcode === 0x06) seen.push("logout");
      if (pdu.opcode === 0x04) seen.push("text");
      if (pdu.opcode !== 0x01) return false;
      seen.push(`command on ${index + 1}`);
      if (index === 0 && !asked) {
        asked = true;
        d.take(pdu);
        await d.asyncMessage(4, { p3: 5 });
        setTimeout(() => void disk.execute(d, pdu).catch(() => {}), 50);
        return true;
      }
      return false;
    });
  });
  try {
    const s = await loginSession(fakeSessionConfig(fake.port), quiet);
    const one = s.execute(read16(0, 1));
    await until("the renegotiation request", () => asked);
    await sleep(20);
    const two = s.execute(read16(1, 1));
    const [r1, r2] = await Promise.all([one, two]);
    assert.equal(r1.status, 0);
    assert.equal(r2.status, 0);
    assert.deepEqual(seen, ["login 1", "command on 1", "logout", "login 2", "command on 2"]);
    assert.equal(s.reconnects, 1);
    await s.close();
    assert.deepEqual(fake.errors, []);
  } finally {
    await fake.close();
  }
});

/** A script whose first `hang` commands on the first connection are never answered; TMFs as `tmf` says. */
function hangingTarget(
  disk: FakeDisk,
  o: { hang: number; tmf: (func: number) => number | null },
  log: string[],
): FakeTarget {
  return new FakeTarget(async (c, index) => {
    const first = await c.acceptLogin();
    if (index > 0) log.push("relogin");
    let hung = 0;
    await disk.serve(c, first, async (pdu: FakePdu, d: FakeConn) => {
      if (pdu.opcode === 0x02) {
        const func = pdu.bhs[1] & 0x7f;
        log.push(`tmf ${func}`);
        const answer = o.tmf(func);
        if (answer !== null) await d.tmfResponse(pdu, answer);
        return true;
      }
      if (pdu.opcode === 0x01) {
        log.push(`command ${index + 1}`);
        if (index === 0 && hung < o.hang) {
          hung++;
          d.take(pdu);
          return true; // never answered
        }
      }
      return false;
    });
  });
}

Deno.test("a command the target never completes (NOPs answered) is aborted and re-issued, and completes", async () => {
  const disk = new FakeDisk(64);
  disk.bytes.fill(0x3c);
  const log: string[] = [];
  const fake = hangingTarget(disk, { hang: 1, tmf: () => 0 }, log);
  try {
    const s = await loginSession(
      fakeSessionConfig(fake.port, {
        commandTimeoutMs: 200,
        nopIntervalMs: 50,
        nopTimeoutMs: 1000,
      }),
      quiet,
    );
    const r = await s.execute(read16(0, 1));
    assert.equal(r.status, 0);
    assert.ok(r.data.every((x) => x === 0x3c));
    assert.deepEqual(log, ["command 1", "tmf 1", "command 1"]);
    assert.equal(s.reconnects, 0);
    await s.close();
    assert.deepEqual(fake.errors, []);
  } finally {
    await fake.close();
  }
});

Deno.test("ABORT TASK refused: LOGICAL UNIT RESET, and every task of the LU is re-issued, none fails", async () => {
  const disk = new FakeDisk(64);
  const log: string[] = [];
  // 255: function rejected; the reset is then done (0).
  const fake = hangingTarget(disk, { hang: 2, tmf: (f) => (f === 1 ? 255 : 0) }, log);
  try {
    const s = await loginSession(fakeSessionConfig(fake.port, { commandTimeoutMs: 200 }), quiet);
    const rs = await Promise.all([s.execute(read16(0, 1)), s.execute(read16(1, 1))]);
    for (const r of rs) assert.equal(r.status, 0);
    assert.deepEqual(log, ["command 1", "command 1", "tmf 1", "tmf 5", "command 1", "command 1"]);
    assert.equal(s.reconnects, 0);
    await s.close();
    assert.deepEqual(fake.errors, []);
  } finally {
    await fake.close();
  }
});

Deno.test("ABORT TASK unanswered escalates to LOGICAL UNIT RESET, then to a reconnect with replay", async () => {
  const disk = new FakeDisk(64);
  disk.bytes.fill(0x5e);
  const log: string[] = [];
  const fake = hangingTarget(disk, { hang: 1, tmf: () => null }, log);
  try {
    const s = await loginSession(
      fakeSessionConfig(fake.port, {
        commandTimeoutMs: 200,
        nopIntervalMs: 50,
        nopTimeoutMs: 1000,
      }),
      quiet,
    );
    const r = await s.execute(read16(0, 1));
    assert.equal(r.status, 0);
    assert.ok(r.data.every((x) => x === 0x5e));
    assert.deepEqual(log, ["command 1", "tmf 1", "tmf 5", "relogin", "command 2"]);
    assert.equal(s.reconnects, 1);
    await s.close();
    assert.deepEqual(fake.errors, []);
  } finally {
    await fake.close();
  }
});

Deno.test("LOGICAL UNIT RESET re-issues only the tasks it covered (CmdSN below its own), not one issued while it was pending", async () => {
  const disk = new FakeDisk(64);
  disk.bytes.fill(0x6b);
  const log: string[] = [];
  // The first command hangs; ABORT TASK is refused; the reset's answer is
  // held until the next command arrives, which is answered after it (§11.5.1:
  // the reset acts on the commands with a CmdSN lower than its own only).
  let heldReset: { pdu: FakePdu; d: FakeConn } | null = null;
  let hung = false;
  const fake = new FakeTarget(async (c, index) => {
    const first = await c.acceptLogin();
    if (index > 0) log.push("relogin");
    await disk.serve(c, first, async (pdu: FakePdu, d: FakeConn) => {
      if (pdu.opcode === 0x02) {
        const func = pdu.bhs[1] & 0x7f;
        log.push(`tmf ${func}`);
        if (func === 1) await d.tmfResponse(pdu, 255);
        else heldReset = { pdu, d };
        return true;
      }
      if (pdu.opcode !== 0x01) return false;
      const lba = new DataView(pdu.bhs.buffer, pdu.bhs.byteOffset + 32, 16).getUint32(6);
      log.push(`command lba ${lba}`);
      if (!hung) {
        hung = true;
        d.take(pdu);
        return true; // never answered
      }
      const reset = heldReset;
      if (reset) {
        heldReset = null;
        await reset.d.tmfResponse(reset.pdu, 0);
      }
      return false; // executed and answered, after the reset's answer
    });
  });
  try {
    const s = await loginSession(fakeSessionConfig(fake.port, { commandTimeoutMs: 200 }), quiet);
    const a = s.execute(read16(0, 1));
    await until("the LOGICAL UNIT RESET", () => log.includes("tmf 5"));
    const b = await s.execute(read16(1, 1));
    assert.equal(b.status, 0);
    assert.equal((await a).status, 0);
    assert.deepEqual(log, [
      "command lba 0",
      "tmf 1",
      "tmf 5",
      "command lba 1",
      "command lba 0",
    ]);
    assert.equal(s.reconnects, 0, "a command's answer after the reset cost the connection");
    await s.close();
    assert.deepEqual(fake.errors, []);
  } finally {
    await fake.close();
  }
});

Deno.test("a late answer for a task LOGICAL UNIT RESET ended (Data-In and SCSI Response) is dropped with a line; no reconnect", async () => {
  const disk = new FakeDisk(64);
  disk.bytes.fill(0x4d);
  const log: string[] = [];
  // The read and the write hang; ABORT TASK is refused; the reset is
  // answered "function complete" and then, as tgtd may, the target still
  // answers both ended tasks under their old ITTs.
  const held: FakePdu[] = [];
  const fake = new FakeTarget(async (c, index) => {
    const first = await c.acceptLogin();
    if (index > 0) log.push("relogin");
    await disk.serve(c, first, async (pdu: FakePdu, d: FakeConn) => {
      if (pdu.opcode === 0x02) {
        const func = pdu.bhs[1] & 0x7f;
        log.push(`tmf ${func}`);
        if (func === 1) {
          await d.tmfResponse(pdu, 255);
          return true;
        }
        await d.tmfResponse(pdu, 0);
        for (const p of held.splice(0)) await disk.execute(d, p); // the late answers
        return true;
      }
      if (pdu.opcode !== 0x01) return false;
      log.push(`command ${pdu.bhs[32].toString(16)}`);
      if (log.filter((l) => l.startsWith("command")).length <= 2) {
        d.take(pdu);
        held.push(pdu);
        return true;
      }
      return false;
    });
  });
  const lines: string[] = [];
  const logger = new Logger({ sink: (_level, l: string) => lines.push(l) });
  try {
    const s = await loginSession(fakeSessionConfig(fake.port, { commandTimeoutMs: 200 }), logger);
    const data = pattern(7, BLOCK);
    const [r, w] = await Promise.all([s.execute(read16(0, 1)), s.execute(write16(2, data))]);
    assert.equal(r.status, 0);
    assert.ok(r.data.every((x) => x === 0x4d));
    assert.equal(w.status, 0);
    assert.deepEqual(disk.bytes.subarray(2 * BLOCK, 3 * BLOCK), data);
    assert.deepEqual(log.slice(0, 4), ["command 88", "command 8a", "tmf 1", "tmf 5"]);
    assert.deepEqual(log.slice(4).sort(), ["command 88", "command 8a"]);
    assert.equal(s.reconnects, 0, "a late answer after the reset cost the connection");
    const late = lines.filter((l) => /late .* ended by task management .*dropped/.test(l));
    assert.equal(late.length, 2, lines.join("\n"));
    // The session still works, and its ITTs do not collide with the dropped ones.
    assert.equal((await s.execute(read16(2, 1))).status, 0);
    await s.close();
    assert.deepEqual(fake.errors, []);
  } finally {
    await fake.close();
  }
});

Deno.test("a Logout the target never answers is bounded: the session drops the connection, logs in again and replays", async () => {
  const disk = new FakeDisk(64);
  disk.bytes.fill(0x2d);
  const log: string[] = [];
  const fake = new FakeTarget(async (c, index) => {
    const first = await c.acceptLogin();
    log.push(`login ${index + 1}`);
    if (index > 0) return disk.serve(c, first);
    let n = 0;
    await disk.serve(c, first, async (pdu, d) => {
      if (pdu.opcode === 0x06) {
        log.push("logout (not answered)");
        return true; // the connection stays open, silent on this request
      }
      if (pdu.opcode !== 0x01 || ++n !== 1) return false;
      // The first command is held, and the target asks for a logout.
      d.take(pdu);
      await d.asyncMessage(1, { p3: 60 });
      return true;
    });
  });
  try {
    const s = await loginSession(fakeSessionConfig(fake.port), quiet);
    const r = await s.execute(read16(0, 1));
    assert.equal(r.status, 0);
    assert.ok(r.data.every((x) => x === 0x2d));
    assert.deepEqual(log, ["login 1", "logout (not answered)", "login 2"]);
    assert.equal(s.reconnects, 1);
    await s.close();
    assert.deepEqual(fake.errors, []);
  } finally {
    await fake.close();
  }
});

Deno.test("a Time2Wait beyond the RFC's 3600 s (Async Message, Logout Response) is held to 3600 s", async () => {
  for (const via of ["async", "logout"] as const) {
    const lines: string[] = [];
    const log = new Logger({ quiet: true, sink: (_level, msg) => lines.push(msg) });
    const fake = new FakeTarget(async (c, index) => {
      const first = await c.acceptLogin();
      if (index > 0) return;
      const disk = new FakeDisk(8);
      await disk.serve(c, first, async (pdu, d) => {
        if (pdu.opcode === 0x06) {
          // Logout Response "closed successfully" with Time2Wait 65535 (bytes 40-41).
          const b = d.bhs(0x26, pdu.itt);
          new DataView(b.buffer).setUint16(40, 65535);
          await c.send(b);
          return true;
        }
        if (pdu.opcode !== 0x01) return false;
        d.take(pdu);
        if (via === "async") {
          // Drop the connection, Time2Wait (Parameter2) 65535 s.
          await d.asyncMessage(2, { p2: 65535, p3: 0 });
        } else {
          await d.asyncMessage(1, { p3: 1 });
        }
        return true;
      });
    });
    try {
      const s = await loginSession(fakeSessionConfig(fake.port, { progressIntervalMs: 50 }), log);
      const r = s.execute(read16(0, 1)).catch((e) => e);
      await until("the recovery's progress line", () => lines.some((l) => /Time2Wait \(/.test(l)));
      const waits = lines.flatMap((l) => l.match(/Time2Wait \((\d+) s\)/)?.[1] ?? []);
      assert.equal(waits[0], "3600", `${via}: ${waits.join(",")}`);
      await s.close();
      assert.ok((await r) instanceof OperationalError);
    } finally {
      await fake.close();
    }
  }
});

Deno.test("a ping rejected as 'immediate command reject' (too many immediate commands) proves the target alive; no reconnect", async () => {
  const disk = new FakeDisk(8);
  let rejectedPings = 0;
  const fake = new FakeTarget(async (c) => {
    const first = await c.acceptLogin();
    await disk.serve(c, first, async (pdu, d) => {
      if (pdu.opcode === 0x00 && pdu.itt !== 0xffffffff && rejectedPings < 3) {
        rejectedPings++;
        await d.reject(pdu, 0x06);
        return true;
      }
      return false;
    });
  });
  try {
    const s = await loginSession(fakeSessionConfig(fake.port), quiet);
    const ms = await s.ping(2000);
    assert.ok(ms >= 0);
    assert.equal(rejectedPings, 1);
    // The idle pinger meets two more such Rejects: still the first connection.
    const t = await loginSession(
      fakeSessionConfig(fake.port, { nopIntervalMs: 20, nopTimeoutMs: 1000 }),
      quiet,
    );
    await until("two rejected idle pings", () => rejectedPings === 3);
    await sleep(100);
    assert.equal(t.reconnects, 0);
    assert.equal((await t.execute(read16(0, 1))).status, 0);
    await t.close();
    await s.close();
    assert.deepEqual(fake.errors, []);
  } finally {
    await fake.close();
  }
});
