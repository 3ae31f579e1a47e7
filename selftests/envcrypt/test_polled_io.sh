#!/bin/bash
# Polled I/O: fio with io_uring and hipri (completions reaped by polling),
# 4 KiB random writes at QD8 over 8 MiB and then their verification by
# polled reads, on a QEMU NVMe disk with poll queues (run.sh boots with
# nvme.poll_queues=2), through dm-linear (the yardstick) and through
# envcrypt (sector_size 4096).  Every fio run is bounded (FIO_LIMIT s).
#
# Where the kernel lets a device-mapper target be polled (6.12, and 7.3
# alike: every kernel but 6.1 takes this branch), envcrypt's writes and
# reads complete, verified, within PACE times dm-linear's time plus SLACK s,
# and its reads are polled on the NVMe device (its interrupt count hardly
# moves while they run).  A ciphertext bio that inherits
# REQ_POLLED is never reaped (dm core polls only its own clone): the write
# then waits for the NVMe timeout (30 s, "completion polled"), and the run
# fails its bound.  Where the kernel does not (6.1: dm takes REQ_NOWAIT
# only from targets that declare it, as dm-linear does), envcrypt refuses
# with EOPNOTSUPP at once, and interrupt-driven I/O on the same mapping
# still works.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"

KEY_DESC=envcrypt:polled
FIO_LIMIT=60
PACE=4
SLACK=10
NVME=/dev/nvme0n1

guest_setup
cd /tmp || tap_bail "cd /tmp" "a writable cwd for fio" "$PWD"
modprobe nvme || tap_bail "nvme module loads" "modprobe nvme" "$(dmesg | tail -n 3)"
for _ in $(seq 1 30); do
	[ -b "$NVME" ] && break
	sleep 1
done
[ -b "$NVME" ] || tap_bail "NVMe namespace appears" "$NVME within 30 s" "$(ls /sys/block) $(dmesg | grep -i nvme | tail -n 3)"
expect_eq "the NVMe disk has poll queues" 1 "$(cat /sys/block/nvme0n1/queue/io_poll)" ||
	tap_bail "poll queues" "nvme.poll_queues=2 on the command line" "$(cat /proc/cmdline)"
head -c 64 /dev/urandom >/tmp/polled.key
add_logon_key "$KEY_DESC" /tmp/polled.key >/dev/null ||
	tap_bail "logon key loads" "keyctl padd succeeds" "$(keyctl show @s 2>&1)"

len=$(dev_sectors "$NVME")
dm_create polled-linear "0 $len linear $NVME 0" || tap_bail "dm-linear created" "table loads" "$DM_ERROR"
dm_create polled-envcrypt "$(envcrypt_table "$len" "$NVME" 0 "$KEY_DESC" 4096)" ||
	tap_bail "envcrypt mapping created" "table loads" "$DM_ERROR"

nvme_interrupts() { # sum over the NVMe queues' interrupt lines
	awk '/nvme/ { for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) n += $i } END { print n + 0 }' /proc/interrupts
}

FIO_OUTPUT=
FIO_SECONDS=
# polled_fio <mapping> write|verify: the fio run's status; its output and
# duration (whole seconds, at least 1) in FIO_OUTPUT and FIO_SECONDS.
polled_fio() {
	local phase=(--do_verify=0) started status
	[ "$2" = verify ] && phase=(--verify_only=1)
	started=$(date +%s%N)
	FIO_OUTPUT=$(timeout -k 10 "$FIO_LIMIT" fio --name=polled --filename="/dev/mapper/$1" \
		--ioengine=io_uring --hipri=1 --direct=1 --rw=randwrite --bs=4k \
		--iodepth=8 --size=8M --verify=crc32c --verify_fatal=1 "${phase[@]}" 2>&1)
	status=$?
	FIO_SECONDS=$((($(date +%s%N) - started + 999999999) / 1000000000))
	return $status
}

linear_seconds=()
for phase in write verify; do
	if polled_fio polled-linear "$phase"; then
		tap_ok "dm-linear: polled $phase of 8 MiB in $FIO_SECONDS s"
	else
		tap_bail "dm-linear: polled $phase" "fio exits 0 within $FIO_LIMIT s (the yardstick)" "$FIO_OUTPUT"
	fi
	linear_seconds+=("$FIO_SECONDS")
done

kernel=$(uname -r)
if [[ $kernel =~ ^6\.1\. ]]; then
	for phase in write verify; do
		polled_fio polled-envcrypt "$phase"
		status=$?
		if [ "$status" != 0 ] && [ "$status" != 124 ] && [ "$FIO_SECONDS" -le "$SLACK" ] &&
			[[ $FIO_OUTPUT == *"error=Operation not supported"* ]]; then
			tap_ok "envcrypt on $kernel: polled $phase refused with EOPNOTSUPP in $FIO_SECONDS s"
		else
			tap_fail "envcrypt on $kernel: polled $phase refused" \
				"fio fails with 'Operation not supported' within $SLACK s" \
				"status $status after $FIO_SECONDS s: $(echo "$FIO_OUTPUT" | tail -n 5)"
		fi
	done
	expect_succeeds "envcrypt: interrupt-driven I/O still works after the refusals" \
		timeout -k 10 "$FIO_LIMIT" fio --name=plain --filename=/dev/mapper/polled-envcrypt \
		--ioengine=io_uring --direct=1 --rw=randwrite --bs=4k --iodepth=8 --size=8M \
		--verify=crc32c --verify_fatal=1 --do_verify=1
else
	index=0
	for phase in write verify; do
		bound=$((PACE * linear_seconds[index] + SLACK))
		index=$((index + 1))
		before=$(nvme_interrupts)
		polled_fio polled-envcrypt "$phase"
		status=$?
		interrupts=$(($(nvme_interrupts) - before))
		if [ "$status" = 0 ] && [ "$FIO_SECONDS" -le "$bound" ]; then
			tap_ok "envcrypt: polled $phase of 8 MiB in $FIO_SECONDS s (dm-linear ${linear_seconds[index - 1]} s, bound $bound s; $interrupts NVMe interrupts)"
		else
			tap_fail "envcrypt: polled $phase" "fio exits 0 within $bound s" \
				"status $status after $FIO_SECONDS s: $(echo "$FIO_OUTPUT" | tail -n 5)"
		fi
		# 2048 reads of 4 KiB: by interrupt they would raise about as many.
		if [ "$phase" = verify ]; then
			if [ "$interrupts" -lt 256 ]; then
				tap_ok "envcrypt: reads reaped by polling the NVMe disk ($interrupts interrupts for 2048 reads)"
			else
				tap_fail "envcrypt: reads polled" "fewer than 256 NVMe interrupts" "$interrupts"
			fi
		fi
	done
fi
expect_eq "target error counter" 0 "$(dmsetup status polled-envcrypt | awk '{ print $11 }')"
expect_eq "no NVMe timeout in the kernel log" "" "$(dmesg | grep -i 'nvme.*timeout')"
tap_done
