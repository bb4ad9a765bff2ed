/**
 * The fault matrix as tests: one test per fault × workload through
 * `isboot serve` (see matrix.ts for what a row checks).
 *
 * These rows prove iSCSI session recovery (reconnect, reinstatement, replay)
 * in src/iscsi/; `make test` runs them (about 5 minutes). ISBOOT_FAULTS=0
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
  WORKLOADS,
} from "./matrix.ts";

const enabled = Deno.env.get("ISBOOT_FAULTS") !== "0";
const server = (Deno.env.get("ISBOOT_FAULTS_SERVER") ?? "isboot") as ServerKind;
const rows: RowResult[] = [];
/** Rows whose test started (a --filter may leave some out), as "fault × workload". */
const started: string[] = [];

for (const fault of FAULTS) {
  for (const workload of WORKLOADS) {
    Deno.test({
      name: `fault matrix: ${fault.name} × ${workload}`,
      ignore: !enabled,
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
