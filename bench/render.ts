/**
 * Re-draw docs/bench/chart.svg and table.md from a results.json (after a
 * change to the chart or table code, without running the bench again).
 *
 * Usage: deno run -A bench/render.ts [docs/bench]
 */
import { chart, type Row, table } from "./lib/report.ts";

const dir = Deno.args[0] ?? "docs/bench";
const res = JSON.parse(await Deno.readTextFile(`${dir}/results.json`)) as {
  meta: { date: string; options: { runs: number } };
  rows: Row[];
};
await Deno.writeTextFile(
  `${dir}/chart.svg`,
  chart(
    res.rows,
    `isboot bench ${
      res.meta.date.slice(0, 16)
    }Z: % of ceiling (medians of ${res.meta.options.runs})`,
  ),
);
const old = await Deno.readTextFile(`${dir}/table.md`).catch(() => "");
const extras = old.slice(old.indexOf("| figure |"));
await Deno.writeTextFile(
  `${dir}/table.md`,
  `<!-- written by bench/run.ts ${res.meta.date} -->\n${table(res.rows)}\n\n${
    old.includes("| figure |") ? extras.trimEnd() + "\n" : ""
  }`,
);
console.log(`re-drew ${dir}/chart.svg and table.md`);
