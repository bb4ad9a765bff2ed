/**
 * The booted root under memory pressure: a real boot (tests/e2e/lib.ts) with
 * little guest RAM, root on /dev/nbd0 through the boot daemon. A unit in the
 * root runs phases; in each, for a while:
 *
 * - a memory hog (Debian's stress-ng, `--vm-keep`) holds the guest near its
 *   limit: 90% of what is available without swap, available + half the swap
 *   with swap (so that the hog itself pages in and out); when the OOM killer
 *   ends it, it starts again, sized anew;
 * - a writer streams 4 MiB files of random bytes onto the root, each hashed
 *   as it is written and fsync'd (`sync FILE`), keeping the last 16;
 * - a reader re-reads the kept files with O_DIRECT (through the daemon, never
 *   from the page cache) and compares their hashes;
 * - a sampler prints the daemon's /proc/PID/status (VmRSS, RssAnon, RssFile,
 *   VmLck, VmSwap) every 2 s and its V8 heap (`isboot status --json`) every
 *   15 s.
 *
 * Phases: `plain` (no swap), `local` (swap on a virtio disk beside the network
 * boot), `nbd` (a swap file on the nbd root: the case where the kernel must
 * write anonymous memory back through the daemon to free it). After a phase
 * the swap is turned off, the caches dropped and every kept file read back and
 * compared; the daemon must be the same pid and answer `isboot status`.
 *
 * Passes when every write completed, every read matched, no task was blocked
 * for the hung-task timeout (60 s in the guest), the daemon was never killed
 * and answered after each phase, poweroff completed, and e2fsck on the host is
 * clean, and the daemon sat in its own cgroup with nothing in swap. `make
 * test` runs one boot (local swap, a minute); `make soak`
 * runs plain and local for 4 minutes each in a boot of its own. The nbd
 * swap file hangs the system (docs/boot.md "Memory") and runs only with
 * ISBOOT_E2E_NBD_SWAP=1. 512 MiB is the least guest RAM that boots: with
 * less the kernel runs out of memory unpacking the initramfs.
 *
 * ISBOOT_E2E=0 skips these.
 */
import assert from "node:assert/strict";
import { type BootCase, bootOnce, type BootOutcome, type RootVariant } from "./lib.ts";

const enabled = Deno.env.get("ISBOOT_E2E") !== "0";
/** `make soak` sets it: the cases kept out of `make test` run too. */
const soak = Deno.env.get("ISBOOT_SOAK") === "1";

type Phase = "plain" | "local" | "nbd";

/** The kernel command-line option naming the phases: `isboot_e2e_mem=PHASE:SECONDS,...`. */
const PHASES_ARG = "isboot_e2e_mem";
/** Swap size (file on the root, or the local disk), MiB. */
const SWAP_MIB = 192;

/** The unit's script; one root image serves every case (the phases come from the command line). */
export const MEM_SCRIPT = `#!/bin/sh
# isboot e2e: the root under memory pressure (tests/e2e/memory_test.ts).
PHASES=$(tr ' ' '\\n' < /proc/cmdline | sed -n 's/^${PHASES_ARG}=//p' | tr ',' ' ')
CHUNK_MIB=4 RING=16 SWAP_MIB=${SWAP_MIB}
say() { echo "ISBOOT-VM: $*" > /dev/ttyS0; }
kib() { awk -v k="$1:" '$1 == k {print $2}' "$2"; }
W=/run/isboot-mem
DATA=/var/tmp/isboot-mem
mkdir -p $W $DATA
pid=$(pgrep -f '^@isboot' | head -1)
say mem_pid=$pid
say mem_cgroup=$(sed -n 's/^0:://p' /proc/$pid/cgroup) swap_max=$(cat /sys/fs/cgroup/isboot/memory.swap.max 2>/dev/null || echo none)
say mem_fs_free_kib=$(df -k --output=avail / | tail -1 | tr -d ' ')
sample() {
  s=/proc/$pid/status m=/proc/meminfo
  echo "ISBOOT-VM: mem phase=$1 rss=$(kib VmRSS $s) anon=$(kib RssAnon $s) file=$(kib RssFile $s) lck=$(kib VmLck $s) swap=$(kib VmSwap $s) avail=$(kib MemAvailable $m) swapfree=$(kib SwapFree $m) dirty=$(kib Dirty $m) wb=$(kib Writeback $m)" > /dev/ttyS0
}
field() { sed -n "s/.*\\"$1\\": *\\([0-9]*\\).*/\\1/p" "$2" | head -1; }
heap() {   # PHASE N: N names its files (samples may overlap)
  j=$W/status.$2.json
  if isboot status --json > $j 2> $j.err; then
    say heap phase=$1 used=$(field heapUsedBytes $j) total=$(field heapTotalBytes $j) external=$(field externalBytes $j)
  else
    say heap phase=$1 status=failed "$(head -c 200 $j.err)"
  fi
  rm -f $j $j.err
}
writer() {
  end=$(( $(date +%s) + $2 )) i=0
  while [ $(date +%s) -lt $end ]; do
    i=$((i + 1))
    f=$DATA/$1.$i
    h=$(head -c $((CHUNK_MIB << 20)) /dev/urandom | tee $f | sha256sum | cut -d' ' -f1)
    if [ "$(stat -c %s $f 2>/dev/null)" != $((CHUNK_MIB << 20)) ] || ! sync $f; then
      say write_failed phase=$1 i=$i
      return 1
    fi
    echo $h > $W/h.$1.$i
    old=$((i - RING))
    [ $old -gt 0 ] && rm -f $W/h.$1.$old $DATA/$1.$old   # the hash first: the reader skips it
    echo $i > $W/writes.$1
  done
}
# Compare file N of phase P with its hash: ok, bad, or gone (rewritten meanwhile).
check() {
  want=$(cat $W/h.$1.$2 2>/dev/null) || { echo gone; return; }
  got=$( (dd if=$DATA/$1.$2 iflag=direct bs=1M status=none || echo read-failed) | sha256sum | cut -d' ' -f1)
  if [ "$got" = "$want" ]; then echo ok; elif [ -e $W/h.$1.$2 ]; then echo bad; else echo gone; fi
}
reader() {
  reads=0 bad=0
  while [ ! -e $W/stop.$1 ]; do
    for h in $W/h.$1.*; do
      [ -e "$h" ] || { sleep 1; break; }
      case $(check $1 \${h##*.}) in
      ok) reads=$((reads + 1)) ;;
      bad) bad=$((bad + 1)); say read_bad phase=$1 file=\${h##*.} ;;
      esac
      [ -e $W/stop.$1 ] && break
    done
  done
  echo "$reads $bad" > $W/reads.$1
}
# The hog, sized from what is available when it starts, and started again
# when the OOM killer ended it (--oomable: stress-ng then exits), until the
# phase is over.
hog() {
  end=$(( $(date +%s) + $2 ))
  while [ $(date +%s) -lt $((end - 2)) ]; do
    avail=$(kib MemAvailable /proc/meminfo)
    if [ -n "$3" ]; then size=$((avail + SWAP_MIB * 1024 / 2)); else size=$((avail * 90 / 100)); fi
    say hog phase=$1 kib=$size avail=$avail
    stress-ng --vm 1 --vm-bytes \${size}k --vm-keep --oomable --timeout $((end - $(date +%s)))s --quiet
  done
}
failed=0
for p in $PHASES; do
  phase=\${p%%:*} secs=\${p##*:}
  case $phase in
  nbd)
    dd if=/dev/zero of=/isboot-mem.swap bs=1M count=$SWAP_MIB conv=fsync status=none
    chmod 600 /isboot-mem.swap && mkswap /isboot-mem.swap > /dev/null && swapon /isboot-mem.swap
    swap=/isboot-mem.swap ;;
  local) mkswap /dev/vda > /dev/null && swapon /dev/vda; swap=/dev/vda ;;
  *) swap= ;;
  esac
  say phase=$phase seconds=$secs swap=$(kib SwapTotal /proc/meminfo)
  sync; echo 3 > /proc/sys/vm/drop_caches
  oom0=$(awk '$1 == "oom_kill" {print $2}' /proc/vmstat)
  hog $phase $secs "$swap" &
  hogpid=$!
  sleep 5   # the hog takes its memory first
  writer $phase $secs &
  wpid=$!
  reader $phase &
  rpid=$!
  n=0
  while kill -0 $wpid 2>/dev/null; do
    sample $phase
    [ $((n % 8)) = 0 ] && heap $phase $n &
    n=$((n + 1))
    sleep 2
  done
  wait $wpid || failed=$((failed + 1))
  touch $W/stop.$phase
  wait $rpid
  wait $hogpid
  sample $phase
  oom=$(( $(awk '$1 == "oom_kill" {print $2}' /proc/vmstat) - oom0 ))
  [ -n "$swap" ] && { swapoff $swap || say swapoff_failed phase=$phase; }
  [ "$phase" = nbd ] && rm -f /isboot-mem.swap
  sync; echo 3 > /proc/sys/vm/drop_caches
  verified=0 vbad=0
  for h in $W/h.$phase.*; do
    [ -e "$h" ] || continue
    if [ "$(check $phase \${h##*.})" = ok ]; then verified=$((verified + 1)); else vbad=$((vbad + 1)); fi
  done
  now=$(pgrep -f '^@isboot' | head -1)
  isboot status > /dev/null 2>&1 && st=ok || st=failed
  heap $phase-after after
  say result phase=$phase writes=$(cat $W/writes.$phase 2>/dev/null || echo 0) reads=$(cut -d' ' -f1 $W/reads.$phase) read_bad=$(cut -d' ' -f2 $W/reads.$phase) verified=$verified verify_bad=$vbad oom_kills=$oom daemon_pid=$now status=$st
  rm -f $DATA/$phase.*
done
say mem_done=1 write_failures=$failed
`;

const MEM_UNIT = `[Unit]
Description=isboot e2e: the root under memory pressure
After=multi-user.target
Before=isboot-e2e.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/isboot-e2e-mem
TimeoutStartSec=3600
# The hog is the OOM killer's pick by design: the unit goes on (systemd would stop it).
OOMPolicy=continue
[Install]
WantedBy=multi-user.target
`;

interface MemCase {
  name: string;
  phases: [Phase, number][];
  memoryMiB: number;
  soak?: boolean;
  /** Run only when this variable is 1. */
  optIn?: string;
}

/** The root every case boots: stress-ng, isboot installed, the pressure unit enabled. */
function memRoot(): RootVariant {
  return {
    name: "mem",
    packages: ["stress-ng"],
    installIsboot: true,
    files: {
      // The hung-task detector reports a task stuck in D state for this long.
      "/etc/sysctl.d/99-isboot-e2e-mem.conf": "kernel.hung_task_timeout_secs = 60\n",
      "/etc/systemd/system/isboot-e2e-mem.service": MEM_UNIT,
      "/usr/local/sbin/isboot-e2e-mem": { text: MEM_SCRIPT, mode: 0o755 },
    },
    links: {
      "/etc/systemd/system/multi-user.target.wants/isboot-e2e-mem.service":
        "/etc/systemd/system/isboot-e2e-mem.service",
    },
  };
}

const CASES: MemCase[] = [
  // `make test`: the harder of the two safe cases (the daemon's memory must
  // stay out of swap), one minute; both run for 4 min in `make soak`.
  {
    name: "swap on a local disk, one minute",
    phases: [["local", 60]],
    memoryMiB: 512,
  },
  { name: "no swap", phases: [["plain", 240]], memoryMiB: 512, soak: true },
  { name: "swap on a local disk", phases: [["local", 240]], memoryMiB: 512, soak: true },
  // Not safe, and not in `make soak` (README "Swap"): the kernel swaps out
  // through the daemon while the daemon's own allocations (IO_FLUSHER: no I/O
  // in their reclaim, so no OOM kill either) wait for memory that only that
  // swap-out frees. Measured: kswapd, jbd2 and the hog blocked on nbd0's
  // request tags within a minute, for good. ISBOOT_E2E_NBD_SWAP=1 runs it.
  {
    name: "a swap file on the nbd root",
    phases: [["nbd", 240]],
    memoryMiB: 512,
    soak: true,
    optIn: "ISBOOT_E2E_NBD_SWAP",
  },
];

/** One `ISBOOT-VM: mem ...` or `heap ...` line's numbers. */
function samples(serial: string, kind: "mem" | "heap"): Record<string, string>[] {
  const out: Record<string, string>[] = [];
  for (const m of serial.matchAll(new RegExp(`ISBOOT-VM: ${kind} (phase=[^\\n]*)`, "g"))) {
    out.push(Object.fromEntries(m[1].trim().split(/\s+/).map((kv) => kv.split("=", 2))));
  }
  return out;
}

/** Peak and last of a field over a phase's samples, MiB. */
function peak(rows: Record<string, string>[], field: string, div = 1024): string {
  const v = rows.map((r) => r[field]).filter((x) => x).map(Number).filter(Number.isFinite);
  return v.length ? (Math.max(...v) / div).toFixed(1) : "?";
}

function checkOutcome(r: BootOutcome, c: MemCase): void {
  const why = `\n--- serial tail ---\n${r.vm.tail}`;
  assert.equal(r.vm.timedOut, false, `VM timed out${why}`);
  assert.equal(r.vm.kv.get("mem_done"), "1", `the pressure unit did not finish${why}`);
  assert.equal(r.vm.kv.get("write_failures"), "0", `a write failed${why}`);
  assert.doesNotMatch(r.vm.serial, /blocked for more than/, `a hung task${why}`);
  assert.doesNotMatch(r.vm.serial, /ISBOOT-VM: (read_bad|write_failed|swapoff_failed) /, why);
  const pid = r.vm.kv.get("mem_pid");
  assert.match(pid ?? "", /^\d+$/, why);
  // The daemon's own cgroup keeps its memory out of swap (src/sys/cgroup.ts).
  assert.equal(r.vm.kv.get("mem_cgroup"), "/isboot", why);
  assert.equal(r.vm.kv.get("swap_max"), "0", why);
  for (const s of samples(r.vm.serial, "mem")) assert.equal(s.swap, "0", `daemon swapped${why}`);
  // The daemon is never the OOM killer's pick (oom_score_adj -1000).
  assert.doesNotMatch(r.vm.serial, new RegExp(`Killed process ${pid} `), why);
  for (const [phase] of c.phases) {
    const m = new RegExp(`ISBOOT-VM: result (phase=${phase} [^\\n]*)`).exec(r.vm.serial);
    assert.ok(m, `no result for ${phase}${why}`);
    const res = Object.fromEntries(m[1].trim().split(/\s+/).map((kv) => kv.split("=", 2)));
    // Under TCG the thrash leaves room for a few writes a minute (one, in a slow run).
    assert.ok(Number(res.writes) >= 1, `${phase}: writes ${res.writes}${why}`);
    assert.equal(res.read_bad, "0", `${phase}${why}`);
    assert.ok(Number(res.verified) >= 1, `${phase}: verified ${res.verified}${why}`);
    assert.equal(res.verify_bad, "0", `${phase}${why}`);
    assert.equal(res.daemon_pid, pid, `${phase}: the daemon changed${why}`);
    assert.equal(res.status, "ok", `${phase}: isboot status did not answer${why}`);
  }
  assert.equal(r.vm.result, "PASS", `guest: ${r.vm.reason}${why}`);
  assert.equal(r.vm.kv.get("root"), "/dev/nbd0p1", why);
  assert.equal(r.vm.kv.get("oom"), "-1000", why);
  assert.match(r.vm.serial, /reboot: Power down/, `poweroff did not complete${why}`);
  assert.ok(r.marker, `marker not found in the image${why}`);
  assert.equal(r.fsck.code, 0, `e2fsck -fn: ${r.fsck.output}`);
}

function report(r: BootOutcome, c: MemCase): void {
  const mem = samples(r.vm.serial, "mem");
  const heap = samples(r.vm.serial, "heap");
  for (const [phase] of c.phases) {
    const rows = mem.filter((s) => s.phase === phase);
    const h = heap.filter((s) => s.phase === phase || s.phase === `${phase}-after`);
    const res = new RegExp(`ISBOOT-VM: result phase=${phase} ([^\\n]*)`).exec(r.vm.serial)?.[1];
    console.log(
      `  ${phase} (${c.memoryMiB} MiB): ${rows.length} samples; daemon peak rss ${
        peak(rows, "rss")
      } anon ${peak(rows, "anon")} file ${peak(rows, "file")} locked ${peak(rows, "lck")} swap ${
        peak(rows, "swap")
      } MiB; heap used peak ${peak(h, "used", 1048576)} of ${
        peak(h, "total", 1048576)
      } MiB, external ${peak(h, "external", 1048576)} MiB; guest MemAvailable low ${
        rows.length ? Math.min(...rows.map((s) => Number(s.avail) / 1024)).toFixed(0) : "?"
      } MiB, dirty peak ${peak(rows, "dirty")} MiB; ${res ?? "no result"}`,
    );
  }
  console.log(`  VM total ${(r.vm.durationMs / 1000).toFixed(0)} s`);
}

for (const c of CASES) {
  Deno.test({
    name: `e2e memory pressure on the booted root: ${c.name}${c.soak ? " (make soak)" : ""}`,
    ignore: !enabled || (c.soak === true && !soak) ||
      (c.optIn !== undefined && Deno.env.get(c.optIn) !== "1"),
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const swapPhase = c.phases.some(([p]) => p === "local");
      const bc: BootCase = {
        firmware: "bios",
        initramfs: "initramfs-tools",
        chap: "none",
        memoryMiB: c.memoryMiB,
        ...(swapPhase ? { localDiskMiB: SWAP_MIB } : {}),
        append: `${PHASES_ARG}=${c.phases.map(([p, s]) => `${p}:${s}`).join(",")}`,
        root: memRoot(),
      };
      const total = c.phases.reduce((n, [, s]) => n + s, 0);
      const r = await bootOnce(bc, { timeoutMs: 600_000 + total * 3000 });
      report(r, c);
      checkOutcome(r, c);
    },
  });
}
