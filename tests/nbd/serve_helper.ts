/**
 * Start `isboot serve` as a child process for real-client tests and stop it
 * again, always (use with `await using` or call stop() in finally).
 */
import { type CliResult, runCommand, spawnCli } from "../helpers/cli.ts";

export interface Served {
  /** libnbd/qemu URI of the default export. */
  uri: string;
  /** `unix:PATH` or `tcp:HOST:PORT`, as the first log line says. */
  where: string;
  socketPath?: string;
  dir: string;
  child: Deno.ChildProcess;
  /** Everything the server wrote to stderr so far. */
  stderr(): string;
  /** SIGTERM, wait for exit; returns the exit code. Idempotent. */
  stop(): Promise<number>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Run `isboot serve TARGET --listen unix:<tmp>/nbd.sock [extra...]`, or
 * with `listen` given (e.g. "tcp:127.0.0.1:0"), and wait for "listening on".
 */
export async function startServe(
  target: string,
  extra: string[] = [],
  listen?: string,
): Promise<Served> {
  const dir = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "isboot-nbd-" });
  const socketPath = listen ? undefined : `${dir}/nbd.sock`;
  const child = spawnCli(["serve", target, "--listen", listen ?? `unix:${socketPath}`, ...extra], {
    stdout: "null",
  });
  let text = "";
  const dec = new TextDecoder();
  let resolveLine: (l: string | null) => void = () => {};
  const firstLine = new Promise<string | null>((r) => (resolveLine = r));
  const pump = (async () => {
    for await (const chunk of child.stderr) {
      text += dec.decode(chunk, { stream: true });
      const m = /listening on (\S+?):? export/.exec(text);
      if (m) resolveLine(m[1]);
    }
    resolveLine(null);
  })();
  let exited: Promise<number> | null = null;
  const stop = () => {
    exited ??= (async () => {
      try {
        child.kill("SIGTERM");
      } catch {
        // already gone
      }
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch {
          // gone
        }
      }, 10_000);
      const st = await child.status;
      clearTimeout(timer);
      await pump;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      return st.code;
    })();
    return exited;
  };
  const timeout = new Promise<null>((r) => setTimeout(() => r(null), 15_000));
  const where = await Promise.race([firstLine, timeout]);
  if (!where) {
    await stop();
    throw new Error(`isboot serve did not start:\n${text}`);
  }
  let uri: string;
  if (where.startsWith("unix:")) uri = `nbd+unix:///?socket=${where.slice(5)}`;
  else uri = `nbd://${where.slice(4)}/`;
  return {
    uri,
    where,
    socketPath,
    dir,
    child,
    stderr: () => text,
    stop,
    async [Symbol.asyncDispose]() {
      await stop();
    },
  };
}

/** Run a tool to completion; PATH puts /usr/bin first so nbdsh finds Debian's python3. */
export function tool(
  cmd: string,
  args: string[],
  opts: { stdin?: string } = {},
): Promise<CliResult> {
  const env = { PATH: `/usr/bin:/bin:/usr/sbin:/sbin:${Deno.env.get("PATH") ?? ""}` };
  return runCommand(cmd, args, { stdin: opts.stdin, env });
}

/** Run a tool and fail with its output unless it exits 0. */
export async function mustRun(cmd: string, args: string[], opts: { stdin?: string } = {}) {
  const r = await tool(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(" ")} exited ${r.code}\n${r.stdout}\n${r.stderr}`);
  }
  return r;
}
