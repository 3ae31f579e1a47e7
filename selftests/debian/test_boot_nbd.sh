#!/bin/bash
# Boot a real Debian 12 (systemd as PID 1) with a `_netdev` envcrypt disk on
# a network block device, and check that what reaches the storage server is
# ciphertext only (issue 18).
#
#   selftests/debian/test_boot_nbd.sh --kernel KVER
#
# On the host this makes (or reuses) the image of scripts/debian-image.sh,
# exports a fresh sparse 64 MiB raw file with qemu-nbd on 127.0.0.1 (a free
# port, export name "envcrypt", --persistent; the guest reaches it as
# 10.0.2.2 through QEMU's user network) and boots three times through
# selftests/debian-run.sh on one overlay:
#
#   boot 1 (prepare): a drop-in gives nbd@nbd0.service (nbd-client's own
#     unit) the command line "nbd-client -N envcrypt 10.0.2.2 PORT
#     /dev/nbd0" (3.24 does not use port= of /etc/nbdtab), nbd goes in
#     /etc/modules-load.d, `systemctl start nbd@nbd0` connects it;
#     `envcryptctl format /dev/nbd0` on the image's local KMS, attach,
#     mkfs.ext4, a text marker and a 64 KiB random block (made on the host)
#     written, detach, disconnect; `systemctl enable nbd@nbd0` (its
#     RequiredBy=dev-nbd0.device: whatever waits for /dev/nbd0 connects it);
#     /etc/envcrypttab "nbd-data /dev/nbd0 _netdev", /etc/fstab mounts
#     /dev/mapper/nbd-data on /srv/nbd-data with _netdev; /var/log/journal
#     made so that boot 3 reads boot 2's shutdown.
#   boot 2 (check): nbd@nbd0 and envcrypt-attach@nbd\x2ddata.service are
#     active, the mapping is an envcrypt table on nbd0, udev marked nbd0
#     ENVCRYPT_NETDEV=1, the mount is mounted and both markers read back;
#     the attach unit is ordered as boot.rst documents for _netdev (After=
#     and Wants= network-online.target and remote-fs-pre.target (which is
#     active, so nbd@nbd0's Before= it counts), After= and BindsTo=
#     dev-nbd0.device, Before= envcrypt-remote.target, required by
#     envcrypt-remote.target and dev-mapper-nbd\x2ddata.device), the mount
#     after remote-fs-pre.target and before remote-fs.target, and this boot
#     ran them in that order (network online, then the NBD connection,
#     then the attach, then the mount); `systemctl --failed` empty;
#     `systemd-analyze verify` passes on the generated units and the
#     mount; no journal error about envcrypt or nbd.
#   boot 3 (after): boot 2's shutdown (`journalctl -b -1`) unmounted
#     /srv/nbd-data before the attach unit began to detach, detached it, and
#     disconnected nbd0 only after the detach was done; no I/O error.
#   qemu-nbd is stopped (it flushes the file) and the export's file checked:
#     the envcrypt header magic at offset 0 and more than 64 KiB of non-zero
#     4 KiB blocks (the disk was written), and neither the text marker nor
#     any 4 KiB block of the random block anywhere in it.
#
# Output: TAP; each boot's own checks under "boot N:", the boot times as
# comments.  Exit 0 if every check passed, 1 if not.  In the guest the same
# file runs as `test_boot_nbd.sh --guest prepare MARKER PATTERN PORT`,
# `--guest check MARKER PATTERN` and `--guest after`.

# shellcheck source=selftests/lib/guest.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/guest.sh"
# shellcheck source=selftests/lib/debian-boot.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/debian-boot.sh"

NAME="nbd-data"
MOUNTPOINT=/srv/nbd-data
EXPORT=envcrypt

# ---- guest side -----------------------------------------------------------

attach_unit() {
	systemd-escape --template=envcrypt-attach@.service "$NAME"
}

mount_unit() {
	systemd-escape --path --suffix=mount "$MOUNTPOINT"
}

# Wait (bounded) until /dev/nbd0 has a size: connected.
wait_connected() {
	local i
	for ((i = 0; i < 100; i++)); do
		[ "$(cat /sys/block/nbd0/size 2>/dev/null)" -gt 0 ] 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

guest_prepare() {
	local marker=$1 pattern=$2 port=$3
	expect_match "nbd-client is installed" '^1:3\.' \
		"$(dpkg-query -W -f='${Version}' nbd-client 2>&1)" || tap_done
	# bookworm's nbd-client 3.24 does not use port= of /etc/nbdtab (seen:
	# "Socket failed: Connection refused" for "nbd0 10.0.2.2 envcrypt
	# port=P", where "nbd-client -N envcrypt 10.0.2.2 P /dev/nbd0"
	# connects): the unit's command line names the port instead.
	mkdir -p /etc/systemd/system/nbd@nbd0.service.d
	printf '[Service]\nExecStart=\nExecStart=/sbin/nbd-client -N %s 10.0.2.2 %s /dev/nbd0\n' \
		"$EXPORT" "$port" >/etc/systemd/system/nbd@nbd0.service.d/50-port.conf
	expect_succeeds "systemctl daemon-reload" systemctl daemon-reload
	# Neither nbd-client nor nbd@.service loads the module (nbd-client's
	# init script did; 6.1's nbd.ko has no alias for its netlink family).
	echo nbd >/etc/modules-load.d/nbd.conf
	expect_succeeds "modprobe nbd" modprobe nbd || tap_done
	# nbd@.service orders itself after network-online.target but does not
	# pull it in; the boot did not need it so far.
	expect_succeeds "network-online.target reached" timeout 120 systemctl start network-online.target
	expect_succeeds "systemctl start nbd@nbd0 (nbd-client 10.0.2.2 port $port)" \
		timeout 60 systemctl start nbd@nbd0 || {
		systemctl status --no-pager nbd@nbd0 2>&1 | sed 's/^/#   /'
		tap_done
	}
	wait_connected || tap_bail "nbd0 connected" "a size in /sys/block/nbd0/size" \
		"$(cat /sys/block/nbd0/size 2>&1)"
	expect_eq "nbd0 is the 64 MiB export" 131072 "$(cat /sys/block/nbd0/size 2>&1)" || tap_done
	udevadm settle --timeout=30
	expect_succeeds "envcryptctl format /dev/nbd0 (local KMS)" envcryptctl format /dev/nbd0 ||
		tap_done
	expect_succeeds "attach for the first write" envcryptctl attach /dev/nbd0 prep || tap_done
	expect_succeeds "mkfs.ext4 on the mapping" mkfs.ext4 -q /dev/mapper/prep
	mkdir -p /mnt/prep
	if mount /dev/mapper/prep /mnt/prep; then
		echo "$marker" >/mnt/prep/marker
		expect_succeeds "the 64 KiB random block copied in" cp "$pattern" /mnt/prep/pattern.bin
		sync
		expect_succeeds "unmount" umount /mnt/prep
	else
		tap_fail "mount the new file system" "mounted" "mount failed"
	fi
	expect_succeeds "detach" envcryptctl detach prep
	expect_succeeds "systemctl stop nbd@nbd0 (disconnect)" timeout 60 systemctl stop nbd@nbd0
	expect_eq "nbd0 disconnected" 0 "$(cat /sys/block/nbd0/size 2>&1)"
	# RequiredBy=dev-nbd0.device (and its partitions): a job for the device
	# starts the connection.
	expect_succeeds "systemctl enable nbd@nbd0" systemctl enable nbd@nbd0
	printf '# written by test_boot_nbd.sh\n%s /dev/nbd0 _netdev\n' "$NAME" >/etc/envcrypttab
	printf '/dev/mapper/%s %s ext4 _netdev 0 2\n' "$NAME" "$MOUNTPOINT" >>/etc/fstab
	mkdir -p "$MOUNTPOINT" /var/log/journal
	sync
	tap_ok "envcrypttab: $NAME /dev/nbd0 _netdev; fstab: /dev/mapper/$NAME on $MOUNTPOINT, _netdev"
}

# PROPERTY of UNIT holds every one of WORDS (systemctl show quotes a name
# with a backslash, and doubles the backslash).
expect_has() {
	local unit=$1 prop=$2 value word quoted missing=
	shift 2
	value=$(systemctl show -p "$prop" --value "$unit" 2>&1)
	for word in "$@"; do
		quoted="\"${word//\\/\\\\}\""
		[[ " $value " == *" $word "* ]] || [[ " $value " == *" $quoted "* ]] || missing+=" $word"
	done
	if [ -z "$missing" ]; then
		tap_ok "$unit: $prop has $*"
	else
		tap_fail "$unit: $prop has $*" "also:$missing" "$value"
	fi
}

usec_of() {
	systemctl show -p "$2" --value "$1" 2>/dev/null
}

# The units ran in this order: A's activation before B's start.
expect_before() {
	local a=$1 a_prop=$2 b=$3 b_prop=$4 ta tb
	ta=$(usec_of "$a" "$a_prop")
	tb=$(usec_of "$b" "$b_prop")
	if [[ $ta =~ ^[1-9][0-9]*$ ]] && [[ $tb =~ ^[1-9][0-9]*$ ]] && [ "$ta" -le "$tb" ]; then
		tap_ok "$a ($a_prop $ta us) before $b ($b_prop $tb us)"
	else
		tap_fail "$a before $b" "$a_prop <= $b_prop, both set" "$ta, $tb"
	fi
}

guest_check() {
	local marker=$1 pattern=$2 unit mount generated units seen status
	unit=$(attach_unit)
	mount=$(mount_unit)
	expect_eq "unit names" 'envcrypt-attach@nbd\x2ddata.service srv-nbd\x2ddata.mount' "$unit $mount"
	expect_eq "nbd@nbd0.service is active" active "$(systemctl is-active nbd@nbd0.service 2>&1)"
	expect_eq "$unit is active" active "$(systemctl is-active "$unit" 2>&1)" ||
		systemctl status --no-pager "$unit" 2>&1 | sed 's/^/#   /'
	expect_match "mapping $NAME is an envcrypt target on 43:0 (nbd0)" '^0 [0-9]+ envcrypt 43:0 ' \
		"$(dmsetup table "$NAME" 2>&1)"
	expect_eq "mapping $NAME is on nbd0" " (nbd0)" \
		"$(dmsetup deps -o devname "$NAME" 2>&1 | sed 's/^.*dependencies[^:]*://')"
	expect_match "udev: nbd0 is an envcrypt disk of a network line" \
		"ENVCRYPT_NAME=$NAME.*ENVCRYPT_NETDEV=1" \
		"$(udevadm info -q property /dev/nbd0 2>&1 | grep '^ENVCRYPT_' | sort | tr '\n' ' ')"
	expect_eq "$MOUNTPOINT is mounted from /dev/mapper/$NAME" "/dev/mapper/$NAME" \
		"$(findmnt -n -o SOURCE "$MOUNTPOINT" 2>&1)"
	expect_eq "$mount is active" active "$(systemctl is-active "$mount" 2>&1)"
	expect_eq "the text marker reads back" "$marker" "$(cat "$MOUNTPOINT/marker" 2>&1)"
	expect_succeeds "the 64 KiB random block reads back" cmp "$pattern" "$MOUNTPOINT/pattern.bin"

	# The ordering boot.rst documents for _netdev lines, and fstab's _netdev.
	expect_has "$unit" After network-online.target remote-fs-pre.target dev-nbd0.device
	expect_has "$unit" Wants network-online.target remote-fs-pre.target
	# Passive: only the disk's Wants= makes nbd@nbd0's Before= count.
	expect_eq "remote-fs-pre.target is active" active \
		"$(systemctl is-active remote-fs-pre.target 2>&1)"
	# network-online.target means something only with a wait-online unit.
	expect_eq "systemd-networkd-wait-online.service ran" active \
		"$(systemctl is-active systemd-networkd-wait-online.service 2>&1)"
	expect_has "$unit" BindsTo dev-nbd0.device
	expect_has "$unit" Before envcrypt-remote.target 'blockdev@dev-mapper-nbd\x2ddata.target'
	expect_has "$unit" RequiredBy envcrypt-remote.target 'dev-mapper-nbd\x2ddata.device'
	expect_has "$mount" After remote-fs-pre.target network-online.target 'blockdev@dev-mapper-nbd\x2ddata.target'
	expect_has "$mount" Before remote-fs.target
	# (its Before=dev-nbd0.device is dropped by systemd 252: ".device
	# units cannot be delayed")
	expect_has nbd@nbd0.service Before remote-fs-pre.target
	expect_has envcrypt-remote.target WantedBy remote-fs.target
	# What this boot did: in that order.
	expect_before network-online.target ActiveEnterTimestampMonotonic \
		nbd@nbd0.service InactiveExitTimestampMonotonic
	expect_before nbd@nbd0.service ActiveEnterTimestampMonotonic \
		"$unit" InactiveExitTimestampMonotonic
	expect_before remote-fs-pre.target ActiveEnterTimestampMonotonic \
		"$unit" InactiveExitTimestampMonotonic
	expect_before "$unit" ActiveEnterTimestampMonotonic \
		"$mount" InactiveExitTimestampMonotonic
	expect_before "$mount" ActiveEnterTimestampMonotonic \
		remote-fs.target ActiveEnterTimestampMonotonic
	expect_eq "systemctl --failed is empty" "" \
		"$(systemctl list-units --failed --no-legend --plain 2>&1)"

	generated=$(find /run/systemd/generator* -path '*envcrypt*' 2>/dev/null | sort)
	echo "# generated: ${generated//$'\n'/ }"
	expect_match "envcrypt-generator wrote the drop-in of $unit" \
		"/run/systemd/generator[^ ]*/envcrypt-attach@nbd\\\\x2ddata\\.service\\.d/50-envcrypttab.conf" \
		"$generated"
	units=$(sed -n 's|^/run/systemd/generator[^/]*/\([^/]*\)/.*|\1|p' <<<"$generated" |
		sed -e 's/\.d$//' -e 's/\.requires$//' -e 's/\.wants$//' | sort -u)
	# shellcheck disable=SC2086 # one unit name a line, none with blanks
	seen=$(systemd-analyze verify --man=no --generators=yes $units "$mount" 2>&1)
	status=$?
	# nbd-client's unit, pulled in by dev-nbd0.device, not ours.
	seen=$(grep -vxF 'nbd@nbd0.service: Dependency Before=dev-nbd0.device ignored (.device units cannot be delayed)' <<<"$seen")
	expect_eq "systemd-analyze verify of ${units//$'\n'/ } $mount" "0:" "$status:$seen"
	seen=$(journalctl -b -p err --no-pager -o short-monotonic 2>&1 |
		awk '{ line = $0; sub(/^\[[^]]*\] [^ ]+ /, ""); if (tolower($0) ~ /envcrypt|nbd/) print line }')
	expect_eq "no journal error about envcrypt or nbd" "" "$seen"
	unit_journal -b "$unit" | sed 's/^/# journal: /'
}

guest_after() {
	local boots unit mount nbd out unmounted stopping stopped disconnecting seen
	unit=$(attach_unit)
	mount=$(mount_unit)
	nbd=nbd@nbd0.service
	boots=$(journalctl --list-boots --no-pager 2>&1 | grep -c '^ *-\?[0-9]')
	expect_match "the journal is persistent: boot 2 (at least) and this one" '^[23]$' "$boots" ||
		tap_done
	out=$(unit_journal -b-1 "$mount")$'\n'$(unit_journal -b-1 "$unit")$'\n'$(unit_journal -b-1 "$nbd")
	grep -Ei 'stop|unmount|detach|deactivat|disconnect' <<<"$out" | sed 's/^/# boot 2: /'
	unmounted=$(first_usec "$(unit_journal -b-1 "$mount")" "Unmounted ")
	stopping=$(first_usec "$(unit_journal -b-1 "$unit")" "]: Stopping ")
	stopped=$(first_usec "$(unit_journal -b-1 "$unit")" "]: Stopped |Deactivated successfully")
	disconnecting=$(first_usec "$(unit_journal -b-1 "$nbd")" "]: Stopping ")
	echo "# boot 2: unmounted $unmounted us, detach started $stopping us, done $stopped us, nbd0 disconnect started $disconnecting us"
	if [ -n "$unmounted" ] && [ -n "$stopping" ] && [ "$unmounted" -lt "$stopping" ]; then
		tap_ok "boot 2's shutdown unmounted $MOUNTPOINT before detaching $NAME"
	else
		tap_fail "boot 2's shutdown unmounted $MOUNTPOINT before detaching $NAME" \
			"'Unmounted' of $mount before 'Stopping' of $unit" "$unmounted, $stopping"
	fi
	if [ -n "$stopped" ] && [ -n "$disconnecting" ] && [ "$stopped" -le "$disconnecting" ]; then
		tap_ok "boot 2's shutdown disconnected nbd0 after $NAME was detached"
	else
		tap_fail "boot 2's shutdown disconnected nbd0 after $NAME was detached" \
			"'Stopped' of $unit before 'Stopping' of $nbd" "$stopped, $disconnecting"
	fi
	expect_eq "boot 2's shutdown detached $NAME (detach-all's lines)" \
		"$NAME: detached|detach-all: 1 detached" \
		"$(journalctl -b-1 --no-pager -o cat "_SYSTEMD_UNIT=$unit" 2>&1 |
			grep -E '^[^ ]+: detached |^detach-all: ' | sed 's/^\([^ ]*: detached\) .*/\1/' | paste -sd '|')"
	seen=$(journalctl -b-1 --no-pager -o short-monotonic 2>&1 |
		grep -Ei 'I/O error|device or resource busy|target is busy|in use|block nbd0: (Receive|Send|Connection|Attempted)')
	expect_eq "boot 2's journal: no I/O error, no busy device, no NBD connection error" "" "$seen"
	expect_eq "this boot: $unit is active again" active "$(systemctl is-active "$unit" 2>&1)"
}

if [ "${1-}" = --guest ]; then
	case ${2-} in
	prepare) guest_prepare "${3:?}" "${4:?}" "${5:?}" ;;
	check) guest_check "${3:?}" "${4:?}" ;;
	after) guest_after ;;
	*) tap_bail "phase" "prepare, check or after" "'${2-}'" ;;
	esac
	tap_done
fi

# ---- host side ------------------------------------------------------------

debian_boot_host "$@"
command -v qemu-nbd >/dev/null || tap_bail "qemu-nbd" "installed (qemu-utils, make deps)" "missing"
command -v python3 >/dev/null || tap_bail "python3" "installed" "missing"

debian_boot_image
# Under build/: the guest sees the repository (read-only) at the same path,
# so it reads the random block from here.
debian_boot_work boot_nbd
EXPORT_FILE=$WORK/export.img
truncate -s 64M "$EXPORT_FILE"
head -c 65536 /dev/urandom >"$WORK/pattern.bin"
MARKER=marker-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')

# qemu-nbd on a free port of 127.0.0.1: a port the kernel gave out, tried
# until qemu-nbd listens on it (another process may take it in between).
NBD_PID=
start_nbd() {
	local try i
	for try in 1 2 3; do
		PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
		qemu-nbd --persistent --shared=2 -f raw -x "$EXPORT" --bind 127.0.0.1 --port "$PORT" \
			"$EXPORT_FILE" >"$WORK/qemu-nbd.$try.log" 2>&1 &
		NBD_PID=$!
		for ((i = 0; i < 100; i++)); do
			if [ -n "$(ss -Hltn "sport = :$PORT" 2>/dev/null)" ]; then
				echo "# qemu-nbd (pid $NBD_PID) exports $EXPORT_FILE as '$EXPORT' on 127.0.0.1:$PORT"
				return 0
			fi
			kill -0 "$NBD_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill "$NBD_PID" 2>/dev/null
		wait "$NBD_PID" 2>/dev/null
		sed "s/^/# qemu-nbd try $try: /" "$WORK/qemu-nbd.$try.log"
	done
	NBD_PID=
	return 1
}

# Stop qemu-nbd (SIGTERM: it flushes and exits), bounded.
stop_nbd() {
	local i
	[ -n "$NBD_PID" ] || return 0
	kill "$NBD_PID" 2>/dev/null
	for ((i = 0; i < 100; i++)); do
		kill -0 "$NBD_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$NBD_PID" 2>/dev/null && kill -KILL "$NBD_PID" 2>/dev/null
	wait "$NBD_PID" 2>/dev/null
	NBD_PID=
}
on_exit stop_nbd
start_nbd || tap_bail "qemu-nbd listening on 127.0.0.1" "listening within 10 s" "3 tries failed"

# boot N PHASE ARGS...: one boot; its checks become ours, prefixed "boot N:".
boot() {
	local n=$1 phase=$2 status
	shift 2
	"$TOP/selftests/debian-run.sh" --kernel "$KVER" --image "$IMAGE" \
		--overlay "$WORK/overlay.qcow2" \
		--out "$WORK/boot$n" --timeout "$RUN_TIMEOUT" -- \
		"$TOP/selftests/debian/test_boot_nbd.sh" --guest "$phase" "$@" \
		>"$WORK/boot$n.tap" 2>"$WORK/boot$n.err"
	status=$?
	debian_boot_relay "$n" "$WORK/boot$n"
	debian_boot_multi_user "$n" "$WORK/boot$n" "$(head -n 1 "$WORK/boot$n/share/boot-time.txt"); $(cat "$WORK/boot$n/seconds" 2>/dev/null) s on the host"
	debian_boot_finished "$n" "$phase" "$status"
}

echo "# kernel $KVER, image $IMAGE, work $WORK"
boot 1 prepare "$MARKER" "$WORK/pattern.bin" "$PORT"
boot 2 check "$MARKER" "$WORK/pattern.bin"
boot 3 after
stop_nbd

# The export's file, as the storage server holds it.
seen=$(python3 - "$EXPORT_FILE" "$WORK/pattern.bin" "$MARKER" <<'EOF'
import sys
data = open(sys.argv[1], "rb").read()
pattern = open(sys.argv[2], "rb").read()
marker = sys.argv[3].encode()
blocks = [pattern[i:i + 4096] for i in range(0, len(pattern), 4096)]
found = sum(1 for b in blocks if b in data)
zero = bytes(4096)
nonzero = sum(1 for i in range(0, len(data), 4096) if data[i:i + 4096] != zero)
print(data[:8].hex(), nonzero, found, data.count(marker))
EOF
)
read -r magic nonzero found markers <<<"$seen"
echo "# export file: first 8 bytes $magic, $nonzero non-zero 4 KiB blocks of 16384, $found of 16 random blocks found, $markers text markers found"
expect_eq "the export starts with the envcrypt header magic (ENVCRYPT)" 454e564352595054 "$magic"
if [[ $nonzero =~ ^[0-9]+$ ]] && [ "$nonzero" -gt 16 ]; then
	tap_ok "the export was written: $nonzero non-zero 4 KiB blocks (more than the 16 of the random block)"
else
	tap_fail "the export was written" "more than 16 non-zero 4 KiB blocks" "'$nonzero'"
fi
expect_eq "no 4 KiB block of the random block in the export (ciphertext only)" 0 "$found"
expect_eq "the text marker is not in the export" 0 "$markers"

if [ "$TAP_FAILED" = 0 ]; then
	rm -rf "$WORK"
else
	echo "# evidence kept in $WORK"
fi
tap_done
