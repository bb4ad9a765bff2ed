// The smallest Deno relay: unix listener <-> TCP upstream, one connection each way, no framing.
const [path, port] = Deno.args;
const up = await Deno.connect({ hostname: "127.0.0.1", port: Number(port) });
up.setNoDelay(true);
const l = Deno.listen({ transport: "unix", path });
const c = await l.accept();
async function pump(from: Deno.Conn, to: Deno.Conn) {
  const b = new Uint8Array(65536);
  for (;;) {
    const n = await from.read(b);
    if (n === null) break;
    let o = 0;
    while (o < n) o += await to.write(b.subarray(o, n));
  }
  Deno.exit(0);
}
void pump(c, up);
void pump(up, c);
