#!/usr/bin/env bash
# Build dist/isboot_VERSION_amd64.deb from what `make` built: `make install
# DESTDIR=STAGE PREFIX=/usr` stages the files exactly as a user's install
# places them (the hooks record /usr/bin/isboot), this script adds the
# documentation and the control files from packaging/deb/, and dpkg-deb packs
# the tree (owner root:root). Why not dpkg-buildpackage: see docs/boot.md,
# "The Debian package".
# Usage: scripts/deb.sh   (from the source tree, after `make`)
set -euo pipefail
version=$(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' deno.json | head -1)
[ -n "$version" ] || { echo "deb.sh: no version in deno.json" >&2; exit 1; }
# The package is built by upstream from its own tree: a native package, its
# Debian version the upstream one, its changelog named changelog.gz.
top=$(sed -n '1s/^isboot (\([^)]*\)).*/\1/p' packaging/deb/changelog)
[ "$top" = "$version" ] || {
  echo "deb.sh: packaging/deb/changelog starts at '$top', but the version is $version: add an entry" >&2
  exit 1
}
[ -x dist/isboot ] || { echo "deb.sh: dist/isboot not built (run make)" >&2; exit 1; }
out=dist/isboot_${version}_amd64.deb
stage=$(mktemp -d "${TMPDIR:-/tmp}/isboot-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root=$stage/root
make --no-print-directory install DESTDIR="$root" PREFIX=/usr >/dev/null
gzip -9n "$root/usr/share/man/man8/isboot.8"
doc=$root/usr/share/doc/isboot
install -d "$doc"
install -m 0644 packaging/deb/copyright "$doc/copyright"
gzip -9nc packaging/deb/changelog >"$doc/changelog.gz"
gzip -9nc README.md >"$doc/README.md.gz"
chmod 0644 "$doc"/*.gz
install -D -m 0644 packaging/deb/lintian-overrides "$root/usr/share/lintian/overrides/isboot"
# Lintian wants the dpkg conventions: directories 0755, files 0644 unless executable.
find "$root" -type d -exec chmod 0755 {} +

install -d "$root/DEBIAN"
install -m 0755 packaging/deb/postinst packaging/deb/prerm "$root/DEBIAN/"
install -m 0644 packaging/deb/triggers "$root/DEBIAN/"
(cd "$root" && find etc -type f -printf '/%p\n') >"$root/DEBIAN/conffiles"
chmod 0644 "$root/DEBIAN/conffiles"
(cd "$root" && find usr -type f -print0 | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"

# Depends: the shared libraries of the ELF executables, as dpkg-shlibdeps
# finds them (it wants a debian/control beside it).
elves=()
while IFS= read -r -d '' f; do
  [ "$(head -c 4 "$f")" = $'\x7fELF' ] && elves+=("$f")
done < <(find "$root/usr" -type f -perm -0100 -print0)
mkdir -p "$stage/src/debian"
printf 'Source: isboot\n\nPackage: isboot\nArchitecture: amd64\n' >"$stage/src/debian/control"
depends=$(cd "$stage/src" && dpkg-shlibdeps -O "${elves[@]}" 2>/dev/null |
  sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "deb.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@INSTALLED_SIZE@/$size/" -e "s/@DEPENDS@/$depends/" \
  packaging/deb/control.in >"$root/DEBIAN/control"
dpkg-deb --root-owner-group -Zxz --build "$root" "$out.tmp" >/dev/null
mv -f "$out.tmp" "$out"
echo "built $out"
