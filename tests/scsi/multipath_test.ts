/**
 * MultipathTransport over scripted paths (the SCSI layer is tested with a
 * transport it is handed; tests/recovery/multipath_test.ts runs it over
 * real iSCSI sessions to tgtd): the order of re-sent commands, every path
 * down and one coming back, the hold timeout, errors that are not a path's.
 */
import assert from "node:assert/strict";
import { OperationalError } from "../../src/errors.ts";
import { Logger } from "../../src/log.ts";
import { MultipathTransport, type PathTransport } from "../../src/scsi/multipath.ts";
import { PathDownError, type ScsiCommand, type ScsiResponse } from "../../src/scsi/transport.ts";

/** A path that records what it was sent and answers when told. */
class ScriptedPath implements PathTransport {
  up = true;
  maxTransferHint = 0;
  sent: { tag: number; resolve: (r: ScsiResponse) => void; reject: (e: Error) => void }[] = [];
  #listeners: (() => void)[] = [];
  log: number[] = [];

  execute(cmd: ScsiCommand): Promise<ScsiResponse> {
    if (!this.up) return Promise.reject(new PathDownError("down"));
    const tag = cmd.cdb[1];
    this.log.push(tag);
    return new Promise((resolve, reject) => this.sent.push({ tag, resolve, reject }));
  }
  onChange(listener: () => void): void {
    this.#listeners.push(listener);
  }
  /** The connection is lost: every command it had fails as a path-down, in order. */
  fail(): void {
    this.up = false;
    for (const f of this.#listeners) f();
    const sent = this.sent;
    this.sent = [];
    for (const s of sent) s.reject(new PathDownError("lost"));
  }
  back(): void {
    this.up = true;
    for (const f of this.#listeners) f();
  }
  answerAll(): void {
    const sent = this.sent;
    this.sent = [];
    for (const s of sent) {
      s.resolve({
        status: 0,
        data: new Uint8Array([s.tag]),
        residualOverflow: 0,
        residualUnderflow: 0,
      });
    }
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

const cmd = (tag: number): ScsiCommand => ({
  lun: 1,
  cdb: new Uint8Array([0x2a, tag, 0, 0, 0, 0, 0, 0, 0, 0]),
});
const tick = () => new Promise((r) => setTimeout(r, 0));

function rig(policy: "failover" | "round-robin", holdTimeoutMs?: number) {
  const a = new ScriptedPath();
  const b = new ScriptedPath();
  const lines: string[] = [];
  const mp = new MultipathTransport(
    [{ name: "A", transport: a }, { name: "B", transport: b }],
    { policy, log: new Logger({ sink: (_l, line) => lines.push(line) }), holdTimeoutMs },
  );
  return { a, b, mp, lines };
}

Deno.test("multipath: failover sends on A only; A's commands go on B in their order when A fails; A comes back as standby", async () => {
  const { a, b, mp, lines } = rig("failover");
  const done = [1, 2, 3, 4].map((t) => mp.execute(cmd(t)));
  assert.deepEqual(a.log, [1, 2, 3, 4]);
  assert.deepEqual(b.log, []);
  a.fail();
  await tick();
  assert.deepEqual(b.log, [1, 2, 3, 4]);
  b.answerAll();
  assert.deepEqual((await Promise.all(done)).map((r) => r.data[0]), [1, 2, 3, 4]);
  assert.deepEqual(mp.paths.map((p) => p.state), ["down", "active"]);
  a.back();
  assert.deepEqual(mp.paths.map((p) => p.state), ["standby", "active"]);
  assert.deepEqual(mp.paths.map((p) => [p.failures, p.commands]), [[1, 4], [0, 4]]);
  assert.ok(lines.some((l) => /path A is down; commands go on B/.test(l)), lines.join("\n"));
});

Deno.test("multipath: round-robin alternates; with every path down commands wait and go on the first path back", async () => {
  const { a, b, mp, lines } = rig("round-robin");
  const first = [1, 2].map((t) => mp.execute(cmd(t)));
  assert.deepEqual([a.log, b.log], [[2], [1]]);
  a.answerAll();
  b.answerAll();
  await Promise.all(first);
  a.fail();
  b.fail();
  const held = mp.execute(cmd(9));
  await tick();
  assert.deepEqual(mp.paths.map((p) => p.state), ["down", "down"]);
  assert.ok(lines.some((l) => /every path is down/.test(l)));
  b.back();
  await tick();
  assert.deepEqual(b.log, [1, 9]);
  b.answerAll();
  assert.equal((await held).data[0], 9);
});

Deno.test("multipath: the hold timeout fails what waited for a path; other errors pass through unretried", async () => {
  const { a, b, mp } = rig("failover", 50);
  a.fail();
  b.fail();
  await assert.rejects(
    mp.execute(cmd(1)),
    (e) => e instanceof OperationalError && /no path .* within 0.05 s/.test(e.message),
  );
  a.back();
  const p = mp.execute(cmd(2));
  a.sent[0].reject(new RangeError("not a path's fault"));
  await assert.rejects(p, RangeError);
  assert.deepEqual(b.log, []);
  await mp.close();
  await assert.rejects(mp.execute(cmd(3)), /closed/);
});
