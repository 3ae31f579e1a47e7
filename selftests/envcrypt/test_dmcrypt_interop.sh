#!/bin/bash
# dm-crypt interoperability, both ways, on the same device and key: what
# envcrypt writes, dm-crypt (aes-xts-plain64, :64:logon:<desc>, same
# dev_offset and sector_size) reads back unchanged, and what dm-crypt writes,
# envcrypt reads back unchanged; for sector_size 512 and 4096 at a non-zero
# dev_offset.  The backing device must not hold the plaintext.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"

KEY_DESC=envcrypt:interop
OFFSET=2048
LENGTH=16384
DATA_BYTES=$((4 * 1024 * 1024))

guest_setup
dev=$(brd_device 16) || tap_bail "brd device" "/dev/ram0 of 16 MiB" "$(dmesg | tail -n 3)"
on_exit rmmod brd
head -c 64 /dev/urandom >/tmp/interop.key
add_logon_key "$KEY_DESC" /tmp/interop.key >/dev/null ||
	tap_bail "logon key loads" "keyctl padd succeeds" "$(keyctl show @s 2>&1)"

# transfer WRITER READER SECTOR_SIZE: WRITER's mapping writes fresh random
# data, READER's mapping of the same device reads it.
transfer() {
	local writer=$1 reader=$2 sector_size=$3
	local what="$writer writes, $reader reads (sector_size $sector_size)"
	local seen raw

	head -c "$DATA_BYTES" /dev/urandom >/tmp/plain
	if ! dm_create interop-w "$("${writer}_table" "$LENGTH" "$dev" "$OFFSET" "$KEY_DESC" "$sector_size")"; then
		tap_fail "$what" "$writer table loads" "$DM_ERROR"
		return
	fi
	dd if=/tmp/plain of=/dev/mapper/interop-w bs=1M oflag=direct conv=fsync status=none
	dm_remove interop-w

	raw=$(dd if="$dev" bs=512 skip="$OFFSET" count=$((DATA_BYTES / 512)) status=none | cmp - /tmp/plain 2>&1)
	if [ -z "$raw" ]; then
		tap_fail "$what" "ciphertext on $dev" "the plaintext itself at dev_offset $OFFSET"
		return
	fi

	if ! dm_create interop-r "$("${reader}_table" "$LENGTH" "$dev" "$OFFSET" "$KEY_DESC" "$sector_size")"; then
		tap_fail "$what" "$reader table loads" "$DM_ERROR"
		return
	fi
	seen=$(dd if=/dev/mapper/interop-r bs=1M count=$((DATA_BYTES / 1048576)) iflag=direct status=none |
		cmp - /tmp/plain 2>&1)
	dm_remove interop-r
	expect_eq "$what" "identical data (cmp silent)" "${seen:-identical data (cmp silent)}"
}

for sector_size in 512 4096; do
	transfer envcrypt dmcrypt "$sector_size"
	transfer dmcrypt envcrypt "$sector_size"
done
tap_done
