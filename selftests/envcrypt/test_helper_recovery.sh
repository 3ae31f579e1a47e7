#!/bin/bash
# Disaster recovery with a real attach (Documentation/admin-guide/
# disaster-recovery.rst; tests/host/test_disasters.sh walks the same
# commands on image files without the kernel): a loop device formatted with
# a recovery key and written through the mapping; then
#   keystore and root key deleted: attach exits 3; the keystore backup made
#   before (kms backup) restored on the fresh configuration: attach reads
#   the data back;
#   deleted again, with no backup: recover under a CMK of the new keystore;
#   attach reads the data back;
#   both header copies zeroed: attach exits 3 (not an envcrypt disk);
#   header-restore --force of the backup taken after format, whose CMK is
#   gone with the old keystore; recover; attach reads the data back.
# The recovery private key is used only by `recover`; the DK is absent from
# the raw disk, the keystore and the audit log afterwards.  Last, a version
# 1 disk's `upgrade-header` is SIGKILLed at each of its steps (the test
# build's ENVCRYPT_FAULT=recovery:<step>) and the disk still attaches and
# reads back: version 1 when killed before any write, version 2 after.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"
. "$ENVCRYPT_TOP/helper/tests/guest_helper.sh"

NAME=helper-rec

helper_setup
dev=$(helper_loop 64) || tap_bail "loop device" "a 64 MiB loop device" "$(losetup -a 2>&1)"
on_exit losetup -d "$dev"
detach_at_exit "$NAME"
openssl genpkey -algorithm X25519 -out "$HELPER_DIR/recovery.key" 2>/dev/null &&
	openssl pkey -in "$HELPER_DIR/recovery.key" -pubout -out "$HELPER_DIR/recovery.pub" ||
	tap_bail "recovery key pair" "openssl genpkey succeeds" "$(openssl version 2>&1)"

new_cmk() { # new_cmk ALIAS: the CMK URI
	"$ENVCTL" kms create-key --alias "$1" 2>&1 | tail -n 1
}

# attached_data WHAT: attach, compare the first MiB with the reference, detach.
attached_data() {
	local out
	if ! out=$("$ENVCTL" attach "$dev" "$NAME" 2>&1); then
		tap_fail "$1: attach" "exit 0" "$out"
		return
	fi
	if dd if="/dev/mapper/$NAME" bs=1M count=1 iflag=direct status=none |
		cmp -s - "$HELPER_DIR/data.ref"; then
		tap_ok "$1: attached, the data reads back"
	else
		tap_fail "$1: attached, the data reads back" "the reference MiB" "a mismatch"
	fi
	"$ENVCTL" detach "$NAME" >/dev/null 2>&1
}

# write_reference WHAT: attach, write the reference MiB, detach; bails out
# naming the step that failed and what it printed.
write_reference() {
	local out
	out=$("$ENVCTL" attach "$dev" "$NAME" 2>&1) ||
		tap_bail "$1" "attach exits 0" "exit $?: $out"
	out=$(dd if="$HELPER_DIR/data.ref" of="/dev/mapper/$NAME" bs=1M oflag=direct \
		conv=fsync status=none 2>&1) ||
		tap_bail "$1" "dd through the mapping exits 0" "exit $?: $out"$'\n'"$(dmesg | tail -n 3)"
	out=$("$ENVCTL" detach "$NAME" 2>&1) ||
		tap_bail "$1" "detach exits 0" "exit $?: $out"
}

# attach_fails WHAT CODE PATTERN: attach exits CODE with a matching message.
attach_fails() {
	local out rc
	out=$("$ENVCTL" attach "$dev" "$NAME" 2>&1)
	rc=$?
	expect_eq "$1: attach exits $2" "$2" "$rc"
	expect_match "$1: the message says why" "$3" "$out"
	expect_eq "$1: nothing mapped" "" "$(dmsetup ls | awk -v n="$NAME" '$1 == n')"
}

CMK=$(new_cmk alias/rec-data)
out=$("$ENVCTL" format "$dev" --cmk alias/rec-data --recovery-key "$HELPER_DIR/recovery.pub" 2>&1)
expect_match "format with a recovery key" "^formatted $dev: uuid " "$out"
head -c 1048576 /dev/urandom >"$HELPER_DIR/data.ref"
write_reference "reference MiB written through the mapping"
out=$("$ENVCTL" header-backup "$dev" "$HELPER_DIR/header.backup" 2>&1)
expect_match "header backup after format" "^backed up the header of $dev " "$out"
dk=$(data_key "$dev")

# ---- keystore and root key lost ------------------------------------------------
out=$("$ENVCTL" kms backup --to "$HELPER_DIR/keystore.backup" \
	--recovery-key "$HELPER_DIR/recovery.pub" 2>&1)
expect_eq "kms backup to the recovery public key" 0 "$?"
rm -rf "$HELPER_DIR/kms" "$HELPER_DIR/root.key"
attach_fails "keystore lost" 3 "key $CMK not found"
out=$("$ENVCTL" kms restore "$HELPER_DIR/keystore.backup" \
	--recovery-private-key "$HELPER_DIR/recovery.key" 2>&1)
expect_match "kms restore on the fresh configuration" \
	"^restored [0-9]+ keys of region local-1 from $HELPER_DIR/keystore.backup$" "$out"
attached_data "after kms restore"
rm -rf "$HELPER_DIR/kms" "$HELPER_DIR/root.key"
attach_fails "keystore lost again, no backup" 3 "key $CMK not found"
NEW=$(new_cmk alias/rec-new)
out=$("$ENVCTL" recover "$dev" --recovery-private-key "$HELPER_DIR/recovery.key" \
	--cmk alias/rec-new 2>&1)
expect_match "recover under a CMK of the new keystore" \
	"recovered with recovery key [0-9a-f]{16}; the data key is now wrapped under $NEW " "$out"
attached_data "after recover"

# ---- both header copies destroyed -------------------------------------------------
dd if=/dev/zero of="$dev" bs=1M count=1 oflag=direct conv=fsync status=none
attach_fails "both header copies zeroed" 3 "not an envcrypt disk"
out=$("$ENVCTL" header-restore --force "$dev" "$HELPER_DIR/header.backup" 2>&1)
expect_match "header-restore --force of the backup made after format" \
	"^restored the header of disk .* \\(sequence 1, CMK $CMK\\)" "$out"
attach_fails "the restored header's CMK went with the old keystore" 3 "key $CMK not found"
out=$("$ENVCTL" recover "$dev" --recovery-private-key "$HELPER_DIR/recovery.key" \
	--cmk alias/rec-new 2>&1)
expect_match "recover the restored header" "the data key is now wrapped under $NEW " "$out"
attached_data "after header-restore and recover"

dk_absent "the DK is not on the raw disk, in the keystore or the audit log" "$dk" \
	"$dev" "$HELPER_DIR"/kms/*

# ---- v1 -> v2 upgrade killed at each step -----------------------------------------
TEST_CTL=$ENVCRYPT_TOP/build/test/envcryptctl
for step in prepared first-copy-written first-copy-flushed second-copy-written \
	second-copy-flushed; do
	out=$("$ENVCTL" format --force "$dev" --cmk alias/rec-new 2>&1) ||
		tap_bail "version 1 format before the kill at $step" "exit 0" "$out"
	write_reference "data written before the kill at $step"
	ENVCRYPT_FAULT=recovery:$step "$TEST_CTL" upgrade-header "$dev" >/dev/null 2>&1
	expect_eq "upgrade-header killed at $step (SIGKILL)" 137 "$?"
	# A process (not a machine) dies: what it wrote is in the page cache,
	# so once a copy is written that copy is read: version 2.
	expected=2
	[ "$step" = prepared ] && expected=1
	version=$("$ENVCTL" inspect "$dev" 2>&1 | sed -n 's/^.*envcrypt header version \([0-9]\).*/\1/p')
	expect_eq "after the kill at $step the header is version $expected" "$expected" "$version"
	attached_data "after the kill at $step"
done
tap_done
