#!/bin/sh
# Run from dracut's initqueue (settled): start the root-storage daemon. On
# failure, stop with the reason on the console (emergency shell).
type die > /dev/null 2>&1 || . /lib/dracut-lib.sh

[ -e /run/isboot/boot.json ] && exit 0
if ! /usr/bin/isboot boot; then
    die "isboot: the iSCSI boot failed; the reason is in the messages above"
fi
