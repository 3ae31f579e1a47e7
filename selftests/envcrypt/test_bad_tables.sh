#!/bin/bash
# Malformed tables: every one is refused (dmsetup create fails and leaves no
# device behind), the kernel log names the reason with the target's own
# message ("envcrypt: <message>"), and nothing oopses or warns.  Covers:
# missing and extra arguments, unknown option, bad sector size, length or
# offset not a multiple of it, missing key, wrong key type or form, wrong key
# size, bad device, bad offset, device too small, bad optional-argument count.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"
. "$ENVCRYPT_TOP/selftests/lib/kernel-log.sh"

GOOD_KEY=envcrypt:bad-tables
SHORT_KEY=envcrypt:bad-tables-short

guest_setup
dev=$(brd_device 16) || tap_bail "brd device" "/dev/ram0 of 16 MiB" "$(dmesg | tail -n 3)"
on_exit rmmod brd
size=$(dev_sectors "$dev")
head -c 64 /dev/urandom >/tmp/good.key
head -c 32 /dev/urandom >/tmp/short.key
add_logon_key "$GOOD_KEY" /tmp/good.key >/dev/null &&
	add_logon_key "$SHORT_KEY" /tmp/short.key >/dev/null &&
	keyctl padd user envcrypt:user-key @s </tmp/good.key >/dev/null ||
	tap_bail "test keys load" "keyctl padd succeeds" "$(keyctl show @s 2>&1)"

# refused MESSAGE LENGTH TARGET_ARGS: "0 LENGTH envcrypt TARGET_ARGS" must
# be refused with "envcrypt: MESSAGE" in the kernel log.
refused() {
	local message=$1 table="0 $2 envcrypt $3" output log
	dmesg_mark
	if output=$(dmsetup create bad-table --table "$table" 2>&1); then
		dm_remove bad-table
		tap_fail "'$table' refused" "dmsetup create fails: $message" "it succeeded"
		return
	fi
	log=$(dmesg_since_mark)
	if [[ $log == *"envcrypt: $message"* ]]; then
		tap_ok "'$table' refused: $message"
	else
		tap_fail "'$table' refused" "kernel log line with 'envcrypt: $message'" "${log:-no kernel log lines}; dmsetup: $output"
	fi
}

key=logon:$GOOD_KEY
dmesg_mark
first_mark=$DMESG_MARK
refused "Not enough arguments" 8 ""
refused "Not enough arguments" 8 "$dev 0"
refused "Too many arguments" 8 "$dev 0 $key 1 sector_size:4096 allow_discards"
refused "Unknown optional argument" 8 "$dev 0 $key 1 sector_size_is_4096"
refused "Unknown optional argument" 8 "$dev 0 $key 1 no_read_workqueue"
refused "Invalid number of optional arguments" 8 "$dev 0 $key one sector_size:512"
refused "Invalid number of optional arguments" 8 "$dev 0 $key 2 sector_size:512"
refused "Invalid sector size" 8 "$dev 0 $key 1 sector_size:1024"
refused "Invalid sector size" 8 "$dev 0 $key 1 sector_size:8192"
refused "Invalid sector size" 8 "$dev 0 $key 1 sector_size:0"
refused "Target length not a multiple of sector size" 12 "$dev 0 $key"
refused "Target length not a multiple of sector size" 12 "$dev 0 $key 1 sector_size:4096"
refused "Device offset not a multiple of sector size" 8 "$dev 1 $key"
refused "Key not found" 8 "$dev 0 logon:envcrypt:no-such-key"
refused "Key must be logon:<description>" 8 "$dev 0 user:envcrypt:user-key"
refused "Key must be logon:<description>" 8 "$dev 0 $(od -An -v -tx1 /tmp/good.key | tr -d ' \n')"
refused "Key must be logon:<description>" 8 "$dev 0 logon:"
refused "Key must be 64 bytes" 8 "$dev 0 logon:$SHORT_KEY"
refused "Device lookup failed" 8 "/dev/no-such-device 0 $key"
refused "Invalid device offset" 8 "$dev zero $key"
refused "Invalid device offset" 8 "$dev 8x $key"
refused "Invalid device offset" 8 "$dev -8 $key"
refused "Device too small for target" 8 "$dev $((size - 4)) $key 1 sector_size:512"

expect_eq "no device left behind by the refused tables" "" "$(dmsetup ls | grep -w bad-table)"
DMESG_MARK=$first_mark
dmesg_since_mark >/tmp/bad-tables.log
expect_eq "no kernel warning or oops while refusing them" "" "$(kernel_trouble /tmp/bad-tables.log)"
tap_done
