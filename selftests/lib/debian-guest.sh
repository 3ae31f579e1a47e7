#!/bin/bash
# The guest side of selftests/debian-run.sh, in the booted Debian image.
# debian-run.service (installed by scripts/debian-image.sh) mounts the
# runner's 9p share at /run/debian-run after multi-user.target and runs
# this script from there, so it can change without rebuilding the image.
#
# It mounts the repository read-only at its host path, waits until the boot
# has finished (systemctl is-system-running --wait, bounded), records how
# long the boot took and what failed, runs the command the host wrote to
# /run/debian-run/command with its output in output.txt, saves the journal
# and the kernel log, writes the command's exit status to status and powers
# the guest off.

RUN=/run/debian-run
OUT=$RUN/out

# shellcheck source=/dev/null
. "$RUN/env" || {
	echo 125 >"$RUN/status"
	systemctl poweroff --no-block
	exit 1
}
mkdir -p "$OUT" "$DEBIAN_RUN_TOP"
if ! /usr/local/sbin/debian-run-mount top "$DEBIAN_RUN_TOP" ro,cache=loose; then
	echo "debian-run guest: cannot mount the repository at $DEBIAN_RUN_TOP" >"$RUN/output.txt"
	echo 125 >"$RUN/status"
	systemctl poweroff --no-block
	exit 1
fi

# The boot is finished once every job of the initial transaction is done
# (this unit's own start job ends when the script starts: Type=exec).
timeout 600 systemctl is-system-running --wait >"$RUN/system-state.txt" 2>&1
systemd-analyze time >"$RUN/boot-time.txt" 2>&1
# CLOCK_MONOTONIC at multi-user.target: kernel, initramfs and systemd.
systemctl show -p ActiveEnterTimestampMonotonic --value multi-user.target >"$RUN/multi-user-usec"
systemctl list-units --failed --no-legend --plain >"$RUN/failed-units.txt" 2>&1

start=$(date +%s)
(cd "$DEBIAN_RUN_TOP" && env -i \
	PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	HOME=/root TERM=dumb LANG=C.UTF-8 \
	ENVCRYPT_OUT="$OUT" ENVCRYPT_KVER="$DEBIAN_RUN_KVER" ENVCRYPT_TOP="$DEBIAN_RUN_TOP" \
	DEBIAN_RUN_BOOT="$DEBIAN_RUN_BOOT" \
	/bin/bash "$RUN/command" </dev/null >"$RUN/output.txt" 2>&1)
status=$?
echo "$(($(date +%s) - start))" >"$RUN/seconds"

journalctl -b --no-pager -o short-monotonic >"$RUN/journal.txt" 2>&1
dmesg >"$RUN/dmesg.txt" 2>&1
echo "$status" >"$RUN/status.tmp"
sync
mv "$RUN/status.tmp" "$RUN/status"
systemctl poweroff --no-block
