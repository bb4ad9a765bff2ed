#!/usr/bin/env bash
# Build (once, cached) the minimal Debian root filesystem the e2e boots use:
# debootstrap from Debian's mirror into build/e2e/rootfs, packed as
# build/e2e/rootfs.tar. Reused by every e2e run; delete it to rebuild.
# EXTRA (comma-separated packages, e.g. ifupdown,isc-dhcp-client) adds them
# with debootstrap --include; that root is cached apart, as
# rootfs-HASH.tar keyed by the sorted set.
# Usage: tests/e2e/rootfs.sh [OUTDIR [EXTRA]]   (default build/e2e, none)
set -euo pipefail
out=${1:-build/e2e}
extra=$(printf '%s' "${2:-}" | tr ', ' '\n\n' | sed '/^$/d' | sort -u | paste -sd, -)
# The mirror this machine's apt already uses (deb822 or one-line sources), unless given.
apt_mirror() {
  { sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null
    sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\)[[:space:]]\+bookworm[[:space:]].*/\2/p' \
      /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
  } | tr ' ' '\n' | grep -E '/debian/?$' | head -1
}
mirror=${ISBOOT_DEBIAN_MIRROR:-$(apt_mirror || true)}  # a missing sources file is not an error
[ -n "$mirror" ] || { echo "no Debian mirror in apt's sources; set ISBOOT_DEBIAN_MIRROR" >&2; exit 1; }
suite=bookworm
key=${extra:+-$(printf '%s' "$extra" | sha256sum | cut -c1-16)}
tar=$out/rootfs$key.tar
log=$out/debootstrap$key.log
[ -s "$tar" ] && { echo "$tar (cached)"; exit 0; }
mkdir -p "$out/debootstrap-cache"
dir=$(mktemp -d "$out/rootfs.XXXXXX")
# debootstrap can leave the target's /proc mounted (seen once: its umount at
# exit raced a process a postinst started); tar and rm must not walk into it.
unmount_all() { findmnt -rno TARGET | grep -F "$(readlink -f "$dir")/" | sort -r | xargs -r -n1 umount -l || true; }
trap 'unmount_all; rm -rf "$dir"' EXIT
# minbase + systemd as init + ps: the smallest root that boots with systemd.
debootstrap --variant=minbase --include=systemd-sysv,udev,procps${extra:+,$extra} \
  --cache-dir="$(readlink -f "$out")/debootstrap-cache" "$suite" "$dir" "$mirror" >"$log" 2>&1 ||
  { tail -20 "$log" >&2; exit 1; }
unmount_all
rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
tar -C "$dir" --numeric-owner -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
echo "$tar"
