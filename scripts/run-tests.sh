#!/usr/bin/env bash
# Run the deno test suite and end with the line "N passed, N failed".
# Usage: run-tests.sh [deno test args...]  (default: tests/)
# Env: ISBOOT_FUZZ_RUNS, ISBOOT_FUZZ_SEED (an integer or random), ISBOOT_FUZZ_PATH.
set -uo pipefail
deno=${DENO:?DENO must name the deno binary}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
[ $# -gt 0 ] || set -- tests/
# Property tests take their seed from ISBOOT_FUZZ_SEED (tests/helpers/fuzz.ts).
# "random" is drawn here, once, so that the run prints the seed it used and
# every test file shares it.
if [ "${ISBOOT_FUZZ_SEED:-}" = random ]; then
  ISBOOT_FUZZ_SEED=$(($(od -An -N4 -tu4 /dev/urandom) - 2147483648))
fi
if [ -n "${ISBOOT_FUZZ_SEED:-}" ]; then
  export ISBOOT_FUZZ_SEED
  echo "property tests: ISBOOT_FUZZ_SEED=$ISBOOT_FUZZ_SEED${ISBOOT_FUZZ_PATH:+ ISBOOT_FUZZ_PATH=$ISBOOT_FUZZ_PATH}"
else
  echo "property tests: the fixed seed (DEFAULT_FUZZ_SEED, tests/helpers/fuzz.ts)"
fi
"$deno" test -A --no-prompt "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
summary=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^(ok|FAILED) \| ' | tail -1)
passed=$(sed -n 's/.*| \([0-9]*\) passed.*/\1/p' <<<"$summary")
failed=$(sed -n 's/.*| \([0-9]*\) failed.*/\1/p' <<<"$summary")
if [ -z "$passed" ]; then
  echo "0 passed, 1 failed"
  echo "test run produced no summary (exit $rc)" >&2
  exit 1
fi
echo "${passed} passed, ${failed:-0} failed"
exit "$rc"
