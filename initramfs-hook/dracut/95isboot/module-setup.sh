#!/bin/bash
# dracut module: boot from the iSCSI disk named by the firmware's iBFT (or by
# netroot=iscsi:...) through isboot, which serves it to the kernel as /dev/nbdN.
# Build with:  dracut -a isboot [--kver KVER] initrd.img
# Installed to /usr/lib/dracut/modules.d/95isboot by `make install`.
#
# Which isboot: the one `make install` installed. It writes that path (without
# DESTDIR) over the @ISBOOT_BIN@ placeholder below, because dracut runs with
# PATH=/sbin:/bin:/usr/sbin:/usr/bin, where PREFIX=/usr/local/bin is not.
# ISBOOT_BIN=/path/to/isboot overrides it (developers running the module from
# a source tree, where the placeholder is left as it is). It is a single
# executable, or (bundle form) a launcher with isboot.js and deno beside it.
#
# In the image isboot is /usr/bin/isboot (bundle: a link to the launcher
# /usr/lib/isboot/isboot, beside isboot.js and deno); isboot-run.sh calls it.
#
# An image without isboot cannot mount an iSCSI root. When the module is
# wanted (-a isboot, or host-only with / on NBD) and isboot cannot be put in,
# dracut stops with exit status 1 and one line on stderr (dfatal), "dracut:
# isboot: cannot add isboot to the initramfs: REASON". The module exits
# dracut itself: dracut 059 silently drops a module whose check() fails
# unless it was named with -a/-m, and it ignores what install() returns
# (dfatal alone only prints).

isboot_installed=@ISBOOT_BIN@

# The path isboot is taken from (ISBOOT_BIN, else the recorded one).
isboot_bin() {
    echo "${ISBOOT_BIN:-$isboot_installed}"
}

# Print why isboot at $1 cannot go into the image; nothing when it can.
isboot_problem() {
    local bin=$1 real dir
    if [[ $bin == @*@ ]]; then
        echo "this module was not installed by \`make install\` and ISBOOT_BIN is not set"
        return
    fi
    real=$(readlink -f "$bin")
    if [[ ! -f $real || ! -x $real ]]; then
        echo "$bin is missing or not executable (reinstall with \`make install\`, or set ISBOOT_BIN)"
        return
    fi
    dir=${real%/*}
    if isboot_is_launcher "$real" && [[ ! -f $dir/isboot.js || ! -x $dir/deno ]]; then
        echo "$real is the bundle launcher, but $dir/isboot.js or $dir/deno is missing"
    fi
}

# The bundle form's launcher is a shell script; a single executable is not.
isboot_is_launcher() {
    [[ $(head -c 2 "$1") == "#!" ]]
}

# A V8 code cache of the bundle, made in the image (chroot: the paths it has
# at boot, which the cache is keyed by) with the launcher ($1)'s V8 flags, so
# that the start at boot does not compile the bundle. deno writes the cache once
# the bundle has run; up to 3 runs should one end first. Optional.
isboot_code_cache() {
    local cache=/usr/lib/isboot/deno-cache flags why _
    flags=$(sed -n 's/.*--v8-flags=\([^ ]*\) .*/\1/p' "$1")
    mkdir -p "$initdir$cache" && echo isboot=off > "$initdir$cache/cmdline"
    for _ in 1 2 3; do
        why=$(DENO_DIR=$cache DENO_NO_UPDATE_CHECK=1 chroot "$initdir" /usr/lib/isboot/deno run -A \
            --quiet --v8-flags="$flags" --no-config --no-lock --no-remote --no-npm \
            /usr/lib/isboot/isboot.js boot --cmdline "$cache/cmdline" 2>&1 > /dev/null) || break
        why="deno wrote no code cache"
        isboot_has_code_cache && break
    done
    rm -f "$initdir$cache/cmdline"
    if ! isboot_has_code_cache; then
        dwarn "isboot: no V8 code cache in the image (isboot will start slower)${why:+: $(echo "$why" | tail -n 1)}"
        rm -rf "${initdir:?}$cache"
    fi
}

isboot_has_code_cache() {
    grep -aqsF "file:///usr/lib/isboot/isboot.js" "$initdir"/usr/lib/isboot/deno-cache/v8_code_cache*
}

# Stop dracut: the image it would build cannot boot.
isboot_fatal() {
    dfatal "isboot: cannot add isboot to the initramfs: $*"
    exit 1
}

# / is on an NBD device (host-only images of a machine isboot booted).
isboot_root_on_nbd() {
    local src
    src=$(findmnt -no SOURCE / 2> /dev/null)
    [[ $src == /dev/nbd* ]]
}

# Wanted: asked for by name (-a, --add, -m, --force-add), or the host-only
# image of a machine whose root is on NBD.
isboot_wanted() {
    [[ " $dracutmodules $add_dracutmodules $force_add_dracutmodules " == *" isboot "* ]] \
        || { [[ $hostonly ]] && isboot_root_on_nbd; }
}

check() {
    local bin problem
    bin=$(isboot_bin)
    problem=$(isboot_problem "$bin")
    [[ $problem ]] || require_binaries "$bin" || problem="$bin is missing or not executable"
    if [[ $problem ]]; then
        isboot_wanted && isboot_fatal "$problem"
        dinfo "dracut module 'isboot' will not be installed: $problem"
        return 1
    fi
    # Only on request (-a isboot), or in host-only mode when the root is on NBD.
    [[ $hostonly ]] && isboot_root_on_nbd && return 0
    return 255
}

depends() {
    # udev-rules: udev loads the NIC driver (isboot configures the NIC itself:
    # no network module). rootfs-block: waits for root=UUID=... on /dev/nbdNpM
    # and mounts it.
    echo udev-rules rootfs-block
    return 0
}

cmdline() {
    # Host-only images: boot the way this machine booted.
    if [[ -d /sys/firmware/ibft ]] || [[ -e /sys/firmware/acpi/tables/iBFT ]]; then
        echo -n " rd.iscsi.firmware ip=ibft"
    fi
}

installkernel() {
    # nbd: the disk; iscsi_ibft: the BIOS (sysfs) iBFT source; 8021q: iBFT VLANs;
    # NIC drivers: all Ethernet drivers unless host-only.
    hostonly='' instmods nbd iscsi_ibft 8021q virtio_net virtio_pci
    if [[ $hostonly ]]; then
        local dev driver
        for dev in /sys/class/net/*/device/driver; do
            [[ -e $dev ]] || continue
            driver=$(basename "$(readlink -f "$dev")")
            instmods "$driver"
        done
    else
        instmods =drivers/net/ethernet
    fi
}

install() {
    local bin real dir problem
    bin=$(isboot_bin)
    problem=$(isboot_problem "$bin")
    [[ $problem ]] && isboot_fatal "$problem"
    real=$(readlink -f "$bin")
    dir=${real%/*}
    if isboot_is_launcher "$real"; then
        # Bundle form: deno (with its libraries), the bundle, and a launcher
        # with fixed paths (no readlink/dirname needed at boot).
        # Its libraries now, not at dracut's lazy resolution at the end: the
        # code cache below runs it in the image.
        DRACUT_RESOLVE_DEPS=1 inst_binary "$dir/deno" /usr/lib/isboot/deno \
            || isboot_fatal "copying $dir/deno failed"
        inst_simple "$dir/isboot.js" /usr/lib/isboot/isboot.js \
            || isboot_fatal "copying $dir/isboot.js failed"
        sed 's|^here=.*|here=/usr/lib/isboot|' "$real" > "$initdir/usr/lib/isboot/isboot" \
            && chmod 0755 "$initdir/usr/lib/isboot/isboot" \
            && ln_r /usr/lib/isboot/isboot /usr/bin/isboot \
            || isboot_fatal "writing the launcher /usr/lib/isboot/isboot failed"
        isboot_code_cache "$real"
    else
        inst_binary "$real" /usr/bin/isboot || isboot_fatal "copying $real failed"
    fi
    [[ -x $initdir/usr/bin/isboot ]] || isboot_fatal "/usr/bin/isboot is not in the image after copying"
    inst_multiple modprobe
    # ISA-L's CRC32C for iSCSI digests; optional (isboot falls back to hash-wasm).
    inst_libdir_file "libisal.so.2*" || :
    inst_hook cmdline 90 "$moddir/isboot-parse.sh" \
        && inst_script "$moddir/isboot-run.sh" /sbin/isboot-run \
        || isboot_fatal "installing the scripts that start isboot at boot failed"
    # /dev/kmsg and /proc must exist when the daemon starts; dracut's base has them.
    dracut_need_initqueue
}
