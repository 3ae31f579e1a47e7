# shellcheck shell=bash
# Sourced by selftests/vm-run.sh and selftests/debian-run.sh: telling an
# emulator crash from a guest failure.
#
# qemu_run_dumping DIR ARGS...: runs ARGS (the timeout-wrapped QEMU) in
# DIR/.qemu, a new empty directory, with core dumps allowed, so that if
# QEMU itself crashes the kernel writes its core there (core_pattern
# "core", Debian's default, is relative to the crashing process's
# directory) and nothing else there can be taken for it (a guest's files
# in DIR may be named core*).  ARGS must name files by absolute paths.
#
# qemu_crash_report STATUS DIR: when STATUS says QEMU died by a signal
# that dumps core (SIGILL, SIGABRT, SIGBUS, SIGFPE, SIGSEGV), writes
# DIR/qemu-crash.txt (the signal, and the backtrace of every thread from
# the core, read with gdb, or why there is none), prints it on stderr
# prefixed with PREFIX (default "qemu-crash: "), removes the core (it holds
# the guest's memory) and returns 0; else returns 1.  The exit status of
# `timeout` is the signal's 128+N when QEMU died of it; 124 and 137 are
# timeout's own and never a crash.

qemu_run_dumping() {
	local dir=$1
	shift
	rm -rf "$dir/.qemu" && mkdir "$dir/.qemu" || return 125
	(cd "$dir/.qemu" && ulimit -c unlimited 2>/dev/null; exec "$@")
}

qemu_crash_signal() { # qemu_crash_signal STATUS: the signal's name, or fail
	case $1 in
	132) echo SIGILL ;;
	134) echo SIGABRT ;;
	135) echo SIGBUS ;;
	136) echo SIGFPE ;;
	139) echo SIGSEGV ;;
	*) return 1 ;;
	esac
}

qemu_crash_report() {
	local status=$1 dir=$2 prefix=${QEMU_CRASH_PREFIX:-qemu-crash: } signal core pattern
	signal=$(qemu_crash_signal "$status") || return 1
	core=$(find "$dir/.qemu" -maxdepth 1 -name 'core*' -type f 2>/dev/null | head -n 1)
	{
		echo "QEMU crashed: $signal (exit status $status); the emulator, not the guest"
		if [ -z "$core" ]; then
			pattern=$(cat /proc/sys/kernel/core_pattern 2>/dev/null)
			echo "no core dump in $dir/.qemu (core_pattern '$pattern', ulimit -c $(ulimit -c))"
		elif ! command -v gdb >/dev/null; then
			echo "core dump written, but gdb is not installed (make deps) to read it"
		else
			echo "backtrace of every thread (gdb, from the core; QEMU is stripped: most of its own frames are ??):"
			timeout 120 gdb -batch -nx -ex 'thread apply all bt 12' \
				"$(command -v qemu-system-x86_64)" "$core" 2>&1 |
				grep -E '^(Thread|#[0-9]|Program terminated)' | head -n 120
		fi
	} >"$dir/qemu-crash.txt"
	[ -z "$core" ] || rm -f "$core"
	awk -v prefix="$prefix" '{ print prefix $0 }' "$dir/qemu-crash.txt" >&2
	return 0
}
