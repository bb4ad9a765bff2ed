/**
 * Private network namespaces for the tests in tests/net: `ip netns add` of a
 * random name, deleted afterwards, and `ip -j` to read the result back.
 */
const dec = new TextDecoder();

/** Run a command; its stdout, or an Error with its stderr. */
export async function sh(cmd: string, args: string[]): Promise<string> {
  const o = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!o.success) throw new Error(`${cmd} ${args.join(" ")}: ${dec.decode(o.stderr).trim()}`);
  return dec.decode(o.stdout);
}

/** A veth pair in `ns`: `name` with `mac` (the NIC), `peer` (the switch port, left down). */
export async function veth(ns: string, name: string, mac: string, peer: string): Promise<void> {
  await sh("ip", [
    "-n",
    ns,
    "link",
    "add",
    name,
    "address",
    mac,
    "type",
    "veth",
    "peer",
    "name",
    peer,
  ]);
}

/**
 * Run a Deno script inside `ns` (`ip netns exec`) with its JSON `input` as
 * the one argument; stdout and stderr piped, stdin as `o.stdin` says.
 */
export function spawnInNetns(
  ns: string,
  script: string,
  input: Record<string, unknown>,
  o: { stdin?: "piped" | "null" } = {},
): Deno.ChildProcess {
  const args = ["netns", "exec", ns, Deno.execPath(), "run", "-A", "--quiet", script];
  return new Deno.Command("ip", {
    args: [...args, JSON.stringify(input)],
    stdin: o.stdin,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Run `fn` with a fresh namespace, deleted afterwards whatever happens. */
export async function withNetns(fn: (ns: string) => Promise<void>): Promise<void> {
  const ns = `isboot-net-${crypto.randomUUID().slice(0, 8)}`;
  await sh("ip", ["netns", "add", ns]);
  try {
    await fn(ns);
  } finally {
    await sh("ip", ["netns", "del", ns]).catch(() => {});
  }
}

// deno-lint-ignore no-explicit-any
export type Json = any;

/** `ip -n NS -j ARGS...`, parsed. */
export async function ipj(ns: string, ...args: string[]): Promise<Json> {
  return JSON.parse(await sh("ip", ["-n", ns, "-j", ...args]));
}

/** A child's text stream, collected in the background, with waits for patterns. */
export class Collected {
  text = "";
  #wake: (() => void) | null = null;
  #ended = false;
  readonly done: Promise<void>;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.done = (async () => {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        this.text += chunk;
        this.#wake?.();
      }
      this.#ended = true;
      this.#wake?.();
    })();
  }

  /** Wait until `re` matches the text after offset `from`; returns the match's end offset. */
  async until(re: RegExp, timeoutMs = 10_000, from = 0): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this.text.slice(from));
      if (m) return from + m.index + m[0].length;
      if (this.#ended) throw new Error(`stream ended before ${re}:\n${this.text}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${re} in:\n${this.text}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 50));
        this.#wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.#wake = null;
    }
  }
}
