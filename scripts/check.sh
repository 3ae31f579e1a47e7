#!/bin/bash
# make check: every test suite, each producing TAP 13, results in
# build/results/<suite>.tap, then one summary.  Usage: check.sh KVER...
#
# Suites: lint; helper unit tests (GoogleTest); host tests
# (tests/host/test_*.sh, e.g. against a real PyKMIP server); the guest
# kselftest suite on every kernel of the matrix (selftests/run.sh); the
# benchmark smoke run (scripts/bench-smoke.sh, no timing assertions).
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
run_suite unit "$TOP/scripts/unit-tap.sh"
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
for k in "$@"; do
	run_suite "guest-$k" "$TOP/selftests/run.sh" --kernel "$k"
done
run_suite bench-smoke "$TOP/scripts/bench-smoke.sh" "$@"

"$TOP/scripts/tap-summary.py" "$RESULTS" "${suites[@]}"
