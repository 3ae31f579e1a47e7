#!/bin/bash
# A crafted header against the real systemd-udevd and the shipped rules: a
# disk whose header (checksums recomputed, as anyone who can write a disk can)
# carries a CMK URI with newlines that spell udev properties
# (ENVCRYPT_UNIT=debug-shell.service, ENVCRYPT_NAME=..., ID_FS_TYPE=ext4),
# and a disk whose URI and label hold characters that are legal in a URI or
# label but not in a udev property value.  A rule that runs first plants
# ENVCRYPT_NAME/ENVCRYPT_UNIT on every loop device, as a stale value from an
# earlier event would be.  Checked: the first disk is not identified as
# envcrypt and none of its spelled properties appears; the second is
# identified (ID_FS_TYPE=envcrypt, ENVCRYPT_UUID) with sanitised values; on
# both, the planted ENVCRYPT_NAME/UNIT are gone (tab-match answers "no
# match" with every property empty); nothing is attached, no key is loaded.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"
. "$ENVCRYPT_TOP/helper/tests/guest_helper.sh"

helper_setup
modprobe loop
TAB=$HELPER_DIR/envcrypttab
: >"$TAB"

install_udev_rules "$TAB" \
	'SUBSYSTEM=="block", KERNEL=="loop*", ENV{ENVCRYPT_NAME}="planted", ENV{ENVCRYPT_UNIT}="debug-shell.service"'
start_udevd || tap_bail "systemd-udevd runs" "a udev control socket" "none"
udevadm control --reload

mappings() {
	dmsetup ls --target envcrypt 2>/dev/null | awk '$1 != "No" { print $1 }' | sort | tr '\n' ' '
}

# forge IMAGE FIELD_OFFSET WIDTH TEXT: writes TEXT (backslash escapes
# decoded, NUL-padded to WIDTH) into both header copies and recomputes their
# SHA-256 checksums.
FORGE_PY='
import hashlib
import sys

image, field, width, text = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
raw = text.encode().decode("unicode_escape").encode("latin-1")
with open(image, "r+b") as f:
    for copy in (0, 512 * 1024):
        f.seek(copy)
        header = bytearray(f.read(4096))
        header[field:field + width] = raw.ljust(width, b"\0")
        header[4064:4096] = hashlib.sha256(bytes(header[:4064])).digest()
        f.seek(copy)
        f.write(header)
'
forge() {
	python3 -c "$FORGE_PY" "$@"
}

URI_FIELD=208
URI_WIDTH=512
LABEL_FIELD=48
LABEL_WIDTH=64

newline_img=$HELPER_DIR/newline.img
truncate -s 32M "$newline_img"
"$ENVCTL" format "$newline_img" >/dev/null || tap_bail "format the first disk" "exit 0" "$?"
forge "$newline_img" $URI_FIELD $URI_WIDTH \
	'local://local-1/x\nENVCRYPT_UNIT=debug-shell.service\nENVCRYPT_NAME=owned\nID_FS_TYPE=ext4'

odd_img=$HELPER_DIR/odd.img
truncate -s 32M "$odd_img"
"$ENVCTL" format "$odd_img" >/dev/null || tap_bail "format the second disk" "exit 0" "$?"
forge "$odd_img" $URI_FIELD $URI_WIDTH "local://local-1/x?a='b'&c=\$(reboot);d=(e)"
forge "$odd_img" $LABEL_FIELD $LABEL_WIDTH 'x ENVCRYPT_UNIT=debug-shell.service'
odd_uuid=$("$ENVCTL" --json inspect "$odd_img" |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["uuid"])')

newline_loop=$(losetup --find --show "$newline_img")
on_exit losetup -d "$newline_loop"
odd_loop=$(losetup --find --show "$odd_img")
on_exit losetup -d "$odd_loop"
udevadm settle --timeout=60

prop() { # prop DEVICE KEY: the value udev holds, or "<unset>"
	local value
	value=$(udevadm info --query=property "$1" | sed -n "s/^$2=//p")
	echo "${value:-<unset>}"
}

expect_fails "probe refuses the header with newlines in its URI" \
	"$ENVCTL" probe "$newline_loop"
expect_eq "the first disk is not identified as envcrypt" "<unset>" "$(prop "$newline_loop" ID_FS_TYPE)"
expect_eq "no ENVCRYPT_UUID on the first disk" "<unset>" "$(prop "$newline_loop" ENVCRYPT_UUID)"
expect_eq "the planted name is not left on the first disk" "<unset>" \
	"$(prop "$newline_loop" ENVCRYPT_NAME)"
expect_eq "the planted unit is not left on the first disk" "<unset>" \
	"$(prop "$newline_loop" ENVCRYPT_UNIT)"

expect_eq "the second disk is identified" "envcrypt" "$(prop "$odd_loop" ID_FS_TYPE)"
expect_eq "with its uuid" "$odd_uuid" "$(prop "$odd_loop" ENVCRYPT_UUID)"
expect_eq "its CMK URI reaches udev sanitised" "local://local-1/x_a__b__c___reboot__d__e_" \
	"$(prop "$odd_loop" ENVCRYPT_CMK)"
expect_eq "its label reaches udev sanitised" "x_ENVCRYPT_UNIT_debug-shell.service" \
	"$(prop "$odd_loop" ID_FS_LABEL)"
expect_eq "the planted name is cleared (no envcrypttab entry)" "<unset>" \
	"$(prop "$odd_loop" ENVCRYPT_NAME)"
expect_eq "the planted unit is cleared" "<unset>" "$(prop "$odd_loop" ENVCRYPT_UNIT)"
expect_eq "tab-match answers no match with every property empty, exit 0" \
	"ENVCRYPT_NAME= ENVCRYPT_UNIT= ENVCRYPT_NETDEV= ENVCRYPT_NOAUTO= rc=0" \
	"$("$ENVCTL" tab-match --tab "$TAB" "$odd_loop" | tr '\n' ' ')rc=${PIPESTATUS[0]}"
sleep 1
expect_eq "nothing is attached" "" "$(mappings)"
expect_eq "no envcrypt key in any keyring" "" "$(grep envcrypt /proc/keys)"

tap_done
