# shellcheck shell=bash
# Sourced by scripts/check-debian.sh: one booted test, run once more when
# the emulator crashed under it.
#
# A booted test fails when its guest fails, and so it must.  QEMU itself
# dying of a signal (selftests/debian-run.sh says "debian-run: kernel K:
# QEMU crashed (SIGSEGV)" and keeps the backtrace) is the host's emulator
# failing, not the system under test, so the test runs once more, from
# the start, and its result is that run's.  The first run's output stays
# in the log and the result line says it crashed; a second crash, or any
# other failure, is a failure.
#
# booted_test_run LOG SECONDS TEST ARG...: runs TEST ARG... under timeout
# SECONDS, its output (stdout and stderr) as TAP comments on stdout and in
# LOG (LOG.first for the crashed run).  Sets BOOTED_TEST_STATUS (TEST's
# exit status; 124 or 137 when timed out) and BOOTED_TEST_NOTE (empty, or
# "QEMU crashed (SIGSEGV) in the first run; run again").

booted_test_once() { # booted_test_once LOG SECONDS TEST ARG...
	local log=$1 seconds=$2
	shift 2
	timeout -k 30 "$seconds" "$@" 2>&1 | tee "$log" | sed 's/^/# /'
	return "${PIPESTATUS[0]}"
}

booted_test_crash() { # booted_test_crash LOG: "QEMU crashed (SIGx)", or fail
	grep -a -o -m 1 'debian-run: kernel [^ ]*: QEMU crashed (SIG[A-Z]*)' "$1" |
		sed 's/^.*: QEMU/QEMU/'
}

booted_test_run() {
	local log=$1 seconds=$2 crash
	shift 2
	BOOTED_TEST_NOTE=
	booted_test_once "$log" "$seconds" "$@"
	BOOTED_TEST_STATUS=$?
	case $BOOTED_TEST_STATUS in
	0 | 124 | 137) return 0 ;;
	esac
	crash=$(booted_test_crash "$log") || return 0
	[ -n "$crash" ] || return 0
	mv -f "$log" "$log.first"
	echo "# $crash under $(basename "$1"): the emulator, not the system under test; running the test once more"
	booted_test_once "$log" "$seconds" "$@"
	BOOTED_TEST_STATUS=$?
	# shellcheck disable=SC2034 # read by the script that sources this
	BOOTED_TEST_NOTE="$crash in the first run; run again"
}
