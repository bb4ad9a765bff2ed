/**
 * The tgtd helper itself, checked with libiscsi's own tools (iscsi-inq,
 * iscsi-readcapacity16) so it does not depend on our initiator.
 */
import assert from "node:assert/strict";
import { Tgtd, withTgtd } from "../../peers/tgtd.ts";

async function libiscsi(tool: string, url: string): Promise<{ code: number; out: string }> {
  // Bounded: a port reused by some other listener must not hang the test.
  const o = await new Deno.Command("timeout", {
    args: ["20", tool, url],
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  const d = new TextDecoder();
  return { code: o.code, out: d.decode(o.stdout) + d.decode(o.stderr) };
}

Deno.test("tgtd helper: LUNs, 4096-byte blocks, kill -9 and restart, stop cleans up", async () => {
  let dir = "";
  let control = 0;
  await withTgtd(async (tgt) => {
    dir = tgt.dir;
    control = tgt.control;
    const tid = await tgt.createTarget("iqn.2026-11.test:helper");
    await tgt.addLun(tid, { lun: 1, size: 4 << 20, lbppbe: 3 });
    const l2 = await tgt.addLun(tid, { lun: 2, size: 8 << 20, blockSize: 4096, readOnly: true });
    const url = `iscsi://${tgt.portal}/iqn.2026-11.test:helper/2`;
    let r = await libiscsi("iscsi-readcapacity16", url);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /LOGICAL BLOCK LENGTH IN BYTES:4096/);
    const r1 = await libiscsi(
      "iscsi-readcapacity16",
      `iscsi://${tgt.portal}/iqn.2026-11.test:helper/1`,
    );
    assert.match(r1.out, /LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT:3/);
    await tgt.kill9();
    r = await libiscsi("iscsi-inq", url);
    assert.notEqual(r.code, 0);
    await tgt.restart();
    r = await libiscsi("iscsi-readcapacity16", url);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /LOGICAL BLOCK LENGTH IN BYTES:4096/);
    assert.equal((await Deno.stat(l2.path)).size, 8 << 20);
  });
  await assert.rejects(Deno.stat(dir));
  const show = await new Deno.Command("tgtadm", {
    args: ["-C", String(control), "--mode", "system", "--op", "show"],
    stdout: "null",
    stderr: "null",
  }).output();
  assert.notEqual(show.code, 0, "tgtd still answering after stop");
});

Deno.test("tgtd helper: IPv6 portal, CHAP accounts and connection delete", async () => {
  const tgt = await Tgtd.start({ host: "::1" });
  try {
    assert.match(tgt.portal, /^\[::1\]:\d+$/);
    const tid = await tgt.createTarget("iqn.2026-11.test:v6");
    await tgt.addLun(tid, { lun: 1, size: 1 << 20 });
    await tgt.addChap(tid, { user: "u1", secret: "s3cretsecret" });
    const out = await tgt.tgtadm(["--lld", "iscsi", "--mode", "target", "--op", "show"]);
    assert.match(out, /u1/);
    assert.deepEqual(await tgt.connections(tid), []);
    assert.equal(await tgt.deleteConnections(tid), 0);
  } finally {
    await tgt.stop();
  }
});
