/**
 * nodeSocketStream (the adapter for node:net Sockets; the kernel path now
 * uses FdStream) under real load: a node:net server on a unix socket hands
 * each connection to NbdServer through the adapter, and nbdcopy/nbdsh drive it.
 */
import net from "node:net";
import { assertEquals } from "../helpers/assert.ts";
import { MemoryDevice } from "../../src/memory_device.ts";
import { NbdServer } from "../../src/nbd/server.ts";
import { nodeSocketStream } from "../../src/nbd/stream.ts";
import { Logger } from "../../src/log.ts";
import { mustRun, tool } from "./serve_helper.ts";

const MiB = 1024 * 1024;

Deno.test("nbd node stream: nbdcopy round trip through node:net sockets", async () => {
  const dir = await Deno.makeTempDir({ dir: "/dev/shm", prefix: "isboot-nbd-node-" });
  const path = `${dir}/s.sock`;
  const device = new MemoryDevice({ size: BigInt(64 * MiB) });
  const server = new NbdServer({
    exports: [{ name: "m", device }],
    log: new Logger({ quiet: true }),
  });
  const sessions: Promise<void>[] = [];
  // small highWater so that pausing and resuming the socket is exercised
  const srv = net.createServer((sock) => {
    sessions.push(server.serve(nodeSocketStream(sock, 64 * 1024)));
  });
  await new Promise<void>((r) => srv.listen(path, r));
  try {
    const uri = `nbd+unix:///?socket=${path}`;
    const src = `${dir}/src.bin`;
    await mustRun("dd", ["if=/dev/urandom", `of=${src}`, "bs=1M", "count=64", "status=none"]);
    await mustRun("nbdcopy", ["--connections=2", src, uri]);
    await mustRun("nbdcopy", [uri, `${dir}/back.bin`]);
    assertEquals((await tool("cmp", ["-s", src, `${dir}/back.bin`])).code, 0);
    const r = await mustRun("nbdsh", [
      "-u",
      uri,
      "-c",
      "h.pwrite(b'q' * 4096, 0); assert h.pread(4096, 0) == b'q' * 4096; print('ok')",
    ]);
    assertEquals(r.stdout.trim(), "ok");
  } finally {
    await new Promise<void>((r) => srv.close(() => r()));
    await server.shutdown(2000);
    await Promise.all(sessions);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
