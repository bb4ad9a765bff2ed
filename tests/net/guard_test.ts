/**
 * The boot NIC guard for real: each test makes a network namespace with a
 * veth pair, runs tests/net/guard_helper.ts in it (configureNic, then
 * NicGuard), does to the NIC what a root network stack does (flush, down,
 * route delete, a new lease, a renewal), and reads the result back with
 * `ip -j`. With ISBOOT_TEST_GUARD_OFF=1 the helper runs without the guard,
 * and every test here fails.
 */
import assert from "node:assert/strict";
import { formatGuard } from "../../src/cli/status.ts";
import { Collected, ipj, type Json, sh, spawnInNetns, veth, withNetns } from "./netns.ts";

const HELPER = new URL("./guard_helper.ts", import.meta.url).pathname;

const BOOT = {
  mac: "02:00:5e:20:00:01",
  address: "192.0.2.10",
  prefixLength: 24,
  gateway: "192.0.2.1",
  // One target behind the gateway (host route), one on the boot subnet (prefix route).
  targets: ["203.0.113.5", "192.0.2.50"],
};
const HOST_ROUTE = /route 203\.0\.113\.5\/32 via 192\.0\.2\.1 dev boot0/;

interface Helper {
  pid: number;
  err: Collected;
  status(): Promise<Json>;
}

async function withGuard(
  extra: Record<string, unknown>,
  fn: (ns: string, h: Helper) => Promise<void>,
): Promise<void> {
  await withNetns(async (ns) => {
    await veth(ns, "boot0", BOOT.mac, "sw0");
    await sh("ip", ["-n", ns, "link", "set", "sw0", "up"]);
    const child = spawnInNetns(ns, HELPER, { ...BOOT, ...extra }, { stdin: "piped" });
    const err = new Collected(child.stderr);
    const out = new Collected(child.stdout);
    const writer = child.stdin.getWriter();
    let asked = 0;
    const h: Helper = {
      pid: child.pid,
      err,
      async status() {
        await writer.write(new TextEncoder().encode("status\n"));
        const from = out.text.split("\n").slice(0, asked).join("\n").length + (asked ? 1 : 0);
        asked++;
        const end = await out.until(/\n/, 5000, from);
        return JSON.parse(out.text.slice(from, end));
      },
    };
    try {
      await err.until(/helper ready/, 30_000);
      await fn(ns, h);
    } finally {
      await writer.close().catch(() => {});
      const st = await child.status;
      await Promise.all([err.done, out.done]);
      assert.equal(st.code, 0, err.text);
    }
  });
}

const addrs = async (ns: string): Promise<Json[]> => {
  const [a] = await ipj(ns, "-4", "addr", "show", "boot0");
  return a.addr_info;
};
const hasHostRoute = async (ns: string) =>
  (await ipj(ns, "-4", "route", "show", "203.0.113.5/32")).some((r: Json) =>
    r.gateway === "192.0.2.1" && r.dev === "boot0"
  );
const hasPrefixRoute = async (ns: string) =>
  (await ipj(ns, "-4", "route", "show", "192.0.2.0/24")).some((r: Json) => r.dev === "boot0");

Deno.test("guard: a flushed boot address is back within ~100 ms, with its routes, and logged once", async () => {
  await withGuard({}, async (ns, h) => {
    await h.err.until(/added route 203\.0\.113\.5\/32 via 192\.0\.2\.1 dev boot0 for the target/);
    assert.ok(await hasHostRoute(ns), "the host route to the target is added at start");
    const from = h.err.text.length;
    const t0 = performance.now();
    await sh("ip", ["-n", ns, "addr", "flush", "dev", "boot0"]);
    await h.err.until(/address 192\.0\.2\.10\/24 was removed, added it back/, 5000, from);
    const ms = performance.now() - t0;
    console.log(`restored ${ms.toFixed(1)} ms after the flush returned`);
    // ~100 ms on an idle machine (measured 10-30 ms); the bound leaves room for a loaded one.
    assert.ok(ms < 1000, `restored after ${ms} ms`);
    assert.deepEqual((await addrs(ns)).map((a: Json) => `${a.local}/${a.prefixlen}`), [
      "192.0.2.10/24",
    ]);
    assert.ok(await hasHostRoute(ns), "host route to the target restored");
    assert.ok(await hasPrefixRoute(ns), "prefix route restored");
    const line = h.err.text.slice(from).split("\n").filter((l) =>
      /boot NIC guard: boot0: /.test(l)
    );
    assert.equal(line.length, 1, h.err.text.slice(from));
    assert.match(line[0], HOST_ROUTE);
    const [st] = await h.status();
    assert.equal(st.restores, 1);
    assert.equal(st.address, "192.0.2.10/24");
    assert.match(st.lastRestore, /address 192\.0\.2\.10\/24 was removed/);
    assert.match(st.lastEvent, /removed/);
  });
});

Deno.test("guard: a link set down is set up again, and the routes the kernel dropped come back", async () => {
  await withGuard({}, async (ns, h) => {
    await h.err.until(/for the target/);
    const from = h.err.text.length;
    await sh("ip", ["-n", ns, "link", "set", "boot0", "down"]);
    await h.err.until(/link boot0 was set down, set it up/, 5000, from);
    const [link] = await ipj(ns, "link", "show", "boot0");
    assert.ok(link.flags.includes("UP"), JSON.stringify(link.flags));
    // IPv4 drops a downed link's routes: the host route has to be put back too.
    await h.err.until(HOST_ROUTE, 5000, from);
    assert.ok(await hasHostRoute(ns));
    assert.ok(await hasPrefixRoute(ns));
    assert.deepEqual((await addrs(ns)).map((a: Json) => a.local), ["192.0.2.10"]);
  });
});

Deno.test("guard: deleted routes to the target (host route, prefix route) are put back", async () => {
  await withGuard({}, async (ns, h) => {
    await h.err.until(/for the target/);
    let from = h.err.text.length;
    await sh("ip", ["-n", ns, "route", "del", "203.0.113.5/32"]);
    await h.err.until(
      /route 203\.0\.113\.5\/32 via 192\.0\.2\.1 dev boot0 was removed, added it back/,
      5000,
      from,
    );
    assert.ok(await hasHostRoute(ns));
    from = h.err.text.length;
    await sh("ip", ["-n", ns, "route", "del", "192.0.2.0/24", "dev", "boot0"]);
    await h.err.until(/route 192\.0\.2\.0\/24 dev boot0 was removed, added it back/, 5000, from);
    assert.ok(await hasPrefixRoute(ns));
    assert.equal((await h.status())[0].restores, 2);
  });
});

Deno.test("guard: a new lease with another address: the boot address stays beside it, as a secondary", async () => {
  await withGuard({}, async (ns, h) => {
    await h.err.until(/for the target/);
    const from = h.err.text.length;
    // What a DHCP client does when the lease changes: add the new address, drop the old one.
    await sh("ip", ["-n", ns, "addr", "add", "192.0.2.77/24", "dev", "boot0"]);
    await sh("ip", ["-n", ns, "addr", "del", "192.0.2.10/24", "dev", "boot0"]);
    await h.err.until(
      /address 192\.0\.2\.10\/24 was removed, added it back beside 192\.0\.2\.77\/24/,
      5000,
      from,
    );
    const info = await addrs(ns);
    assert.deepEqual(info.map((a: Json) => a.local).sort(), ["192.0.2.10", "192.0.2.77"]);
    // promote_secondaries kept the new lease when the old primary went; the boot address is secondary now.
    assert.equal(info.find((a: Json) => a.local === "192.0.2.10").secondary, true);
    assert.ok(await hasHostRoute(ns));
  });
});

Deno.test("guard: the same address re-added with lifetimes (a renewal) is left alone: no restore, lifetimes kept", async () => {
  await withGuard({}, async (ns, h) => {
    await h.err.until(/for the target/);
    const from = h.err.text.length;
    await sh("ip", [
      "-n",
      ns,
      "addr",
      "replace",
      "192.0.2.10/24",
      "dev",
      "boot0",
      "valid_lft",
      "60",
      "preferred_lft",
      "60",
    ]);
    await h.err.until(/192\.0\.2\.10\/24 is now held by another stack \(valid 60 s\)/, 5000, from);
    // A renewal a moment later: same again, no new line.
    await sh("ip", [
      "-n",
      ns,
      "addr",
      "replace",
      "192.0.2.10/24",
      "dev",
      "boot0",
      "valid_lft",
      "50",
      "preferred_lft",
      "50",
    ]);
    await new Promise((r) => setTimeout(r, 300));
    const after = h.err.text.slice(from);
    assert.doesNotMatch(after, /added it back/);
    assert.equal(after.match(/held by another stack/g)?.length, 1, after);
    const [a] = await addrs(ns);
    assert.ok(a.valid_life_time <= 50 && a.valid_life_time > 0, JSON.stringify(a));
    const [st] = await h.status();
    assert.equal(st.restores, 0);
    assert.match(st.lastEvent, /address 192\.0\.2\.10\/24 added to boot0 \(valid 50 s\)/);
  });
});

Deno.test("guard: after a netlink overrun (ENOBUFS) it reads the state again and restores what it missed", async () => {
  // The smallest receive buffer the kernel allows: two link notifications fill it.
  await withGuard({ recvBufferBytes: 1 }, async (ns, h) => {
    await h.err.until(/for the target/);
    await sh("ip", ["-n", ns, "link", "add", "noise0", "type", "veth", "peer", "name", "noise1"]);
    await new Promise((r) => setTimeout(r, 100));
    const from = h.err.text.length;
    // Stop the guard's process so nothing is read: the queue fills with noise,
    // then the removal of the boot address is dropped by the kernel.
    Deno.kill(h.pid, "SIGSTOP");
    try {
      const batch = Array.from(
        { length: 40 },
        (_, i) => `link set noise0 ${i % 2 ? "down" : "up"}`,
      );
      const f = await Deno.makeTempFile();
      await Deno.writeTextFile(f, batch.join("\n") + "\n");
      await sh("ip", ["-n", ns, "-batch", f]);
      await Deno.remove(f);
      await sh("ip", ["-n", ns, "addr", "flush", "dev", "boot0"]);
    } finally {
      Deno.kill(h.pid, "SIGCONT");
    }
    await h.err.until(/receive queue overrun/, 5000, from);
    await h.err.until(/address 192\.0\.2\.10\/24 was removed, added it back/, 5000, from);
    assert.deepEqual((await addrs(ns)).map((a: Json) => a.local), ["192.0.2.10"]);
    assert.ok(await hasHostRoute(ns));
    assert.ok((await h.status())[0].overruns >= 1);
  });
});

Deno.test("guard: started as the boot daemon does, it publishes boot-nics while it runs and shows in status", async () => {
  const root = await Deno.makeTempDir({ prefix: "isboot-guard-" });
  try {
    await withGuard({ root }, async (ns, h) => {
      await h.err.until(/for the target/);
      assert.equal(await Deno.readTextFile(`${root}/run/isboot/boot-nics`), "boot0\n");
      await sh("ip", ["-n", ns, "addr", "flush", "dev", "boot0"]);
      await h.err.until(/address 192\.0\.2\.10\/24 was removed, added it back/);
      const [st] = await h.status();
      assert.equal(st.nic, "boot0");
      assert.equal(st.parent, null);
      assert.deepEqual(st.routes, [
        "192.0.2.0/24 dev boot0",
        "203.0.113.5/32 via 192.0.2.1 dev boot0",
      ]);
      assert.equal(st.restores, 1);
      const text = formatGuard(st);
      assert.match(text, /^ {2}boot NIC guard: boot0 192\.0\.2\.10\/24 {2}restores 1\n/);
      assert.match(text, /routes guarded: 192\.0\.2\.0\/24 dev boot0, 203\.0\.113\.5\/32 via/);
      assert.match(text, /last event: .*removed/);
      assert.match(text, /last restore: .*address 192\.0\.2\.10\/24 was removed/);
    });
    // The daemon is gone: nothing tells ifupdown to keep the link any more.
    await assert.rejects(Deno.stat(`${root}/run/isboot/boot-nics`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
