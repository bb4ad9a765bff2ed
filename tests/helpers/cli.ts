/**
 * Run the isboot CLI as a subprocess. Uses dist/isboot when ISBOOT_BIN names
 * it (or it exists), else `deno run -A main.ts`, so tests exercise the same
 * entry point users run.
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
  try {
    Deno.statSync(`${ROOT}dist/isboot`);
    return { cmd: `${ROOT}dist/isboot`, pre: [] };
  } catch {
    return { cmd: Deno.execPath(), pre: ["run", "-A", "--quiet", `${ROOT}main.ts`] };
  }
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
