/**
 * What a real target will not do on demand, from the scripted target in
 * tests/helpers/fake_target/: login redirection (to a real tgtd), login and SendTargets
 * text split over several PDUs, discovery and mutual CHAP done right and
 * wrong, a reflected CHAP challenge, an empty challenge, and malformed
 * full-feature PDUs. Each malformed PDU must end the session with
 * IscsiProtocolError on the command, never a crash or a write past a buffer.
 */
import assert from "node:assert/strict";
import { md5 } from "hash-wasm";
import { AuthError, IsbootError, OperationalError } from "../../src/errors.ts";
import { Logger } from "../../src/log.ts";
import { discoverTargets } from "../../src/iscsi/discovery.ts";
import { defaultCrc32c } from "../../src/iscsi/digest.ts";
import { IscsiProtocolError } from "../../src/iscsi/errors.ts";
import { login, randomIsid } from "../../src/iscsi/login.ts";
import { loginSession } from "../../src/iscsi/session.ts";
import { type SessionConfig } from "../../src/iscsi/session_config.ts";
import { encodeText } from "../../src/iscsi/text.ts";
import { withTgtd } from "../../peers/tgtd.ts";
import {
  echoOffers,
  type FakeConn,
  FakeDisk,
  type FakePdu,
  FakeTarget,
} from "../helpers/fake_target/mod.ts";

const quiet = new Logger({ quiet: true, sink: () => {} });
const enc = new TextEncoder();
const IQN = "iqn.2026-11.test.isboot:fake";

function cfg(port: number, extra: Partial<SessionConfig> = {}): SessionConfig {
  return {
    portal: { host: "127.0.0.1", port },
    targetName: IQN,
    lun: 1,
    initiatorName: "iqn.2026-11.test.isboot:init",
    chapAlgorithms: ["md5"],
    headerDigest: "prefer-none",
    dataDigest: "prefer-none",
    // These cases check detection: the first error ends the session. Recovery
    // from each of them is tests/recovery/ and tests/hostile/.
    recoveryTimeoutMs: 0,
    nopIntervalMs: 0,
    ...extra,
  };
}

function hexBytes(h: string): Uint8Array {
  return Uint8Array.from(h.slice(2).match(/../g) ?? [], (x) => Number.parseInt(x, 16));
}

async function md5Response(id: number, secret: string, challenge: Uint8Array): Promise<string> {
  const s = enc.encode(secret);
  const b = new Uint8Array(1 + s.length + challenge.length);
  b[0] = id;
  b.set(s, 1);
  b.set(challenge, 1 + s.length);
  return "0x" + (await md5(b));
}

/** Target-side CHAP with MD5; `mutualAnswer` decides what we send back as CHAP_R. */
async function chapLogin(
  c: FakeConn,
  o: {
    secret: string;
    challenge?: Uint8Array;
    mutual?: (id: number, ch: Uint8Array) => Promise<string>;
  },
): Promise<FakePdu> {
  let req = (await c.read()) as FakePdu;
  await c.loginResponse(req, { pairs: [["AuthMethod", "CHAP"]] });
  req = (await c.read()) as FakePdu;
  assert.equal(new Map(req.pairs()).get("CHAP_A"), "5");
  const challenge = o.challenge ?? crypto.getRandomValues(new Uint8Array(16));
  const chex = "0x" + Array.from(challenge, (x) => x.toString(16).padStart(2, "0")).join("");
  await c.loginResponse(req, { pairs: [["CHAP_A", "5"], ["CHAP_I", "9"], ["CHAP_C", chex]] });
  req = (await c.read()) as FakePdu;
  const got = new Map(req.pairs());
  if (got.get("CHAP_R") !== (await md5Response(9, o.secret, challenge))) {
    await c.loginResponse(req, { status: 0x0201 });
    return req;
  }
  const pairs: [string, string][] = [];
  if (got.has("CHAP_C") && o.mutual) {
    pairs.push(["CHAP_N", "fake-target"], [
      "CHAP_R",
      await o.mutual(Number(got.get("CHAP_I")), hexBytes(got.get("CHAP_C") as string)),
    ]);
  }
  await c.loginResponse(req, { transit: true, nsg: 1, pairs });
  return req;
}

Deno.test("fake target: login redirection is followed to the real target", async () => {
  await withTgtd(async (tgt) => {
    const tid = await tgt.createTarget(IQN);
    await tgt.addLun(tid, { lun: 1, size: 1 << 20 });
    const fake = new FakeTarget(async (c) => {
      const req = (await c.read()) as FakePdu;
      await c.loginResponse(req, {
        status: 0x0101,
        pairs: [["TargetAddress", `127.0.0.1:${tgt.port},1`]],
      });
    });
    try {
      const s = await loginSession(cfg(fake.port), quiet);
      assert.equal(s.info.portal, `127.0.0.1:${tgt.port}`);
      assert.equal((await tgt.connections(tid)).length, 1);
      await s.close();
    } finally {
      await fake.close();
    }
  });
});

Deno.test("fake target: login and SendTargets answers split over several PDUs (C bit, F=0 with TTT)", async () => {
  const fake = new FakeTarget(async (c) => {
    let req = (await c.read()) as FakePdu;
    await c.loginResponse(req, { transit: true, nsg: 1, pairs: [["AuthMethod", "None"]] });
    req = (await c.read()) as FakePdu;
    const text = encodeText([...echoOffers(req.pairs()), ["TargetAlias", "x".repeat(3000)]]);
    await c.loginResponse(req, { cont: true, raw: text.subarray(0, 1000) });
    req = (await c.read()) as FakePdu;
    assert.equal(req.data.length, 0);
    await c.loginResponse(req, { cont: true, raw: text.subarray(1000, 2500) });
    req = (await c.read()) as FakePdu;
    await c.loginResponse(req, { transit: true, nsg: 3, tsih: 3, raw: text.subarray(2500) });
    // SendTargets in three Text Responses.
    const answer = encodeText([
      ["TargetName", "iqn.2026-11.test:one"],
      ["TargetAddress", "[fd00::1]:3260,1"],
      ["TargetAddress", "192.0.2.7:3261,2"],
      ["TargetName", "iqn.2026-11.test:two"],
      ["TargetAlias", "y".repeat(5000)],
    ]);
    const parts = [answer.subarray(0, 40), answer.subarray(40, 3000), answer.subarray(3000)];
    for (let i = 0; i < parts.length; i++) {
      req = (await c.read()) as FakePdu;
      assert.equal(req.opcode, 0x04);
      const b = new Uint8Array(48);
      const v = new DataView(b.buffer);
      b[0] = 0x24;
      b[1] = i === parts.length - 1 ? 0x80 : 0x40;
      v.setUint32(16, req.itt);
      v.setUint32(20, i === parts.length - 1 ? 0xffffffff : 0x55);
      v.setUint32(24, c.statSN++);
      v.setUint32(28, req.cmdSN + 1);
      v.setUint32(32, req.cmdSN + 10);
      await c.send(b, parts[i]);
    }
    req = (await c.read()) as FakePdu;
    assert.equal(req.opcode, 0x06);
    const b = new Uint8Array(48);
    b[0] = 0x26;
    b[1] = 0x80;
    new DataView(b.buffer).setUint32(16, req.itt);
    await c.send(b);
  });
  try {
    const found = await discoverTargets({ ...cfg(fake.port) }, quiet);
    assert.deepEqual(found, [
      {
        name: "iqn.2026-11.test:one",
        portals: [{ host: "fd00::1", port: 3260, tpgt: 1 }, {
          host: "192.0.2.7",
          port: 3261,
          tpgt: 2,
        }],
      },
      {
        name: "iqn.2026-11.test:two",
        portals: [{ host: "127.0.0.1", port: fake.port, tpgt: null }],
      },
    ]);
    assert.deepEqual(fake.errors, []);
  } finally {
    await fake.close();
  }
});

Deno.test("fake target: a NOP-In ping during discovery is answered with its TTT and LUN (RFC 7143 §11.18)", async () => {
  const lun = [0x40, 0x05, 0, 0, 0, 0, 0, 0x2a]; // any 8 bytes: they must come back as they are
  const answers: FakePdu[] = [];
  const fake = new FakeTarget(async (c) => {
    await c.acceptLogin();
    let req = (await c.read()) as FakePdu;
    assert.equal(req.opcode, 0x04);
    const ping = new Uint8Array(48);
    const pv = new DataView(ping.buffer);
    ping[0] = 0x20;
    ping[1] = 0x80;
    ping.set(lun, 8);
    pv.setUint32(16, 0xffffffff);
    pv.setUint32(20, 0x1234);
    pv.setUint32(24, c.statSN); // a ping does not advance StatSN (§11.19)
    pv.setUint32(28, req.cmdSN + 1);
    pv.setUint32(32, req.cmdSN + 10);
    await c.send(ping);
    answers.push((await c.read()) as FakePdu);
    const b = new Uint8Array(48);
    const v = new DataView(b.buffer);
    b[0] = 0x24;
    b[1] = 0x80;
    v.setUint32(16, req.itt);
    v.setUint32(20, 0xffffffff);
    v.setUint32(24, c.statSN++);
    v.setUint32(28, req.cmdSN + 1);
    v.setUint32(32, req.cmdSN + 10);
    await c.send(b, encodeText([["TargetName", "iqn.2026-11.test:one"]]));
    req = (await c.read()) as FakePdu;
    assert.equal(req.opcode, 0x06);
    const lo = new Uint8Array(48);
    lo[0] = 0x26;
    lo[1] = 0x80;
    new DataView(lo.buffer).setUint32(16, req.itt);
    await c.send(lo);
  });
  try {
    const found = await discoverTargets({ ...cfg(fake.port) }, quiet);
    assert.deepEqual(found.map((t) => t.name), ["iqn.2026-11.test:one"]);
    assert.deepEqual(fake.errors, []);
    assert.equal(answers.length, 1);
    const a = answers[0];
    const av = new DataView(a.bhs.buffer);
    assert.deepEqual(
      [a.opcode, a.itt, av.getUint32(20), a.bhs[0] & 0x40],
      [0x00, 0xffffffff, 0x1234, 0x40],
    );
    assert.deepEqual([...a.bhs.subarray(8, 16)], lun, "NOP-Out LUN copied from the NOP-In");
  } finally {
    await fake.close();
  }
});

Deno.test("fake target: mutual CHAP verified, wrong target response and reflected or empty challenges refused", async () => {
  const crc = await defaultCrc32c();
  const chap = { user: "alice", secret: enc.encode("alice-secret-12") };
  const mutual = { user: "fake-target", secret: enc.encode("target-secret-34") };
  let seenChallenge: Uint8Array | null = null;
  const modes = ["good", "wrong", "record", "reflect", "empty"];
  const fake = new FakeTarget(async (c, i) => {
    const mode = modes[i];
    if (mode === "empty") {
      let req = (await c.read()) as FakePdu;
      await c.loginResponse(req, { pairs: [["AuthMethod", "CHAP"]] });
      req = (await c.read()) as FakePdu;
      await c.loginResponse(req, { pairs: [["CHAP_A", "5"], ["CHAP_I", "1"], ["CHAP_C", "0x"]] });
      await c.read();
      return;
    }
    const req = await chapLogin(c, {
      secret: "alice-secret-12",
      challenge: mode === "reflect" ? seenChallenge ?? undefined : undefined,
      mutual: async (id, ch) => {
        if (mode === "record") seenChallenge = ch;
        return mode === "wrong"
          ? "0x" + "00".repeat(16)
          : await md5Response(id, "target-secret-34", ch);
      },
    });
    void req;
    const op = await c.read();
    if (op) {
      await c.loginResponse(op, { transit: true, nsg: 3, tsih: 1, pairs: echoOffers(op.pairs()) });
    }
    await c.read();
  });
  try {
    const sent = new Set<string>();
    const base = {
      portal: { host: "127.0.0.1", port: fake.port },
      initiatorName: "iqn.2026-11.test.isboot:init",
      targetName: IQN,
      sessionType: "Normal" as const,
      chap,
      mutual,
      chapAlgorithms: ["md5"] as const,
      headerDigest: "prefer-none" as const,
      dataDigest: "prefer-none" as const,
      isid: randomIsid(),
      sentChallenges: sent,
    };
    const ok = await login(base, crc, quiet);
    assert.equal(ok.auth, "mutual");
    ok.conn.close();
    await assert.rejects(
      login(base, crc, quiet),
      (e) => e instanceof AuthError && /response is wrong/.test(e.message),
    );
    const rec = await login(base, crc, quiet);
    rec.conn.close();
    await assert.rejects(
      login(base, crc, quiet),
      (e) => e instanceof AuthError && /reflection/.test(e.message),
    );
    await assert.rejects(
      login(base, crc, quiet),
      (e) => e instanceof AuthError && /empty CHAP challenge/.test(e.message),
    );
  } finally {
    await fake.close();
  }
});

/** Build a target PDU header. */
function hdr(
  op: number,
  f: {
    maxCmdSN?: number;
    flags?: number;
    itt?: number;
    ttt?: number;
    statSN?: number;
    expCmdSN?: number;
    f36?: number;
    f40?: number;
    f44?: number;
    b2?: number;
    b3?: number;
  },
): Uint8Array {
  const b = new Uint8Array(48);
  const v = new DataView(b.buffer);
  b[0] = op;
  b[1] = f.flags ?? 0x80;
  b[2] = f.b2 ?? 0;
  b[3] = f.b3 ?? 0;
  v.setUint32(16, f.itt ?? 0xffffffff);
  v.setUint32(20, f.ttt ?? 0xffffffff);
  v.setUint32(24, f.statSN ?? 1);
  v.setUint32(28, f.expCmdSN ?? 1);
  v.setUint32(32, f.maxCmdSN ?? (f.expCmdSN ?? 1) + 31);
  v.setUint32(36, f.f36 ?? 0);
  v.setUint32(40, f.f40 ?? 0);
  v.setUint32(44, f.f44 ?? 0);
  return b;
}

Deno.test("fake target: malformed full-feature PDUs end the session with IscsiProtocolError, no crash", async () => {
  type Bad = {
    name: string;
    write?: boolean;
    respond: (c: FakeConn, cmd: FakePdu) => Promise<void>;
    error?: RegExp;
  };
  const len = 4096;
  const cases: Bad[] = [
    {
      name: "Data-In past the buffer",
      respond: (c, cmd) =>
        c.send(hdr(0x25, { itt: cmd.itt, flags: 0x80 }), new Uint8Array(len + 512)),
      error: /past the buffer/,
    },
    {
      name: "Data-In at a later offset than expected",
      respond: (c, cmd) =>
        c.send(hdr(0x25, { itt: cmd.itt, flags: 0x80, f40: 512 }), new Uint8Array(512)),
      error: /out of order/,
    },
    {
      name: "Data-In for an ITT we never used",
      respond: (c, cmd) =>
        c.send(hdr(0x25, { itt: cmd.itt + 1000, flags: 0x80 }), new Uint8Array(512)),
      error: /unknown ITT/,
    },
    {
      name: "R2T beyond the transfer",
      write: true,
      respond: (c, cmd) => c.send(hdr(0x31, { itt: cmd.itt, ttt: 7, f40: 0, f44: len + 4096 })),
      error: /R2T beyond the transfer/,
    },
    {
      name: "SCSI Response for an unknown ITT",
      respond: (c, cmd) => c.send(hdr(0x21, { itt: cmd.itt ^ 0xff00 })),
      error: /unknown ITT/,
    },
    {
      name: "SenseLength beyond the data segment",
      respond: (c, cmd) =>
        c.send(hdr(0x21, { itt: cmd.itt, b3: 2 }), Uint8Array.of(0x01, 0x00, 0x70)),
      error: /SenseLength/,
    },
    {
      name: "DataSegmentLength over what we declared",
      respond: async (c, cmd) => {
        const b = hdr(0x25, { itt: cmd.itt });
        b.set([0x10, 0, 0], 5); // 1 MiB
        await c.conn.write(b);
      },
      error: /exceeds our MaxRecvDataSegmentLength/,
    },
    {
      name: "unknown opcode",
      respond: (c, cmd) => c.send(hdr(0x3a, { itt: cmd.itt })),
      error: /opcode 0x3a/,
    },
    {
      name: "Login Response in full feature phase",
      respond: (c, cmd) => c.send(hdr(0x23, { itt: cmd.itt })),
      error: /unexpected Login Response/,
    },
    {
      name: "target closes the connection",
      respond: (c) => Promise.resolve(c.close()),
    },
  ];
  for (const bad of cases) {
    const fake = new FakeTarget(async (c) => {
      await c.acceptLogin();
      const cmd = (await c.read()) as FakePdu;
      await bad.respond(c, cmd);
      await c.read(); // until the initiator hangs up
    });
    try {
      const s = await loginSession(cfg(fake.port), quiet);
      const cdb = new Uint8Array(16);
      cdb[0] = bad.write ? 0x8a : 0x88;
      const buf = new Uint8Array(len + 8192).fill(0xee);
      const cmd = bad.write
        ? s.execute({ lun: 1, cdb, dataOut: new Uint8Array(len) })
        : s.execute({ lun: 1, cdb, dataInLength: len, dataInBuffer: buf.subarray(0, len) });
      await assert.rejects(cmd, (e) => {
        if (bad.error) {
          assert.ok(e instanceof IscsiProtocolError, `${bad.name}: ${e}`);
          assert.match((e as Error).message, bad.error, bad.name);
        } else assert.ok(e instanceof OperationalError, `${bad.name}: ${e}`);
        return true;
      }, bad.name);
      // Nothing was written past the command's buffer.
      assert.ok(buf.subarray(len).every((x) => x === 0xee), `${bad.name}: wrote past the buffer`);
      // The session is failed: later commands get the same error at once.
      await assert.rejects(s.execute({ lun: 1, cdb: new Uint8Array(6) }), IsbootError);
      await s.close();
    } finally {
      await fake.close();
    }
  }
});

Deno.test("fake target: an Async Message asking for logout is obeyed: new commands held, Logout, relogin, replay", async () => {
  const disk = new FakeDisk(64);
  const seen: string[] = [];
  let asked = false;
  const fake = new FakeTarget(async (c, index) => {
    const first = await c.acceptLogin();
    if (index > 0) seen.push("relogin");
    await disk.serve(c, first, async (pdu, d) => {
      if (pdu.opcode === 0x06) {
        // Answered late: commands sent meanwhile would reach this connection.
        seen.push("logout");
        setTimeout(() => void disk.answer(d, pdu).then(() => c.close(), () => {}), 300);
        return true;
      }
      if (pdu.opcode !== 0x01) return false;
      d.take(pdu);
      if (index > 0) {
        seen.push("command after relogin");
        return false;
      }
      if (asked) {
        seen.push("command after the request");
        await d.reject(pdu, 0x0c); // Waiting for Logout
        return true;
      }
      asked = true;
      seen.push("command");
      await d.asyncMessage(1, { p3: 5 }); // AsyncEvent 1, Parameter3 = 5 s
      setTimeout(() => void disk.execute(d, pdu).catch(() => {}), 100);
      return true;
    });
  });
  try {
    // Recovery on (forever): the logout is a recovery point, not an error.
    const s = await loginSession(cfg(fake.port, { recoveryTimeoutMs: undefined }), quiet);
    const cdb = (lba: number) => {
      const b = new Uint8Array(16);
      b[0] = 0x88;
      b[9] = lba;
      b[13] = 1;
      return b;
    };
    const one = s.execute({ lun: 1, cdb: cdb(0), dataInLength: 512 });
    for (let i = 0; i < 250 && !asked; i++) await new Promise((r) => setTimeout(r, 20));
    assert.ok(asked, "the command never reached the target");
    await new Promise((r) => setTimeout(r, 30));
    const two = s.execute({ lun: 1, cdb: cdb(1), dataInLength: 512 });
    const [r1, r2] = await Promise.all([one, two]);
    assert.equal(r1.status, 0);
    assert.equal(r2.status, 0);
    assert.deepEqual(seen, ["command", "logout", "relogin", "command after relogin"]);
    assert.equal(s.reconnects, 1);
    await s.close();
    assert.deepEqual(fake.errors, []);
  } finally {
    await fake.close();
  }
});

Deno.test("fake target: with recovery off a command that times out is aborted with ABORT TASK, then fails; the session lives on", async () => {
  let abortSeen: { ref: number; func: number } | null = null;
  const fake = new FakeTarget(async (c) => {
    await c.acceptLogin();
    const cmd = (await c.read()) as FakePdu; // never answered
    const tmf = (await c.read()) as FakePdu;
    abortSeen = { ref: new DataView(tmf.bhs.buffer).getUint32(20), func: tmf.bhs[1] & 0x7f };
    assert.equal(tmf.opcode, 0x02);
    assert.equal(abortSeen.ref, cmd.itt);
    await c.send(hdr(0x22, { itt: tmf.itt, b2: 0, statSN: 1 }));
    const tur = (await c.read()) as FakePdu;
    await c.send(hdr(0x21, { itt: tur.itt, statSN: 2, expCmdSN: tur.cmdSN + 1 }));
    await c.read();
  });
  try {
    const s = await loginSession(cfg(fake.port, { commandTimeoutMs: 150 }), quiet);
    const cdb = new Uint8Array(16);
    cdb[0] = 0x88;
    await assert.rejects(
      s.execute({ lun: 1, cdb, dataInLength: 512 }),
      (e) => e instanceof OperationalError && /timed out after 150 ms/.test(e.message),
    );
    assert.deepEqual(abortSeen, { ref: abortSeen!.ref, func: 1 });
    const r = await s.execute({ lun: 1, cdb: new Uint8Array(6) });
    assert.equal(r.status, 0);
    await s.close();
  } finally {
    await fake.close();
  }
});

Deno.test("fake target: with CRC32C digests a Data-In whose data digest is wrong is never accepted", async () => {
  const crc = await defaultCrc32c();
  const fake = new FakeTarget(async (c) => {
    await c.acceptLogin({ crc });
    for (let i = 0; i < 2; i++) {
      const cmd = (await c.read()) as FakePdu;
      c.corruptNextDataDigest = i === 1;
      // Phase-collapsed status: F + S, status GOOD, 512 bytes of 0x5a.
      await c.send(
        hdr(0x25, { itt: cmd.itt, flags: 0x81, statSN: 1 + i, expCmdSN: cmd.cmdSN + 1 }),
        new Uint8Array(512).fill(0x5a),
      );
    }
    await c.read();
  });
  try {
    const s = await loginSession(cfg(fake.port), quiet);
    assert.equal(s.info.params.headerDigest, true);
    assert.equal(s.info.params.dataDigest, true);
    const cdb = new Uint8Array(16);
    cdb[0] = 0x88;
    const good = await s.execute({ lun: 1, cdb, dataInLength: 512 });
    assert.equal(good.status, 0);
    assert.ok(good.data.every((x) => x === 0x5a));
    await assert.rejects(
      s.execute({ lun: 1, cdb, dataInLength: 512 }),
      (e) => e instanceof IscsiProtocolError && /data digest mismatch/.test(e.message),
    );
    await s.close();
    assert.deepEqual(fake.errors, []);
  } finally {
    await fake.close();
  }
});

Deno.test("fake target: commands beyond MaxCmdSN wait in the queue until the window opens", async () => {
  const seen: number[] = [];
  const fake = new FakeTarget(async (c) => {
    await c.acceptLogin({ window: 1 });
    for (let i = 0; i < 6; i++) {
      const cmd = (await c.read()) as FakePdu;
      seen.push(cmd.cmdSN);
      // Keep the window at one command: MaxCmdSN = ExpCmdSN.
      await c.send(
        hdr(0x21, {
          itt: cmd.itt,
          statSN: 1 + i,
          expCmdSN: cmd.cmdSN + 1,
          maxCmdSN: cmd.cmdSN + 1,
        }),
      );
    }
    await c.read();
  });
  try {
    const s = await loginSession(cfg(fake.port), quiet);
    const runs = Array.from({ length: 6 }, () => s.execute({ lun: 1, cdb: new Uint8Array(6) }));
    assert.deepEqual(s.outstanding, { inFlight: 1, queued: 5 });
    for (const r of await Promise.all(runs)) assert.equal(r.status, 0);
    assert.deepEqual(seen, seen.map((_, i) => (seen[0] + i) >>> 0));
    await s.close();
  } finally {
    await fake.close();
  }
});

Deno.test("fake target: NOP-Out pings that go unanswered fail the session", async () => {
  const fake = new FakeTarget(async (c) => {
    await c.acceptLogin();
    while (await c.read()) {
      // swallow everything, answer nothing
    }
  });
  try {
    const s = await loginSession(cfg(fake.port, { nopIntervalMs: 100, nopTimeoutMs: 200 }), quiet);
    await new Promise((r) => setTimeout(r, 500));
    await assert.rejects(s.execute({ lun: 1, cdb: new Uint8Array(6) }), /NOP-Out: no answer/);
    await s.close();
  } finally {
    await fake.close();
  }
});

Deno.test("fake target: mutual CHAP (both directions) with each standard algorithm (8 SHA3-256, 7 SHA-256, 6 SHA-1, 5 MD5)", async () => {
  const { createHash } = await import("node:crypto");
  const names: Record<string, string> = { "8": "sha3-256", "7": "sha256", "6": "sha1", "5": "md5" };
  const hash = (alg: string, id: number, secret: string, ch: Uint8Array) => {
    const h = createHash(names[alg]);
    h.update(Uint8Array.of(id));
    h.update(enc.encode(secret));
    h.update(ch);
    return "0x" + h.digest("hex");
  };
  const crc = await defaultCrc32c();
  for (const alg of ["8", "7", "6", "5"]) {
    const fake = new FakeTarget(async (c) => {
      let req = (await c.read()) as FakePdu;
      await c.loginResponse(req, { pairs: [["AuthMethod", "CHAP"]] });
      req = (await c.read()) as FakePdu;
      assert.equal(new Map(req.pairs()).get("CHAP_A"), "8,7,6,5");
      const ch = crypto.getRandomValues(new Uint8Array(40)); // any length
      await c.loginResponse(req, {
        pairs: [["CHAP_A", alg], ["CHAP_I", "200"], [
          "CHAP_C",
          "0b" + btoa(String.fromCharCode(...ch)),
        ]],
      });
      req = (await c.read()) as FakePdu;
      const got = new Map(req.pairs());
      if (got.get("CHAP_R") !== hash(alg, 200, "alice-secret-12", ch)) {
        await c.loginResponse(req, { status: 0x0201 });
        return;
      }
      const theirs = hexBytes(got.get("CHAP_C") as string);
      await c.loginResponse(req, {
        transit: true,
        nsg: 1,
        pairs: [["CHAP_N", "fake-target"], [
          "CHAP_R",
          hash(alg, Number(got.get("CHAP_I")), "target-secret-34", theirs),
        ]],
      });
      const op = (await c.read()) as FakePdu;
      await c.loginResponse(op, { transit: true, nsg: 3, tsih: 1, pairs: echoOffers(op.pairs()) });
      await c.read();
    });
    try {
      const r = await login(
        {
          portal: { host: "127.0.0.1", port: fake.port },
          initiatorName: "iqn.2026-11.test.isboot:init",
          targetName: IQN,
          sessionType: "Normal",
          chap: { user: "alice", secret: enc.encode("alice-secret-12") },
          mutual: { user: "fake-target", secret: enc.encode("target-secret-34") },
          chapAlgorithms: ["sha3-256", "sha256", "sha1", "md5"],
          headerDigest: "prefer-none",
          dataDigest: "prefer-none",
          isid: randomIsid(),
        },
        crc,
        quiet,
      );
      assert.equal(r.auth, "mutual");
      assert.equal(r.chapAlgorithm, names[alg]);
      r.conn.close();
      assert.deepEqual(fake.errors, []);
    } finally {
      await fake.close();
    }
  }
});
