#!/usr/bin/env bash
# Run the deno test suite and end with the line "N passed, N failed".
# Usage: run-tests.sh [deno test args...]  (default: tests/)
set -uo pipefail
deno=${DENO:?DENO must name the deno binary}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
[ $# -gt 0 ] || set -- tests/
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
