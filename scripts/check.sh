#!/bin/bash
# make check: every test suite, each producing TAP 13, results in
# build/results/<suite>.tap, then one summary.  Usage: check.sh KVER...
#
# Suites: lint; kmod-next, a compile check of the modules against the
# newest kernel headers of Debian trixie-backports (scripts/kbuild-next.sh);
# helper unit tests (GoogleTest), once as built and once
# under AddressSanitizer and UndefinedBehaviorSanitizer (build/asan); each
# libFuzzer target of helper/fuzz/ for FUZZ_CHECK_SECONDS (default 10), two
# at a time (scripts/fuzz.sh); host tests
# (tests/host/test_*.sh, e.g. against a real PyKMIP server); the benchmark
# smoke run (scripts/bench-smoke.sh, no timing assertions); the booted-Debian
# tests (scripts/check-debian.sh, after host-test_deb, which makes the
# packages they install) on the kernels in CHECK_DEBIAN_KERNELS (default:
# the first of the matrix, Debian 12's own; `make check-debian` runs every
# kernel: a second kernel's 35 minutes do not fit CI's time), and the
# system-disk test (test_boot_grub_root.sh) alone on the kernels in
# CHECK_SYSTEM_DISK_KERNELS (default: the matrix's other kernels);
# the guest kselftest suite on every kernel of the matrix (selftests/run.sh).
#
# Two machines' worth of work on two cores: the suites run in two lanes at
# once (lane 1: lint, kmod-next, the unit tests, fuzzing, the host tests,
# then each kernel's guest suite in turn; lane 2: host-test_deb,
# host-test_dkms, host-test_initramfs_hook, the booted-Debian suites, whose
# guests mostly wait on one core, then host-test_rewrap_vm_crash, the bench
# smoke run, the unit tests under the sanitizers and host-test_vm_run: in
# the CI run of 90fe67e lane 1 was done after 4203 s and lane 2 after 3703
# s, with the last two in lane 1; Documentation/dev-tools/testing.rst).
# Each suite's output is shown whole once its phase is done, in a fixed
# order; "=== NAME: exit N after S s" lines show progress as suites end.
# A suite that dies without reporting counts as one failure.  Skips are
# counted apart and never as passes.  The last line is "N passed, N failed".
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
RESULTS=$TOP/build/results
rm -rf "$RESULTS"
mkdir -p "$RESULTS"

suites=()

# run_quietly NAME COMMAND...: one suite, its output to RESULTS/NAME.tap,
# its exit status and seconds beside it; a progress line when it ends.
run_quietly() {
	local name=$1 started=$SECONDS
	shift
	echo 1 >"$RESULTS/$name.rc" # until it reports
	echo "?" >"$RESULTS/$name.seconds"
	"$@" >"$RESULTS/$name.tap" 2>&1
	echo "$?" >"$RESULTS/$name.rc"
	echo "$((SECONDS - started))" >"$RESULTS/$name.seconds"
	echo "=== $name: exit $(cat "$RESULTS/$name.rc") after $(cat "$RESULTS/$name.seconds") s"
}

# show NAME...: the finished suites' output, in this order, and counted.
show() {
	local name
	for name in "$@"; do
		echo "=== $name: output"
		cat "$RESULTS/$name.tap"
		echo "=== $name: exit $(cat "$RESULTS/$name.rc") after $(cat "$RESULTS/$name.seconds") s"
		suites+=("$name")
	done
}

# Lane 2's host tests: test_deb.sh first (it makes the packages the booted
# tests install), test_dkms.sh next (it installs one of them) and
# test_initramfs_hook.sh (moved for balance, like the last two), and
# test_rewrap_vm_crash.sh and test_vm_run.sh after the booted tests.
host_tests=()
for t in "$TOP"/tests/host/test_*.sh; do
	[ -e "$t" ] || continue
	case $(basename "$t") in
	test_deb.sh | test_dkms.sh | test_initramfs_hook.sh | test_rewrap_vm_crash.sh | test_vm_run.sh) ;;
	*) host_tests+=("$t") ;;
	esac
done

# The booted-Debian suites' kernels.
read -r -a debian_kernels <<<"${CHECK_DEBIAN_KERNELS-${1-}}"
read -r -a system_disk_kernels <<<"${CHECK_SYSTEM_DISK_KERNELS-${*:2}}"
# Lane 1 ends with the kernels' guest suites, one after the other: each
# keeps both cores busy (2 vCPUs under TCG), and two at once took longer
# than two in a row (CI of 2026-12-04: 2470 s at once; one alone 1024 s).
kernels=("$@")
guest_suites() {
	local k
	for k in "${kernels[@]}"; do
		echo "=== guest-$k: $TOP/selftests/run.sh --kernel $k"
		run_quietly "guest-$k" "$TOP/selftests/run.sh" --kernel "$k"
	done
}

lane1() {
	local t
	run_quietly lint "$TOP/scripts/lint.sh"
	run_quietly kmod-next "$TOP/scripts/kbuild-next.sh"
	run_quietly unit "$TOP/scripts/unit-tap.sh"
	run_quietly fuzz "$TOP/scripts/fuzz.sh" --seconds "${FUZZ_CHECK_SECONDS:-10}" --jobs 2
	for t in "${host_tests[@]}"; do
		run_quietly "host-$(basename "$t" .sh)" "$t"
	done
	guest_suites
	lane_done 1
}

lane2() {
	local k
	run_quietly host-test_deb "$TOP/tests/host/test_deb.sh"
	run_quietly host-test_dkms "$TOP/tests/host/test_dkms.sh"
	run_quietly host-test_initramfs_hook "$TOP/tests/host/test_initramfs_hook.sh"
	for k in "${debian_kernels[@]}"; do
		run_quietly "debian-$k" "$TOP/scripts/check-debian.sh" "$k"
	done
	for k in "${system_disk_kernels[@]}"; do
		DEBIAN_TESTS=test_boot_grub_root.sh run_quietly "debian-system-disk-$k" \
			"$TOP/scripts/check-debian.sh" "$k"
	done
	run_quietly host-test_rewrap_vm_crash "$TOP/tests/host/test_rewrap_vm_crash.sh"
	# The harness on the first kernel; make bench runs every kernel.
	run_quietly bench-smoke "$TOP/scripts/bench-smoke.sh" "${kernels[@]:0:1}"
	# Sanitizer findings, LeakSanitizer's included, abort the binary: a failure.
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		run_quietly unit-asan "$TOP/scripts/unit-tap.sh" "$TOP/build/asan/envcrypt_unit_tests"
	run_quietly host-test_vm_run "$TOP/tests/host/test_vm_run.sh"
	lane_done 2
}

# lane_done N: the lane's time, for the progress log and the summary (the
# longer lane is CI's time).
lane_done() {
	echo "lane $1 done after $((SECONDS - lanes_started)) s" | tee -a "$RESULTS/lanes.txt" | sed 's/^/=== /'
}

lanes_started=$SECONDS
lane1 &
lane1_pid=$!
lane2 &
lane2_pid=$!
wait "$lane1_pid" "$lane2_pid"
lane1_suites=(lint kmod-next unit fuzz)
for t in "${host_tests[@]}"; do
	lane1_suites+=("host-$(basename "$t" .sh)")
done
show "${lane1_suites[@]}" host-test_rewrap_vm_crash bench-smoke unit-asan host-test_vm_run \
	host-test_deb host-test_dkms host-test_initramfs_hook
for k in "${debian_kernels[@]}"; do
	show "debian-$k"
done
for k in "${system_disk_kernels[@]}"; do
	show "debian-system-disk-$k"
done
if [ $# -eq 0 ]; then
	# Guest tests must never vanish silently.
	run_quietly guest-matrix bash -c 'echo "TAP version 13"; echo 1..1
		echo "not ok 1 - kernel matrix: no 6.1 or 6.12 kernel with an image and a build tree (make deps)"
		exit 1'
	show guest-matrix
fi
for k in "$@"; do
	show "guest-$k"
done

"$TOP/scripts/tap-summary.py" "$RESULTS" "${suites[@]}"
