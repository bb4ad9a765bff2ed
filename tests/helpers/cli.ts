/**
 * Subprocesses of the tests: the isboot CLI, run as the built executable
 * named by ISBOOT_BIN (`make test` sets it to dist/isboot), else `deno run
 * -A main.ts` so a developer's run never picks up a stale build; and any
 * other tool, run to completion with its output.
 *
 * @example
 * ```ts
 * const r = await runCli(["ibft", "--json"]);
 * const serve = spawnCli(["serve", "memory:8M", "--listen", `unix:${sock}`], { stdout: "null" });
 * const cmp = await runCommand("cmp", ["-s", a, b]);
 * ```
 */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

const ROOT = new URL("../../", import.meta.url).pathname;

export function isbootCommand(): { cmd: string; pre: string[] } {
  const bin = Deno.env.get("ISBOOT_BIN");
  if (bin) return { cmd: bin, pre: [] };
  return { cmd: Deno.execPath(), pre: ["run", "-A", "--quiet", `${ROOT}main.ts`] };
}

/**
 * Start isboot with `args` in the repository (stdin closed, stderr piped,
 * stdout piped unless `stdout: "null"`).
 */
export function spawnCli(
  args: string[],
  opts: { env?: Record<string, string>; stdout?: "piped" | "null" } = {},
): Deno.ChildProcess {
  const { cmd, pre } = isbootCommand();
  return new Deno.Command(cmd, {
    args: [...pre, ...args],
    env: opts.env,
    cwd: ROOT,
    stdin: "null",
    stdout: opts.stdout ?? "piped",
    stderr: "piped",
  }).spawn();
}

/** Run `cmd` to completion, `stdin` (if any) written to it; its exit code and output. */
export async function runCommand(
  cmd: string,
  args: string[],
  opts: { env?: Record<string, string>; stdin?: string; cwd?: string } = {},
): Promise<CliResult> {
  const child = new Deno.Command(cmd, {
    args,
    env: opts.env,
    cwd: opts.cwd,
    stdin: opts.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (opts.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(opts.stdin));
    await w.close();
  }
  const out = await child.output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Run isboot with `args` to completion (in the repository unless `cwd`). */
export function runCli(
  args: string[],
  opts: { env?: Record<string, string>; stdin?: string; cwd?: string } = {},
): Promise<CliResult> {
  const { cmd, pre } = isbootCommand();
  return runCommand(cmd, [...pre, ...args], { ...opts, cwd: opts.cwd ?? ROOT });
}

/**
 * The output of a child started with piped stdout and stderr, killed
 * (SIGKILL, `timedOut`) after `ms`: a hung child fails a test instead of
 * hanging it.
 */
export async function outputWithin(
  child: Deno.ChildProcess,
  ms: number,
): Promise<Deno.CommandOutput & { timedOut: boolean }> {
  let timedOut = false;
  const killer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, ms);
  try {
    const out = await child.output();
    return Object.assign(out, { timedOut });
  } finally {
    clearTimeout(killer);
  }
}

export { ROOT };
