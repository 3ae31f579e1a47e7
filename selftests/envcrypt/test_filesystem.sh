#!/bin/bash
# A file system survives a full unmap/remap cycle: mkfs.ext4 on an envcrypt
# mapping (sector_size 4096, dev_offset 1 MiB), files of known sha256sums
# written, unmounted, the mapping removed and created again from the same
# key; then fsck.ext4 -fn is clean and every checksum matches.  The backing
# device must not contain a marker string that is in one of the files.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"

KEY_DESC=envcrypt:filesystem
NAME=filesystem
OFFSET=2048
MNT=/tmp/envcrypt-fs
MARKER="envcrypt-plaintext-marker-$RANDOM$RANDOM"

guest_setup
dev=$(brd_device 96) || tap_bail "brd device" "/dev/ram0 of 96 MiB" "$(dmesg | tail -n 3)"
on_exit rmmod brd
head -c 64 /dev/urandom >/tmp/fs.key
add_logon_key "$KEY_DESC" /tmp/fs.key >/dev/null ||
	tap_bail "logon key loads" "keyctl padd succeeds" "$(keyctl show @s 2>&1)"
length=$(($(dev_sectors "$dev") - OFFSET))
table=$(envcrypt_table "$length" "$dev" "$OFFSET" "$KEY_DESC" 4096)
dm_create "$NAME" "$table" || tap_bail "mapping created" "table loads" "$DM_ERROR"

mkdir -p "$MNT"
on_exit umount "$MNT"
expect_succeeds "mkfs.ext4" mkfs.ext4 -q -F -E nodiscard "/dev/mapper/$NAME"
expect_succeeds "mount" mount "/dev/mapper/$NAME" "$MNT" || tap_done

mkdir -p "$MNT/dir/sub"
for size in 1 4095 4096 65537 1048576 7340033; do
	head -c "$size" /dev/urandom >"$MNT/dir/file-$size"
done
for i in $(seq 1 200); do
	echo "$MARKER line $i" >>"$MNT/dir/sub/text"
done
(cd "$MNT" && find . -type f | sort | xargs sha256sum) >/tmp/fs.sums
expect_succeeds "umount" umount "$MNT"
expect_succeeds "mapping removed" dmsetup remove "$NAME"

expect_eq "backing device holds no plaintext marker" 0 "$(grep -c -a -F "$MARKER" "$dev")"

echo 3 >/proc/sys/vm/drop_caches
dm_create "$NAME" "$table" || tap_bail "mapping created again" "table loads" "$DM_ERROR"
expect_succeeds "fsck.ext4 -fn clean" fsck.ext4 -fn "/dev/mapper/$NAME"
expect_succeeds "mount again read-only" mount -o ro "/dev/mapper/$NAME" "$MNT" || tap_done
seen=$(cd "$MNT" && sha256sum --quiet -c /tmp/fs.sums 2>&1)
expect_eq "all $(wc -l </tmp/fs.sums) checksums equal" "" "$seen"
tap_done
