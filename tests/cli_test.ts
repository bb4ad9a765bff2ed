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
