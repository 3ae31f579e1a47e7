# shellcheck shell=bash
# Sourced by scripts/check-debian.sh: one booted test, run once more when
# the emulator failed under it.
#
# A booted test fails when its guest fails, and so it must.  Two failures
# are the host's emulator, not the system under test, and the test then
# runs once more, from the start, and its result is that run's:
#  - QEMU itself dying of a signal (selftests/debian-run.sh says
#    "debian-run: kernel K: QEMU crashed (SIGSEGV)" and keeps the
#    backtrace);
#  - the guest kernel's oops on int3 ("int3: 0000 [#1]", "Oops: int3: ..."
#    since Linux 6.6).  Linux patches its own code while it runs (static
#    keys, when systemd first attaches a BPF program to a cgroup, when the
#    TSC is found unstable) with an int3 guarding the bytes being changed,
#    and handles the int3 only while that patch is under way; under QEMU's
#    TCG a CPU can still run the guard after the patch is done, and the
#    kernel oopses on it (seen twice on Debian's 6.12 under TCG: in
#    interrupt context, which panics, and in sched_clock_cpu early in a
#    boot).  An int3 is never envcrypt's: the module has none, and a BUG()
#    is ud2.
# The first run's output stays in the log and the result line says what
# happened; a second such failure, or any other, is a failure.
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

# booted_test_crash LOG: "QEMU crashed (SIGx)" or "the guest kernel
# oopsed on int3 (TCG)", or nothing.
booted_test_crash() {
	grep -a -o -m 1 'debian-run: kernel [^ ]*: QEMU crashed (SIG[A-Z]*)' "$1" |
		sed 's/^.*: QEMU/QEMU/' | grep . ||
		{ grep -a -q -E '(^|[] ])int3: 0000 \[#[0-9]+\]' "$1" &&
			echo "the guest kernel oopsed on int3 (TCG)"; }
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
