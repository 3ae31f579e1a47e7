#!/bin/bash
# Known answer: data written through envcrypt onto the virtio disk /dev/vda
# must be, byte for byte, AES-256-XTS plain64 of that data under the known key
# (data/kat-key.hex: the IEEE 1619 XTS-AES-256 key, digits of e and pi), with
# the IV counted from the start of the target, for sector_size 512 and 4096
# at non-zero dev_offsets.  In the guest this test writes, reads back and
# compares the plaintext; the ciphertext itself is checked on the host after
# the guest exits (selftests/run.sh runs lib/xts_known_answer.py on the raw
# image), from the parameters this test leaves in $ENVCRYPT_OUT/known_answer/.
# A third region written by dm-crypt is the checker's control: it shows the
# independent implementation agrees with the kernel's reference target.
#
# Disk layout (512-byte sectors; the image starts all zero):
#   envcrypt-512    dev_offset  2056, length 2048, sector_size 512
#   envcrypt-4096   dev_offset  8200, length 4096, sector_size 4096
#   dm-crypt-4096   dev_offset 16392, length 4096, sector_size 4096

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"

DISK=/dev/vda
KEY_DESC=envcrypt:known-answer
KAT_DIR=$ENVCRYPT_OUT/known_answer

[ -b "$DISK" ] || tap_skip "no virtio disk $DISK (run through selftests/run.sh)"
[ "$(dev_sectors "$DISK")" -ge 20488 ] || tap_skip "$DISK is smaller than the 20488 sectors this test uses"
guest_setup

rm -rf "$KAT_DIR"
mkdir -p "$KAT_DIR"
hex_to_bin <"$ENVCRYPT_TOP/selftests/envcrypt/data/kat-key.hex" >/tmp/kat.key
key_hex=$(od -An -v -tx1 /tmp/kat.key | tr -d ' \n')
[ "${#key_hex}" = 128 ] || tap_bail "the known key is 64 bytes" "128 hex digits" "$key_hex"
add_logon_key "$KEY_DESC" /tmp/kat.key >/dev/null ||
	tap_bail "logon key loads" "keyctl padd succeeds" "$(keyctl show @s 2>&1)"

# write_region NAME envcrypt|dmcrypt SECTOR_SIZE DEV_OFFSET LENGTH
write_region() {
	local name=$1 target=$2 sector_size=$3 offset=$4 length=$5
	local data=$KAT_DIR/$name.data table output
	table=$("${target}_table" "$length" "$DISK" "$offset" "$KEY_DESC" "$sector_size")
	head -c $((length * 512)) /dev/urandom >"/tmp/$name.data"
	cp "/tmp/$name.data" "$data"
	if ! dm_create "kat-$name" "$table"; then
		tap_fail "$name: table loads" "'$table' accepted" "$DM_ERROR"
		return
	fi
	if ! output=$(dd if="/tmp/$name.data" of="/dev/mapper/kat-$name" bs=64K oflag=direct conv=fsync status=none 2>&1); then
		tap_fail "$name: write $((length * 512)) bytes" "dd succeeds" "$output"
		return
	fi
	output=$(dd if="/dev/mapper/kat-$name" bs=64K iflag=direct status=none | cmp - "/tmp/$name.data" 2>&1)
	expect_eq "$name: reads back what was written" "" "$output"
	dm_remove "kat-$name"
	cat >"$KAT_DIR/$name.params" <<-EOF
		# written by test_known_answer.sh; checked by lib/xts_known_answer.py
		target=$target
		disk=$DISK
		key_hex=$key_hex
		sector_size=$sector_size
		dev_offset=$offset
		length=$length
		data=$name.data
	EOF
}

write_region envcrypt-512 envcrypt 512 2056 2048
write_region envcrypt-4096 envcrypt 4096 8200 4096
write_region dm-crypt-4096 dmcrypt 4096 16392 4096
tap_done
