#!/bin/bash
# check-debian.sh KVER...: the booted-Debian tests (selftests/debian/test_*.sh)
# on each kernel, one after the other (one guest at a time), as one TAP 13
# stream: per kernel, one line for its image (scripts/debian-image.sh) and
# one per test, whose own output comes first as comments.  `make
# check-debian` runs it for the kernels of scripts/kernels.sh; `make check`
# runs it once per test and kernel (DEBIAN_TESTS), beside other suites
# (scripts/check.sh).  The tests are not niced: their guests' boots are
# timed against device time-outs, and the other lane of make check keeps
# the second core busy (Documentation/dev-tools/testing.rst).
#
# Environment: DEBIAN_TEST_TIMEOUT (s, per test, default 2400);
# DEBIAN_TESTS, the names of the tests to run (default every
# selftests/debian/test_*.sh), e.g. "test_boot_grub_root.sh".  Exit 0 when
# no line is "not ok".  A test under which QEMU itself crashed runs once
# more (scripts/lib/booted-test.sh; its line says so).

set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
TEST_TIMEOUT=${DEBIAN_TEST_TIMEOUT:-2400}
[ $# -gt 0 ] || {
	echo "usage: scripts/check-debian.sh KVER..." >&2
	exit 2
}

tests=()
if [ -n "${DEBIAN_TESTS:-}" ]; then
	for name in $DEBIAN_TESTS; do
		[ -f "$TOP/selftests/debian/$name" ] || {
			echo "check-debian: DEBIAN_TESTS names $name, which is not in selftests/debian/" >&2
			exit 2
		}
		tests+=("$TOP/selftests/debian/$name")
	done
else
	tests=("$TOP"/selftests/debian/test_*.sh)
fi
# shellcheck source=scripts/lib/booted-test.sh
. "$TOP/scripts/lib/booted-test.sh"
LOGS=$(mktemp -d) || exit 2
trap 'rm -rf "$LOGS"' EXIT

echo "TAP version 13"
echo "1..$(($# * (${#tests[@]} + 1)))"
n=0
failed=0
result() { # result OK|FAIL TEXT
	n=$((n + 1))
	if [ "$1" = OK ]; then
		echo "ok $n - $2"
	else
		failed=$((failed + 1))
		echo "not ok $n - $2"
	fi
}

for kver in "$@"; do
	start=$SECONDS
	if log=$(nice "$TOP/scripts/debian-image.sh" "$kver" 2>&1 >/dev/null); then
		echo "${log//$'\n'/$'\n'# }" | sed '1s/^/# /'
		result OK "$kver: image ($((SECONDS - start)) s)"
	else
		echo "${log//$'\n'/$'\n'# }" | sed '1s/^/# /'
		result FAIL "$kver: image (scripts/debian-image.sh failed)"
		for test in "${tests[@]}"; do
			result FAIL "$kver: $(basename "$test") # no image"
		done
		continue
	fi
	for test in "${tests[@]}"; do
		start=$SECONDS
		booted_test_run "$LOGS/$kver-$(basename "$test").log" "$TEST_TIMEOUT" "$test" --kernel "$kver"
		status=$BOOTED_TEST_STATUS
		note=${BOOTED_TEST_NOTE:+; $BOOTED_TEST_NOTE}
		case $status in
		0) result OK "$kver: $(basename "$test") ($((SECONDS - start)) s$note)" ;;
		124 | 137) result FAIL "$kver: $(basename "$test") # TIMEOUT $TEST_TIMEOUT seconds" ;;
		*) result FAIL "$kver: $(basename "$test") (exit $status, $((SECONDS - start)) s$note)" ;;
		esac
	done
done
echo "# $failed failed of $n"
[ "$failed" = 0 ]
