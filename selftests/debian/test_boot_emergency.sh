#!/bin/bash
# A boot that stops in emergency mode fails at once and says why: the
# test harness's own promise (scripts/debian-image.sh's debian-run-shell,
# selftests/debian-run.sh), which every other booted test relies on to turn
# a broken boot into a failure with its reason instead of a 15-minute wait.
#
#   selftests/debian/test_boot_emergency.sh --kernel KVER
#
# Two boots of the image of scripts/debian-image.sh on one overlay:
#
#   boot 1 (prepare): /etc/fstab gets a line for a file system whose device
#     never appears (LABEL=envcrypt-nothere, x-systemd.device-timeout=3s,
#     no nofail), so the next boot's local-fs.target fails.
#   boot 2: the guest stops in emergency mode.  Checks, on the host:
#     debian-run.sh exits 1 with "guest stopped in emergency mode before
#     the test finished", within EMERGENCY_LIMIT seconds (not its
#     time-out); its stderr holds the shell's report between the "the boot
#     stopped" and "powering off" lines, naming the device's time-out and
#     local-fs.target's failed dependency; the guest powered off (QEMU exited by
#     itself, no "killed" verdict); the test command never ran (no status);
#     and debian_boot_why's one line quotes the report.
#
# Output: TAP.  Exit 0 if every check passed, 1 if not.  In the guest the
# same file runs as `test_boot_emergency.sh --guest prepare`.

# shellcheck source=selftests/lib/guest.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/guest.sh"
# shellcheck source=selftests/lib/debian-boot.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/debian-boot.sh"

LABEL=envcrypt-nothere
# The device unit systemd waits for, as systemd-escape --path names it.
DEVICE_UNIT='dev-disk-by\x2dlabel-envcrypt\x2dnothere.device'
# Boot 2 reaches emergency mode about 3 s after its units are loaded, and
# the shell powers off once udev settles: about a minute under TCG on a
# loaded host, against debian-run's 900 s time-out.
EMERGENCY_LIMIT=300

# ---- guest side -----------------------------------------------------------

if [ "${1-}" = --guest ]; then
	case ${2-} in
	prepare)
		mkdir -p /mnt/nothere
		echo "LABEL=$LABEL /mnt/nothere ext4 x-systemd.device-timeout=3s 0 2" >>/etc/fstab
		sync
		expect_match "fstab names a device that never appears" "^LABEL=$LABEL " \
			"$(grep "$LABEL" /etc/fstab)"
		;;
	*) tap_bail "phase" "prepare" "'${2-}'" ;;
	esac
	tap_done
fi

# ---- host side ------------------------------------------------------------

debian_boot_host "$@"

debian_boot_image
debian_boot_work boot_emergency

# run_boot N PHASE: one boot on the overlay; sets STATUS and SECONDS_TAKEN.
run_boot() {
	local n=$1 phase=$2 started=$SECONDS
	"$TOP/selftests/debian-run.sh" --kernel "$KVER" --image "$IMAGE" \
		--overlay "$WORK/overlay.qcow2" --out "$WORK/boot$n" --timeout "$RUN_TIMEOUT" -- \
		"$TOP/selftests/debian/test_boot_emergency.sh" --guest "$phase" \
		>"$WORK/boot$n.tap" 2>"$WORK/boot$n.err"
	STATUS=$?
	SECONDS_TAKEN=$((SECONDS - started))
}

echo "# kernel $KVER, image $IMAGE, work $WORK"
run_boot 1 prepare
debian_boot_relay 1 "$WORK/boot1"
debian_boot_finished 1 prepare "$STATUS"

run_boot 2 prepare
err=$(tr -d '\r' <"$WORK/boot2.err")
sed 's/^/# boot 2: /' "$WORK/boot2.err"
expect_eq "boot 2: debian-run.sh exits 1" 1 "$STATUS"
# 6.12.95+deb12-amd64: the '+' and the dots as themselves.
kver_re=${KVER//./\\.}
kver_re=${kver_re//+/\\+}
expect_match "boot 2: its verdict is emergency mode" \
	"^debian-run: kernel $kver_re: guest stopped in emergency mode before the test finished \(no status; console log in " \
	"$(grep '^debian-run: kernel ' <<<"$err" | tail -n 1)"
if [ "$SECONDS_TAKEN" -le "$EMERGENCY_LIMIT" ]; then
	tap_ok "boot 2: failed after $SECONDS_TAKEN s, not at the $RUN_TIMEOUT s time-out (at most $EMERGENCY_LIMIT)"
else
	tap_fail "boot 2: failed well before the time-out" "at most $EMERGENCY_LIMIT s" "$SECONDS_TAKEN s"
fi
report=$(sed -n '/^debian-run:   debian-run: emergency mode: the boot stopped/,/^debian-run:   debian-run: emergency mode: powering off/p' <<<"$err")
expect_eq "boot 2: the shell's report is on stderr, opened and closed" \
	"debian-run:   debian-run: emergency mode: the boot stopped; failed units and errors:|debian-run:   debian-run: emergency mode: powering off" \
	"$(sed -n '1p;$p' <<<"$report" | paste -s -d '|')"
expect_match "boot 2: the report names the device's time-out" \
	"Timed out waiting for device ${DEVICE_UNIT//\\/\\\\}" "$report"
expect_match "boot 2: the report names local-fs.target, stopped by the mount's failure" \
	"Dependency failed for local-fs\.target" "$report"
expect_eq "boot 2: the test command never ran (no status)" "absent" \
	"$([ -s "$WORK/boot2/share/status" ] && echo present || echo absent)"
expect_match "boot 2: the guest powered itself off" "reboot: Power down" \
	"$(tr -d '\r' <"$WORK/boot2/console.txt" | grep -a 'reboot: Power down')"
why=$(debian_boot_why "$WORK/boot2")
echo "# debian_boot_why: $why"
expect_match "boot 2: debian_boot_why quotes verdict and report" \
	"guest stopped in emergency mode.*; console: .*Timed out waiting for device" "$why"
if [ "$TAP_FAILED" = 0 ]; then
	rm -rf "$WORK"
else
	echo "# evidence kept in $WORK"
fi
tap_done
