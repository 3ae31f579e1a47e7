#!/bin/bash
# Bounce memory is capped per device and accounted.  STATUS ends with
# <bounce_pages> <bounce_cap>: the pages the device holds for writes (the
# mempool's reserve of 256, the kept pages and those of writes in flight)
# and the most it may hold.  The cap is a share of 2% of RAM between the
# envcrypt devices (MemTotal / 4 KiB / 50 / devices), at least 1024 pages,
# unless the module parameter max_bounce_kib sets it.
#
# Load: 1 MiB writes from 4 jobs at QD16, 64 MiB in flight at once.
# With the automatic cap, the writes are held below the target (the
# dm-delay device under it is suspended, so its bios queue in device
# mapper) until the device holds more than 1024 pages, then released:
# the check waits for a state, not for the host to be fast enough (with
# a 1 s write delay instead, a loaded CI host encrypted so slowly that
# the 50 ms sampler saw at most 768 pages).  With max_bounce_kib=4096
# and writes held 1 s each, it never holds more than 1024, and every
# block still verifies.  Once idle, the kept pages go back within
# seconds and the device holds exactly its reserve.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"

KEY_DESC=envcrypt:bounce
NAME=bounce
PARAM=/sys/module/dm_envcrypt/parameters/max_bounce_kib
RESERVE=256
MIN_CAP=1024

guest_setup
[ -w "$PARAM" ] || tap_bail "module parameter" "$PARAM writable" "$(ls /sys/module/dm_envcrypt/parameters 2>&1)"
on_exit sh -c "echo 0 >$PARAM"
modprobe dm_delay || tap_bail "dm-delay loads" "modprobe dm_delay" "$(dmesg | tail -n 3)"
dev=$(brd_device 64) || tap_bail "brd device" "/dev/ram0 of 64 MiB" "$(dmesg | tail -n 3)"
on_exit rmmod brd
head -c 64 /dev/urandom >/tmp/bounce.key
add_logon_key "$KEY_DESC" /tmp/bounce.key >/dev/null ||
	tap_bail "logon key loads" "keyctl padd succeeds" "$(keyctl show @s 2>&1)"
len=$(dev_sectors "$dev")
dm_create bounce-delay "0 $len delay $dev 0 0 $dev 0 1000" ||
	tap_bail "dm-delay created" "table loads" "$DM_ERROR"
dm_create "$NAME" "$(envcrypt_table "$len" /dev/mapper/bounce-delay 0 "$KEY_DESC" 4096)" ||
	tap_bail "envcrypt mapping created" "table loads" "$DM_ERROR"

status_field() { # status_field N: field N of the target's status line
	dmsetup status "$NAME" | awk -v n="$1" '{ print $n }'
}

read -r _ _ _ _ _ _ _ _ _ _ _ pages cap extra <<<"$(dmsetup status "$NAME")"
expect_eq "status has 13 fields" "no extra" "${extra:-no extra}"
mem_pages=$(($(awk '/^MemTotal:/ { print $2 }' /proc/meminfo) / 4))
auto=$((mem_pages / 50))
[ "$auto" -ge "$MIN_CAP" ] || auto=$MIN_CAP
expect_eq "automatic cap: 2% of RAM for the one device" "$auto" "$cap"
expect_eq "a new device holds its reserve" "$RESERVE" "$pages"

echo 4096 >"$PARAM"
expect_eq "max_bounce_kib=4096: cap 1024 pages" 1024 "$(status_field 13)"
echo 1024 >"$PARAM"
expect_eq "max_bounce_kib=1024: cap raised to the minimum" "$MIN_CAP" "$(status_field 13)"

FIO_JOB=(--name=bounce --filename="/dev/mapper/$NAME" --ioengine=libaio
	--direct=1 --rw=write --bs=1M --iodepth=16 --numjobs=4 --size=12M
	--offset_increment=12M --verify=crc32c --verify_fatal=1 --do_verify=1
	--group_reporting)

MOST=
# load <label>: fio 1 MiB writes with verification; the largest
# bounce_pages seen while it ran in MOST.
load() {
	local samples=/tmp/bounce-$1.samples output sampler
	: >"$samples"
	(while :; do
		status_field 12 >>"$samples"
		sleep 0.05
	done) &
	sampler=$!
	if output=$(timeout -k 10 240 fio "${FIO_JOB[@]}" 2>&1); then
		tap_ok "$1: fio 1 MiB writes x 4 jobs at QD16, crc32c verify"
	else
		tap_fail "$1: fio with verify" "fio exits 0" "$output"
	fi
	kill "$sampler"
	wait "$sampler" 2>/dev/null
	MOST=$(sort -n "$samples" | tail -n 1)
}

# held_load <label>: the same fio run with the device under the target
# suspended until the target holds more than MIN_CAP pages (at most
# 120 s); the largest bounce_pages seen while held in MOST.
held_load() {
	local output=/tmp/bounce-$1.fio fio_pid pages
	# udev probes a device when a writer closes it (fio does while it
	# sets up); its readahead into the suspended device below fails
	# (device mapper fails readahead rather than queue it; the target does
	# not count that as an error from version 1.2.1, test_status.sh) and
	# its plain reads would wait for the resume.  So udev settles and runs
	# no event while the writes are held.
	udevadm settle --timeout=60 ||
		tap_bail "udev settles" "udevadm settle exits 0" "$(udevadm info --export-db 2>&1 | tail -n 5)"
	udevadm control --stop-exec-queue ||
		tap_bail "udev holds its events" "udevadm control exits 0" "$(udevadm control --ping 2>&1)"
	on_exit udevadm control --start-exec-queue
	timeout 60 dmsetup suspend bounce-delay ||
		tap_bail "dm-delay suspends" "dmsetup suspend exits 0" "$(dmesg | tail -n 3)"
	timeout -k 10 240 fio "${FIO_JOB[@]}" >"$output" 2>&1 &
	fio_pid=$!
	MOST=0
	for _ in $(seq 1 1200); do
		pages=$(status_field 12)
		[ "$pages" -gt "$MOST" ] && MOST=$pages
		[ "$MOST" -gt "$MIN_CAP" ] && break
		sleep 0.1
	done
	# No udev sync: udev runs no event until the queue starts again.
	timeout 60 dmsetup resume --noudevsync bounce-delay ||
		tap_bail "dm-delay resumes" "dmsetup resume exits 0" "$(dmesg | tail -n 3)"
	udevadm control --start-exec-queue
	if wait "$fio_pid"; then
		tap_ok "$1: fio 1 MiB writes x 4 jobs at QD16, crc32c verify"
	else
		tap_fail "$1: fio with verify" "fio exits 0" "$(cat "$output")"
	fi
}

echo 0 >"$PARAM"
held_load automatic
if [ "$MOST" -gt "$MIN_CAP" ] && [ "$MOST" -le "$auto" ]; then
	tap_ok "automatic cap ($auto): the held load reached $MOST pages (more than $MIN_CAP)"
else
	tap_fail "the held load exceeds $MIN_CAP pages, within the automatic cap" \
		"$MIN_CAP < pages <= $auto" "'$MOST'"
fi

echo 4096 >"$PARAM"
load capped
if [ "${MOST:-0}" -le 1024 ] && [ "${MOST:-0}" -ge "$RESERVE" ]; then
	tap_ok "max_bounce_kib=4096: at most $MOST pages held (cap 1024)"
else
	tap_fail "bounce pages within the cap" "$RESERVE..1024" "'$MOST'"
fi

idle=
for _ in $(seq 1 50); do
	idle=$(status_field 12)
	[ "$idle" = "$RESERVE" ] && break
	sleep 0.1
done
expect_eq "idle: kept pages returned within 5 s, the reserve stays" "$RESERVE" "$idle"
expect_eq "target error counter" 0 "$(status_field 11)"
tap_done
