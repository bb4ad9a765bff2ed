#!/bin/sh
# dracut cmdline hook: queue `isboot boot` to run once udev has settled (the
# NIC driver is loaded by then). isboot itself decides whether there is
# anything to boot (iBFT, netroot=iscsi:) and exits 0 when there is not.
type getargbool > /dev/null 2>&1 || . /lib/dracut-lib.sh

if ! getargbool 1 isboot; then
    info "isboot: isboot=off on the kernel command line"
    return 0 2> /dev/null || exit 0
fi
# The systemd initqueue unit runs only when this file exists.
: > /lib/dracut/need-initqueue
/sbin/initqueue --settled --onetime --unique --name isboot /sbin/isboot-run
# root=UUID=, LABEL=, /dev/nbd0p1 are waited for by dracut's rootfs-block.
