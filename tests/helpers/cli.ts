/**
 * Run the isboot CLI as a subprocess: the built executable named by
 * ISBOOT_BIN (`make test` sets it to dist/isboot), else `deno run -A main.ts`
 * so a developer's run never picks up a stale build.
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

export async function runCli(
  args: string[],
  opts: { env?: Record<string, string>; stdin?: string; cwd?: string } = {},
): Promise<CliResult> {
  const { cmd, pre } = isbootCommand();
  const child = new Deno.Command(cmd, {
    args: [...pre, ...args],
    env: opts.env,
    cwd: opts.cwd ?? ROOT,
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

export { ROOT };
