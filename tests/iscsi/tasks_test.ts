/** The session's task table: ITTs, the replay order after a lost connection, idle and drain waits. */
import assert from "node:assert/strict";
import { newTask, type Task, TaskTable } from "../../src/iscsi/tasks.ts";

const read = { lun: 1, cdb: new Uint8Array(10), dataInLength: 512 };
const write = { lun: 1, cdb: new Uint8Array(10), dataOut: new Uint8Array(4096) };

function issue(tab: TaskTable, cmdSN: number, cmd = write): Task {
  const t = newTask(cmd, 0, () => {}, () => {});
  t.itt = tab.allocItt(() => false);
  t.cmdSN = cmdSN >>> 0;
  tab.inFlight.set(t.itt, t);
  return t;
}

Deno.test("newTask: direction, length and buffer from the command", () => {
  const r = newTask(read, 30_000, () => {}, () => {});
  assert.equal(r.read, true);
  assert.equal(r.write, false);
  assert.equal(r.expectedLength, 512);
  assert.equal(r.dataIn?.length, 512);
  assert.equal(r.timeoutMs, 30_000);
  const w = newTask(write, 0, () => {}, () => {});
  assert.equal(w.read, false);
  assert.equal(w.write, true);
  assert.equal(w.expectedLength, 4096);
  assert.equal(w.dataIn, null);
});

Deno.test("allocItt skips ITTs in flight, taken by immediate requests, or ended by task management", () => {
  const tab = new TaskTable();
  const a = issue(tab, 10); // ITT 1
  assert.equal(a.itt, 1);
  tab.rememberEnded([a]);
  tab.takeOut(a);
  const taken = new Set([2, 3]);
  assert.equal(tab.allocItt((itt) => taken.has(itt)), 4);
  assert.ok(tab.endedByTmf(1));
  tab.forgetEnded(1);
  assert.equal(tab.endedByTmf(1), false);
  // rememberEnded only takes tasks still in flight.
  const b = issue(tab, 11);
  tab.takeOut(b);
  tab.rememberEnded([b]);
  assert.equal(tab.endedByTmf(b.itt), false);
});

Deno.test("requeueUnfinished: in flight and deferred go back to the queue front in CmdSN order across the wrap", () => {
  const tab = new TaskTable();
  const late = newTask(write, 0, () => {}, () => {}); // queued, never issued
  tab.queue.push(late);
  const c = issue(tab, 1);
  const a = issue(tab, 0xfffffffe);
  const b = issue(tab, 0xffffffff);
  // b was rejected "not now": deferred, out of the in-flight map.
  tab.takeOut(b);
  tab.deferred.push(b);
  a.timer = setTimeout(() => assert.fail("timer not stopped"), 50);
  a.aborting = true;
  tab.requeueUnfinished();
  assert.deepEqual(tab.queue.map((t) => t.cmdSN), [0xfffffffe, 0xffffffff, 1, 0]);
  assert.equal(tab.queue[3], late);
  assert.equal(tab.queue[2], c);
  assert.equal(tab.inFlight.size, 0);
  assert.equal(tab.deferred.length, 0);
  assert.equal(a.timer, undefined);
  assert.equal(a.aborting, false);
});

Deno.test("whenIdle resolves when the last task leaves; drained fires once nothing is in flight or queued", async () => {
  const tab = new TaskTable();
  // Nothing in flight: resolved at once, no timer left behind (the op sanitizer checks).
  await tab.whenIdle(10_000);
  const a = issue(tab, 1);
  const b = issue(tab, 2);
  let idle = false;
  const waiting = tab.whenIdle(10_000).then(() => (idle = true));
  let drained = 0;
  tab.drained = () => drained++;
  tab.queue.push(newTask(write, 0, () => {}, () => {}));
  assert.equal(tab.finish(a), true);
  assert.equal(tab.finish(a), false, "a stale second answer finds nothing");
  await Promise.resolve();
  assert.equal(idle, false);
  assert.equal(tab.finish(b), true);
  await waiting;
  assert.equal(idle, true);
  assert.equal(drained, 0, "a queued task is left");
  tab.queue.length = 0;
  tab.checkDrained();
  assert.equal(drained, 1);
});

Deno.test("takeAll empties the table and stops every timer", () => {
  const tab = new TaskTable();
  const a = issue(tab, 1);
  a.timer = setTimeout(() => assert.fail("timer not stopped"), 50);
  const d = issue(tab, 2);
  tab.takeOut(d);
  tab.deferred.push(d);
  const q = newTask(read, 0, () => {}, () => {});
  tab.queue.push(q);
  assert.deepEqual(new Set(tab.takeAll()), new Set([a, d, q]));
  assert.equal(tab.inFlight.size + tab.deferred.length + tab.queue.length, 0);
  assert.equal(a.timer, undefined);
});
