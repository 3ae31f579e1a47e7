#!/bin/bash
# envcryptctl end to end on the defaults (local KMS, service key alias/acs/ecs;
# only the keystore location is configured, under /tmp, because the guest's
# /var/lib and /etc are read-only): format a loop device, attach it (timed),
# mkfs.ext4, write files of known sha256sums and a marker text, detach,
# attach again, and every checksum matches.  Status shows the mapping with
# its crypto driver and counters.  Afterwards the DK (obtained through the
# test-only tool, helper/tests/test_dk_dump.cc) is absent from the raw disk,
# the keystore, the audit log and `dmsetup table --showkeys`; the marker is
# absent from the raw disk; /proc/keys holds no envcrypt key after attach.
# Detach waits up to 5 s for an open to end: a mounted mapping is refused
# after that wait, one a reader closes within it is removed.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"
. "$ENVCRYPT_TOP/helper/tests/guest_helper.sh"

NAME=helper-rt
MNT=/tmp/envcrypt-helper-rt
MARKER="envcrypt-helper-marker-$RANDOM$RANDOM"

helper_setup
dev=$(helper_loop 128) || tap_bail "loop device" "a 128 MiB loop device" "$(losetup -a 2>&1)"
on_exit losetup -d "$dev"

out=$("$ENVCTL" format "$dev" --label roundtrip 2>&1)
expect_match "format with the defaults uses the service key" \
	"formatted $dev: uuid .*CMK local://local-1/" "$out" || tap_done
uuid=$("$ENVCTL" --json inspect "$dev" | python3 -c 'import json,sys; print(json.load(sys.stdin)["uuid"])')
expect_match "inspect gives the uuid" '^[0-9a-f-]{36}$' "$uuid"
expect_eq "probe says envcrypt" "ID_FS_TYPE=envcrypt" "$("$ENVCTL" probe "$dev" | head -n1)"

detach_at_exit "$NAME"
# timed_attach WHAT: attach, printing and recording how long it took.
timed_attach() {
	local start out rc ms
	start=$(date +%s%N)
	out=$("$ENVCTL" attach "$dev" "$NAME" 2>&1)
	rc=$?
	ms=$((($(date +%s%N) - start) / 1000000))
	echo "# attach latency ($1): $ms ms"
	echo "$1 attach: $ms ms" >>"$ENVCRYPT_OUT/helper-attach-latency.txt"
	expect_eq "$1 attach exits 0 ($out)" 0 "$rc"
}
timed_attach first || tap_done
expect_succeeds "/dev/mapper/$NAME is a block device" test -b "/dev/mapper/$NAME"
no_envcrypt_keys "no envcrypt key left in any keyring after attach"

status=$("$ENVCTL" --json status "$NAME")
expect_match "status names the disk uuid" "\"uuid\": \"$uuid\"" "$status"
expect_match "status shows a valid key and an xts driver" '"key": "valid"' "$status"
expect_match "status has the crypto driver" '"driver": "[^"]*xts[^"]*"' "$status"

mkdir -p "$MNT"
on_exit umount "$MNT"
expect_succeeds "mkfs.ext4" mkfs.ext4 -q -F "/dev/mapper/$NAME"
expect_succeeds "mount" mount "/dev/mapper/$NAME" "$MNT" || tap_done
for size in 1 4096 65537 3000000; do
	head -c "$size" /dev/urandom >"$MNT/file-$size"
done
for i in $(seq 1 100); do
	echo "$MARKER line $i" >>"$MNT/text"
done
(cd "$MNT" && sha256sum file-* text) >"$HELPER_DIR/sums"
expect_succeeds "umount" umount "$MNT"
out=$("$ENVCTL" detach "$NAME" 2>&1)
expect_eq "detach exits 0 ($out)" 0 "$?"
expect_fails "mapping gone after detach" dmsetup info "$NAME"
expect_eq "backing device holds no plaintext marker" 0 "$(grep -c -a -F "$MARKER" "$dev")"

echo 3 >/proc/sys/vm/drop_caches
timed_attach second || tap_done
expect_succeeds "mount again" mount -o ro "/dev/mapper/$NAME" "$MNT" || tap_done
seen=$(cd "$MNT" && sha256sum --quiet -c "$HELPER_DIR/sums" 2>&1)
expect_eq "all checksums equal after detach and attach" "" "$seen"
start=$(date +%s%N)
out=$("$ENVCTL" detach "$NAME" 2>&1)
rc=$?
ms=$((($(date +%s%N) - start) / 1000000))
expect_eq "detach of a mounted mapping exits 8" 8 "$rc"
expect_eq "... saying it is in use" \
	"envcryptctl: detach $NAME: $NAME is in use (still open 1 times after 5.00 s: mounted?)" "$out"
expect_succeeds "... after waiting 5 s for it to close ($ms ms)" \
	test "$ms" -ge 5000 -a "$ms" -lt 30000
umount "$MNT"
no_envcrypt_keys "no envcrypt key in any keyring after the second attach"

dk=$(data_key "$dev") || tap_bail "test tool unwraps the DK" "a hex DK" "$dk"
expect_eq "DK is 64 bytes" 128 "${#dk}"
dmsetup table --showkeys >"$HELPER_DIR/table-showkeys"
dmsetup table --showkeys "$NAME" >>"$HELPER_DIR/table-showkeys"
expect_match "the table names the key, not its bytes" "logon:envcrypt:$uuid" \
	"$(cat "$HELPER_DIR/table-showkeys")"
"$ENVCTL" inspect "$dev" >"$HELPER_DIR/inspect"
"$ENVCTL" --json status >"$HELPER_DIR/status"
dk_absent "DK absent from raw disk, keystore, audit log, tables, inspect, status" "$dk" \
	"$dev" "$HELPER_DIR"/kms/* "$HELPER_DIR/table-showkeys" "$HELPER_DIR/inspect" \
	"$HELPER_DIR/status"

# An open that ends by itself, as udev's probe after a writer closes the
# device does, is waited for: the detach succeeds once the holder is gone.
hold_open() {
	exec 3<"/dev/mapper/$NAME"
	sleep 2
}
hold_open &
holder=$!
for _ in $(seq 1 100); do
	[ "$(dmsetup info -c --noheadings -o open "$NAME")" = 1 ] && break
	sleep 0.1
done
expect_eq "a reader holds the mapping open" 1 "$(dmsetup info -c --noheadings -o open "$NAME")"
out=$("$ENVCTL" detach "$NAME" 2>&1)
expect_eq "detach while the reader holds it for 2 s exits 0 ($out)" 0 "$?"
expect_fails "mapping gone after that detach" dmsetup info "$NAME"
wait "$holder"
tap_done
