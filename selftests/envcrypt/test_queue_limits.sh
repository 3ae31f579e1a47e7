#!/bin/bash
# Queue limits are never below the backing device's.  For each backing
# device (brd; a loop device with 4096-byte blocks; the NVMe disk; dm-crypt
# with sector_size 4096 on brd) and each envcrypt sector size (512, 4096),
# the envcrypt device's queue limits are exactly:
#   logical_block_size   max(backing's, sector size)
#   physical_block_size  max(backing's, its logical block size)
#   minimum_io_size      max(backing's, sector size)
#   dma_alignment        max(backing's, its logical block size - 1)
#                        (where sysfs shows it: Linux 6.2 and later)
# and max_sectors_kb is at most the backing device's.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"

KEY_DESC=envcrypt:limits
NAME=limits

guest_setup
head -c 64 /dev/urandom >/tmp/limits.key
add_logon_key "$KEY_DESC" /tmp/limits.key >/dev/null ||
	tap_bail "logon key loads" "keyctl padd succeeds" "$(keyctl show @s 2>&1)"
modprobe dm_crypt || tap_bail "dm-crypt loads" "modprobe dm_crypt" "$(dmesg | tail -n 3)"
modprobe loop || tap_bail "loop loads" "modprobe loop" "$(dmesg | tail -n 3)"
modprobe nvme 2>/dev/null

queue() { # queue <device> <attribute>
	cat "/sys/block/$(basename "$(readlink -f "$1")")/queue/$2" 2>/dev/null
}

max() {
	if [ "$1" -ge "$2" ]; then echo "$1"; else echo "$2"; fi
}

check_over() { # check_over <label> <backing device>
	local label=$1 backing=$2 ss want lbs seen
	for ss in 512 4096; do
		dm_create "$NAME" "$(envcrypt_table "$(dev_sectors "$backing")" "$backing" 0 "$KEY_DESC" "$ss")" ||
			{ tap_fail "$label, sector size $ss: mapping created" "table loads" "$DM_ERROR"; continue; }
		lbs=$(max "$(queue "$backing" logical_block_size)" "$ss")
		expect_eq "$label, $ss: logical_block_size" "$lbs" "$(queue "/dev/mapper/$NAME" logical_block_size)"
		want=$(max "$(queue "$backing" physical_block_size)" "$lbs")
		expect_eq "$label, $ss: physical_block_size" "$want" "$(queue "/dev/mapper/$NAME" physical_block_size)"
		want=$(max "$(queue "$backing" minimum_io_size)" "$ss")
		expect_eq "$label, $ss: minimum_io_size" "$want" "$(queue "/dev/mapper/$NAME" minimum_io_size)"
		if seen=$(queue "/dev/mapper/$NAME" dma_alignment) && [ -n "$seen" ]; then
			want=$(max "$(queue "$backing" dma_alignment)" $((lbs - 1)))
			expect_eq "$label, $ss: dma_alignment (backing $(queue "$backing" dma_alignment))" "$want" "$seen"
		fi
		seen=$(queue "/dev/mapper/$NAME" max_sectors_kb)
		want=$(queue "$backing" max_sectors_kb)
		if [ "$seen" -le "$want" ]; then
			tap_ok "$label, $ss: max_sectors_kb $seen within the backing device's $want"
		else
			tap_fail "$label, $ss: max_sectors_kb" "at most $want" "$seen"
		fi
		dm_remove "$NAME"
	done
}

dev=$(brd_device 32) || tap_bail "brd device" "/dev/ram0 of 32 MiB" "$(dmesg | tail -n 3)"
on_exit rmmod brd
check_over brd "$dev"

truncate -s 32M /tmp/limits.img
loop=$(losetup --find --show --sector-size 4096 /tmp/limits.img) ||
	tap_bail "loop device with 4096-byte sectors" "losetup succeeds" "$(dmesg | tail -n 3)"
on_exit losetup -d "$loop"
check_over "loop 4096" "$loop"

for _ in $(seq 1 20); do
	[ -b /dev/nvme0n1 ] && break
	sleep 0.5
done
if [ -b /dev/nvme0n1 ]; then
	check_over nvme /dev/nvme0n1
else
	tap_fail "NVMe disk" "/dev/nvme0n1 (run.sh attaches one)" "$(ls /sys/block)"
fi

dm_create limits-crypt "$(dmcrypt_table "$(dev_sectors "$dev")" "$dev" 0 "$KEY_DESC" 4096)" ||
	tap_bail "dm-crypt backing created" "table loads" "$DM_ERROR"
check_over "dm-crypt 4096" /dev/mapper/limits-crypt
tap_done
