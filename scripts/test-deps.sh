#!/usr/bin/env bash
# Install the Debian packages listed in LIST files (default: tests/deps/*.apt,
# what the test suite needs; one package a line, # comments), idempotently:
# apt runs only when one is missing. Usage: test-deps.sh [LIST...]
set -euo pipefail
[ $# -gt 0 ] || set -- tests/deps/*.apt
mapfile -t pkgs < <(cat "$@" 2>/dev/null | sed 's/#.*//' | tr -s ' \t' '\n' | sed '/^$/d' | sort -u)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && { echo "dependencies present (${#pkgs[@]} packages)"; exit 0; }
echo "installing dependencies: ${missing[*]}"
[ "$(id -u)" = 0 ] || { echo "need root to apt-get install: ${missing[*]}" >&2; exit 1; }
# Keep apt from starting services (tgt.service, nbd-client, ...) on install.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1; fi
trap '[ $made_policy = 1 ] && rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
