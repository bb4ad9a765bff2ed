#!/usr/bin/env bash
# `make bench`: install the benchmark's Debian packages (bench/deps.apt) when
# any is missing, then run bench/run.ts with the pinned Deno. Arguments pass
# through (BENCH_ARGS from make), e.g. --quick, --runs 5, --runtime 20.
# Expects dist/isboot to be built (the Makefile target depends on it).
set -euo pipefail
cd "$(dirname "$0")/.."
deno=${DENO:?DENO must name the deno binary}
mapfile -t pkgs < <(sed 's/#.*//' bench/deps.apt | tr -s ' \t' '\n' | sed '/^$/d' | sort -u)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing bench dependencies: ${missing[*]}"
  [ "$(id -u)" = 0 ] || { echo "need root to apt-get install: ${missing[*]}" >&2; exit 1; }
  # Keep apt from starting services (tgt.service would take port 3260) on install.
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1; fi
  trap '[ $made_policy = 1 ] && rm -f "$policy"' EXIT
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "bench dependencies present (${#pkgs[@]} packages)"
fi
# tgtd, qemu-nbd and the loads need root for nothing but tgtd's control socket
# in /var/run/tgtd; run as root like the tests.
crc_args=()
for a in "$@"; do
  case $a in
  --quick) crc_args+=(--quick) ;;
  esac
done
case " $* " in
*" --no-write "*) ;;
*) mkdir -p docs/bench && crc_args+=(--json docs/bench/crc32c.json) ;;
esac
echo "== CRC32C study (bench/crc32c.ts) =="
"$deno" run -A bench/crc32c.ts "${crc_args[@]}"
echo "== isboot serve vs qemu-nbd and the ceilings (bench/run.ts) =="
exec "$deno" run -A bench/run.ts "$@"
