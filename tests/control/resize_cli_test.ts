/**
 * `isboot resize DEVICE` against a control socket that answers like a daemon
 * (the kernel side is tests/vm/resize_test.ts): the request reaches the
 * daemon, its report is printed as text or JSON, a refused shrink is exit 3
 * with the reason, a failed re-read exit 1, nobody answering exit 1, bad
 * arguments exit 2.
 */
import assert from "node:assert/strict";
import {
  answerResize,
  controlPath,
  controlRequest,
  ControlServer,
  listenBesideControl,
  parseControlRequest,
  type SessionStatus,
} from "../../src/control/control.ts";
import type { ResizeReport } from "../../src/nbd/attach.ts";
import { liveResizeHazard } from "../../src/nbd/attach.ts";
import { runCli } from "../helpers/cli.ts";

/** A device index no other test uses. */
const INDEX = 62;
const DEV = `/dev/nbd${INDEX}`;

const GROWN: ResizeReport = {
  device: DEV,
  oldSizeBytes: "67108864",
  newSizeBytes: "134217728",
  reportedSizeBytes: "134217728",
  outcome: "grown",
  detail: null,
};

Deno.test({
  name: "cli: resize asks the serving daemon; grown, unchanged, refused (exit 3), failed (exit 1)",
  sanitizeResources: false,
  async fn() {
    const answers: (() => Promise<ResizeReport>)[] = [
      () => Promise.resolve(GROWN),
      () => Promise.resolve(GROWN),
      // Answered late: the handler waits for its READ CAPACITY.
      () =>
        new Promise((r) =>
          setTimeout(() =>
            r({
              ...GROWN,
              oldSizeBytes: "134217728",
              outcome: "unchanged",
            }), 300)
        ),
      () =>
        Promise.resolve({
          ...GROWN,
          oldSizeBytes: "134217728",
          reportedSizeBytes: "33554432",
          outcome: "refused",
          detail: "LUN 1: the target reports 33554432 bytes, less than the 134217728 served",
        }),
      () => Promise.reject(new Error("READ CAPACITY(16): NOT READY")),
    ];
    const srv = await ControlServer.listen(controlPath(INDEX), (req) => {
      if (req.cmd !== "resize") return { reply: { ok: false, error: "unexpected" } };
      return answerResize(answers.shift()!);
    });
    try {
      const text = await runCli(["resize", DEV]);
      assert.deepEqual([text.code, text.stdout, text.stderr], [
        0,
        `${DEV}: 67108864 -> 134217728 bytes\n`,
        "",
      ]);
      const json = await runCli(["resize", `nbd${INDEX}`, "--json"]);
      assert.equal(json.code, 0, json.stderr);
      assert.deepEqual(JSON.parse(json.stdout), GROWN);
      const same = await runCli(["resize", String(INDEX)]);
      assert.deepEqual([same.code, same.stdout], [0, `${DEV}: 134217728 bytes (unchanged)\n`]);
      const refused = await runCli(["resize", DEV]);
      assert.equal(refused.code, 3, refused.stderr);
      assert.equal(
        refused.stdout,
        `${DEV}: 134217728 bytes (the LUN reports 33554432: refused)\n`,
      );
      assert.equal(
        refused.stderr,
        "isboot: LUN 1: the target reports 33554432 bytes, less than the 134217728 served\n",
      );
      const failed = await runCli(["resize", DEV]);
      assert.deepEqual([failed.code, failed.stdout, failed.stderr], [
        1,
        "",
        `isboot: ${DEV}: READ CAPACITY(16): NOT READY\n`,
      ]);
    } finally {
      await srv.close();
    }
    const none = await runCli(["resize", DEV]);
    assert.equal(none.code, 1);
    assert.match(
      none.stderr,
      new RegExp(
        `^isboot: ${DEV}: no isboot serves it \\(control socket /run/isboot/nbd${INDEX}\\.ctl: `,
      ),
    );
    for (const args of [["resize"], ["resize", "/dev/sda"], ["resize", DEV, DEV]]) {
      const r = await runCli(args);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, /^isboot: [^\n]+\n$/);
    }
  },
});

Deno.test("control: resize is a request; a device served beside another answers it too", async () => {
  assert.deepEqual(parseControlRequest('{"cmd":"resize"}'), { cmd: "resize" });
  const base = await Deno.makeTempDir({ prefix: "isboot-ctl-" });
  let asked = 0;
  const srv = await listenBesideControl(
    controlPath(5, `${base}/run`),
    "/dev/nbd5",
    "/dev/nbd4",
    () => ({}) as SessionStatus,
    () => {},
    () => {
      asked++;
      return Promise.resolve({ ...GROWN, device: "/dev/nbd5" });
    },
  );
  try {
    assert.deepEqual(await controlRequest(controlPath(5, `${base}/run`), { cmd: "resize" }), {
      ok: true,
      resize: { ...GROWN, device: "/dev/nbd5" },
    });
    assert.equal(asked, 1);
  } finally {
    await srv.close();
    await Deno.remove(base, { recursive: true });
  }
});

Deno.test("kernel: a live nbd device is grown in place up to Linux 6.8, not on 6.9 and later", () => {
  assert.equal(liveResizeHazard("6.1.0-57-amd64"), null);
  assert.equal(liveResizeHazard("5.10.0-30-amd64"), null);
  assert.equal(liveResizeHazard("6.8.12"), null);
  assert.match(liveResizeHazard("6.9.0") ?? "", /freezes the nbd queue/);
  assert.match(liveResizeHazard("6.12.38+deb13-amd64") ?? "", /^Linux 6\.12\.38\+deb13-amd64 /);
  assert.match(liveResizeHazard("7.0.1") ?? "", /not grown in place/);
  assert.equal(liveResizeHazard("unknown"), null);
});
