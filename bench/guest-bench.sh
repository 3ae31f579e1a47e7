#!/bin/bash
# Runs inside a selftests/vm-run.sh guest: the envcrypt benchmark for one
# kernel.  Every configuration runs on the same backing device in the same
# boot; runs are interleaved (run 1 of every configuration, then run 2...)
# so drift hits all of them alike.  fio writes JSON to
# $ENVCRYPT_OUT/fio/<device>-<config>-<job>-<run>.json; the crypto probe
# writes $ENVCRYPT_OUT/xtsbench.txt; then bench/guest-helper-bench.sh times
# envcryptctl attach and attach-all of 32 disks; bench/report.py turns them
# into tables.
#
# Environment: BENCH_RUNS (default 3), BENCH_RUNTIME seconds per job
# (default 5), BENCH_RAMP seconds of warm-up not counted (default 1; the
# smoke run uses 0), BENCH_PROBE_MS the crypto probe's time per measurement
# (default 3000), BENCH_DEVICES (default "brd virtio"), BENCH_DISK (the virtio
# disk, default /dev/vda), BENCH_CONFIGS (default all four), BENCH_JOBS
# (default all six), BENCH_HELPER (0: skip the helper timings),
# BENCH_PROBE_DIR (where <kver>/xtsbench.ko is, default build/bench/mod),
# BENCH_MODULES (modules to modprobe first, e.g. aesni_intel: from 7.x the
# builtin xts-aes-lib answers the xts(aes) lookup and the AES-NI module is
# loaded only by udev's coldplug of the CPU, which the guest does not do).
set -u
. "$ENVCRYPT_TOP/selftests/lib/guest.sh"

RUNS=${BENCH_RUNS:-3}
RUNTIME=${BENCH_RUNTIME:-5}
RAMP=${BENCH_RAMP:-1}
PROBE_MS=${BENCH_PROBE_MS:-3000}
DEVICES=${BENCH_DEVICES:-brd virtio}
CONFIGS=${BENCH_CONFIGS:-raw dmcrypt dmcrypt-nowq envcrypt}
DISK=${BENCH_DISK:-/dev/vda}
OFFSET=32768 # sectors: the data offset envcryptctl uses, same for all
KEY_DESC=envcrypt:bench
OUT=$ENVCRYPT_OUT
mkdir -p "$OUT/fio"

die() {
	echo "bench: $*" >&2
	exit 1
}

# fio arguments per job name.
job_args() {
	case $1 in
	seqwrite) echo "--rw=write --bs=1M --iodepth=16" ;;
	seqread) echo "--rw=read --bs=1M --iodepth=16" ;;
	randread-qd1) echo "--rw=randread --bs=4k --iodepth=1" ;;
	randread-qd32) echo "--rw=randread --bs=4k --iodepth=32" ;;
	randwrite-qd32) echo "--rw=randwrite --bs=4k --iodepth=32" ;;
	mixed-qd32) echo "--rw=randrw --rwmixread=70 --bs=4k --iodepth=32" ;;
	esac
}
JOBS=${BENCH_JOBS:-seqwrite seqread randread-qd1 randread-qd32 randwrite-qd32 mixed-qd32}

backing_device() {
	case $1 in
	brd) echo /dev/ram0 ;;
	virtio) echo "$DISK" ;;
	esac
}

# Creates the mapping for a configuration and prints the device to test.
setup_config() { # setup_config <config> <backing>
	local config=$1 dev=$2 len
	len=$(($(dev_sectors "$dev") - OFFSET))
	len=$((len - len % 8))
	case $config in
	raw) echo "$dev" && return 0 ;;
	dmcrypt) table=$(dmcrypt_table "$len" "$dev" "$OFFSET" "$KEY_DESC" 4096) ;;
	dmcrypt-nowq)
		table="$(dmcrypt_table "$len" "$dev" "$OFFSET" "$KEY_DESC" 4096)"
		table="${table% 1 sector_size:4096} 3 sector_size:4096 no_read_workqueue no_write_workqueue"
		;;
	envcrypt) table=$(envcrypt_table "$len" "$dev" "$OFFSET" "$KEY_DESC" 4096) ;;
	envcryptold)
		table=$(envcrypt_table "$len" "$dev" "$OFFSET" "$KEY_DESC" 4096)
		table=${table/ envcrypt / envcryptold }
		;;
	esac
	dmsetup create bench --table "$table" >&2 || die "cannot create $config on $dev: $(dmesg | tail -n 2)"
	udevadm settle --timeout=30
	echo /dev/mapper/bench
}

teardown_config() {
	dmsetup info bench >/dev/null 2>&1 && dmsetup remove --retry bench
}

run_fio() { # run_fio <device> <job> <output>
	# shellcheck disable=SC2046
	fio --name=bench --filename="$1" --ioengine=libaio --direct=1 \
		--time_based --runtime="$RUNTIME" --ramp_time="$RAMP" --size=256M \
		--lat_percentiles=1 --percentile_list=50:99 --randrepeat=0 \
		--norandommap --group_reporting --output-format=json \
		--output="$3" $(job_args "$2") ${BENCH_FIO_ARGS:-} >/dev/null ||
		die "fio $2 on $1 failed"
}

measure_crypto() {
	local ko=${BENCH_PROBE_DIR:-$ENVCRYPT_TOP/build/bench/mod}/$ENVCRYPT_KVER/xtsbench.ko
	grep -q '^xtsbench ' /proc/modules && rmmod xtsbench
	insmod "$ko" unit=4096 millis="$PROBE_MS" all_cpus=1 || die "cannot load $ko"
	dmesg | grep "xtsbench: driver=" | tail -n 1 >"$OUT/xtsbench.txt"
	dmesg | grep "xtsbench: all_cpus=" | tail -n 1 >>"$OUT/xtsbench.txt"
	rmmod xtsbench
	echo "nr_cpus=$(nproc)" >>"$OUT/xtsbench.txt"
}

guest_setup || die "guest set-up failed"
modprobe dm_crypt || die "no dm_crypt module"
for module in ${BENCH_MODULES:-}; do
	modprobe "$module" || die "cannot load $module (BENCH_MODULES)"
done
case " $CONFIGS " in
*" envcryptold "*)
	insmod "${BENCH_PROBE_DIR:-$ENVCRYPT_TOP/build/bench/mod}/$ENVCRYPT_KVER/dm-envcryptold.ko" ||
		die "cannot load the baseline target (BENCH_BASELINE)"
	;;
esac
head -c 64 /dev/urandom >/tmp/bench.key
add_logon_key "$KEY_DESC" /tmp/bench.key >/dev/null || die "cannot add the key"
brd_device 512 >/dev/null || die "no brd device"
echo 0 >/sys/block/ram0/queue/add_random 2>/dev/null

measure_crypto
for run in $(seq 1 "$RUNS"); do
	for device in $DEVICES; do
		backing=$(backing_device "$device")
		[ -b "$backing" ] || die "no $device device ($backing)"
		for config in $CONFIGS; do
			target=$(setup_config "$config" "$backing") || exit 1
			for job in $JOBS; do
				echo "bench: run $run/$RUNS $device $config $job" >&2
				run_fio "$target" "$job" "$OUT/fio/$device-$config-$job-$run.json"
			done
			case $config in envcrypt*) dmsetup status bench >"$OUT/$config-status-$device.txt" ;; esac
			teardown_config
		done
	done
done
if [ "${BENCH_HELPER:-1}" != 0 ]; then
	BENCH_RUNS=$RUNS "$ENVCRYPT_TOP/bench/guest-helper-bench.sh" || die "helper timings failed"
fi
echo "bench: done" >&2
