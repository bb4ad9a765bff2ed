#!/bin/bash
# dracut module: boot from the iSCSI disk named by the firmware's iBFT (or by
# netroot=iscsi:...) through isboot, which serves it to the kernel as /dev/nbdN.
# Build with:  dracut -a isboot [--kver KVER] initrd.img
# Installed to /usr/lib/dracut/modules.d/95isboot by `make install`.

# Which isboot: the one `make install` installed. It writes that path (without
# DESTDIR) over the @ISBOOT_BIN@ placeholder below, because dracut runs with
# PATH=/sbin:/bin:/usr/sbin:/usr/bin, where PREFIX=/usr/local/bin is not.
# ISBOOT_BIN=/path/to/isboot overrides it (developers running the module from
# a source tree, where the placeholder is left as it is). It is a single
# executable, or (bundle form) a launcher with isboot.js and deno beside it.
isboot_installed=@ISBOOT_BIN@

isboot_bin() {
    local b="${ISBOOT_BIN:-$isboot_installed}"
    [[ $b != @*@ ]] && readlink -f "$b"
}

check() {
    local bin
    bin=$(isboot_bin) || return 1
    [[ -x $bin ]] || return 1
    # Only on request (-a isboot), or in host-only mode when the root is on NBD.
    if [[ $hostonly ]]; then
        local src
        src=$(findmnt -no SOURCE / 2> /dev/null)
        [[ $src == /dev/nbd* ]] && return 0
    fi
    return 255
}

depends() {
    # udev loads the NIC driver; isboot configures the NIC itself (no network module).
    echo udev-rules
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
    local bin dir
    bin=$(isboot_bin)
    dir=${bin%/*}
    if [[ -f $dir/isboot.js && -x $dir/deno ]]; then
        # Bundle form: deno (with its libraries), the bundle, and a launcher
        # with fixed paths (no readlink/dirname needed at boot).
        inst_binary "$dir/deno" /usr/lib/isboot/deno
        inst_simple "$dir/isboot.js" /usr/lib/isboot/isboot.js
        sed 's|^here=.*|here=/usr/lib/isboot|' "$bin" > "$initdir/usr/lib/isboot/isboot"
        chmod 0755 "$initdir/usr/lib/isboot/isboot"
        ln_r /usr/lib/isboot/isboot /usr/bin/isboot
    else
        inst_binary "$bin" /usr/bin/isboot
    fi
    inst_multiple modprobe
    # ISA-L's CRC32C for iSCSI digests; optional (isboot falls back to hash-wasm).
    inst_libdir_file "libisal.so.2*" || :
    inst_hook cmdline 90 "$moddir/isboot-parse.sh"
    inst_simple "$moddir/isboot-run.sh" /sbin/isboot-run
    chmod 0755 "$initdir/sbin/isboot-run"
    # /dev/kmsg and /proc must exist when the daemon starts; dracut's base has them.
    dracut_need_initqueue
}
