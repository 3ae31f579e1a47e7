#!/bin/bash
# Concurrency: four fio jobs do random reads and writes at queue depth 32
# (libaio, O_DIRECT, 4 KiB to 64 KiB blocks) on their own quarters of one
# envcrypt mapping (sector_size 4096) and then verify every block they wrote
# (verify=crc32c, fatal on the first mismatch).  Runs on a brd disk (bio
# based: each write is submitted on its own) and on a loop device (blk-mq:
# the writes a worker encrypts reach its request queue in plugged batches).
# Passes when fio reports no error and no verify failure and the target's
# error counter stays 0, on both.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"

KEY_DESC=envcrypt:fio
JOBS=4
AREA_MIB=24

verify_on() { # verify_on <label> <device>
	local label=$1 dev=$2 name=fio-$1 output
	dm_create "$name" "$(envcrypt_table "$(dev_sectors "$dev")" "$dev" 0 "$KEY_DESC" 4096)" ||
		tap_bail "$label: mapping created" "table loads" "$DM_ERROR"
	if output=$(fio --name=envcrypt-verify --filename="/dev/mapper/$name" \
		--ioengine=libaio --direct=1 --iodepth=32 --numjobs=$JOBS \
		--rw=randrw --bsrange=4k-64k \
		--size=${AREA_MIB}M --offset_increment=${AREA_MIB}M \
		--verify=crc32c --verify_fatal=1 --do_verify=1 \
		--group_reporting 2>&1); then
		tap_ok "$label: fio randrw QD32 x $JOBS jobs with crc32c verify"
	else
		tap_fail "$label: fio randrw QD32 x $JOBS jobs with crc32c verify" "fio exits 0, no verify errors" "$output"
	fi
	echo "$output" | grep -E 'READ:|WRITE:|err=' | sed 's/^ */  /'
	expect_eq "$label: no fio job reports a non-zero err=" "" "$(echo "$output" | grep -o 'err= *[0-9]*' | grep -v 'err= *0$')"
	expect_eq "$label: target error counter" 0 "$(dmsetup status "$name" | awk '{ print $11 }')"
}

guest_setup
head -c 64 /dev/urandom >/tmp/fio.key
add_logon_key "$KEY_DESC" /tmp/fio.key >/dev/null ||
	tap_bail "logon key loads" "keyctl padd succeeds" "$(keyctl show @s 2>&1)"

dev=$(brd_device $((JOBS * AREA_MIB))) || tap_bail "brd device" "/dev/ram0" "$(dmesg | tail -n 3)"
on_exit rmmod brd
verify_on brd "$dev"

modprobe loop || tap_bail "loop module loads" "modprobe loop succeeds" "$(dmesg | tail -n 3)"
loop=$(loop_device $((JOBS * AREA_MIB))) || tap_bail "loop device" "losetup --find succeeds" "$(dmesg | tail -n 3)"
on_exit losetup -d "$loop"
verify_on loop "$loop"
tap_done
