#!/bin/bash
# Misaligned direct I/O fails and corrupts nothing.  A sector_size 4096
# mapping advertises 4096-byte logical and physical blocks (io_hints); a
# 512-byte O_DIRECT write (at offset 0 and at offset 512) and a 512-byte
# O_DIRECT read must fail, and the 4 KiB unit they touch must still hold the
# data written before.
#
# Which error: the block layer refuses direct I/O that is not a multiple of
# the logical block size before any bio is built (blkdev_direct_IO ->
# blkdev_dio_invalid / blkdev_dio_unaligned), so the syscall fails with
# EINVAL on both 6.1 and 6.12 and the target never sees the request.  The
# target's own check (a bio not aligned to its data unit is ended with EIO)
# is the second line of defence for bios that reach it by other paths; user
# space cannot produce one through the block device.  So this test asserts
# EINVAL, the error user space actually gets.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"

KEY_DESC=envcrypt:misaligned
NAME=misaligned

guest_setup
dev=$(brd_device 16) || tap_bail "brd device" "/dev/ram0 of 16 MiB" "$(dmesg | tail -n 3)"
on_exit rmmod brd
head -c 64 /dev/urandom >/tmp/misaligned.key
add_logon_key "$KEY_DESC" /tmp/misaligned.key >/dev/null ||
	tap_bail "logon key loads" "keyctl padd succeeds" "$(keyctl show @s 2>&1)"
dm_create "$NAME" "$(envcrypt_table 32768 "$dev" 0 "$KEY_DESC" 4096)" ||
	tap_bail "mapping created" "table loads" "$DM_ERROR"
mapping=/dev/mapper/$NAME

expect_eq "logical block size is the sector size" 4096 "$(blockdev --getss "$mapping")"
expect_eq "physical block size is the sector size" 4096 "$(blockdev --getpbsz "$mapping")"

head -c 8192 /dev/urandom >/tmp/before
dd if=/tmp/before of="$mapping" bs=4096 oflag=direct conv=fsync status=none

# direct_io read|write OFFSET LENGTH: prints "ok" or the errno name.
direct_io() {
	python3 - "$mapping" "$@" <<-'EOF'
		import errno, mmap, os, sys
		path, op, offset, length = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
		buf = mmap.mmap(-1, 4096)  # page aligned, so only the size is misaligned
		buf.write(b"\xa5" * 4096)
		fd = os.open(path, (os.O_WRONLY if op == "write" else os.O_RDONLY) | os.O_DIRECT)
		try:
		    if op == "write":
		        os.pwrite(fd, memoryview(buf)[:length], offset)
		    else:
		        os.preadv(fd, [memoryview(buf)[:length]], offset)
		    print("ok")
		except OSError as e:
		    print(errno.errorcode.get(e.errno, e.errno))
	EOF
}

expect_eq "512-byte O_DIRECT write at offset 0 fails" EINVAL "$(direct_io write 0 512)"
expect_eq "512-byte O_DIRECT write at offset 512 fails" EINVAL "$(direct_io write 512 512)"
expect_eq "512-byte O_DIRECT read at offset 0 fails" EINVAL "$(direct_io read 0 512)"
expect_eq "4096-byte O_DIRECT write at offset 512 fails" EINVAL "$(direct_io write 512 4096)"
expect_eq "aligned 4096-byte O_DIRECT read works" ok "$(direct_io read 4096 4096)"

echo 3 >/proc/sys/vm/drop_caches
seen=$(dd if="$mapping" bs=4096 count=2 iflag=direct status=none | cmp - /tmp/before 2>&1)
expect_eq "data untouched by the failed writes" "" "$seen"
tap_done
