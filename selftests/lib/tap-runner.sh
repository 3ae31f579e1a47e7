#!/bin/bash
# tap-runner.sh DIR [TEST...]: the kselftest driver, run inside a vm-run.sh
# guest.  Runs every DIR/test_*.sh in name order (or only the named TESTs, in
# the order given), each in its own session keyring and
# under the per-test timeout of DIR/settings (timeout=SEC), and prints TAP 13:
#
#   TAP version 13
#   1..N
#   # selftests: envcrypt: test_x.sh        then the test's output, as comments
#   ok 1 - test_x.sh                        exit 0
#   not ok 2 - test_y.sh                    exit 1 (or anything else)
#   ok 3 - test_z.sh # SKIP <reason>        exit 4; reason = its "SKIP: " line
#   not ok 4 - test_w.sh # TIMEOUT 600 seconds     killed at the time limit
#
# Each test's full output is also kept in $ENVCRYPT_OUT/logs/<test>.log.
# Exit status: 0 if no test failed, else 1.

set -u

DIR=$(cd "${1:?usage: tap-runner.sh DIR [TEST...]}" && pwd)
shift
SUITE=$(basename "$DIR")
LOGS=${ENVCRYPT_OUT:-/tmp}/logs
KSFT_SKIP=4

timeout=45
if [ -f "$DIR/settings" ]; then
	setting=$(sed -n 's/^timeout=\([0-9][0-9]*\)$/\1/p' "$DIR/settings")
	timeout=${setting:-$timeout}
fi

mkdir -p "$LOGS"
tests=()
if [ $# -gt 0 ]; then
	for test in "$@"; do
		tests+=("$DIR/$(basename "$test")")
	done
else
	for test in "$DIR"/test_*.sh; do
		[ -e "$test" ] && tests+=("$test")
	done
fi

echo "TAP version 13"
echo "1..${#tests[@]}"
pass=0 fail=0 skip=0
number=0
for test in "${tests[@]}"; do
	number=$((number + 1))
	name=$(basename "$test")
	log=$LOGS/$name.log
	echo "# selftests: $SUITE: $name"
	start=$SECONDS
	(
		cd "$DIR" || exit 1
		# new_session gives the test its own session keyring; exec keeps
		# the test's exit status.
		exec timeout -k 10 "$timeout" bash -c 'keyctl new_session >/dev/null && exec bash "$0"' "$test"
	) </dev/null 2>&1 | tee "$log" | sed -u 's/^/# /'
	status=${PIPESTATUS[0]}
	echo "# $name: exit status $status after $((SECONDS - start)) s"
	case $status in
	0)
		echo "ok $number - $name"
		pass=$((pass + 1))
		;;
	"$KSFT_SKIP")
		reason=$(sed -n 's/^SKIP: //p' "$log" | tail -n 1)
		echo "ok $number - $name # SKIP ${reason:-no reason given}"
		skip=$((skip + 1))
		;;
	124 | 137)
		echo "not ok $number - $name # TIMEOUT $timeout seconds"
		fail=$((fail + 1))
		;;
	*)
		echo "not ok $number - $name"
		fail=$((fail + 1))
		;;
	esac
done
echo "# Totals: pass:$pass fail:$fail skip:$skip"
[ "$fail" = 0 ]
