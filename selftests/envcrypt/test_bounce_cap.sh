#!/bin/bash
# Bounce memory is capped per device and accounted.  STATUS ends with
# <bounce_pages> <bounce_cap>: the pages the device holds for writes (the
# mempool's reserve of 256, the kept pages and those of writes in flight)
# and the most it may hold.  The cap is a share of 2% of RAM between the
# envcrypt devices (MemTotal / 4 KiB / 50 / devices), at least 1024 pages,
# unless the module parameter max_bounce_kib sets it.
#
# Load: 1 MiB writes from 4 jobs at QD16 onto a dm-delay device that holds
# each write 1 s, so that far more than 1024 pages' worth of writes
# would be in flight, and stay so long enough for the 50 ms status sampler
# to see it on a loaded host (with 200 ms a CI run's sampler saw only the
# reserve).  With the automatic cap the device holds more than
# 1024 pages at some point (the load can exceed the small cap); with
# max_bounce_kib=4096 it never holds more than 1024, and every block
# still verifies.  Once idle, the kept pages go back within seconds and
# the device holds exactly its reserve.

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
	if output=$(timeout -k 10 240 fio --name=bounce --filename="/dev/mapper/$NAME" \
		--ioengine=libaio --direct=1 --rw=write --bs=1M --iodepth=16 --numjobs=4 \
		--size=12M --offset_increment=12M --verify=crc32c --verify_fatal=1 \
		--do_verify=1 --group_reporting 2>&1); then
		tap_ok "$1: fio 1 MiB writes x 4 jobs at QD16, crc32c verify"
	else
		tap_fail "$1: fio with verify" "fio exits 0" "$output"
	fi
	kill "$sampler"
	wait "$sampler" 2>/dev/null
	MOST=$(sort -n "$samples" | tail -n 1)
}

echo 0 >"$PARAM"
load automatic
if [ "${MOST:-0}" -gt "$MIN_CAP" ]; then
	tap_ok "automatic cap ($auto): the load held up to $MOST pages (more than $MIN_CAP)"
else
	tap_fail "the load exceeds $MIN_CAP pages under the automatic cap" "> $MIN_CAP" "'$MOST'"
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
