#!/usr/bin/env bash
# Build dist/isboot. Prefer `deno compile` (one self-contained executable); it
# needs the denort runtime, from $DENORT_BIN or downloaded by deno. Where that
# is not available, build the same CLI as a `deno bundle` script plus a
# launcher that runs it with the pinned deno binary copied beside it.
set -euo pipefail
deno=${DENO:?DENO must name the deno binary}
out=dist
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
# A small V8 young generation keeps the daemon's RSS down at no measured CPU
# cost. --single-threaded-gc: on a 2-core box V8's GC helper threads only add
# wake-ups; GC on the main thread costs 12% less CPU per 4 KiB request
# (docs/performance.md). --heap-growing-percent=50: the old generation may grow
# 1.5x its live size before a major GC, not up to 4x: anonymous RSS after 4 KiB
# QD32 65 -> 41 MiB, no measured cost in IOPS or CPU per request.
# --max-old-space-size=256: a bound the serving path cannot reach. The old
# generation of `isboot serve` and of the boot daemon measured 7-10 MiB in use,
# 11-15 MiB committed under load (docs/boot.md, "Memory"); only a leak gets to
# 256 MiB, and then the process ends rather than take the machine's memory.
# Not lower: V8 derives its global limit (heap plus ArrayBuffer memory) from
# this, and a memory:600M device written through `serve` ran 69 full GCs with
# 64 (CPU +45%), 32 with 256, 14 without the flag. (--min-semi-space-size=2
# was tried to fix the young generation: V8 still commits and gives back
# semi-space pages as it goes, 1.0-3.6 MiB without it, 1.8-3.6 MiB with it,
# so it is not set.)
v8flags=--max-semi-space-size=2,--single-threaded-gc,--heap-growing-percent=50,--max-old-space-size=256
version=$(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' deno.json | head -1)

if "$deno" compile -A --quiet --v8-flags="$v8flags" --output "$out.tmp/isboot" main.ts >"$out.tmp/compile.log" 2>&1 &&
  [ "$("$out.tmp/isboot" --version 2>/dev/null)" = "isboot $version" ]; then
  rm -f "$out.tmp/compile.log"
  echo "built dist/isboot: single executable (deno compile)"
else
  echo "denort runtime unavailable (set DENORT_BIN or allow deno to download it); building dist/isboot as a bundle run by the pinned deno"
  rm -f "$out.tmp/isboot" "$out.tmp/compile.log"
  "$deno" bundle --quiet --platform deno --output "$out.tmp/isboot.js" main.ts
  cp "$deno" "$out.tmp/deno"
  cat >"$out.tmp/isboot" <<'LAUNCHER'
#!/bin/sh
# isboot launcher (bundle form): runs isboot.js with the deno binary beside it.
# Deno refuses /proc, /sys and /dev without -A.
here=$(dirname "$(readlink -f "$0")")
export DENO_NO_UPDATE_CHECK=1 DENO_NO_PROMPT=1
# An initramfs carries a V8 code cache made when the image was built
# (deno-cache beside this launcher): the first start skips compiling the bundle.
if [ -z "${DENO_DIR:-}" ]; then
  if [ -d "$here/deno-cache" ]; then export DENO_DIR="$here/deno-cache"; else export DENO_DIR=/run/isboot/deno-cache; fi
fi
exec "$here/deno" run -A --quiet --v8-flags=@V8FLAGS@ --no-config --no-lock --no-remote --no-npm "$here/isboot.js" "$@"
LAUNCHER
  sed -i "s/@V8FLAGS@/$v8flags/" "$out.tmp/isboot"
  chmod 0755 "$out.tmp/isboot"
  got=$("$out.tmp/isboot" --version)
  [ "$got" = "isboot $version" ] || { echo "bundle self-check failed: '$got'" >&2; exit 1; }
  echo "built dist/isboot: launcher + dist/isboot.js + dist/deno (bundle form)"
fi
rm -rf "$out" && mv "$out.tmp" "$out"
