#!/usr/bin/env bash
# `make bench`: install the benchmark's Debian packages (bench/deps.apt) when
# any is missing, then run bench/run.ts with the pinned Deno. Arguments pass
# through (BENCH_ARGS from make), e.g. --quick, --runs 5, --runtime 20.
# Expects dist/isboot to be built (the Makefile target depends on it).
set -euo pipefail
cd "$(dirname "$0")/.."
deno=${DENO:?DENO must name the deno binary}
scripts/test-deps.sh bench/deps.apt
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
echo "== the Deno runtime's cost per hop, against C (bench/hop.ts) =="
case " $* " in
*" --no-write "*) "$deno" run -A bench/hop.ts --runs 5 ;;
*) "$deno" run -A bench/hop.ts --runs 5 | tee docs/bench/hop.md ;;
esac
echo "== isboot serve vs qemu-nbd and the ceilings (bench/run.ts) =="
exec "$deno" run -A bench/run.ts "$@"
