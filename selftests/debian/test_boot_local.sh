#!/bin/bash
# Boot a real Debian 12 (systemd as PID 1) with an envcrypt disk in
# /etc/envcrypttab under the local KMS, and its file system in /etc/fstab.
#
#   selftests/debian/test_boot_local.sh --kernel KVER
#
# On the host this makes (or reuses) the image of scripts/debian-image.sh
# and boots it three times through selftests/debian-run.sh on one
# copy-on-write overlay, with a fresh 64 MiB data disk as /dev/vdb and a
# fresh 512 MiB disk for /var as /dev/vdc:
#
#   boot 1 (prepare): `envcryptctl format /dev/vdb` on the image's own local
#     KMS (root key and keystore created in /etc/envcrypt and
#     /var/lib/envcrypt of the overlay), attach, mkfs.ext4, a random marker
#     file written, detach; /etc/envcrypttab names the disk by UUID= as
#     "data-one" (a '-', which the unit name escapes as \x2d) and /etc/fstab
#     mounts /dev/mapper/data-one on /srv/data-one.  Then a copy of /var
#     goes on /dev/vdc (ext4), fstab mounts it on /var, and the root's fstab
#     line becomes read-only ("ro,errors=remount-ro").
#   boot 2 (rovar), with "ro" on the kernel command line: the root is
#     read-only and /var is /dev/vdc; envcrypt-attach@data\x2done.service
#     needs /var's keystore (RequiresMountsFor=) and started after var.mount
#     was mounted; it is active, the mapping is an envcrypt target,
#     /srv/data-one is mounted from it and the marker reads back; the
#     attach's Decrypt line is in /var's audit log, nothing is kept in
#     /run/envcrypt/audit-deferred; no unit failed; `systemd-analyze
#     verify` passes on the units envcrypt-generator wrote and on the fstab
#     mount; no journal error about envcrypt.  At its end /var's fstab line
#     goes (the root remounted read-write for the edit, then read-only).
#   boot 3 (deferred), "ro" again: /var is the read-only root's own (the
#     keystore as boot 1 left it); the disk still attaches and its file
#     system mounts, the attach's audit line is kept, one file in
#     /run/envcrypt/audit-deferred/*/, and is not in the log yet; once the
#     root is remounted read-write, the next local KMS operation
#     (describe-key) writes it: a Decrypt line for the disk whose
#     details.deferred_time is set, the kept file is gone, and
#     `envcryptctl kms audit --verify` passes.
#
# Output: TAP; each boot's own checks under "boot N:", the boot times as
# comments.  Exit 0 if every check passed, 1 if not.  In the guest the same
# file runs as `test_boot_local.sh --guest prepare|rovar|deferred MARKER`.

# shellcheck source=selftests/lib/guest.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/guest.sh"
# shellcheck source=selftests/lib/debian-boot.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/debian-boot.sh"

NAME=data-one
MOUNTPOINT=/srv/data-one
# The local KMS's audit log (its keystore directory's default).
AUDIT_LOG=/var/lib/envcrypt/kms/audit.log
DEFERRED=/run/envcrypt/audit-deferred

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
	echo "$uuid" >/root/test-boot-local-uuid
	# The disk's Decrypt lines so far (format and this attach): boots 2 and
	# 3 each add one, to /var's copy and to the root's.
	audit_lines "$AUDIT_LOG" "$uuid" Decrypt | wc -l >/root/test-boot-local-decrypts
	# /var on a disk of its own for boot 2; the root keeps its copy (boot 3).
	expect_succeeds "mkfs.ext4 /dev/vdc for /var" mkfs.ext4 -q -L var /dev/vdc
	mkdir -p /mnt/var
	expect_succeeds "mount /dev/vdc" mount /dev/vdc /mnt/var || tap_done
	expect_succeeds "copy /var to /dev/vdc" cp -a /var/. /mnt/var/
	expect_succeeds "unmount /dev/vdc" umount /mnt/var
	printf '/dev/vdc /var ext4 defaults 0 2\n' >>/etc/fstab
	sed -i 's|^\(/dev/vda[[:space:]]\+/[[:space:]]\+ext4[[:space:]]\+\)errors=remount-ro|\1ro,errors=remount-ro|' /etc/fstab
	sync
	sed 's/^/# fstab: /' /etc/fstab
	expect_match "fstab: the root read-only" '^/dev/vda[[:space:]]+/[[:space:]]+ext4[[:space:]]+ro,errors=remount-ro' \
		"$(grep '^/dev/vda' /etc/fstab)"
}

# The envcrypt units in `systemctl --failed` (the others are shown).
failed_envcrypt_units() {
	local failed
	failed=$(systemctl list-units --failed --no-legend --plain 2>&1 | awk '{ print $1 }')
	echo "# failed units: ${failed//$'\n'/ }" >&2
	grep -i envcrypt <<<"$failed"
}

# The audit lines of LOG about the disk UUID and operation OP.
audit_lines() { # audit_lines LOG UUID OP
	grep -F "\"disk\":\"$2\"" "$1" 2>/dev/null | grep -F "\"operation\":\"$3\""
}

# The checks of boots 2 and 3: the disk attached at boot and mounted.
check_attached() {
	local marker=$1 unit mount_unit
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
	expect_match "the root is read-only" '^ro(,|$)' "$(findmnt -n -o OPTIONS / 2>&1)"
}

guest_rovar() {
	local marker=$1 unit mount_unit units seen status generated uuid mounted started before
	unit=$(systemd-escape --template=envcrypt-attach@.service "$NAME")
	mount_unit=$(systemd-escape --path --suffix=mount "$MOUNTPOINT")
	uuid=$(cat /root/test-boot-local-uuid 2>&1)
	check_attached "$marker"
	expect_eq "/var is mounted from /dev/vdc" /dev/vdc "$(findmnt -n -o SOURCE /var 2>&1)"
	expect_match "$unit needs the keystore's mount (RequiresMountsFor=)" \
		'(^| )/var/lib/envcrypt' "$(systemctl show -p RequiresMountsFor --value "$unit" 2>&1)"
	mounted=$(first_usec "$(unit_journal -b var.mount)" 'Mounted ')
	started=$(first_usec "$(unit_journal -b "$unit")" 'Starting ')
	echo "# var.mount mounted at $mounted us, $unit starting at $started us"
	if [ -n "$mounted" ] && [ -n "$started" ] && [ "$mounted" -lt "$started" ]; then
		tap_ok "$unit started after /var was mounted"
	else
		tap_fail "$unit started after /var was mounted" "'Mounted' of var.mount before 'Starting' of $unit" \
			"$mounted, $started"
	fi
	before=$(cat /root/test-boot-local-decrypts 2>&1)
	expect_eq "the attach's Decrypt line is in /var's audit log ($before before), not deferred" \
		"$((before + 1)) 0 " \
		"$(audit_lines "$AUDIT_LOG" "$uuid" Decrypt | wc -l) $(audit_lines "$AUDIT_LOG" "$uuid" Decrypt | tail -n 1 | grep -c deferred_time) $(find "$DEFERRED" -type f 2>/dev/null)"
	expect_eq "no envcrypt unit failed" "" "$(failed_envcrypt_units)"
	# The message and its sender, not the host name (envcrypt-guest).
	seen=$(journalctl -b -p err --no-pager -o short-monotonic 2>&1 |
		awk '{ line = $0; sub(/^\[[^]]*\] [^ ]+ /, ""); if (tolower($0) ~ /envcrypt/) print line }')
	expect_eq "no journal error about envcrypt" "" "$seen"
	journalctl -b --no-pager -o short-monotonic -u "$unit" 2>&1 | sed 's/^/# journal: /'
	# Boot 3: /var is the root's own again.
	expect_succeeds "remount the root read-write" mount -o remount,rw /
	# systemd-analyze verify needs a writable /tmp, on the root here.
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
	sed -i '\|^/dev/vdc[[:space:]]|d' /etc/fstab
	sync
	mount -o remount,ro / || echo "# the root stays read-write until the shutdown"
	expect_eq "fstab has no /var line" "" "$(grep '^/dev/vdc' /etc/fstab)"
}

guest_deferred() {
	local marker=$1 uuid kept out before
	uuid=$(cat /root/test-boot-local-uuid 2>&1)
	check_attached "$marker"
	expect_eq "/var is on the root" /dev/vda "$(findmnt -n -o SOURCE --target /var/lib/envcrypt 2>&1)"
	kept=$(find "$DEFERRED" -type f 2>&1)
	echo "# kept: $kept"
	expect_match "the attach's audit line is kept in $DEFERRED (one file)" "^$DEFERRED/[0-9a-f]{16}/[^ ]+\$" "$kept"
	expect_eq "and not in the log yet" 0 "$(audit_lines "$AUDIT_LOG" "$uuid" Decrypt | grep -c deferred_time)"
	expect_eq "no envcrypt unit failed" "" "$(failed_envcrypt_units)"
	expect_succeeds "remount the root read-write" mount -o remount,rw /
	out=$(envcryptctl kms describe-key alias/acs/ecs 2>&1)
	expect_eq "kms describe-key alias/acs/ecs (a local KMS operation) succeeds" 0 "$?" ||
		echo "#   ${out//$'\n'/$'\n'#   }"
	before=$(cat /root/test-boot-local-decrypts 2>&1)
	expect_eq "the kept line is now in the log: the disk's Decrypt lines, of them with deferred_time" \
		"$((before + 1)) 1" \
		"$(audit_lines "$AUDIT_LOG" "$uuid" Decrypt | wc -l) $(audit_lines "$AUDIT_LOG" "$uuid" Decrypt | grep -c '"deferred_time":"')"
	expect_eq "the kept file is gone" "" "$(find "$DEFERRED" -type f 2>&1)"
	out=$(envcryptctl kms audit --verify 2>&1)
	expect_eq "kms audit --verify passes" 0 "$?" || echo "#   ${out//$'\n'/$'\n'#   }"
	audit_lines "$AUDIT_LOG" "$uuid" Decrypt | tail -n 1 | sed 's/^/# audit: /'
}

if [ "${1-}" = --guest ]; then
	case ${2-} in
	prepare) guest_prepare "${3:?}" ;;
	rovar) guest_rovar "${3:?}" ;;
	deferred) guest_deferred "${3:?}" ;;
	*) tap_bail "phase" "prepare, rovar or deferred" "'${2-}'" ;;
	esac
	tap_done
fi

# ---- host side ------------------------------------------------------------

debian_boot_host "$@"

debian_boot_image
debian_boot_work boot_local
truncate -s 64M "$WORK/data.img"
truncate -s 512M "$WORK/var.img"
MARKER=marker-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')

# boot N PHASE [DEBIAN-RUN ARGS]: one boot; its checks become ours,
# prefixed "boot N:".
boot() {
	local n=$1 phase=$2 status
	shift 2
	"$TOP/selftests/debian-run.sh" --kernel "$KVER" --image "$IMAGE" \
		--overlay "$WORK/overlay.qcow2" --disk "$WORK/data.img" --disk "$WORK/var.img" "$@" \
		--out "$WORK/boot$n" --timeout "$RUN_TIMEOUT" -- \
		"$TOP/selftests/debian/test_boot_local.sh" --guest "$phase" "$MARKER" \
		>"$WORK/boot$n.tap" 2>"$WORK/boot$n.err"
	status=$?
	debian_boot_relay "$n" "$WORK/boot$n"
	debian_boot_multi_user "$n" "$WORK/boot$n" "$(head -n 1 "$WORK/boot$n/share/boot-time.txt")"
	debian_boot_finished "$n" "$phase" "$status"
}

echo "# kernel $KVER, image $IMAGE, work $WORK"
boot 1 prepare --append rw
boot 2 rovar --append ro
boot 3 deferred --append ro
if [ "$TAP_FAILED" = 0 ]; then
	rm -rf "$WORK"
else
	echo "# evidence kept in $WORK"
fi
tap_done
