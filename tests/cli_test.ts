import assert from "node:assert/strict";
import { runCli } from "./helpers/cli.ts";
import { VERSION } from "../src/version.ts";

Deno.test("cli: --version matches deno.json", async () => {
  const cfg = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  assert.equal(VERSION, cfg.version);
  const r = await runCli(["--version"]);
  assert.equal(r.code, 0);
  assert.equal(r.stdout.trim(), `isboot ${VERSION}`);
});

Deno.test("cli: unknown command is a one-line usage error, exit 2", async () => {
  const r = await runCli(["no-such-command"]);
  assert.equal(r.code, 2);
  assert.equal(r.stdout, "");
  assert.match(r.stderr, /^isboot: unknown command 'no-such-command'/);
  assert.equal(r.stderr.trim().split("\n").length, 1);
});

Deno.test("cli: --help lists the commands and exits 0", async () => {
  const r = await runCli(["--help"]);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^usage: isboot <command>/);
  assert.match(r.stdout, /exit codes: 0 ok/);
});

Deno.test("cli: --block-size of a memory: disk is a power of two (serve from 1, attach from 512), else one line, exit 2", async () => {
  for (
    const [args, want] of [
      [
        ["serve", "memory:1M", "--listen", "tcp:0", "--block-size", "3"],
        "expected a power of two, 1..65536",
      ],
      [
        ["serve", "memory:1M", "--listen", "tcp:0", "--block-size", "131072"],
        "expected a power of two, 1..65536",
      ],
      [["attach", "memory:1M", "--block-size", "256"], "expected a power of two, 512..65536"],
      [["attach", "memory:1M", "--block-size", "1000"], "expected a power of two, 512..65536"],
    ] as const
  ) {
    const r = await runCli([...args]);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.ok(r.stderr.includes(want), r.stderr);
  }
});
