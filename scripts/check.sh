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
# smoke run (scripts/bench-smoke.sh, no timing assertions); each booted-Debian
# test (selftests/debian/test_*.sh through scripts/check-debian.sh, after
# host-test_deb, which makes the packages they install) on each kernel in
# CHECK_DEBIAN_KERNELS (default: every kernel of the matrix), a suite of
# its own named debian-KVER-TEST; the guest kselftest suite on every kernel
# of the matrix (selftests/run.sh).
#
# Two machines' worth of work on two cores: the suites run in two lanes at
# once (lane 1: lint, kmod-next, the unit tests, fuzzing, the host tests,
# then each kernel's guest suite in turn; lane 2: host-test_deb,
# host-test_dkms, host-test_initramfs_hook).  Then each lane takes the next
# of the shared suites, longest first (the booted-Debian tests,
# host-test_rewrap_vm_crash, the bench smoke run, the unit tests under the
# sanitizers, host-test_vm_run) until none is left, so that the lanes end
# close together whatever the load did to their first parts
# (Documentation/dev-tools/testing.rst).
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
# test_initramfs_hook.sh (moved for balance); test_rewrap_vm_crash.sh and
# test_vm_run.sh are shared suites.
host_tests=()
for t in "$TOP"/tests/host/test_*.sh; do
	[ -e "$t" ] || continue
	case $(basename "$t") in
	test_deb.sh | test_dkms.sh | test_initramfs_hook.sh | test_rewrap_vm_crash.sh | test_vm_run.sh) ;;
	*) host_tests+=("$t") ;;
	esac
done

# The booted-Debian tests' kernels.
read -r -a debian_kernels <<<"${CHECK_DEBIAN_KERNELS-$*}"
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
	shared_suites
	lane_done 1
}

lane2() {
	run_quietly host-test_deb "$TOP/tests/host/test_deb.sh"
	touch "$RESULTS/.packages-made" # made or failed: the booted tests may start
	run_quietly host-test_dkms "$TOP/tests/host/test_dkms.sh"
	run_quietly host-test_initramfs_hook "$TOP/tests/host/test_initramfs_hook.sh"
	shared_suites
	lane_done 2
}

# The shared suites, longest first; either lane runs the next one not yet
# taken (a counter under flock) until none is left.  The seconds are the
# longest each took beside another guest on either kernel (CI and runs by
# hand, 2026-12-05, rounded up); a booted test not listed here counts as
# long, so that it starts early.
booted_estimate() { # TEST: seconds
	case $1 in
	test_boot_grub_root.sh) echo 580 ;;
	test_boot_disks.sh) echo 390 ;;
	test_boot_outage_cache.sh) echo 380 ;;
	test_boot_initramfs_root.sh) echo 230 ;;
	test_boot_nbd.sh) echo 200 ;;
	test_boot_local.sh) echo 160 ;;
	test_boot_emergency.sh) echo 100 ;;
	*) echo 600 ;;
	esac
}
estimates="240 bench-smoke
170 host-test_rewrap_vm_crash
130 unit-asan
40 host-test_vm_run"
# What each booted-test suite runs: a kernel and a test.
declare -A debian_kernel debian_test
for k in "${debian_kernels[@]}"; do
	for t in "$TOP"/selftests/debian/test_*.sh; do
		[ -e "$t" ] || continue
		t=$(basename "$t")
		name=debian-$k-${t%.sh}
		debian_kernel[$name]=$k
		debian_test[$name]=$t
		estimates+=$'\n'"$(booted_estimate "$t") $name"
	done
done
mapfile -t SHARED < <(sort -k1,1nr -k2,2 <<<"$estimates" | cut -d' ' -f2)
echo 0 >"$RESULTS/.shared-next"
# The booted tests install what host-test_deb packs; lane 1 may come to
# them first only if lane 2's first suite hangs, so the wait is bounded
# (CHECK_PACKAGES_WAIT seconds, default an hour).
PACKAGES_WAIT=${CHECK_PACKAGES_WAIT:-3600}
[[ $PACKAGES_WAIT =~ ^[0-9]+$ ]] || {
	echo "check.sh: CHECK_PACKAGES_WAIT='$PACKAGES_WAIT' is not a number of seconds" >&2
	exit 2
}
packages_made() {
	local waited=0
	while [ ! -e "$RESULTS/.packages-made" ]; do
		[ "$waited" -lt "$PACKAGES_WAIT" ] || return 1
		sleep 1
		waited=$((waited + 1))
	done
}
no_packages() { # TEST KVER
	printf '%s\n' "TAP version 13" 1..1 "not ok 1 - $2: $1: host-test_deb not done after $PACKAGES_WAIT s"
	return 1
}
run_booted() { # NAME
	if packages_made; then
		DEBIAN_TESTS=${debian_test[$1]} run_quietly "$1" "$TOP/scripts/check-debian.sh" "${debian_kernel[$1]}"
	else
		run_quietly "$1" no_packages "${debian_test[$1]}" "${debian_kernel[$1]}"
	fi
}
run_shared() { # NAME
	case $1 in
	debian-*) run_booted "$1" ;;
	host-test_rewrap_vm_crash) run_quietly "$1" "$TOP/tests/host/test_rewrap_vm_crash.sh" ;;
	# The harness on the first kernel; make bench runs every kernel.
	bench-smoke) run_quietly "$1" "$TOP/scripts/bench-smoke.sh" "${kernels[@]:0:1}" ;;
	# Sanitizer findings, LeakSanitizer's included, abort the binary: a failure.
	unit-asan)
		ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
			run_quietly "$1" "$TOP/scripts/unit-tap.sh" "$TOP/build/asan/envcrypt_unit_tests"
		;;
	host-test_vm_run) run_quietly "$1" "$TOP/tests/host/test_vm_run.sh" ;;
	esac
}
take_shared() { # prints the index of the next shared suite
	local n
	{
		flock 9
		n=$(cat "$RESULTS/.shared-next")
		echo $((n + 1)) >"$RESULTS/.shared-next"
	} 9>"$RESULTS/.shared.lock"
	echo "$n"
}
shared_suites() {
	local next
	while next=$(take_shared) && [ "$next" -lt "${#SHARED[@]}" ]; do
		run_shared "${SHARED[$next]}"
	done
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
show "${lane1_suites[@]}" host-test_deb host-test_dkms host-test_initramfs_hook
# The shared suites in a fixed order, whatever order they ran in.
mapfile -t shared_shown < <(printf '%s\n' "${SHARED[@]}" | sort)
show "${shared_shown[@]}"
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
