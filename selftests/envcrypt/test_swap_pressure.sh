#!/bin/bash
# Swap on an envcrypt device under memory pressure: a memory hog confined
# by a cgroup to 64 MiB of RAM touches 192 MiB, so at least the difference
# goes out to swap on envcrypt (on brd) and comes back in when the hog
# checks every page.  The pressure is the cgroup's (reclaim by the hog
# itself, as in a small-memory machine), not the whole guest's: the
# bounce pages come from the rest of the guest's memory.  The hung-task
# detector is set to 20 s for the duration.  Passes when the hog finishes
# within 300 s with every page intact, at least 128 MiB went out to swap,
# the cgroup saw no OOM kill, swapoff brings everything back, the target
# counted no error and the kernel logged no hung task, OOM or warning.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"

KEY_DESC=envcrypt:swap
NAME=swap
CGROUP=/sys/fs/cgroup/envcrypt-hog
LIMIT_MIB=64
HOG_MIB=192
HOG_TIMEOUT=300

guest_setup
if ! grep -q '^cgroup2 /sys/fs/cgroup ' /proc/mounts; then
	mount -t cgroup2 none /sys/fs/cgroup ||
		tap_bail "cgroup2 mounted" "mount succeeds" "$(dmesg | tail -n 3)"
	on_exit umount /sys/fs/cgroup
fi
grep -qw memory /sys/fs/cgroup/cgroup.controllers ||
	tap_bail "memory controller" "memory in cgroup.controllers" "$(cat /sys/fs/cgroup/cgroup.controllers)"
echo +memory >/sys/fs/cgroup/cgroup.subtree_control
mkdir -p "$CGROUP" && on_exit rmdir "$CGROUP"
echo "$((LIMIT_MIB * 1024 * 1024))" >"$CGROUP/memory.max"

dev=$(brd_device 320) || tap_bail "brd device" "/dev/ram0 of 320 MiB" "$(dmesg | tail -n 3)"
on_exit rmmod brd
head -c 64 /dev/urandom >/tmp/swap.key
add_logon_key "$KEY_DESC" /tmp/swap.key >/dev/null ||
	tap_bail "logon key loads" "keyctl padd succeeds" "$(keyctl show @s 2>&1)"
dm_create "$NAME" "$(envcrypt_table "$(dev_sectors "$dev")" "$dev" 0 "$KEY_DESC" 4096)" ||
	tap_bail "mapping created" "table loads" "$DM_ERROR"
expect_succeeds "mkswap on the mapping" mkswap "/dev/mapper/$NAME"
expect_succeeds "swapon" swapon "/dev/mapper/$NAME"
on_exit swapoff "/dev/mapper/$NAME"

hung=$(cat /proc/sys/kernel/hung_task_timeout_secs)
on_exit sysctl -qw kernel.hung_task_timeout_secs="$hung"
sysctl -qw kernel.hung_task_timeout_secs=20

pswpout() {
	awk '$1 == "pswpout" { print $2 }' /proc/vmstat
}

dmesg_mark
out_before=$(pswpout)
start=$SECONDS
output=$(timeout -k 10 "$HOG_TIMEOUT" bash -c '
	echo $$ >"$1/cgroup.procs" && exec python3 -c "
import sys
mib = int(sys.argv[1])
page = 4096
pages = mib * 256
buf = bytearray(mib << 20)
for i in range(pages):
    buf[i * page:i * page + 8] = i.to_bytes(8, \"little\")
bad = sum(1 for i in range(pages) if buf[i * page:i * page + 8] != i.to_bytes(8, \"little\"))
print(\"checked\", pages, \"pages,\", bad, \"bad\")
sys.exit(1 if bad else 0)
" "$2"' _ "$CGROUP" "$HOG_MIB" 2>&1)
status=$?
elapsed=$((SECONDS - start))
swapped_mib=$((($(pswpout) - out_before) * 4 / 1024))
echo "# hog: $output (status $status, $elapsed s, $swapped_mib MiB swapped out)"
expect_eq "hog finished within $HOG_TIMEOUT s with every page intact" \
	"0 checked $((HOG_MIB * 256)) pages, 0 bad" "$status $output"
if [ "$swapped_mib" -ge 128 ]; then
	tap_ok "at least 128 MiB went to swap on envcrypt ($swapped_mib MiB)"
else
	tap_fail "at least 128 MiB went to swap on envcrypt" ">= 128 MiB" "$swapped_mib MiB"
fi
expect_eq "no OOM kill in the cgroup" "oom_kill 0" "$(grep '^oom_kill ' "$CGROUP/memory.events")"
expect_succeeds "swapoff brings everything back" timeout 120 swapoff "/dev/mapper/$NAME"
expect_eq "target error counter" 0 "$(dmsetup status "$NAME" | awk '{ print $11 }')"
expect_eq "no hung task, OOM or warning in the kernel log" "" \
	"$(dmesg_since_mark | grep -E 'blocked for more than|hung_task|Out of memory|oom-kill|BUG|WARNING|Call Trace')"
tap_done
