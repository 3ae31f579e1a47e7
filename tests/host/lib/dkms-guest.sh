#!/bin/bash
# Guest half of tests/host/test_dkms.sh; runs in a vm-run.sh guest booted
# on the kernel the module was built for.
#
#   dkms-guest.sh MODULE BUILD_ID VERSION
#
# Loads MODULE (the file DKMS installed in the test's Debian root, reached
# through the guest's view of the host's file system) instead of
# build/kmod/KVER's, checks that the loaded module is that file (its GNU
# build ID, which the kernel shows in /sys/module/*/notes, and its
# version), and that it encrypts as dm-crypt does: 1 MiB of random data
# written through an envcrypt mapping reads back through a dm-crypt
# aes-xts-plain64 mapping with the same key, and the raw device differs
# from it.  TAP from selftests/lib/guest.sh.
set -u
# shellcheck source=selftests/lib/guest.sh
. "$ENVCRYPT_TOP/selftests/lib/guest.sh"
ENVCRYPT_MODULE=$1
BUILD_ID=$2
VERSION=$3
KEY_DESC=envcrypt:dkms

guest_setup
# The note: namesz, descsz, type (4 bytes each), "GNU\0", then the ID.
loaded_id=$(od -An -v -tx1 /sys/module/dm_envcrypt/notes/.note.gnu.build-id 2>&1 | tr -d ' \n' | cut -c33-)
expect_eq "the running dm_envcrypt is the DKMS build (build ID, version)" \
	"$BUILD_ID $VERSION" "$loaded_id $(cat /sys/module/dm_envcrypt/version 2>&1)"
modprobe dm_crypt || tap_bail "dm-crypt loads" "modprobe dm_crypt" "$(dmesg | tail -n 3)"
dev=$(brd_device 16) || tap_bail "brd device" "/dev/ram0 of 16 MiB" "$(dmesg | tail -n 3)"
on_exit rmmod brd
head -c 64 /dev/urandom >/tmp/dkms.key
add_logon_key "$KEY_DESC" /tmp/dkms.key >/dev/null ||
	tap_bail "logon key loads" "keyctl padd succeeds" "$(keyctl show @s 2>&1)"
head -c 1048576 /dev/urandom >/tmp/dkms.data
len=$(dev_sectors "$dev")

dm_create dkms "$(envcrypt_table "$len" "$dev" 0 "$KEY_DESC" 4096)" ||
	tap_bail "envcrypt mapping" "table loads" "$DM_ERROR"
dd if=/tmp/dkms.data of=/dev/mapper/dkms bs=64K oflag=direct conv=fsync status=none ||
	tap_bail "1 MiB written through envcrypt" "dd exits 0" "$(dmesg | tail -n 3)"
dm_remove dkms
dm_create dkms-oracle "$(dmcrypt_table "$len" "$dev" 0 "$KEY_DESC" 4096)" ||
	tap_bail "dm-crypt mapping" "table loads" "$DM_ERROR"
expect_eq "dm-crypt reads back what the DKMS module wrote" \
	"$(sha256sum </tmp/dkms.data)" \
	"$(head -c 1048576 /dev/mapper/dkms-oracle | sha256sum)"
dm_remove dkms-oracle
if head -c 1048576 "$dev" | cmp -s - /tmp/dkms.data; then
	tap_fail "the raw device holds ciphertext" "not the plaintext" "the plaintext"
else
	tap_ok "the raw device holds ciphertext, not the plaintext"
fi
tap_done
