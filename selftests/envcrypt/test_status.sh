#!/bin/bash
# Status: "dmsetup status" (STATUSTYPE_INFO) is
#   <driver> <sector_size> <valid|wiped> <reads> <writes> <read_bytes> <write_bytes> <errors>
#   <bounce_pages> <bounce_cap>
# where the driver is a hardware-accelerated xts(aes) (aesni or vaes: the
# AES-NI module is loaded first, see below), and the
# counters move with I/O: after a 64 KiB direct write and read, writes/reads
# went up and the byte counters by at least 64 KiB, errors stay 0; the
# bounce fields are numbers, the first at most the second
# (test_bounce_cap.sh checks their values).
# A readahead bio the device below fails (here: a suspended dm-linear) is
# not counted as an error; a direct read the device below fails is.
# "dmsetup table" (STATUSTYPE_TABLE) echoes the arguments, options included:
#   <major:minor> <dev_offset> logon:<desc> <#opt> sector_size:<n> [allow_discards]

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"

KEY_DESC=envcrypt:status
NAME=status

guest_setup
# Up to 6.x the first xts(aes) lookup loads the AES-NI/VAES module
# (aesni_intel).  From 7.x on the builtin "xts-aes-lib" (the AES library,
# priority 110) answers it, and the module is loaded only by udev's coldplug
# of the CPU (modalias ...feature:*0099*, AES), which this guest's udevd
# does not do (it triggers block devices only).  Load it as a booted system
# would; where the lookup has already loaded it this changes nothing.
if grep -qw aes /proc/cpuinfo && modinfo aesni_intel >/dev/null 2>&1; then
	modprobe aesni_intel || tap_bail "aesni_intel loads" "modprobe aesni_intel succeeds" "$(dmesg | tail -n 3)"
fi
dev=$(brd_device 16) || tap_bail "brd device" "/dev/ram0 of 16 MiB" "$(dmesg | tail -n 3)"
on_exit rmmod brd
head -c 64 /dev/urandom >/tmp/status.key
add_logon_key "$KEY_DESC" /tmp/status.key >/dev/null ||
	tap_bail "logon key loads" "keyctl padd succeeds" "$(keyctl show @s 2>&1)"
devno=$(($(stat -c '0x%t' "$dev"))):$(($(stat -c '0x%T' "$dev")))

for sector_size in 4096 512; do
	dm_create "$NAME" "$(envcrypt_table 16384 "$dev" 8192 "$KEY_DESC" "$sector_size")" ||
		tap_bail "mapping created" "table loads" "$DM_ERROR"
	expect_eq "table echo (sector_size $sector_size)" \
		"0 16384 envcrypt $devno 8192 logon:$KEY_DESC 1 sector_size:$sector_size" \
		"$(dmsetup table "$NAME")"

	read -r _ _ target driver size state reads writes read_bytes write_bytes errors bounce bounce_cap extra \
		<<<"$(dmsetup status "$NAME")"
	status="$(dmsetup status "$NAME")"
	expect_eq "status has 13 fields (sector_size $sector_size)" "envcrypt, no extra" \
		"$target, ${extra:-no extra}"
	expect_match "crypto driver is AES-NI or VAES" "aesni|vaes" "$driver"
	expect_eq "status sector size" "$sector_size" "$size"
	expect_eq "status key state" valid "$state"
	if [[ $bounce =~ ^[0-9]+$ && $bounce_cap =~ ^[0-9]+$ ]] && ((bounce <= bounce_cap)); then
		tap_ok "bounce pages $bounce within cap $bounce_cap"
	else
		tap_fail "bounce fields" "two numbers, the first at most the second" "'$bounce' '$bounce_cap'"
	fi

	head -c 65536 /dev/urandom >/tmp/status.data
	dd if=/tmp/status.data of="/dev/mapper/$NAME" bs=64K oflag=direct conv=fsync status=none
	dd if="/dev/mapper/$NAME" of=/dev/null bs=64K count=1 iflag=direct status=none
	read -r _ _ _ _ _ _ reads2 writes2 read_bytes2 write_bytes2 errors2 _ _ _ <<<"$(dmsetup status "$NAME")"
	moved="reads $reads->$reads2 writes $writes->$writes2 read_bytes $read_bytes->$read_bytes2 write_bytes $write_bytes->$write_bytes2 (status before: $status)"
	if ((reads2 > reads && writes2 > writes && read_bytes2 >= read_bytes + 65536 &&
		write_bytes2 >= write_bytes + 65536)); then
		tap_ok "counters move with I/O: $moved"
	else
		tap_fail "counters move with I/O" "reads and writes up, each byte counter up by >= 65536" "$moved"
	fi
	expect_eq "error counter" "0 0" "$errors $errors2"
	dm_remove "$NAME"
done

# Readahead that the device below fails is not an error; a plain read that
# fails is.  Under the target a dm-linear device: suspended, device mapper
# fails readahead bios at once (and queues the others); posix_fadvise
# WILLNEED on the target reads ahead.  Then the same readahead with the
# device resumed (it reads), and a direct read with the error target below.
dm_create status-lower "0 16384 linear $dev 0" ||
	tap_bail "dm-linear under the target" "table loads" "$DM_ERROR"
dm_create "$NAME" "$(envcrypt_table 16384 /dev/mapper/status-lower 0 "$KEY_DESC" 4096)" ||
	tap_bail "mapping over dm-linear created" "table loads" "$DM_ERROR"
read_ahead() { # read_ahead: posix_fadvise(WILLNEED) of the target's first MiB
	python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.posix_fadvise(fd, 0, 1 << 20, os.POSIX_FADV_WILLNEED)
os.close(fd)' "/dev/mapper/$NAME"
}
BASE_READS=0 BASE_ERRORS=0
counters() { # counters: "reads R errors E" of the target since the base
	dmsetup status "$NAME" | awk -v r="$BASE_READS" -v e="$BASE_ERRORS" \
		'{ print "reads " $7 - r " errors " $11 - e }'
}
udevadm settle --timeout=60
blockdev --flushbufs "/dev/mapper/$NAME"
read -r _ BASE_READS _ BASE_ERRORS <<<"$(counters)"
timeout 60 dmsetup suspend status-lower || tap_bail "dm-linear suspends" "dmsetup suspend exits 0" "$(dmesg | tail -n 3)"
read_ahead
ra_status=$?
timeout 60 dmsetup resume status-lower || tap_bail "dm-linear resumes" "dmsetup resume exits 0" "$(dmesg | tail -n 3)"
expect_eq "readahead failed by the suspended device below: no error, no read counted" \
	"fadvise 0, reads 0 errors 0" "fadvise $ra_status, $(counters)"
read_ahead
expect_match "the same readahead with the device resumed: reads counted, no error" \
	'^reads [1-9][0-9]* errors 0$' "$(counters)"
if ! dmsetup load status-lower --table "0 16384 error" || ! dmsetup resume status-lower; then
	tap_bail "error target below" "dmsetup load and resume exit 0" "$(dmesg | tail -n 3)"
fi
read -r _ BASE_READS _ BASE_ERRORS <<<"$(BASE_READS=0 BASE_ERRORS=0 counters)"
dd if="/dev/mapper/$NAME" of=/dev/null bs=4K count=1 skip=1000 iflag=direct status=none 2>/dev/null
dd_status=$?
expect_eq "a direct read failed by the device below is an error" \
	"dd 1, reads 0 errors 1" "dd $dd_status, $(counters)"
dm_remove "$NAME"
dm_remove status-lower

dm_create "$NAME" "$(envcrypt_table 16384 "$dev" 0 "$KEY_DESC" 512 allow_discards)" ||
	tap_bail "mapping with allow_discards created" "table loads" "$DM_ERROR"
expect_eq "table echo with allow_discards" \
	"0 16384 envcrypt $devno 0 logon:$KEY_DESC 2 sector_size:512 allow_discards" \
	"$(dmsetup table "$NAME")"
tap_done
