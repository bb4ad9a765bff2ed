#!/usr/bin/env bash
# Build (once, cached) the minimal Debian root filesystem the e2e boots use:
# debootstrap from Debian's mirror into build/e2e/rootfs, packed as
# build/e2e/rootfs.tar. Reused by every e2e run; delete it to rebuild.
# EXTRA (comma-separated packages, e.g. ifupdown,isc-dhcp-client) adds them
# to that root with apt-get in a chroot (7 s, where a debootstrap of its own
# takes a minute); that root is cached apart, as rootfs-HASH.tar keyed by the
# sorted set.
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
if [ -z "$extra" ]; then
  # minbase + systemd as init + ps: the smallest root that boots with systemd.
  debootstrap --variant=minbase --include=systemd-sysv,udev,procps \
    --cache-dir="$(readlink -f "$out")/debootstrap-cache" "$suite" "$dir" "$mirror" >"$log" 2>&1 ||
    { tail -20 "$log" >&2; exit 1; }
else
  # The base root, then apt-get install in it: the same packages and the same
  # maintainer scripts as debootstrap --include, without a second bootstrap.
  base=$("$0" "$out" | sed 's/ (cached)$//')
  tar -C "$dir" --numeric-owner -xf "$base"
  cp -a "$dir/etc/resolv.conf" "$dir/resolv.conf.keep"
  cp /etc/resolv.conf "$dir/etc/resolv.conf"
  # No service starts in the chroot (postinsts of daemons ask policy-rc.d).
  printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d" && chmod 0755 "$dir/usr/sbin/policy-rc.d"
  mount -t proc proc "$dir/proc"
  { chroot "$dir" apt-get update -q &&
    DEBIAN_FRONTEND=noninteractive chroot "$dir" apt-get install -y -q --no-install-recommends \
      -o Dir::Cache::Archives=/var/cache/apt/archives $(tr , ' ' <<<"$extra")
  } >"$log" 2>&1 || { tail -20 "$log" >&2; exit 1; }
  unmount_all
  rm -f "$dir/usr/sbin/policy-rc.d"
  mv -f "$dir/resolv.conf.keep" "$dir/etc/resolv.conf"
fi
unmount_all
rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/cache/apt/*.bin "$dir"/var/lib/apt/lists/*
tar -C "$dir" --numeric-owner -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
echo "$tar"
