#!/bin/bash
# Hot-plug with the real systemd-udevd and the shipped rules
# (helper/udev/61-envcrypt.rules, installed into /run/udev/rules.d): a disk
# formatted under the service key and listed in envcrypttab by UUID= is
# hot-added as a loop device and appears as /dev/mapper/<name> within 60 s
# with the data written before; the time from losetup to the mapper node is
# the hot-plug attach latency (printed, two rounds, and saved to
# $ENVCRYPT_OUT/hotplug-latency.txt).  udev marks the device ID_FS_TYPE=
# envcrypt, ID_FS_USAGE=crypto, ENVCRYPT_UUID, /dev/disk/by-envcrypt-uuid/.
# Removing the backing device leaves no stale mapping: a SCSI disk
# (scsi_debug) deleted while attached sends a remove event, and the mapping
# is gone within 60 s (the same disk hot-added again attaches again).
# losetup -d on a loop device the mapping holds sends no event (the kernel
# marks it auto-clear); the mapping keeps reading the disk, and detach-all
# frees the loop device.  A disk listed by path attaches too; an unlisted
# envcrypt disk, a netdev disk and an image attached by hand (the helper's
# own auto-clear loop device) are identified but never attached or detached
# by udev -- until [boot] auto_attach = true, when the unlisted disk
# attaches as envcrypt-<uuid> on its next event (not the netdev one).
#
# The guest runs no systemd, so this exercises the rules' documented RUN
# fallback (TEST!="/run/systemd/system"); the SYSTEMD_WANTS path needs
# systemd as PID 1 and is not exercised here.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"
. "$ENVCRYPT_TOP/helper/tests/guest_helper.sh"

BOUND_MS=60000
LATENCY_FILE=$ENVCRYPT_OUT/hotplug-latency.txt

helper_setup
modprobe loop
TAB=$HELPER_DIR/envcrypttab
: >"$TAB"

# The shipped rules with the build's envcryptctl, and the test's config and
# table in every block device's environment (udev gives programs the
# device's properties as their environment).
install_udev_rules "$TAB"

now_ms() {
	echo $(($(date +%s%N) / 1000000))
}

# Waits until "test ARGS..." holds, at most BOUND_MS; prints the ms it took.
wait_for() {
	local start elapsed
	start=$(now_ms)
	while ! test "$@"; do
		elapsed=$(($(now_ms) - start))
		[ "$elapsed" -lt "$BOUND_MS" ] || { echo "$elapsed"; return 1; }
		sleep 0.02
	done
	echo $(($(now_ms) - start))
}

new_image() { # new_image NAME MiB: a file in HELPER_DIR
	truncate -s "${2}M" "$HELPER_DIR/$1.img" && echo "$HELPER_DIR/$1.img"
}

uuid_of() {
	"$ENVCTL" --json inspect "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["uuid"])'
}

mappings() {
	dmsetup ls --target envcrypt 2>/dev/null | awk '$1 != "No" { print $1 }' | sort | tr '\n' ' '
}

# The disk: formatted as an image file, data written through a mapping of
# the helper's own (auto-clear) loop device, which udev must leave alone.
hot_img=$(new_image hot 32)
expect_succeeds "format under the service key" "$ENVCTL" format "$hot_img" || tap_done
uuid=$(uuid_of "$hot_img")
cat >"$TAB" <<EOF
# hot-plug test
hot      UUID=$uuid
EOF
head -c 4M /dev/urandom >"$HELPER_DIR/payload"
expect_succeeds "image attached by hand" "$ENVCTL" attach "$hot_img" byhand || tap_done
detach_at_exit byhand
dd if="$HELPER_DIR/payload" of=/dev/mapper/byhand bs=1M oflag=direct status=none
udevadm settle --timeout=60
expect_eq "udev leaves the helper's own loop device alone (no 'hot' mapping)" "byhand " "$(mappings)"
expect_succeeds "detach the hand-made mapping" "$ENVCTL" detach byhand
udevadm settle --timeout=60
expect_eq "no mapping left after the hand-made detach" "" "$(mappings)"

latencies=()
for round in 1 2; do
	start=$(now_ms)
	loop=$(losetup --find --show "$hot_img") || tap_bail "losetup" "a loop device" "$loop"
	on_exit losetup -d "$loop"
	if waited=$(wait_for -b /dev/mapper/hot); then
		latency=$(($(now_ms) - start))
		latencies+=("$latency")
		tap_ok "round $round: /dev/mapper/hot appears ${latency} ms after losetup (bound ${BOUND_MS} ms)"
	else
		tap_fail "round $round: /dev/mapper/hot appears within ${BOUND_MS} ms" "a mapping" \
			"none after $waited ms; mappings: $(mappings); udev: $(udevadm info "$loop" 2>&1 | grep -E 'ENVCRYPT|ID_FS')"
		tap_done
	fi
	udevadm settle --timeout=60
	expect_eq "round $round: the mapping reads the data written before" \
		"$(sha256sum <"$HELPER_DIR/payload")" "$(head -c 4M /dev/mapper/hot | sha256sum)"
	if [ "$round" = 1 ]; then
		props=$(udevadm info --query=property "$loop")
		for expected in ID_FS_TYPE=envcrypt ID_FS_USAGE=crypto "ENVCRYPT_UUID=$uuid" ENVCRYPT_NAME=hot; do
			expect_eq "udev property $expected" "$expected" "$(grep -x "$expected" <<<"$props")"
		done
		expect_eq "/dev/disk/by-envcrypt-uuid/$uuid points at $loop" "$loop" \
			"$(readlink -f "/dev/disk/by-envcrypt-uuid/$uuid")"
		expect_match "the mapping maps $loop" "^$(cat "/sys/block/${loop#/dev/}/dev") " \
			"$(dmsetup table hot | cut -d' ' -f4-)"
	fi

	losetup -d "$loop"
	udevadm settle --timeout=60
	expect_eq "round $round: after losetup -d the mapping still reads the disk (not stale)" \
		"$(sha256sum <"$HELPER_DIR/payload")" "$(head -c 4M /dev/mapper/hot | sha256sum)"
	expect_succeeds "round $round: detach-all" "$ENVCTL" detach-all --tab "$TAB"
	udevadm settle --timeout=60
	expect_eq "round $round: the loop device is freed" "" "$(losetup -nO NAME -j "$hot_img")"
	expect_eq "round $round: no mapping left" "" "$(mappings)"
done
sorted=$(printf '%s\n' "${latencies[@]}" | sort -n | tr '\n' ' ')
echo "# hot-plug attach latency (losetup to /dev/mapper node), kernel $ENVCRYPT_KVER: ${sorted}ms"
echo "$ENVCRYPT_KVER loop ${sorted}" >>"$LATENCY_FILE"

# A disk that really goes away: a SCSI disk of scsi_debug (its data lives in
# the module, so the same disk can be deleted and added again).
SDEBUG=/sys/bus/pseudo/drivers/scsi_debug
modprobe scsi_debug dev_size_mb=40 add_host=0 ||
	tap_bail "scsi_debug loads" "modprobe scsi_debug" "$(dmesg | tail -n 3)"
on_exit modprobe -r scsi_debug

scsi_add() { # prints the new disk's /dev node (the host scan is asynchronous)
	local before new tries=0
	before=$(ls /sys/class/block)
	echo 1 >"$SDEBUG/add_host"
	while [ "$tries" -lt 200 ]; do
		new=$(comm -13 <(echo "$before") <(ls /sys/class/block) | grep -m1 '^sd[a-z]*$')
		[ -n "$new" ] && [ -b "/dev/$new" ] && { echo "/dev/$new"; return 0; }
		tries=$((tries + 1))
		sleep 0.05
	done
	return 1
}

scsi_disk=$(scsi_add)
[ -b "$scsi_disk" ] || tap_bail "scsi_debug disk appears" "a /dev/sdX" "'$scsi_disk'"
"$ENVCTL" format "$scsi_disk" >/dev/null || tap_bail "format the SCSI disk" "exit 0" "failed"
scsi_uuid=$(uuid_of "$scsi_disk")
echo 1 >"/sys/block/${scsi_disk#/dev/}/device/delete"
udevadm settle --timeout=60
# Listed only now, so that the first appearance (to format it) attached nothing.
echo "scsi     UUID=$scsi_uuid" >>"$TAB"
expect_eq "nothing attached before the SCSI disk is listed" "" "$(mappings)"
start=$(now_ms)
scsi_disk=$(scsi_add)
if waited=$(wait_for -b /dev/mapper/scsi); then
	latency=$(($(now_ms) - start))
	tap_ok "a hot-added SCSI disk listed by UUID attaches (${latency} ms after add_host)"
	echo "$ENVCRYPT_KVER scsi $latency" >>"$LATENCY_FILE"
	echo "# hot-plug attach latency (SCSI add_host to /dev/mapper node): ${latency} ms"
else
	tap_fail "a hot-added SCSI disk listed by UUID attaches" "/dev/mapper/scsi" "mappings: $(mappings)"
fi
udevadm settle --timeout=60
start=$(now_ms)
echo 1 >"/sys/block/${scsi_disk#/dev/}/device/delete"
if waited=$(wait_for ! -e /dev/mapper/scsi); then
	tap_ok "the SCSI disk deleted while attached leaves no mapping ($waited ms)"
else
	tap_fail "the SCSI disk deleted while attached leaves no mapping within ${BOUND_MS} ms" \
		"no /dev/mapper/scsi" "$(ls -l /dev/mapper; dmsetup info scsi 2>&1 | head -n 3)"
fi
udevadm settle --timeout=60
expect_eq "no stale dm device after the removal" "" "$(mappings)"

# Listed by path: the loop device's name is known before it is bound.
path_img=$(new_image bypath 32)
"$ENVCTL" format "$path_img" >/dev/null || tap_bail "format by-path disk" "exit 0" "$?"
path_loop=$(losetup --find)
echo "bypath   $path_loop   discard" >>"$TAB"
losetup "$path_loop" "$path_img" || tap_bail "losetup $path_loop" "bound" "$(losetup -a)"
on_exit losetup -d "$path_loop"
if waited=$(wait_for -b /dev/mapper/bypath); then
	tap_ok "a disk listed by path attaches ($waited ms)"
else
	tap_fail "a disk listed by path attaches" "/dev/mapper/bypath" "mappings: $(mappings)"
fi
udevadm settle --timeout=60
expect_match "its table has allow_discards (the discard option)" "allow_discards" "$(dmsetup table bypath)"
expect_succeeds "detach-all detaches it" "$ENVCTL" detach-all --tab "$TAB"
losetup -d "$path_loop"
udevadm settle --timeout=60
expect_eq "no mapping left" "" "$(mappings)"
sed -i '/^bypath /d' "$TAB"  # its loop device number is free for the next disk

# Identified but not attached: unlisted, and netdev (waits for the network).
other_img=$(new_image other 32)
"$ENVCTL" format "$other_img" >/dev/null
net_img=$(new_image net 32)
"$ENVCTL" format "$net_img" >/dev/null
echo "net      UUID=$(uuid_of "$net_img")   netdev" >>"$TAB"
other_loop=$(losetup --find --show "$other_img")
on_exit losetup -d "$other_loop"
net_loop=$(losetup --find --show "$net_img")
on_exit losetup -d "$net_loop"
udevadm settle --timeout=60
sleep 1
expect_eq "an unlisted envcrypt disk is identified" "envcrypt" \
	"$(udevadm info --query=property "$other_loop" | sed -n 's/^ID_FS_TYPE=//p')"
expect_eq "a netdev disk is matched to its entry" "1" \
	"$(udevadm info --query=property "$net_loop" | sed -n 's/^ENVCRYPT_NETDEV=//p')"
expect_eq "neither is attached by udev" "" "$(mappings)"

# [boot] auto_attach = true: the unlisted disk attaches as envcrypt-<uuid>
# on its next event; the listed netdev disk still waits for the network.
other_uuid=$(uuid_of "$other_img")
printf '\n[boot]\nauto_attach = true\n' >>"$ENVCRYPT_CONFIG"
auto_name=envcrypt-$other_uuid
expect_eq "tab-match gives the unlisted disk its implicit entry" \
	"ENVCRYPT_NAME=$auto_name ENVCRYPT_UNIT=envcrypt-attach@${auto_name//-/\\x2d}.service ENVCRYPT_NETDEV=0 ENVCRYPT_NOAUTO=0" \
	"$("$ENVCTL" tab-match --tab "$TAB" "$other_loop" | tr '\n' ' ' | sed 's/ $//')"
detach_at_exit "envcrypt-$other_uuid"
udevadm trigger --action=change "$other_loop" "$net_loop"
if waited=$(wait_for -b "/dev/mapper/envcrypt-$other_uuid"); then
	tap_ok "auto_attach: the unlisted disk attaches as envcrypt-<uuid> ($waited ms after the event)"
else
	tap_fail "auto_attach: the unlisted disk attaches" "/dev/mapper/envcrypt-$other_uuid" \
		"mappings: $(mappings)"
fi
udevadm settle --timeout=60
expect_eq "auto_attach: only that disk is attached (netdev still waits)" \
	"envcrypt-$other_uuid " "$(mappings)"
head -c 1M /dev/urandom >"$HELPER_DIR/auto-payload"
dd if="$HELPER_DIR/auto-payload" of="/dev/mapper/envcrypt-$other_uuid" bs=1M oflag=direct \
	status=none
expect_eq "auto_attach: the mapping reads back what was written" \
	"$(sha256sum <"$HELPER_DIR/auto-payload")" \
	"$(head -c 1M "/dev/mapper/envcrypt-$other_uuid" | sha256sum)"
expect_succeeds "auto_attach: detach-all --name envcrypt-<uuid> detaches it" \
	"$ENVCTL" detach-all --tab "$TAB" --name "envcrypt-$other_uuid"
udevadm settle --timeout=60
expect_eq "auto_attach: no mapping left" "" "$(mappings)"
expect_succeeds "auto_attach: attach-all --name envcrypt-<uuid> finds it by uuid" \
	"$ENVCTL" attach-all --tab "$TAB" --name "envcrypt-$other_uuid"
expect_eq "auto_attach: and it reads the same data" \
	"$(sha256sum <"$HELPER_DIR/auto-payload")" \
	"$(head -c 1M "/dev/mapper/envcrypt-$other_uuid" | sha256sum)"
# Off again before the last detach: the events a detach causes (the loop
# device let go) must not attach the disk again behind the next test.
sed -i '/^\[boot\]$/,$d' "$ENVCRYPT_CONFIG"
udevadm settle --timeout=60
"$ENVCTL" detach "envcrypt-$other_uuid" >/dev/null
udevadm settle --timeout=60
expect_eq "without auto_attach, an unlisted name is refused" "3" \
	"$("$ENVCTL" attach-all --tab "$TAB" --name "envcrypt-$other_uuid" >/dev/null 2>&1; echo $?)"
udevadm trigger --action=change "$other_loop"
udevadm settle --timeout=60
sleep 1
expect_eq "without auto_attach, a new event attaches nothing" "" "$(mappings)"
tap_done
