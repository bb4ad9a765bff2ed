/**
 * The import rules of docs/architecture.md, checked (`make check` runs this):
 *
 * - no import cycle among the files of main.ts, src/, peers/ and bench/;
 * - no import up the layer table of docs/architecture.md (section "Layers"):
 *   a file in src/ or main.ts imports its own layer and the layers below it;
 * - src/ imports only src/ (and npm:/node: modules); bench/ and peers/ import
 *   src/ and peers/, never tests/.
 *
 * The import graph is Deno's own (`deno info --json`), so multi-line,
 * type-only, re-exporting and literal dynamic imports are all edges, and an
 * import spelled in a comment is not. Every offence is one line on stderr;
 * exit 1 if there is any, 0 otherwise.
 *
 * Usage: deno run --allow-read --allow-write --allow-run scripts/check-imports.ts [ROOT]
 * (ROOT: the repository, default the one this script is in).
 *
 * @example
 * ```ts
 * const layers = parseLayerTable(await Deno.readTextFile("docs/architecture.md"));
 * const graph = await importGraph(Deno.cwd());
 * for (const p of checkImports(graph, layers)) console.error(formatProblem(p));
 * ```
 */

/** One row of the layer table: its name and the paths it holds (`src/x/`, `src/*.ts`, `main.ts`). */
export interface Layer {
  name: string;
  paths: string[];
}

/** An import: `from` (repository-relative path, 1-based line) imports `to`. */
export interface Edge {
  from: string;
  line: number;
  to: string;
}

/** What the checker objects to. */
export type Problem =
  | { kind: "cycle"; edges: Edge[] }
  | { kind: "upward"; edge: Edge; fromLayer: string; toLayer: string }
  | { kind: "forbidden"; edge: Edge; why: string }
  | { kind: "unlayered"; file: string };

/** The heading of the section of docs/architecture.md that holds the layer table. */
export const LAYER_SECTION = "## Layers";

/**
 * The layer table of docs/architecture.md: the first table under
 * {@link LAYER_SECTION}, top layer first. Its first column names the layer,
 * its second lists the layer's paths in backticks.
 *
 * @example
 * ```ts
 * parseLayerTable("## Layers\n\n| layer | paths |\n|-|-|\n| cli | `src/cli/` |\n");
 * // [{ name: "cli", paths: ["src/cli/"] }]
 * ```
 */
export function parseLayerTable(markdown: string): Layer[] {
  const lines = markdown.split("\n");
  const start = lines.findIndex((l) => l.trim() === LAYER_SECTION);
  if (start < 0) throw new Error(`no "${LAYER_SECTION}" section`);
  const layers: Layer[] = [];
  let inTable = false;
  for (const line of lines.slice(start + 1)) {
    if (line.startsWith("## ")) break;
    const row = line.trim();
    if (!row.startsWith("|")) {
      if (inTable) break;
      continue;
    }
    const cells = row.slice(1, row.endsWith("|") ? -1 : undefined).split("|").map((c) => c.trim());
    if (!inTable) { // the header row
      inTable = true;
      continue;
    }
    if (/^:?-+:?$/.test(cells[0])) continue; // the separator row
    const paths = [...(cells[1] ?? "").matchAll(/`([^`]+)`/g)].map((m) => m[1]);
    if (paths.length === 0) throw new Error(`layer "${cells[0]}" names no paths`);
    layers.push({ name: cells[0].replaceAll("`", ""), paths });
  }
  if (layers.length === 0) throw new Error(`no layer table under "${LAYER_SECTION}"`);
  return layers;
}

/** Whether a layer path (`src/x/`, `src/*.ts`, `main.ts`) holds a file. */
function holds(path: string, file: string): boolean {
  if (path.endsWith("/")) return file.startsWith(path);
  const star = path.indexOf("*");
  if (star < 0) return file === path;
  const [dir, ext] = [path.slice(0, star), path.slice(star + 1)];
  const rest = file.slice(dir.length);
  return file.startsWith(dir) && rest.endsWith(ext) && !rest.includes("/");
}

/** Index of the layer that holds a file, counted from the bottom (0); -1 if none. */
function rankOf(layers: Layer[], file: string): number {
  const top = layers.findIndex((l) => l.paths.some((p) => holds(p, file)));
  return top < 0 ? -1 : layers.length - 1 - top;
}

/** The .ts files under a directory, repository-relative, sorted. */
async function tsFiles(root: string, dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string) => {
    const entries: Deno.DirEntry[] = [];
    try {
      for await (const e of Deno.readDir(`${root}/${rel}`)) entries.push(e);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return;
      throw e;
    }
    for (const e of entries) {
      const p = `${rel}/${e.name}`;
      if (e.isDirectory) await walk(p);
      else if (e.isFile && e.name.endsWith(".ts")) out.push(p);
    }
  };
  await walk(dir);
  return out.sort();
}

/** The files whose imports are checked: main.ts, src/, peers/, bench/. */
export async function checkedFiles(root: string): Promise<string[]> {
  const files: string[] = [];
  try {
    await Deno.stat(`${root}/main.ts`);
    files.push("main.ts");
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  for (const d of ["src", "peers", "bench"]) files.push(...await tsFiles(root, d));
  return files;
}

interface InfoDependency {
  specifier: string;
  code?: { specifier?: string; span?: { start: { line: number } } };
  type?: { specifier?: string; span?: { start: { line: number } } };
}
interface InfoModule {
  specifier?: string;
  dependencies?: InfoDependency[];
}

/**
 * The imports among the repository's files (main.ts, src/, peers/, bench/ and
 * whatever of tests/ they import), from `deno info --json`. Imports of
 * npm:, node: and remote modules are left out.
 */
export async function importGraph(root: string): Promise<Edge[]> {
  root = await Deno.realPath(root);
  const files = await checkedFiles(root);
  const entry = await Deno.makeTempFile({ prefix: "check-imports-", suffix: ".ts" });
  try {
    const base = new URL(`file://${root}/`);
    await Deno.writeTextFile(
      entry,
      files.map((f) => `import ${JSON.stringify(new URL(f, base).href)};\n`).join(""),
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", entry],
      cwd: root,
      env: { DENO_NO_UPDATE_CHECK: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      throw new Error(`deno info failed: ${new TextDecoder().decode(out.stderr).trim()}`);
    }
    const info = JSON.parse(new TextDecoder().decode(out.stdout)) as { modules: InfoModule[] };
    const prefix = base.href;
    const rel = (s: string | undefined) =>
      s?.startsWith(prefix) ? decodeURIComponent(s.slice(prefix.length)) : null;
    const edges: Edge[] = [];
    for (const m of info.modules) {
      const from = rel(m.specifier);
      if (from === null) continue;
      for (const d of m.dependencies ?? []) {
        for (const r of [d.code, d.type]) {
          const to = rel(r?.specifier);
          if (to === null || edges.some((e) => e.from === from && e.to === to)) continue;
          edges.push({ from, line: (r?.span?.start.line ?? 0) + 1, to });
        }
      }
    }
    return edges.sort((a, b) => a.from.localeCompare(b.from) || a.line - b.line);
  } finally {
    await Deno.remove(entry);
  }
}

/** The cycles of a graph: one per strongly connected component of two or more files, or a self-import. */
function cycles(edges: Edge[]): Edge[][] {
  const next = new Map<string, Edge[]>();
  for (const e of edges) next.set(e.from, [...next.get(e.from) ?? [], e]);
  // Tarjan's strongly connected components.
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const components: string[][] = [];
  const visit = (v: string) => {
    index.set(v, index.size);
    low.set(v, index.get(v)!);
    stack.push(v);
    onStack.add(v);
    for (const { to } of next.get(v) ?? []) {
      if (!index.has(to)) {
        visit(to);
        low.set(v, Math.min(low.get(v)!, low.get(to)!));
      } else if (onStack.has(to)) low.set(v, Math.min(low.get(v)!, index.get(to)!));
    }
    if (low.get(v) === index.get(v)) {
      const c: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        c.push(w);
      } while (w !== v);
      components.push(c);
    }
  };
  for (const v of [...next.keys()].sort()) if (!index.has(v)) visit(v);
  const out: Edge[][] = [];
  for (const c of components) {
    const inC = new Set(c);
    const self = c.length === 1 && (next.get(c[0]) ?? []).some((e) => e.to === c[0]);
    if (c.length < 2 && !self) continue;
    // One cycle through the component's first file: a shortest way back to it.
    const start = [...c].sort()[0];
    const via = new Map<string, Edge>();
    const queue = [start];
    let back: Edge | undefined;
    while (queue.length > 0 && back === undefined) {
      const v = queue.shift()!;
      for (const e of next.get(v) ?? []) {
        if (!inC.has(e.to)) continue;
        if (e.to === start) {
          back = e;
          break;
        }
        if (!via.has(e.to)) {
          via.set(e.to, e);
          queue.push(e.to);
        }
      }
    }
    const path: Edge[] = [back!];
    while (path[0].from !== start) path.unshift(via.get(path[0].from)!);
    out.push(path);
  }
  return out;
}

/** Everything wrong with a graph under a layer table. */
export function checkImports(edges: Edge[], layers: Layer[]): Problem[] {
  const problems: Problem[] = cycles(edges).map((c) => ({ kind: "cycle", edges: c }));
  const layered = (f: string) => f === "main.ts" || f.startsWith("src/");
  const files = new Set(edges.flatMap((e) => [e.from, e.to]));
  for (const f of [...files].sort()) {
    if (layered(f) && rankOf(layers, f) < 0) problems.push({ kind: "unlayered", file: f });
  }
  const top = (f: string) => f.split("/")[0];
  for (const e of edges) {
    const [a, b] = [top(e.from), top(e.to)];
    if (layered(e.from) && !layered(e.to)) {
      problems.push({ kind: "forbidden", edge: e, why: `${a}/ imports only src/` });
    } else if ((a === "bench" || a === "peers" || a === "src") && b === "tests") {
      problems.push({ kind: "forbidden", edge: e, why: `${a}/ never imports tests/` });
    } else if (layered(e.from) && layered(e.to)) {
      const [ra, rb] = [rankOf(layers, e.from), rankOf(layers, e.to)];
      if (ra >= 0 && rb > ra) {
        const name = (r: number) => layers[layers.length - 1 - r].name;
        problems.push({ kind: "upward", edge: e, fromLayer: name(ra), toLayer: name(rb) });
      }
    }
  }
  return problems;
}

/** One line for a problem. */
export function formatProblem(p: Problem): string {
  const edge = (e: Edge) => `${e.from}:${e.line} -> ${e.to}`;
  switch (p.kind) {
    case "cycle":
      return `import cycle: ${p.edges.map(edge).join(", ")}`;
    case "upward":
      return `upward import (${p.fromLayer} -> ${p.toLayer}): ${edge(p.edge)}`;
    case "forbidden":
      return `forbidden import (${p.why}): ${edge(p.edge)}`;
    case "unlayered":
      return `not in the layer table of docs/architecture.md: ${p.file}`;
  }
}

if (import.meta.main) {
  const root = Deno.args[0] ?? new URL("..", import.meta.url).pathname;
  let problems: Problem[];
  try {
    const layers = parseLayerTable(await Deno.readTextFile(`${root}/docs/architecture.md`));
    problems = checkImports(await importGraph(root), layers);
  } catch (e) {
    console.error(`check-imports: ${e instanceof Error ? e.message : String(e)}`);
    Deno.exit(2);
  }
  for (const p of problems) console.error(`check-imports: ${formatProblem(p)}`);
  if (problems.length > 0) {
    console.error(`check-imports: ${problems.length} problem(s)`);
    Deno.exit(1);
  }
}
