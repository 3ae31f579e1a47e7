#!/bin/bash
# "dmsetup table" output, loaded again with "dmsetup load", gives the same
# table on the same key, for every key description the target accepts.
#
# What can reach the target: libdevmapper doubles every backslash of a
# table line before the kernel splits it (dm_split_args() takes "\x" as a
# literal x), so through dmsetup an argument never holds white space and a
# backslash is literal; dmsetup cuts a table line at '#'.  The target
# echoes the description as it is, and refuses descriptions with white
# space, control characters or '#', which only a raw ioctl or a message
# (messages are not doubled) can send: a table showing them would load
# differently.
#
# Accepted forms (plain, backslashes inside and at the end, UTF-8,
# punctuation): the table loads, "dmsetup table" shows the description
# exactly, the output reloads to an identical table on the same key (data
# written before reads back), and "key set" (message form: backslashes
# doubled) works.  Refused: "key set" of a description with an escaped
# space, and one with '#', each a logon key that exists; the target stays
# wiped and the table keeps the old description.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"

NAME=reload
SECTORS=8192

guest_setup
dev=$(brd_device 8) || tap_bail "brd device" "/dev/ram0 of 8 MiB" "$(dmesg | tail -n 3)"
on_exit rmmod brd
devno=$(($(stat -c '0x%t' "$dev"))):$(($(stat -c '0x%T' "$dev")))
head -c 64 /dev/urandom >/tmp/reload.key
head -c $((64 * 1024)) /dev/urandom >/tmp/reload.data

descriptions=(
	"envcrypt:plain"
	'envcrypt:back\slash'
	'envcrypt:trailing\'
	'envcrypt:two\\backslashes'
	"envcrypt:utf-8-été-über-€"
	"envcrypt:sym!\"\$%&'()*+,-./;<=>?@[]^_\`{|}~"
)

n=0
for desc in "${descriptions[@]}"; do
	n=$((n + 1))
	add_logon_key "$desc" /tmp/reload.key >/dev/null ||
		tap_bail "$n: logon key '$desc' loads" "keyctl padd succeeds" "$(keyctl show @s 2>&1)"
	table="0 $SECTORS envcrypt $devno 0 logon:$desc 1 sector_size:4096"
	if ! dm_create "$NAME" "$table"; then
		tap_fail "$n: table with '$desc' loads" "dmsetup create succeeds" "$DM_ERROR"
		continue
	fi
	dd if=/tmp/reload.data of="/dev/mapper/$NAME" bs=64K oflag=direct status=none
	shown=$(dmsetup table "$NAME")
	expect_eq "$n: dmsetup table shows '$desc'" "$table" "$shown"

	dmsetup suspend "$NAME"
	expect_succeeds "$n: dmsetup load of the table output" dmsetup load "$NAME" --table "$shown"
	expect_succeeds "$n: resume on the reloaded table" dmsetup resume "$NAME"
	expect_eq "$n: reloaded table identical" "$shown" "$(dmsetup table "$NAME")"
	seen=$(dd if="/dev/mapper/$NAME" bs=64K count=1 iflag=direct status=none | cmp - /tmp/reload.data 2>&1)
	expect_eq "$n: same key after the reload" "" "$seen"

	dmsetup suspend "$NAME"
	expect_succeeds "$n: key set (backslashes doubled)" \
		dmsetup message "$NAME" 0 key set "logon:${desc//\\/\\\\}"
	expect_succeeds "$n: resume after key set" dmsetup resume "$NAME"
	expect_eq "$n: table unchanged after key set" "$shown" "$(dmsetup table "$NAME")"
	dm_remove "$NAME"
done

# Descriptions a table line could not carry back: refused by "key set".
add_logon_key envcrypt:plain /tmp/reload.key >/dev/null
dm_create "$NAME" "0 $SECTORS envcrypt $devno 0 logon:envcrypt:plain 1 sector_size:4096" ||
	tap_bail "mapping for the refused forms" "table loads" "$DM_ERROR"
shown=$(dmsetup table "$NAME")
for bad in 'envcrypt:with\ space' 'envcrypt:hash#tag'; do
	desc=${bad//\\/}
	add_logon_key "$desc" /tmp/reload.key >/dev/null ||
		tap_bail "logon key '$desc' loads" "keyctl padd succeeds" "$(keyctl show @s 2>&1)"
	dmsetup suspend "$NAME"
	expect_fails "key set of '$desc' refused" dmsetup message "$NAME" 0 key set "logon:$bad"
	expect_eq "'$desc': key left wiped" wiped "$(dmsetup status "$NAME" | awk '{ print $6 }')"
	expect_eq "'$desc': table keeps the old description" "$shown" "$(dmsetup table "$NAME")"
	expect_succeeds "'$desc': dmsetup load of the table output" dmsetup load "$NAME" --table "$(dmsetup table "$NAME")"
	dmsetup message "$NAME" 0 key set logon:envcrypt:plain
	expect_succeeds "'$desc': resume after a good key set" dmsetup resume "$NAME"
	expect_eq "'$desc': table identical after the reload" "$shown" "$(dmsetup table "$NAME")"
done
dm_remove "$NAME"
tap_done
