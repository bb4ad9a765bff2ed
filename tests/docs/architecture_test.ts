/**
 * docs/architecture.md keeps up with the tree: every .ts file under src/
 * (and main.ts) has a row in its "Files" table, and every row there names a
 * file that exists. (Its "Layers" table is checked by
 * tests/scripts/check_imports_test.ts.)
 */
import assert from "node:assert/strict";

const ROOT = new URL("../../", import.meta.url).pathname;

/** The paths in the first column of the tables under "## Files". */
async function documentedFiles(): Promise<string[]> {
  const md = await Deno.readTextFile(`${ROOT}docs/architecture.md`);
  const start = md.indexOf("\n## Files\n");
  assert.ok(start >= 0, 'docs/architecture.md has no "## Files" section');
  const end = md.indexOf("\n## ", start + 1);
  const section = md.slice(start, end < 0 ? undefined : end);
  const out: string[] = [];
  for (const line of section.split("\n")) {
    const m = line.match(/^\|\s*`([^`]+\.ts)`\s*\|/);
    if (m) out.push(m[1]);
  }
  return out;
}

async function sourceFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(`${ROOT}${dir}`)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) out.push(...await sourceFiles(p));
    else if (e.name.endsWith(".ts")) out.push(p);
  }
  return out;
}

Deno.test("architecture.md: every src/ file has a row in the Files table, and no row is stale", async () => {
  const documented = await documentedFiles();
  const actual = ["main.ts", ...await sourceFiles("src")];
  const missing = actual.filter((f) => !documented.includes(f)).sort();
  const stale = documented.filter((f) => !actual.includes(f)).sort();
  assert.deepEqual({ missing, stale }, { missing: [], stale: [] });
  assert.equal(new Set(documented).size, documented.length, "a file listed twice");
});
