/**
 * scripts/check-imports.ts, run as `make check` runs it, on small trees
 * planted in a temp dir (a cycle, an upward import, bench/ importing tests/,
 * a file in no layer) and on this repository, which must pass.
 */
import assert from "node:assert/strict";
import { parseLayerTable } from "../../scripts/check-imports.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const SCRIPT = `${ROOT}scripts/check-imports.ts`;

const ARCHITECTURE = `# Architecture

## Layers

| layer  | paths        | may use  |
| ------ | ------------ | -------- |
| \`main\` | \`main.ts\`    | all      |
| \`high\` | \`src/high/\`  | low      |
| \`low\`  | \`src/low/\`   | core     |
| \`core\` | \`src/*.ts\`   | nothing  |

## Something else

| layer | paths |
| ----- | ----- |
| other | \`src/other/\` |
`;

async function check(root: string): Promise<{ code: number; lines: string[] }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", "--allow-write", "--allow-run", SCRIPT, root],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { code: out.code, lines: text.split("\n").filter((l) => l !== "") };
}

/** A tree with docs/architecture.md and the given files (path -> text). */
async function plant(files: Record<string, string>): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "check-imports-test-" });
  for (const [path, text] of Object.entries({ "docs/architecture.md": ARCHITECTURE, ...files })) {
    const p = `${dir}/${path}`;
    await Deno.mkdir(p.slice(0, p.lastIndexOf("/")), { recursive: true });
    await Deno.writeTextFile(p, text);
  }
  return dir;
}

const CLEAN = {
  "main.ts": 'import { b } from "./src/high/b.ts";\nconsole.log(b);\n',
  "src/core.ts": "export const core = 1;\n",
  "src/low/a.ts": 'import { core } from "../core.ts";\nexport const a = core + 1;\n',
  "src/high/b.ts": [
    "// an import in a comment is not one: import { x } from '../high/b.ts';",
    'import { a } from "../low/a.ts";',
    "export const b = a + 1;",
    "",
  ].join("\n"),
  "bench/run.ts": 'import { b } from "../src/high/b.ts";\nconsole.log(b);\n',
  "tests/t_test.ts": 'import { b } from "../src/high/b.ts";\nconsole.log(b);\n',
};

Deno.test("check-imports: a tree that keeps the rules passes, silently", async () => {
  const dir = await plant(CLEAN);
  try {
    assert.deepEqual(await check(dir), { code: 0, lines: [] });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("check-imports: a planted cycle (type-only, over two lines) is one line naming both edges", async () => {
  const dir = await plant({
    ...CLEAN,
    "src/low/a.ts":
      'import type {\n  B2,\n} from "./b2.ts";\nexport const a = 1;\nexport type A = B2;\n',
    "src/low/b2.ts": 'import { a } from "./a.ts";\nexport type B2 = typeof a;\n',
  });
  try {
    const r = await check(dir);
    assert.equal(r.code, 1);
    assert.deepEqual(r.lines, [
      "check-imports: import cycle: src/low/a.ts:3 -> src/low/b2.ts, src/low/b2.ts:1 -> src/low/a.ts",
      "check-imports: 1 problem(s)",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("check-imports: an upward import, src/ or bench/ into tests/, a file in no layer", async () => {
  const dir = await plant({
    ...CLEAN,
    "src/core.ts": 'export { a } from "./low/a.ts";\nexport const core = 1;\n',
    "src/low/c.ts": '\n\nconst m = await import("../high/b.ts");\nexport const c = m.b;\n',
    "src/other/x.ts": "export const x = 1;\n",
    "src/high/y.ts": 'import { x } from "../other/x.ts";\nimport "../../tests/t_test.ts";\n',
    "bench/run.ts": 'import "../tests/t_test.ts";\n',
  });
  try {
    const r = await check(dir);
    assert.equal(r.code, 1);
    for (
      const line of [
        // core.ts -> low/a.ts -> core.ts is also a cycle.
        "check-imports: import cycle: src/core.ts:1 -> src/low/a.ts, src/low/a.ts:1 -> src/core.ts",
        "check-imports: upward import (core -> low): src/core.ts:1 -> src/low/a.ts",
        "check-imports: upward import (low -> high): src/low/c.ts:3 -> src/high/b.ts",
        "check-imports: forbidden import (bench/ never imports tests/): bench/run.ts:1 -> tests/t_test.ts",
        "check-imports: forbidden import (src/ imports only src/): src/high/y.ts:2 -> tests/t_test.ts",
        "check-imports: not in the layer table of docs/architecture.md: src/other/x.ts",
      ]
    ) assert.ok(r.lines.includes(line), `missing: ${line}\nin:\n${r.lines.join("\n")}`);
    assert.equal(r.lines.at(-1), "check-imports: 6 problem(s)");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("check-imports: a missing layer table is a one-line error, exit 2", async () => {
  const dir = await plant({ ...CLEAN, "docs/architecture.md": "# Architecture\n" });
  try {
    assert.deepEqual(await check(dir), {
      code: 2,
      lines: ['check-imports: no "## Layers" section'],
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("check-imports: the layer table is read top first, and only from its section", () => {
  assert.deepEqual(parseLayerTable(ARCHITECTURE), [
    { name: "main", paths: ["main.ts"] },
    { name: "high", paths: ["src/high/"] },
    { name: "low", paths: ["src/low/"] },
    { name: "core", paths: ["src/*.ts"] },
  ]);
});

Deno.test("check-imports: this repository keeps its own rules, every src/ folder in a layer", async () => {
  assert.deepEqual(await check(ROOT), { code: 0, lines: [] });
  const layers = parseLayerTable(await Deno.readTextFile(`${ROOT}docs/architecture.md`));
  const paths = layers.flatMap((l) => l.paths);
  for await (const e of Deno.readDir(`${ROOT}src`)) {
    if (e.isDirectory) assert.ok(paths.includes(`src/${e.name}/`), `src/${e.name}/ has no layer`);
  }
});
