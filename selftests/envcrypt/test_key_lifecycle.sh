#!/bin/bash
# Key lifecycle of a live mapping: the logon key can be unlinked from the
# keyring once the table is loaded (the target holds its own copy in the tfm);
# "key wipe" is refused while the device is active; after suspend it is
# accepted and the status says "wiped"; resume is then refused; "key set"
# fails while the key is not in a keyring, succeeds once it is added again;
# resume then works and the data written before is intact.  The key cannot be
# read back from userspace: keyctl read/print/pipe on the logon key fail, and
# neither "dmsetup table" nor "dmsetup table --showkeys" shows key bytes.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"

KEY_DESC=envcrypt:lifecycle
NAME=lifecycle

guest_setup
dev=$(brd_device 16) || tap_bail "brd device" "/dev/ram0 of 16 MiB" "$(dmesg | tail -n 3)"
on_exit rmmod brd
head -c 64 /dev/urandom >/tmp/life.key
key_hex=$(od -An -v -tx1 /tmp/life.key | tr -d ' \n')
key_id=$(add_logon_key "$KEY_DESC" /tmp/life.key) ||
	tap_bail "logon key loads" "keyctl padd succeeds" "$(keyctl show @s 2>&1)"
dm_create "$NAME" "$(envcrypt_table 32768 "$dev" 0 "$KEY_DESC" 4096)" ||
	tap_bail "mapping created" "table loads" "$DM_ERROR"

key_state() {
	dmsetup status "$NAME" | awk '{ print $6 }'
}

message() {
	dmsetup message "$NAME" 0 "$@" 2>&1
}

# The key bytes must not be readable by anyone, root included.
for how in read print pipe; do
	expect_fails "keyctl $how of the logon key fails" keyctl "$how" "$key_id"
done
for flags in "" "--showkeys"; do
	table=$(dmsetup table $flags "$NAME" 2>&1)
	leaked=
	for ((i = 0; i < 128; i += 16)); do
		[[ ${table,,} != *"${key_hex:i:16}"* ]] || leaked="${key_hex:i:16}"
	done
	expect_eq "dmsetup table${flags:+ $flags} shows no key bytes" "" "$leaked"
done

keyctl unlink "$key_id" @s >/dev/null
head -c $((1024 * 1024)) /dev/urandom >/tmp/life.data
expect_succeeds "writes work after the key is unlinked from the keyring" \
	dd if=/tmp/life.data of=/dev/mapper/$NAME bs=64K oflag=direct conv=fsync status=none

expect_fails "key wipe refused while active" message key wipe
expect_eq "key still valid after the refused wipe" valid "$(key_state)"

dmsetup suspend "$NAME"
expect_succeeds "key wipe accepted while suspended" message key wipe
expect_eq "status shows the key wiped" wiped "$(key_state)"
expect_fails "resume refused while the key is wiped" dmsetup resume "$NAME"
expect_match "device still suspended after the refused resume" "State: +SUSPENDED" "$(dmsetup info "$NAME")"
expect_fails "key set refused while the key is in no keyring" message key set "logon:$KEY_DESC"
expect_fails "key set refused for a non-logon key" message key set "user:$KEY_DESC"

key_id=$(add_logon_key "$KEY_DESC" /tmp/life.key)
expect_succeeds "key set accepted after adding the key again" message key set "logon:$KEY_DESC"
expect_eq "status shows the key valid again" valid "$(key_state)"
expect_succeeds "resume works after key set" dmsetup resume "$NAME"
seen=$(dd if=/dev/mapper/$NAME bs=64K count=16 iflag=direct status=none | cmp - /tmp/life.data 2>&1)
expect_eq "data intact after wipe, key set and resume" "" "$seen"
expect_fails "key set refused while active" message key set "logon:$KEY_DESC"
tap_done
