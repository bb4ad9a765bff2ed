/** The reconnect loop of session recovery: portal order, Time2Wait and backoff, refusals, a close meanwhile. */
import assert from "node:assert/strict";
import { AuthError, OperationalError } from "../../src/errors.ts";
import { Logger } from "../../src/log.ts";
import type { LoginResult } from "../../src/iscsi/login.ts";
import { reconnect } from "../../src/iscsi/recovery.ts";
import { RECOVERY_DEFAULTS } from "../../src/iscsi/session_config.ts";
import type { Portal } from "../../src/iscsi/uri.ts";

const P1: Portal = { host: "192.0.2.1", port: 3260 };
const P2: Portal = { host: "192.0.2.2", port: 3260 };

function plan(outcomes: (Error | "ok")[], opts: { recovering?: () => boolean } = {}) {
  const tried: string[] = [];
  const slept: number[] = [];
  const waits: string[] = [];
  let closed = 0;
  const result = { conn: { close: () => closed++ } } as unknown as LoginResult;
  return {
    tried,
    slept,
    waits,
    closed: () => closed,
    result,
    plan: {
      portals: [P1, P2],
      time2Wait: 2,
      login: (p: Portal) => {
        tried.push(p.host);
        const o = outcomes.shift() ?? "ok";
        return o === "ok" ? Promise.resolve(result) : Promise.reject(o);
      },
      sleep: (ms: number) => {
        slept.push(ms);
        return Promise.resolve();
      },
      recovering: opts.recovering ?? (() => true),
      waitingFor: (w: string) => void waits.push(w),
      log: new Logger({ sink: () => {} }),
    },
  };
}

Deno.test("reconnect: Time2Wait first, each portal in turn, backoff doubling between rounds up to its cap", async () => {
  const down = new OperationalError("connect: ECONNREFUSED");
  const fails = Array(12).fill(down);
  const p = plan(fails);
  const out = await reconnect(p.plan);
  assert.deepEqual(out, { login: p.result });
  assert.equal(p.tried.length, 13);
  assert.deepEqual(p.tried.slice(0, 4), ["192.0.2.1", "192.0.2.2", "192.0.2.1", "192.0.2.2"]);
  // Time2Wait, then one backoff per round of two portals.
  const backoffs = [];
  for (let b = RECOVERY_DEFAULTS.backoffInitialMs; backoffs.length < 6; b *= 2) {
    backoffs.push(Math.min(b, RECOVERY_DEFAULTS.backoffMaxMs));
  }
  assert.deepEqual(p.slept, [2000, ...backoffs]);
  assert.match(p.waits[0], /Time2Wait \(2 s\)/);
  assert.match(p.waits.at(-1) as string, /relogin 13 to 192\.0\.2\.1/);
});

Deno.test("reconnect: repeated authentication refusals end it; one refusal among other failures does not", async () => {
  const auth = new AuthError("CHAP: target refused the response");
  const down = new OperationalError("connect: ETIMEDOUT");
  const once = plan([auth, down, down]);
  assert.deepEqual(await reconnect(once.plan), { login: once.result });
  const p = plan(Array(RECOVERY_DEFAULTS.authFailures).fill(auth));
  const out = await reconnect(p.plan);
  assert.ok(out && "refused" in out);
  assert.equal(out.refused, auth);
  assert.match(out.message, /relogin to 192\.0\.2\.1:3260 refused: CHAP/);
  assert.equal(p.tried.length, RECOVERY_DEFAULTS.authFailures);
});

Deno.test("reconnect: a session closed meanwhile ends the loop, and a login that won the race is closed", async () => {
  let recovering = true;
  const p = plan(["ok"], { recovering: () => recovering });
  const login = p.plan.login;
  p.plan.login = (portal) => login(portal).finally(() => (recovering = false));
  assert.equal(await reconnect(p.plan), null);
  assert.equal(p.closed(), 1);
  const q = plan([], { recovering: () => false });
  assert.equal(await reconnect(q.plan), null);
  assert.equal(q.tried.length, 0);
});
