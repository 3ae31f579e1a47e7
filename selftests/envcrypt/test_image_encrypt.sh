#!/bin/bash
# envcryptctl image encrypt (Documentation/admin-guide/image-encrypt.rst),
# checked against the kernel: a 512 MiB GPT image with holes and random data
# (partition 1, 64 MiB, like an ESP; partition 2, 256 MiB, whose last
# 16 MiB are empty; partition 3 the rest) is encrypted in userspace, then
#   - whole disk: the target reads back SRC byte for byte (sha256), and
#     dm-crypt aes-xts-plain64 with the same DK writing SRC's first 32 MiB
#     produces exactly the ciphertext image encrypt wrote;
#   - --partition 2: every byte outside partition 2 is SRC's (table, ESP,
#     partition 3), and partition 2 attaches and reads back its first
#     240 MiB (its size minus the 16 MiB header area);
#   - in place (the same file; a partition of a loop device over SRC), a
#     busy DST (mapped block device; file behind a loop device), a busy SRC
#     and a DST holding a file system are refused with their exit codes and
#     messages;
#   - SIGKILL mid-copy (test hook, and the release build killed once it has
#     written 64 MiB) leaves a DST envcryptctl does not take for a disk.
# The images live in the guest's tmpfs (1 GiB): one DST at a time.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"
. "$ENVCRYPT_TOP/helper/tests/guest_helper.sh"

TEST_ENVCTL=$ENVCRYPT_TOP/build/test/envcryptctl
MIB=$((1024 * 1024))
P2_START=$((65 * MIB))
P2_SIZE=$((256 * MIB))

helper_setup
modprobe loop 2>/dev/null # attach of an image file needs /dev/loop-control
W=$HELPER_DIR
SRC=$W/src.img
detach_at_exit img-whole
detach_at_exit img-part

# SRC: sparse 512 MiB, GPT, random data with holes between.
truncate -s 512M "$SRC"
printf 'label: gpt\nsize=64MiB, type=U\nsize=256MiB\ntype=L\n' | sfdisk -q "$SRC" >/dev/null 2>&1 ||
	tap_bail "sfdisk partitions SRC" "exit 0" "$(sfdisk -d "$SRC" 2>&1)"
put_random() { # MiB-offset MiB-count
	head -c $(($2 * MIB)) /dev/urandom | dd of="$SRC" bs=1M seek="$1" conv=notrunc status=none
}
put_random 1 8      # partition 1
put_random 40 4     # partition 1, after a hole
put_random 65 48    # partition 2, from its start
put_random 200 24   # partition 2, after a hole; its last 16 MiB stay empty
put_random 330 10   # partition 3
put_random 500 4    # partition 3, near the end
src_sum=$(sha256sum <"$SRC" | cut -d' ' -f1)

# ---- whole disk
start=$SECONDS
out=$("$ENVCTL" image encrypt "$SRC" "$W/dst.img" --label whole 2>&1)
expect_eq "image encrypt of the whole disk exits 0 ($out)" 0 "$?" || tap_done
echo "# whole-disk image encrypt: $((SECONDS - start)) s"
expect_match "it reports the plaintext bytes and data offset" \
	"^encrypted $SRC to $W/dst.img: uuid [0-9a-f-]{36}, CMK local://local-1/.*, sector size 4096, 536870912 bytes of plaintext at data offset 16777216 \(" "$out"
expect_eq "DST is the header area plus SRC" $((16 * MIB + 512 * MIB)) "$(stat -c %s "$W/dst.img")"
out=$("$ENVCTL" attach "$W/dst.img" img-whole 2>&1)
expect_eq "DST attaches ($out)" 0 "$?" || tap_done
expect_eq "the mapping is SRC's size" $((512 * MIB)) "$(blockdev --getsize64 /dev/mapper/img-whole)"
expect_eq "the kernel target reads back SRC (sha256)" "$src_sum" \
	"$(sha256sum </dev/mapper/img-whole | cut -d' ' -f1)"
"$ENVCTL" detach img-whole >/dev/null

# dm-crypt aes-xts-plain64, same DK, same range (16 MiB data offset, sector
# size 4096), writes SRC's first 32 MiB onto a zeroed file: the ciphertext
# must equal DST's.
dk=$(data_key "$W/dst.img") || tap_bail "test tool unwraps the DK" "a hex DK" "$dk"
echo -n "$dk" | hex_to_bin >"$W/dk.bin"
add_logon_key envcrypt:image-interop "$W/dk.bin" >/dev/null
rm -f "$W/dk.bin"
truncate -s 48M "$W/dmcrypt.img"
loop=$(losetup --find --show "$W/dmcrypt.img")
on_exit losetup -d "$loop"
if dm_create img-dmcrypt "$(dmcrypt_table $((32 * 2048)) "$loop" 32768 envcrypt:image-interop 4096)"; then
	dd if="$SRC" of=/dev/mapper/img-dmcrypt bs=1M count=32 oflag=direct conv=fsync status=none
	dm_remove img-dmcrypt
	seen=$(cmp <(dd if="$W/dst.img" bs=1M skip=16 count=32 status=none) \
		<(dd if="$loop" bs=1M skip=16 count=32 status=none) 2>&1)
	expect_eq "dm-crypt aes-xts-plain64 writes the same ciphertext (32 MiB with holes)" "" "$seen"
else
	tap_fail "dm-crypt table loads" "dmsetup create succeeds" "$DM_ERROR"
fi
keyctl purge logon envcrypt:image-interop >/dev/null 2>&1
rm -f "$W/dst.img"

echo "# elapsed: $SECONDS s"

# ---- --partition 2
start=$SECONDS
out=$("$ENVCTL" image encrypt "$SRC" "$W/part.img" --partition 2 2>&1)
expect_eq "image encrypt --partition 2 exits 0 ($out)" 0 "$?" || tap_done
echo "# --partition 2 image encrypt: $((SECONDS - start)) s"
expect_match "it reports the partition" "^encrypted $SRC to $W/part.img partition 2: uuid .*, 251658240 bytes of plaintext" "$out"
table_of() { # the table as sfdisk dumps it, without the file's name
	sfdisk -d "$1" | grep -v '^device:' | sed "s|^$1||"
}
expect_eq "the partition table is unchanged" "$(table_of "$SRC")" "$(table_of "$W/part.img")"
range_sum() { # FILE OFFSET BYTES
	dd if="$1" bs=1M iflag=skip_bytes,count_bytes skip="$2" count="$3" status=none |
		sha256sum | cut -d' ' -f1
}
expect_eq "bytes before partition 2 (table, partition 1) are SRC's" \
	"$(range_sum "$SRC" 0 $P2_START)" "$(range_sum "$W/part.img" 0 $P2_START)"
rest=$((512 * MIB - P2_START - P2_SIZE))
expect_eq "bytes after partition 2 (partition 3, backup GPT) are SRC's" \
	"$(range_sum "$SRC" $((P2_START + P2_SIZE)) $rest)" \
	"$(range_sum "$W/part.img" $((P2_START + P2_SIZE)) $rest)"
ploop=$(losetup --find --show --partscan "$W/part.img")
on_exit losetup -d "$ploop"
udevadm settle --timeout=30
out=$("$ENVCTL" attach "${ploop}p2" img-part 2>&1)
expect_eq "partition 2 attaches ($out)" 0 "$?" || tap_done
expect_eq "its mapping holds the partition minus 16 MiB" $((240 * MIB)) \
	"$(blockdev --getsize64 /dev/mapper/img-part)"
expect_eq "the kernel target reads back partition 2's first 240 MiB (sha256)" \
	"$(range_sum "$SRC" $P2_START $((240 * MIB)))" "$(sha256sum </dev/mapper/img-part | cut -d' ' -f1)"
"$ENVCTL" detach img-part >/dev/null

echo "# elapsed: $SECONDS s"

# ---- refusals
inode=$(stat -c %i "$SRC")
out=$("$ENVCTL" image encrypt "$SRC" "$SRC" 2>&1)
expect_eq "in place (the same file) exits 2" 2 "$?"
expect_match "... with one line naming the shared file" \
	"^envcryptctl: image encrypt $SRC: refusing to encrypt in place: SRC $SRC and DST $SRC are both file inode $inode on [0-9]+:[0-9]+$" "$out"
sloop=$(losetup --find --show --partscan "$SRC")
on_exit losetup -d "$sloop"
udevadm settle --timeout=30
out=$("$ENVCTL" image encrypt "$SRC" "${sloop}p3" 2>&1)
expect_eq "overlapping (a partition of a loop device over SRC) exits 2" 2 "$?"
expect_match "... naming SRC's file" \
	"^envcryptctl: image encrypt $SRC: refusing to encrypt in place: SRC $SRC and DST ${sloop}p3 are both file inode $inode on " "$out"
out=$("$ENVCTL" image encrypt "${sloop}p1" "$sloop" 2>&1)
expect_eq "overlapping (loop partition 1 into its own disk) exits 2" 2 "$?"
expect_match "... naming the file under both" "refusing to encrypt in place: SRC ${sloop}p1 and DST $sloop are both file inode $inode " "$out"
losetup -d "$sloop"

busy=$(helper_loop 32)
on_exit losetup -d "$busy"
dm_create img-busy "0 2048 linear $busy 0" || tap_fail "dm-linear over DST" "table loads" "$DM_ERROR"
out=$("$ENVCTL" image encrypt "$SRC" "$busy" 2>&1)
expect_eq "a busy DST (mapped block device) exits 8" 8 "$?"
expect_eq "... saying it is in use" "envcryptctl: image encrypt $SRC: $busy: in use (mounted or mapped)" "$out"
out=$("$ENVCTL" image encrypt "$busy" "$W/from-busy.img" 2>&1)
expect_eq "a busy SRC (mapped block device) exits 8" 8 "$?"
expect_eq "... saying it is in use" "envcryptctl: image encrypt $busy: in use (mounted or mapped)" "$out"
expect_fails "... and the DST it created is gone" test -e "$W/from-busy.img"
dm_remove img-busy
backing=$(losetup -n -O BACK-FILE "$busy" | sed 's/ *$//')
out=$("$ENVCTL" image encrypt "$SRC" "$backing" 2>&1)
expect_eq "a busy DST (file behind a loop device) exits 8" 8 "$?"
expect_eq "... naming the loop device" \
	"envcryptctl: image encrypt $SRC: $backing is in use: it backs $busy (attached already?)" "$out"
truncate -s 600M "$W/ext4.img"
mkfs.ext4 -q -F "$W/ext4.img"
out=$("$ENVCTL" image encrypt "$SRC" "$W/ext4.img" 2>&1)
expect_eq "a DST with a file system exits 8, as format refuses it" 8 "$?"
expect_match "... naming what blkid found" "^envcryptctl: image encrypt $SRC: $W/ext4.img: holds data \(blkid finds: .*ext4" "$out"
rm -f "$W/ext4.img"

echo "# elapsed: $SECONDS s"

# ---- SIGKILL mid-copy
# not_a_disk WHAT DST: inspect and attach both refuse DST.
not_a_disk() {
	local out
	out=$("$ENVCTL" inspect "$2" 2>&1)
	expect_eq "$1: inspect exits 3 ($out)" 3 "$?"
	out=$("$ENVCTL" attach "$2" img-killed 2>&1)
	expect_eq "$1: attach exits 3 ($out)" 3 "$?"
	"$ENVCTL" detach img-killed >/dev/null 2>&1
}
ENVCRYPT_FAULT=image-encrypt:half:pause "$TEST_ENVCTL" image encrypt "$SRC" "$W/killed.img" \
	>/dev/null 2>"$W/killed.err" &
pid=$!
for _ in $(seq 600); do
	grep -q "paused at image-encrypt:half" "$W/killed.err" && break
	sleep 0.1
done
expect_match "the copy pauses halfway (test hook)" "paused at image-encrypt:half" "$(cat "$W/killed.err")"
kill -9 "$pid"
wait "$pid" 2>/dev/null
not_a_disk "SIGKILL halfway (test hook)" "$W/killed.img"
rm -f "$W/killed.img"

"$ENVCTL" image encrypt "$SRC" "$W/killed.img" >/dev/null 2>&1 &
pid=$!
written=0
for _ in $(seq 1200); do
	written=$(awk '/^wchar:/ {print $2}' "/proc/$pid/io" 2>/dev/null)
	[ "${written:-0}" -lt $((64 * MIB)) ] || break
	sleep 0.05
done
running=no
kill -0 "$pid" 2>/dev/null && running=yes
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
echo "# release build killed after writing ${written:-0} bytes"
expect_eq "the release build was still copying after writing 64 MiB when killed" yes "$running"
not_a_disk "SIGKILL of the release build after 64 MiB" "$W/killed.img"
rm -f "$W/killed.img"

tap_done
