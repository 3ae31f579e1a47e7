#!/bin/bash
# Stage 2 of an envcrypt test guest: PID 1 after switch_root into the host's
# root (read-only 9p).  It runs the command that selftests/vm-run.sh wrote to
# /run/out/.vm-run/command (which joins a fresh session keyring), as root, with its
# output on ttyS1 (streamed to vm-run's stdout); then it saves the kernel log
# to /run/out/dmesg.txt and the command's exit status to /run/out/status and
# powers the guest off.  As PID 1 it must never exit, so it ends in poweroff.

OUT=/run/out
CONTROL=$OUT/.vm-run
STREAM=/dev/ttyS1

power_off() {
	sync
	umount "$OUT" 2>/dev/null
	echo o >/proc/sysrq-trigger
	sleep 60
}

mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
# What udev would create: bash process substitution needs /dev/fd.
ln -sfn /proc/self/fd /dev/fd
ln -sfn /proc/self/fd/0 /dev/stdin
ln -sfn /proc/self/fd/1 /dev/stdout
ln -sfn /proc/self/fd/2 /dev/stderr
hostname envcrypt-guest
# No network, but services a test starts (the KMIP server) need loopback.
ip link set lo up 2>/dev/null || /bin/busybox ip link set lo up
# The host reads the stream as plain lines: no CR before each LF.
stty -F "$STREAM" -onlcr 2>/dev/null

# shellcheck source=/dev/null
. "$CONTROL/env" || {
	echo "vm-run guest: stage 2: cannot read $CONTROL/env" >"$STREAM"
	echo 125 >"$OUT/status"
	power_off
}

# vm-run.sh --crash-boots N: crash this boot, as a kernel that dies while
# booting would, until N boots have.
crashes=$(cat "$CONTROL/crash-boots" 2>/dev/null)
if [ "${crashes:-0}" -gt 0 ]; then
	echo "$((crashes - 1))" >"$CONTROL/crash-boots"
	sync
	echo c >/proc/sysrq-trigger
fi
# From here on a crash is the command's: vm-run.sh does not boot again.
: >"$CONTROL/started"
sync
start=$(date +%s)
env -i \
	PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	HOME=/tmp TERM=dumb LANG=C.UTF-8 \
	ENVCRYPT_OUT="$OUT" ENVCRYPT_KVER="$VMRUN_KVER" ENVCRYPT_TOP="$VMRUN_TOP" \
	/bin/bash "$CONTROL/command" </dev/null >"$STREAM" 2>&1
status=$?
echo "$(($(date +%s) - start))" >"$CONTROL/seconds"

dmesg >"$OUT/dmesg.txt"
echo "$status" >"$OUT/status"
power_off
