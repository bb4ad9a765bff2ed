#!/usr/bin/env bash
# Build (once, cached) the minimal Debian root filesystem the e2e boots use:
# debootstrap from Debian's mirror into build/e2e/rootfs, packed as
# build/e2e/rootfs.tar. Reused by every e2e run; delete it to rebuild.
# FLAVOUR "kernel" adds what a user's root that builds its own initramfs has
# (Debian's kernel, initramfs-tools, zstd) and is packed as rootfs-kernel.tar.
# Usage: tests/e2e/rootfs.sh [OUTDIR] [FLAVOUR]   (default build/e2e, bare)
set -euo pipefail
out=${1:-build/e2e}
flavour=${2:-bare}
case "$flavour" in
bare) extra= tar=$out/rootfs.tar ;;
kernel) extra=,linux-image-amd64,initramfs-tools,zstd tar=$out/rootfs-kernel.tar ;;
*) echo "rootfs.sh: unknown flavour '$flavour' (bare, kernel)" >&2; exit 2 ;;
esac
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
[ -s "$tar" ] && { echo "$tar (cached)"; exit 0; }
mkdir -p "$out/debootstrap-cache"
dir=$(mktemp -d "$out/rootfs.XXXXXX")
trap 'rm -rf "$dir"' EXIT
# minbase + systemd as init + ps: the smallest root that boots with systemd.
log=$out/debootstrap-$flavour.log
debootstrap --variant=minbase --include=systemd-sysv,udev,procps$extra \
  --cache-dir="$(readlink -f "$out")/debootstrap-cache" "$suite" "$dir" "$mirror" >"$log" 2>&1 ||
  { tail -20 "$log" >&2; exit 1; }
rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
tar -C "$dir" --numeric-owner -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
echo "$tar"
