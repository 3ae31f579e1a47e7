#!/bin/bash
# make bench: one guest boot per kernel runs raw, dm-crypt (default and
# no-workqueue) and envcrypt side by side on a brd and a virtio-blk disk,
# then bench/report.py writes build/bench/results.{csv,md,png}; then, on the
# host, bench/image-encrypt-bench.sh times `envcryptctl image encrypt` of a
# 2 GiB image against qemu-img convert -O luks and cp (image-encrypt.txt).
#
#   bench/run.sh [--quick] [--kernel-dir DIR] KVER...
#
# --kernel-dir DIR: boot the kernels from DIR instead of the host's /
# (selftests/vm-run.sh's option; scripts/kernel-next.sh makes one).  There is
# no build tree for them on the host, so the target and the probe are the
# ones make kmod-next placed in build/kmod/KVER/ and build/bench/mod/KVER/.
#
# --quick: one short run of every configuration, 1 s with no warm-up, a
# 0.5 s crypto probe and one round of the image encrypt bench on 256 MiB
# (a smoke test for CI: it proves every configuration runs; the numbers
# mean nothing), the kernels' guests at the same time.  Without it the
# guests run one after the other.
#
# For experiments, BENCH_DEVICES, BENCH_CONFIGS and BENCH_JOBS (space-separated
# subsets), BENCH_FIO_ARGS (added to every fio command), BENCH_MODULES
# (modprobe'd first) and BENCH_HELPER=0 (no helper timings) reach the guest
# script; after a subset run the fio JSON
# files stay in BENCH_OUT and no report is written (bench/report.py needs the
# full set).
#
# Same-boot A/B: BENCH_BASELINE=REV (a git revision) also builds the target
# as it was at REV, under the module and target name "envcryptold", and
# adds the configuration envcryptold beside envcrypt, so that old and new
# code run interleaved in one boot (e.g. BENCH_BASELINE=main
# BENCH_CONFIGS="envcryptold envcrypt").  bench/ab.py compares the two.
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
OUT=${BENCH_OUT:-$TOP/build/bench}
# The probe modules live in one place whatever BENCH_OUT says: the guest
# script finds them through BENCH_PROBE_DIR.
PROBE_DIR=$TOP/build/bench/mod
RUNS=${BENCH_RUNS:-3}
RUNTIME=${BENCH_RUNTIME:-5}
RAMP=${BENCH_RAMP:-1}
PROBE_MS=${BENCH_PROBE_MS:-3000}
QUICK=0
KERNEL_DIR_ARGS=()
while [ $# -gt 0 ]; do
	case $1 in
	--quick)
		RUNS=1
		RUNTIME=1
		RAMP=0
		PROBE_MS=500
		export BENCH_IMAGE_MIB=${BENCH_IMAGE_MIB:-256} BENCH_IMAGE_ROUNDS=${BENCH_IMAGE_ROUNDS:-1}
		QUICK=1
		shift
		;;
	--kernel-dir)
		KERNEL_DIR_ARGS=(--kernel-dir "${2-}")
		shift 2
		;;
	*) break ;;
	esac
done
# shellcheck disable=SC2046 # one kernel name per word
[ $# -gt 0 ] || set -- $("$TOP/scripts/kernels.sh")

build_probe() { # the crypto speed module for each kernel
	local k=$1
	if [ ${#KERNEL_DIR_ARGS[@]} -gt 0 ]; then
		if [ -f "$PROBE_DIR/$k/xtsbench.ko" ] && [ -f "$TOP/build/kmod/$k/dm-envcrypt.ko" ]; then
			return 0
		fi
		echo "bench: $k: no $PROBE_DIR/$k/xtsbench.ko or $TOP/build/kmod/$k/dm-envcrypt.ko (make kmod-next builds them)" >&2
		return 1
	fi
	make -s -C "/lib/modules/$k/build" M="$TOP/bench/xtsbench" W=1 clean >/dev/null &&
		make -s -C "/lib/modules/$k/build" M="$TOP/bench/xtsbench" W=1 modules &&
		mkdir -p "$PROBE_DIR/$k" && cp "$TOP/bench/xtsbench/xtsbench.ko" "$PROBE_DIR/$k/"
}

# The target as of BENCH_BASELINE, renamed so that both load side by side.
build_baseline() {
	local k=$1 src=$OUT/baseline-src
	rm -rf "$src" && mkdir -p "$src" || return 1
	git -C "$TOP" archive "$BENCH_BASELINE" kmod | tar -x -C "$src" || return 1
	sed -i 's/\.name = "envcrypt",/.name = "envcryptold",/' "$src/kmod/dm-envcrypt.c" &&
		grep -q '"envcryptold"' "$src/kmod/dm-envcrypt.c" &&
		mv "$src/kmod/dm-envcrypt.c" "$src/kmod/dm-envcryptold.c" &&
		sed -i 's/dm-envcrypt\.o/dm-envcryptold.o/' "$src/kmod/Kbuild" &&
		make -s -C "/lib/modules/$k/build" M="$src/kmod" W=1 modules &&
		mkdir -p "$PROBE_DIR/$k" && cp "$src/kmod/dm-envcryptold.ko" "$PROBE_DIR/$k/"
}

# One kernel's guest run; 0 when it succeeded.  Plain -cpu max, the model
# the published numbers were measured on, and a host thread per vCPU
# (--tcg-threads multi, QEMU's default), so that the probe's "all vCPUs at
# once" runs them at once; the tests' guests take turns on one thread.
bench_kernel() { # KVER
	local k=$1 disk started
	rm -rf "${OUT:?}/$k"
	mkdir -p "$OUT/$k"
	disk=$OUT/$k/virtio.img
	rm -f "$disk"
	fallocate -l 640M "$disk" || truncate -s 640M "$disk"
	echo "bench: $k: $RUNS run(s) of ${RUNTIME}s per job" >&2
	started=$SECONDS
	if ! "$TOP/selftests/vm-run.sh" --kernel "$k" "${KERNEL_DIR_ARGS[@]}" --cpu max --tcg-threads multi --out "$OUT/$k" --disk "$disk" \
		--mem 2048 --cpus 2 --timeout 7200 -- \
		env BENCH_RUNS="$RUNS" BENCH_RUNTIME="$RUNTIME" BENCH_RAMP="$RAMP" BENCH_PROBE_MS="$PROBE_MS" \
		BENCH_PROBE_DIR="$PROBE_DIR" \
		${BENCH_DEVICES:+BENCH_DEVICES="$BENCH_DEVICES"} \
		${BENCH_CONFIGS:+BENCH_CONFIGS="$BENCH_CONFIGS"} \
		${BENCH_JOBS:+BENCH_JOBS="$BENCH_JOBS"} ${BENCH_FIO_ARGS:+BENCH_FIO_ARGS="$BENCH_FIO_ARGS"} ${BENCH_HELPER:+BENCH_HELPER="$BENCH_HELPER"} \
		${BENCH_MODULES:+BENCH_MODULES="$BENCH_MODULES"} \
		"$TOP/bench/guest-bench.sh"; then
		echo "bench: $k: the guest run failed (see $OUT/$k/output.txt)" >&2
		rm -f "$disk"
		return 1
	fi
	rm -f "$disk"
	echo "bench: $k: $((SECONDS - started)) s" >&2
}

for k in "$@"; do
	build_probe "$k" || { echo "bench: cannot build xtsbench for $k" >&2; exit 1; }
	if [ -n "${BENCH_BASELINE:-}" ] && [ ${#KERNEL_DIR_ARGS[@]} -gt 0 ]; then
		echo "bench: $k: BENCH_BASELINE needs the kernel's build tree, which --kernel-dir kernels lack" >&2
		exit 1
	elif [ -n "${BENCH_BASELINE:-}" ]; then
		build_baseline "$k" || { echo "bench: cannot build the target of $BENCH_BASELINE for $k" >&2; exit 1; }
	fi
done
status=0
if [ "$QUICK" = 1 ]; then
	# The smoke run asserts no timing, and much of it is fio's fixed
	# runtime: the kernels' guests run at once (their numbers disturb
	# each other, which --quick's numbers may).
	pids=()
	for k in "$@"; do
		bench_kernel "$k" &
		pids+=($!)
	done
	for pid in "${pids[@]}"; do
		wait "$pid" || status=1
	done
else
	# Measurements: one guest at a time, so that none disturbs another.
	for k in "$@"; do
		bench_kernel "$k" || status=1
	done
fi
[ "$status" = 0 ] || exit 1
if [ -n "${BENCH_DEVICES:-}${BENCH_CONFIGS:-}${BENCH_JOBS:-}" ]; then
	echo "bench: subset run, no report; fio output in $OUT/<kernel>/fio" >&2
	exit 0
fi
"$TOP/bench/report.py" "$OUT" "$@" || exit 1
# Host side, no guest: envcryptctl image encrypt of a 2 GiB image against
# qemu-img convert -O luks and cp (BENCH_IMAGE=0 skips it).
if [ "${BENCH_IMAGE:-1}" != 0 ]; then
	"$TOP/bench/image-encrypt-bench.sh" "$OUT" || exit 1
fi
