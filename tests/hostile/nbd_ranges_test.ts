/**
 * 64-bit offset and length arithmetic where a request meets the device size:
 * a libnbd client with strict mode off (so the requests reach the server
 * unchanged) sends READ, WRITE, TRIM and WRITE_ZEROES at offsets around the
 * end of the export and near 2^63 and 2^64, with lengths up to 2^32-1. Each
 * that reaches past the end must get exactly the NBD error docs/nbd.md
 * promises: EOVERFLOW for a READ over 32 MiB (checked first), else ENOSPC for
 * WRITE and WRITE_ZEROES (proto.md "Error values") and EINVAL for READ and
 * TRIM; none may succeed or close the connection, the server must stay up,
 * and the data inside the export must be untouched.
 */
import assert from "node:assert/strict";
import { outputWithin, spawnCli } from "../helpers/cli.ts";
import { waitForPath } from "../helpers/fs.ts";

const SIZE = 8 * 1024 * 1024;
/** NBD_MAX_PAYLOAD: the longest READ or WRITE the server accepts. */
const MAX_PAYLOAD = 32 * 1024 * 1024;
/**
 * The answer docs/nbd.md gives `kind` at `off`+`len`: "ok" inside the
 * export, else the errno name libnbd reports for the server's NBD error.
 */
function expected(kind: string, off: number, len: number): string {
  if (off + len <= SIZE) return "ok";
  if (kind === "read" && len > MAX_PAYLOAD) return "EOVERFLOW";
  return kind === "write" || kind === "zero" ? "ENOSPC" : "EINVAL";
}

const SCRIPT = `
import json, sys, nbd
sock, size = sys.argv[1], int(sys.argv[2])
res = []
def conn():
    h = nbd.NBD()
    h.set_strict_mode(0)
    h.connect_uri("nbd+unix:///?socket=" + sock)
    return h
h = conn()
h.pwrite(b"\\xa5" * 4096, size - 4096)
offsets = [size - 512, size - 1, size, size + 512, 2**32, 2**63 - 512, 2**63, 2**64 - 512, 2**64 - 1]
lengths = [1, 512, 4096, 2**31, 2**32 - 1]
for kind in ["read", "write", "trim", "zero"]:
    for off in offsets:
        for ln in lengths:
            # Reads and writes carry the payload in the client's memory: keep them
            # to 32 MiB + 1 (one over the server's request limit); trim and zero
            # carry only the length, so they take the full 32-bit range.
            if kind == "write" and ln > 65536:
                continue
            if kind == "read" and ln > 2**25 + 1:
                ln = 2**25 + 1
            if h.aio_is_dead() or h.aio_is_closed():
                h = conn()
            try:
                if kind == "read":
                    h.pread(ln, off)
                elif kind == "write":
                    h.pwrite(b"\\x00" * ln, off)
                elif kind == "trim":
                    h.trim(ln, off)
                else:
                    h.zero(ln, off)
                res.append([kind, off, ln, "ok"])
            except nbd.Error as e:
                # e.errno is the errno's name ("EINVAL"), None when the connection died
                res.append([kind, off, ln, e.errno if e.errno is not None else "closed"])
if h.aio_is_dead() or h.aio_is_closed():
    h = conn()
tail = h.pread(4096, size - 4096)
# Requests in range at size-512 and size-1 may change the last 512 bytes.
print(json.dumps({"results": res, "tailIntact": tail[:3584] == b"\\xa5" * 3584}))
`;

Deno.test({
  name:
    "hostile client: NBD requests near the end of the export and near 2^64 get errors, never wrap",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "isboot-ranges-" });
    const sock = `${dir}/nbd.sock`;
    const serve = spawnCli(["serve", `memory:${SIZE}`, "--listen", `unix:${sock}`], {
      stdout: "null",
    });
    let exited = false;
    serve.status.then(() => (exited = true));
    const stderr = new Response(serve.stderr).text();
    try {
      assert.ok(
        await waitForPath(sock, { gaveUp: () => exited }),
        `serve did not listen: ${exited}`,
      );
      const client = new Deno.Command("/usr/bin/python3", {
        args: ["-c", SCRIPT, sock, String(SIZE)],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const out = await outputWithin(client, 60_000);
      const dec = new TextDecoder();
      assert.equal(out.code, 0, `client failed: ${dec.decode(out.stderr)}`);
      const rep = JSON.parse(dec.decode(out.stdout)) as {
        results: [string, number, number, string][];
        tailIntact: boolean;
      };
      // Every request, in range or not, gets exactly its documented answer.
      // (Offsets past 2^53 print as JSON numbers that round, but only to
      // other values far past the end, which expect the same answer.)
      const wrong = rep.results
        .map(([kind, off, len, got]) => ({ kind, off, len, got, want: expected(kind, off, len) }))
        .filter((r) => r.got !== r.want);
      assert.deepEqual(wrong, [], "requests answered otherwise than documented");
      assert.equal(rep.results.length, 4 * 9 * 5 - 9 * 2, "every request was made");
      const kinds = new Set(rep.results.map((r) => expected(r[0], r[1], r[2])));
      assert.deepEqual([...kinds].sort(), ["EINVAL", "ENOSPC", "EOVERFLOW", "ok"]);
      assert.ok(rep.tailIntact, "bytes before the last 512 of the export changed");
      assert.ok(!exited, "serve exited");
    } finally {
      try {
        serve.kill("SIGTERM");
      } catch { /* gone */ }
      await serve.status;
      await stderr.catch(() => "");
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
