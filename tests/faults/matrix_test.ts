/**
 * The fault matrix as tests: one test per fault × workload through
 * `isboot serve` (see matrix.ts for what a row checks).
 *
 * These rows prove iSCSI session recovery (reconnect, reinstatement, replay)
 * in src/iscsi/; `make test` runs 18 of the 48 (about 2.5 minutes; see
 * MAKE_TEST_ROWS), `make soak` all of them (about 5 minutes). ISBOOT_FAULTS=0
 * skips them during development:
 *   scripts/run-tests.sh tests/faults/matrix_test.ts
 * ISBOOT_FAULTS_SERVER=qemu-nbd runs the same rows against qemu-nbd over
 * libiscsi, the baseline (and a check that the rows themselves are sound).
 */
import assert from "node:assert/strict";
import {
  FAULTS,
  formatTable,
  type RowResult,
  runRow,
  type ServerKind,
  type Workload,
  WORKLOADS,
} from "./matrix.ts";

const enabled = Deno.env.get("ISBOOT_FAULTS") !== "0";
/** `make soak` sets it: every fault × every workload. */
const soak = Deno.env.get("ISBOOT_SOAK") === "1";

/**
 * The rows `make test` runs: each fault with the workload that exercises it
 * most (reads where the fault hits the target's data, writes with FUA or
 * flush elsewhere), and the tgtd restart with all three, since that is where a
 * recovery once stalled. `make soak` runs the other rows too (their names say
 * so). Keyed by the start of the fault's name.
 */
const MAKE_TEST_ROWS: [string, readonly Workload[]][] = [
  ["cut", ["seq-write-fua"]],
  ["reset", ["rand-write-flush"]],
  ["stall", ["rand-read-verify"]],
  ["black hole", ["seq-write-fua"]],
  ["corrupt header byte, target→initiator", ["rand-read-verify"]],
  ["corrupt header byte, initiator→target", ["rand-write-flush"]],
  ["corrupt data-segment byte", ["seq-write-fua"]],
  ["tgtd SIGKILL", WORKLOADS],
  ["tgtadm delete conn", ["rand-write-flush"]],
  ["target requests logout", ["seq-write-fua"]],
  ["hung command (", ["rand-write-flush"]],
  // tgtd may still answer a task the reset ended (docs/faults.md, "Hung
  // commands: late answers after the reset"): with writes in flight.
  ["hung command, ABORT TASK unanswered", ["seq-write-fua"]],
  ["multipath, active path cut", ["seq-write-fua"]],
  ["multipath, active path reset", ["rand-write-flush"]],
  ["multipath, active path black hole", ["rand-read-verify"]],
  // The workload whose server grows the most under the cap.
  ["memory cap", ["rand-read-verify"]],
];

function inMakeTest(fault: string, workload: Workload): boolean {
  const entry = MAKE_TEST_ROWS.find(([prefix]) => fault.startsWith(prefix));
  // A fault not listed runs whole: a new fault is never left out by mistake.
  return entry === undefined || entry[1].includes(workload);
}
const server = (Deno.env.get("ISBOOT_FAULTS_SERVER") ?? "isboot") as ServerKind;
const rows: RowResult[] = [];
/** Rows whose test started (a --filter may leave some out), as "fault × workload". */
const started: string[] = [];

for (const fault of FAULTS) {
  for (const workload of WORKLOADS) {
    const extra = !inMakeTest(fault.name, workload);
    Deno.test({
      name: `fault matrix${extra ? " (make soak)" : ""}: ${fault.name} × ${workload}`,
      ignore: !enabled || (extra && !soak),
      // The proxy's node:net sockets and the row's children are all closed by
      // runRow; node:net may finish closing after the test returns.
      sanitizeOps: false,
      sanitizeResources: false,
      fn: async () => {
        started.push(`${fault.name} × ${workload}`);
        const row = await runRow(fault, workload, server);
        rows.push(row);
        assert.ok(row.pass, `${fault.name} × ${workload} (${server}): ${row.notes.join("; ")}`);
      },
    });
  }
}

// Runs after the rows (tests in a file run in order): every row that started
// must have produced one result (runRow threw for none), every result must
// pass, and the printed table must show each of them as passed.
Deno.test({
  name: "fault matrix: table",
  ignore: !enabled,
  fn: () => {
    const table = formatTable(rows);
    console.log(`\nfault matrix, server ${server}:\n${table}\n`);
    assert.deepEqual(
      rows.map((r) => `${r.fault} × ${r.workload}`),
      started,
      "a row that started left no result",
    );
    const failed = rows.filter((r) => !r.pass).map((r) => `${r.fault} × ${r.workload}`);
    assert.deepEqual(failed, [], "rows failed");
    const lines = table.split("\n").slice(2);
    assert.deepEqual(
      lines.map((l) => l.split(" | ").slice(0, 3).join(" | ")),
      rows.map((r) => `| ${r.fault} | ${r.workload} | pass`),
    );
    assert.ok(rows.every((r) => r.server === server));
  },
});
