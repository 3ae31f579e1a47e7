#!/bin/bash
# "dmsetup table" output, loaded again with "dmsetup load", gives the same
# table and the same key, for every form of key description the target
# accepts.  device-mapper splits a table line at white space and takes a
# backslash as "the next character is literal", so the target must echo a
# description with a backslash before each backslash and each character the
# kernel's isspace() matches (space, and byte 0xa0, which occurs inside
# UTF-8 text such as "à" = c3 a0).  For each description: the table loads
# with the escaped form, "dmsetup table" shows exactly that form, the output
# reloads to an identical table on the same key (data written before reads
# back), and "key set" with the escaped form works too.  Descriptions with
# control characters are refused (a table line cannot carry a newline).

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"

NAME=reload
SECTORS=8192

guest_setup
dev=$(brd_device 8) || tap_bail "brd device" "/dev/ram0 of 8 MiB" "$(dmesg | tail -n 3)"
on_exit rmmod brd
devno=$(($(stat -c '0x%t' "$dev"))):$(($(stat -c '0x%T' "$dev")))
head -c 64 /dev/urandom >/tmp/reload.key

# The escaped form of a description, as the table line must carry it.
escape() {
	python3 -c '
import sys
raw = sys.argv[1].encode("utf-8", "surrogateescape")
space = b" \t\n\v\f\r\xa0"
out = b"".join(b"\\" + bytes([c]) if c in space or c == 0x5c else bytes([c]) for c in raw)
sys.stdout.buffer.write(out)' "$1"
}

descriptions=(
	"envcrypt:plain"
	"envcrypt:with space"
	"envcrypt:two  spaces and trailing "
	'envcrypt:back\slash'
	'envcrypt:trailing\'
	'envcrypt:\ escaped space'
	"envcrypt:utf-8 é à ü"
	"envcrypt:sym!\"#\$%&'()*+,-./;<=>?@[]^_\`{|}~"
)

head -c $((64 * 1024)) /dev/urandom >/tmp/reload.data
n=0
for desc in "${descriptions[@]}"; do
	n=$((n + 1))
	esc=$(escape "$desc")
	add_logon_key "$desc" /tmp/reload.key >/dev/null ||
		tap_bail "$n: logon key '$desc' loads" "keyctl padd succeeds" "$(keyctl show @s 2>&1)"
	table="0 $SECTORS envcrypt $devno 0 logon:$esc 1 sector_size:4096"
	if ! dm_create "$NAME" "$table"; then
		tap_fail "$n: table with '$esc' loads" "dmsetup create succeeds" "$DM_ERROR"
		continue
	fi
	dd if=/tmp/reload.data of="/dev/mapper/$NAME" bs=64K oflag=direct status=none
	shown=$(dmsetup table "$NAME")
	expect_eq "$n: dmsetup table echoes '$esc'" "$table" "$shown"

	dmsetup suspend "$NAME"
	expect_succeeds "$n: dmsetup load of the table output" dmsetup load "$NAME" --table "$shown"
	expect_succeeds "$n: resume on the reloaded table" dmsetup resume "$NAME"
	expect_eq "$n: reloaded table identical" "$shown" "$(dmsetup table "$NAME")"
	seen=$(dd if="/dev/mapper/$NAME" bs=64K count=1 iflag=direct status=none | cmp - /tmp/reload.data 2>&1)
	expect_eq "$n: same key after the reload" "" "$seen"

	dmsetup suspend "$NAME"
	expect_succeeds "$n: key set with the escaped form" dmsetup message "$NAME" 0 key set "logon:$esc"
	expect_succeeds "$n: resume after key set" dmsetup resume "$NAME"
	expect_eq "$n: table unchanged after key set" "$shown" "$(dmsetup table "$NAME")"
	dm_remove "$NAME"
done

# A tab (escaped, so device-mapper passes it on) is a control character.
add_logon_key $'envcrypt:tab\there' /tmp/reload.key >/dev/null
expect_fails "a description with a control character is refused" \
	dmsetup create "$NAME" --table "0 $SECTORS envcrypt $dev 0 logon:envcrypt:tab\\"$'\t'"here 1 sector_size:4096"
dm_remove "$NAME"
tap_done
