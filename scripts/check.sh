#!/bin/bash
# make check: every test suite, each producing TAP 13, results in
# build/results/<suite>.tap, then one summary.  Usage: check.sh KVER...
#
# Suites: lint; kmod-next, a compile check of the modules against the
# newest kernel headers of Debian trixie-backports (scripts/kbuild-next.sh);
# helper unit tests (GoogleTest), once as built and once
# under AddressSanitizer and UndefinedBehaviorSanitizer (build/asan); each
# libFuzzer target of helper/fuzz/ for FUZZ_CHECK_SECONDS (default 20), two
# at a time (scripts/fuzz.sh); host tests
# (tests/host/test_*.sh, e.g. against a real PyKMIP server); the guest
# kselftest suite on every kernel of the matrix (selftests/run.sh; the
# kernels' guests run at the same time, their output shown one after the
# other once both are done); the benchmark smoke run (scripts/bench-smoke.sh, no timing assertions).
# A suite that dies without reporting counts as one failure.  Skips are
# counted apart and never as passes.  The last line is "N passed, N failed".
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
RESULTS=$TOP/build/results
rm -rf "$RESULTS"
mkdir -p "$RESULTS"

suites=()

run_suite() { # run_suite <name> <command...>
	local name=$1
	shift
	local started=$SECONDS
	echo "=== $name: $*"
	"$@" 2>&1 | tee "$RESULTS/$name.tap"
	echo "${PIPESTATUS[0]}" >"$RESULTS/$name.rc"
	echo "=== $name: exit $(cat "$RESULTS/$name.rc") after $((SECONDS - started)) s"
	suites+=("$name")
}

run_suite lint "$TOP/scripts/lint.sh"
run_suite kmod-next "$TOP/scripts/kbuild-next.sh"
run_suite unit "$TOP/scripts/unit-tap.sh"
# Sanitizer findings, LeakSanitizer's included, abort the binary: a failure.
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	run_suite unit-asan "$TOP/scripts/unit-tap.sh" "$TOP/build/asan/envcrypt_unit_tests"
run_suite fuzz "$TOP/scripts/fuzz.sh" --seconds "${FUZZ_CHECK_SECONDS:-20}" --jobs 2
for t in "$TOP"/tests/host/test_*.sh; do
	[ -e "$t" ] || continue
	run_suite "host-$(basename "$t" .sh)" "$t"
done
if [ $# -eq 0 ]; then
	# Guest tests must never vanish silently.
	run_suite guest-matrix bash -c 'echo "TAP version 13"; echo 1..1
		echo "not ok 1 - kernel matrix: no 6.1 or 6.12 kernel with an image and a build tree (make deps)"
		exit 1'
fi
# Much of a guest suite is waiting (deadlines, servers, timers, TCG's
# single-threaded device emulation), so the kernels' suites share the
# cores better at once than one after the other.
guest_suite() { # guest_suite <kver>: runs in the background
	local started=$SECONDS
	"$TOP/selftests/run.sh" --kernel "$1" >"$RESULTS/guest-$1.tap" 2>&1
	echo "$?" >"$RESULTS/guest-$1.rc"
	echo "$((SECONDS - started))" >"$RESULTS/guest-$1.seconds"
}
guest_started=$SECONDS
for k in "$@"; do
	echo "=== guest-$k: $TOP/selftests/run.sh --kernel $k (in the background)"
	echo 1 >"$RESULTS/guest-$k.rc" # until it reports
	echo "?" >"$RESULTS/guest-$k.seconds"
	guest_suite "$k" &
done
wait
for k in "$@"; do
	echo "=== guest-$k: output"
	cat "$RESULTS/guest-$k.tap"
	echo "=== guest-$k: exit $(cat "$RESULTS/guest-$k.rc") after $(cat "$RESULTS/guest-$k.seconds") s"
	suites+=("guest-$k")
done
[ $# -eq 0 ] || echo "=== guest suites: $((SECONDS - guest_started)) s for all kernels"
run_suite bench-smoke "$TOP/scripts/bench-smoke.sh" "$@"

"$TOP/scripts/tap-summary.py" "$RESULTS" "${suites[@]}"
