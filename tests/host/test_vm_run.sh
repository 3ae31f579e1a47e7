#!/bin/bash
# selftests/vm-run.sh boots once more when the guest kernel crashes while
# booting, before the command started, and never after, as TAP 13.  The
# crash is made with vm-run's own --crash-boots N (sysrq c just before the
# command would start).  One small guest (1 vCPU, 512 MiB) on the newest
# kernel of the matrix, five boots in all.  And a crash of QEMU itself
# (SIGSEGV sent to it while the command runs) is reported as the
# emulator's, with a backtrace from its core: a sixth boot, whose QEMU also
# shows that the guest's vCPUs run on one host thread.
set -u
TOP=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/host/lib/tap.sh
. "$TOP/tests/host/lib/tap.sh"
echo "TAP version 13"
KVER=$("$TOP/scripts/kernels.sh" | tail -n 1)
[ -n "$KVER" ] || skip_all "no guest kernel (make deps)"
WORK=$(mktemp -d "$TOP/build/vm-run-test.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

vm() { # OUT ARGS... -- COMMAND...
	local out=$1
	shift
	"$TOP/selftests/vm-run.sh" --kernel "$KVER" --out "$out" --cpus 1 --mem 512 \
		--timeout 300 "$@" >"$out.stdout" 2>"$out.stderr"
}

show() { # OUT
	{
		echo "stdout:"
		cat "$1.stdout"
		echo "stderr:"
		cat "$1.stderr"
	} | diag
}

# One crash while booting: booted again, the command runs once.
out=$WORK/once
vm "$out" --crash-boots 1 -- echo "ran after one crash"
rc=$?
if [ "$rc" = 0 ] && [ "$(cat "$out.stdout")" = "ran after one crash" ]; then
	ok "one crash while booting: booted again, the command ran once and exited 0"
else
	not_ok "one crash while booting: booted again, the command ran once and exited 0 (exit $rc)"
	show "$out"
fi
expected="vm-run: kernel $KVER: the guest kernel crashed while booting, before the command started; booting once more (first console log in $out/console-boot1.txt)"
if grep -qxF "$expected" "$out.stderr"; then
	ok "the second boot is announced on stderr"
else
	not_ok "the second boot is announced on stderr"
	show "$out"
fi
if grep -q "sysrq triggered crash" "$out/console-boot1.txt" 2>/dev/null &&
	! grep -q "sysrq triggered crash" "$out/console.txt"; then
	ok "console-boot1.txt holds the crashed boot, console.txt the good one"
else
	not_ok "console-boot1.txt holds the crashed boot, console.txt the good one"
	show "$out"
fi

# Two crashes while booting: only one more boot, then a failure.
out=$WORK/twice
vm "$out" --crash-boots 2 -- echo "must not run"
rc=$?
if [ "$rc" = 1 ] && ! grep -q "must not run" "$out.stdout" &&
	grep -q "guest died before the command finished" "$out.stderr" &&
	[ "$(grep -c "booting once more" "$out.stderr")" = 1 ]; then
	ok "two crashes while booting: one retry, then exit 1 with the reason"
else
	not_ok "two crashes while booting: one retry, then exit 1 with the reason (exit $rc)"
	show "$out"
fi

# A crash once the command runs is the command's: no second boot.
out=$WORK/command
vm "$out" -- sh -c 'echo command started; echo c >/proc/sysrq-trigger'
rc=$?
if [ "$rc" = 1 ] && [ "$(grep -c "command started" "$out.stdout")" = 1 ] &&
	! grep -q "booting once more" "$out.stderr" &&
	grep -q "guest died before the command finished" "$out.stderr"; then
	ok "a crash after the command started: no second boot, exit 1"
else
	not_ok "a crash after the command started: no second boot, exit 1 (exit $rc)"
	show "$out"
fi
# QEMU itself crashing is told apart from the guest failing: exit 125, the
# signal, the backtrace from its core (then removed).  SIGSEGV sent to the
# emulator once the command runs stands in for a crash of its own.  The
# guest leaves a file named like a core in the run's directory: it is the
# guest's, neither read as QEMU's core nor removed.
out=$WORK/qemu-crash
vm "$out" -- sh -c 'echo decoy >/run/out/core.1; echo started >/run/out/started; sleep 250' &
vm_pid=$!
for _ in $(seq 1 240); do
	[ -f "$out/started" ] && break
	sleep 0.5
done
qemu_pid=$(pgrep -f "^qemu-system-x86_64 .*$out/console.txt" | head -n 1)
# The guest's vCPUs run on one host thread (vm-run's --tcg-threads single).
tcg_threads=$(cat /proc/"$qemu_pid"/task/*/comm 2>/dev/null | grep '/TCG$' | sort | paste -sd,)
[ -n "$qemu_pid" ] && kill -SEGV "$qemu_pid"
wait "$vm_pid"
rc=$?
expected="vm-run: kernel $KVER: QEMU crashed (SIGSEGV); the guest's console log is in $out/console.txt"
if [ -n "$qemu_pid" ] && [ "$rc" = 125 ] && [ "$(tail -n 1 "$out.stderr")" = "$expected" ] &&
	grep -qxF "vm-run:   QEMU crashed: SIGSEGV (exit status 139); the emulator, not the guest" "$out.stderr"; then
	ok "QEMU killed by SIGSEGV: exit 125, the crash named as the emulator's on stderr"
else
	not_ok "QEMU killed by SIGSEGV: exit 125, the crash named as the emulator's on stderr (exit $rc, QEMU pid '$qemu_pid')"
	show "$out"
fi
if [ "$tcg_threads" = "ALL CPUs/TCG" ]; then
	ok "the guest's vCPUs ran on one host thread, named ALL CPUs/TCG"
else
	not_ok "the guest's vCPUs ran on one host thread, named ALL CPUs/TCG (TCG threads seen: '$tcg_threads')"
fi
threads=$(grep -c '^Thread [0-9]* (.*LWP [0-9]*))' "$out/qemu-crash.txt" 2>/dev/null)
cores=$(find "$out" "$out/.qemu" -maxdepth 1 -name 'core*' ! -name core.1 | wc -l)
decoy=$(cat "$out/core.1" 2>/dev/null)
if [ "${threads:-0}" -ge 2 ] && [ "$cores" = 0 ] && [ "$decoy" = decoy ]; then
	ok "qemu-crash.txt has the backtrace of QEMU's $threads threads from its core; the core is gone, the guest's core.1 kept"
else
	not_ok "qemu-crash.txt has a backtrace of QEMU's threads, no core is left, the guest's core.1 kept (threads '$threads', cores $cores, core.1 '$decoy')"
	diag <"$out/qemu-crash.txt"
fi
tap_finish
