#!/bin/bash
# Snapshots and copies: a disk on an LVM-style volume
# (dm-linear over a loop device), under a customer CMK, is attached and
# written (data A).  A dm-snapshot of the volume is taken while the disk is
# attached, the way LVM does it (suspend, origin becomes snapshot-origin over
# <vol>-real, snapshot <vol>-real + COW, resume), then B is written.  The
# snapshot carries the header: it attaches under another name with the same
# data key (same DK, same uuid) and shows A, while the disk shows B.  A
# block copy of the snapshot (an image file) attaches too, shows A, and holds
# only ciphertext.  After "kms disable-key" none of the three attaches (exit
# 4, the KMS's reason), and verify refuses each of them.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"
. "$ENVCRYPT_TOP/helper/tests/guest_helper.sh"

helper_setup
modprobe dm_snapshot 2>/dev/null

base=$(helper_loop 48) || tap_bail "loop device" "48 MiB" "$(losetup -a)"
cow=$(helper_loop 24) || tap_bail "COW loop device" "24 MiB" "$(losetup -a)"
on_exit losetup -d "$base"
on_exit losetup -d "$cow"
# Removed last but before the loop devices: vol's snapshot-origin uses them.
on_exit dm_remove vol-real
on_exit dm_remove vol-snap
sectors=$(dev_sectors "$base")
dm_create vol "0 $sectors linear $base 0" || tap_bail "volume" "dm-linear" "$DM_ERROR"

uri=$("$ENVCTL" kms create-key --alias alias/snap-test --description "snapshot test" | tail -n1)
expect_match "a customer CMK" '^local://' "$uri" || tap_done
expect_succeeds "format the volume under it" "$ENVCTL" format /dev/mapper/vol --cmk alias/snap-test ||
	tap_done
detach_at_exit disk
expect_succeeds "attach the volume as 'disk'" "$ENVCTL" attach /dev/mapper/vol disk || tap_done
head -c 4M /dev/urandom >"$HELPER_DIR/A"
head -c 4M /dev/urandom >"$HELPER_DIR/B"
dd if="$HELPER_DIR/A" of=/dev/mapper/disk bs=1M oflag=direct conv=fsync status=none

# The snapshot, taken under the attached disk.
snapshot() {
	dmsetup suspend disk &&
		dmsetup create vol-real --table "0 $sectors linear $base 0" &&
		dmsetup create vol-snap --table "0 $sectors snapshot /dev/mapper/vol-real $cow P 8" &&
		dmsetup suspend vol &&
		dmsetup load vol --table "0 $sectors snapshot-origin /dev/mapper/vol-real" &&
		dmsetup resume vol &&
		dmsetup resume disk
}
output=$(snapshot 2>&1)
expect_eq "snapshot taken while the disk is attached ($output)" 0 "$?" || tap_done
expect_match "vol is now a snapshot-origin" "snapshot-origin" "$(dmsetup table vol)"
dd if="$HELPER_DIR/B" of=/dev/mapper/disk bs=1M oflag=direct conv=fsync status=none
expect_match "the snapshot holds copied chunks" "^0 $sectors snapshot [1-9][0-9]*/" \
	"$(dmsetup status vol-snap)"

expect_eq "the snapshot carries the disk's header (same uuid)" \
	"$("$ENVCTL" --json inspect /dev/mapper/vol | grep '"uuid"')" \
	"$("$ENVCTL" --json inspect /dev/mapper/vol-snap | grep '"uuid"')"
detach_at_exit snap
expect_succeeds "the snapshot attaches as 'snap' while the disk is attached" \
	"$ENVCTL" attach /dev/mapper/vol-snap snap || tap_done
expect_eq "the snapshot shows the data as of the snapshot (A)" \
	"$(sha256sum <"$HELPER_DIR/A")" "$(head -c 4M /dev/mapper/snap | sha256sum)"
expect_eq "the disk shows the data written after it (B)" \
	"$(sha256sum <"$HELPER_DIR/B")" "$(head -c 4M /dev/mapper/disk | sha256sum)"
expect_eq "same data key for the disk and its snapshot" \
	"$(data_key /dev/mapper/vol)" "$(data_key /dev/mapper/vol-snap)"

copy=$HELPER_DIR/copy.img
dd if=/dev/mapper/vol-snap of="$copy" bs=1M status=none
detach_at_exit copy
expect_succeeds "a block copy of the snapshot attaches as 'copy'" "$ENVCTL" attach "$copy" copy ||
	tap_done
expect_eq "the copy shows A" "$(sha256sum <"$HELPER_DIR/A")" "$(head -c 4M /dev/mapper/copy | sha256sum)"
expect_eq "same data key for the copy" "$(data_key /dev/mapper/vol)" "$(data_key "$copy")"
plain=$(python3 - "$HELPER_DIR/A" "$copy" <<'EOF'
import sys
a = open(sys.argv[1], "rb").read()
image = open(sys.argv[2], "rb").read()
print(sum(1 for i in range(0, len(a), 4096) if a[i:i + 4096] in image))
EOF
)
expect_eq "the copy holds no plaintext 4 KiB block of A" 0 "$plain"

for name in copy snap disk; do
	expect_succeeds "detach $name" "$ENVCTL" detach "$name"
done
expect_succeeds "kms disable-key alias/snap-test" "$ENVCTL" kms disable-key alias/snap-test
for what in "disk /dev/mapper/vol" "snap /dev/mapper/vol-snap" "copy $copy"; do
	read -r name device <<<"$what"
	out=$("$ENVCTL" attach "$device" "$name" 2>&1)
	status=$?
	expect_eq "after disable-key, $name does not attach: exit 4 ($out)" 4 "$status"
	expect_match "and the reason is the disabled CMK" "[Dd]isabled" "$out"
	expect_fails "verify refuses $name" "$ENVCTL" verify "$device"
done
expect_eq "no mapping of any of them" "" "$(dmsetup ls --target envcrypt | awk '$1 != "No"')"
tap_done
