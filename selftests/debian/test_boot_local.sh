#!/bin/bash
# Boot a real Debian 12 (systemd as PID 1) with an envcrypt disk in
# /etc/envcrypttab under the local KMS, and its file system in /etc/fstab.
#
#   selftests/debian/test_boot_local.sh --kernel KVER
#
# On the host this makes (or reuses) the image of scripts/debian-image.sh
# and boots it twice through selftests/debian-run.sh on one copy-on-write
# overlay, with a fresh 64 MiB data disk as /dev/vdb:
#
#   boot 1 (prepare): `envcryptctl format /dev/vdb` on the image's own local
#     KMS (root key and keystore in /etc/envcrypt and /var/lib/envcrypt of
#     the overlay), attach, mkfs.ext4, a marker file written, detach; then
#     /etc/envcrypttab names the disk by UUID= as "data-one" (a '-', which
#     the unit name escapes as \x2d) and /etc/fstab mounts
#     /dev/mapper/data-one on /srv/data-one.
#   boot 2 (check): envcrypt-attach@data\x2done.service is active, the
#     mapping exists and is an envcrypt target, /srv/data-one is mounted from
#     it and the marker reads back, `systemctl --failed` is empty,
#     `systemd-analyze verify` passes on the units envcrypt-generator wrote
#     and on the fstab mount, and the journal has no error about envcrypt.
#
# Output: TAP; each boot's own checks under "boot N:", the boot times as
# comments.  Exit 0 if every check passed, 1 if not.  In the guest the same
# file runs as `test_boot_local.sh --guest prepare|check MARKER`.

# shellcheck source=selftests/lib/guest.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/guest.sh"
# shellcheck source=selftests/lib/debian-boot.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/debian-boot.sh"

NAME=data-one
MOUNTPOINT=/srv/data-one

# ---- guest side -----------------------------------------------------------

guest_prepare() {
	local marker=$1 json uuid
	expect_succeeds "envcryptctl format /dev/vdb (local KMS)" envcryptctl format /dev/vdb ||
		tap_bail "format" "exit 0" "failed"
	json=$(envcryptctl --json inspect /dev/vdb 2>&1)
	uuid=$(sed -n 's/.*"uuid": *"\([0-9a-fA-F-]*\)".*/\1/p' <<<"$json" | head -n 1)
	expect_match "the disk's uuid" '^[0-9a-fA-F-]{36}$' "$uuid" || tap_done
	expect_succeeds "attach for the first write" envcryptctl attach /dev/vdb prep || tap_done
	expect_succeeds "mkfs.ext4 on the mapping" mkfs.ext4 -q /dev/mapper/prep
	mkdir -p /mnt/prep
	if mount /dev/mapper/prep /mnt/prep; then
		echo "$marker" >/mnt/prep/marker
		sync
		expect_succeeds "unmount" umount /mnt/prep
	else
		tap_fail "mount the new file system" "mounted" "mount failed"
	fi
	expect_succeeds "detach" envcryptctl detach prep
	printf '# written by test_boot_local.sh\n%s UUID=%s\n' "$NAME" "$uuid" >/etc/envcrypttab
	printf '/dev/mapper/%s %s ext4 defaults 0 2\n' "$NAME" "$MOUNTPOINT" >>/etc/fstab
	mkdir -p "$MOUNTPOINT"
	sync
	tap_ok "envcrypttab: $NAME UUID=$uuid; fstab: /dev/mapper/$NAME on $MOUNTPOINT"
	echo "# keystore: $(find /etc/envcrypt /var/lib/envcrypt -type f 2>&1 | tr '\n' ' ')"
}

guest_check() {
	local marker=$1 unit mount_unit units seen status generated
	unit=$(systemd-escape --template=envcrypt-attach@.service "$NAME")
	mount_unit=$(systemd-escape --path --suffix=mount "$MOUNTPOINT")
	expect_eq "unit name of $NAME" 'envcrypt-attach@data\x2done.service' "$unit"
	expect_eq "$unit is active" active "$(systemctl is-active "$unit" 2>&1)" ||
		systemctl status --no-pager "$unit" 2>&1 | sed 's/^/#   /'
	expect_match "mapping $NAME is an envcrypt target" '^0 [0-9]+ envcrypt ' \
		"$(dmsetup table "$NAME" 2>&1)"
	expect_eq "$MOUNTPOINT is mounted from /dev/mapper/$NAME" "/dev/mapper/$NAME" \
		"$(findmnt -n -o SOURCE "$MOUNTPOINT" 2>&1)"
	expect_eq "$mount_unit is active" active "$(systemctl is-active "$mount_unit" 2>&1)"
	expect_eq "the marker written before the reboot reads back" "$marker" \
		"$(cat "$MOUNTPOINT/marker" 2>&1)"
	expect_eq "systemctl --failed is empty" "" \
		"$(systemctl list-units --failed --no-legend --plain 2>&1)"
	# What envcrypt-generator wrote, and the units it concerns.
	generated=$(find /run/systemd/generator* -path '*envcrypt*' 2>/dev/null | sort)
	echo "# generated: ${generated//$'\n'/ }"
	expect_match "envcrypt-generator wrote the drop-in of $unit" \
		"/run/systemd/generator[^ ]*/envcrypt-attach@data\\\\x2done\\.service\\.d/" "$generated"
	units=$(sed -n 's|^/run/systemd/generator[^/]*/\([^/]*\)/.*|\1|p' <<<"$generated" |
		sed -e 's/\.d$//' -e 's/\.requires$//' -e 's/\.wants$//' | sort -u)
	# shellcheck disable=SC2086 # one unit name a line, none with blanks
	seen=$(systemd-analyze verify --man=no --generators=yes $units "$mount_unit" 2>&1)
	status=$?
	expect_eq "systemd-analyze verify of ${units//$'\n'/ } $mount_unit" "0:" "$status:$seen"
	# The message and its sender, not the host name (envcrypt-guest).
	seen=$(journalctl -b -p err --no-pager -o short-monotonic 2>&1 |
		awk '{ line = $0; sub(/^\[[^]]*\] [^ ]+ /, ""); if (tolower($0) ~ /envcrypt/) print line }')
	expect_eq "no journal error about envcrypt" "" "$seen"
	journalctl -b --no-pager -o short-monotonic -u "$unit" 2>&1 | sed 's/^/# journal: /'
}

if [ "${1-}" = --guest ]; then
	case ${2-} in
	prepare) guest_prepare "${3:?}" ;;
	check) guest_check "${3:?}" ;;
	*) tap_bail "phase" "prepare or check" "'${2-}'" ;;
	esac
	tap_done
fi

# ---- host side ------------------------------------------------------------

if [ "${1-}" != --kernel ] || [ -z "${2-}" ]; then
	echo "usage: $0 --kernel KVER" >&2
	exit 2
fi
KVER=$2
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RUN_TIMEOUT=${DEBIAN_RUN_TIMEOUT:-900}

IMAGE=$("$TOP/scripts/debian-image.sh" --quiet "$KVER") ||
	tap_bail "image for $KVER" "scripts/debian-image.sh $KVER succeeds" "it failed (messages above)"
mkdir -p "$TOP/build/debian-run"
WORK=$(mktemp -d "$TOP/build/debian-run/boot_local-$KVER.XXXXXX") ||
	tap_bail "work directory" "created" "mktemp failed"
truncate -s 64M "$WORK/data.img"
MARKER=marker-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')

# boot N PHASE: one boot; its checks become ours, prefixed "boot N:".
boot() {
	local n=$1 phase=$2 status
	"$TOP/selftests/debian-run.sh" --kernel "$KVER" --image "$IMAGE" \
		--overlay "$WORK/overlay.qcow2" --disk "$WORK/data.img" \
		--out "$WORK/boot$n" --timeout "$RUN_TIMEOUT" -- \
		"$TOP/selftests/debian/test_boot_local.sh" --guest "$phase" "$MARKER" \
		>"$WORK/boot$n.tap" 2>"$WORK/boot$n.err"
	status=$?
	debian_boot_relay "$n" "$WORK/boot$n"
	debian_boot_multi_user "$n" "$WORK/boot$n" "$(head -n 1 "$WORK/boot$n/share/boot-time.txt")"
	debian_boot_finished "$n" "$phase" "$status"
}

echo "# kernel $KVER, image $IMAGE, work $WORK"
boot 1 prepare
boot 2 check
if [ "$TAP_FAILED" = 0 ]; then
	rm -rf "$WORK"
else
	echo "# evidence kept in $WORK"
fi
tap_done
