# shellcheck shell=bash
# Shared set-up for the envcryptctl guest tests (selftests/envcrypt/
# test_helper_*.sh); source it after selftests/lib/guest.sh.
#
# The guest's /etc and /var/lib are the host's, read-only, so the tests point
# envcryptctl at a keystore and root key under /tmp through ENVCRYPT_CONFIG;
# nothing else in the config differs from the defaults (region local-1,
# service key alias/acs/ecs as the default CMK).
#
#   helper_setup                 guest_setup, then the config; sets ENVCTL,
#                                DK_DUMP, HELPER_DIR, ENVCRYPT_CONFIG
#   helper_loop MiB              a loop device over a new file in HELPER_DIR
#   detach_at_exit NAME          detach NAME (if still there) when the test ends
#   data_key DEVICE              the DK in hex (test-only tool; see
#                                helper/tests/test_dk_dump.cc)
#   dk_absent WHAT DK_HEX FILE.. one check: neither half of the DK, in binary
#                                or hex, is in any FILE (devices included)
#   no_envcrypt_keys WHAT        one check: /proc/keys shows no envcrypt key
#   install_udev_rules TAB [RULE...]
#                                the shipped udev rules with the build's
#                                envcryptctl, the test's config and TAB in
#                                every block device's environment, and any
#                                extra RULE lines first; removed at exit

ENVCTL=$ENVCRYPT_TOP/build/envcryptctl
DK_DUMP=$ENVCRYPT_TOP/build/test/envcrypt-test-dk-dump

helper_setup() {
	guest_setup
	[ -x "$ENVCTL" ] || tap_bail "envcryptctl built" "$ENVCTL" "missing (make helper)"
	[ -x "$DK_DUMP" ] || tap_bail "test DK tool built" "$DK_DUMP" "missing (make test-programs)"
	HELPER_DIR=$(mktemp -d /tmp/envcrypt-helper.XXXXXX)
	# Registered before any mapping, so run after their removal (see
	# guest_setup): helper_loop's devices, then the directory.
	on_exit rm -rf --one-file-system "$HELPER_DIR"
	on_exit release_loops_under "$HELPER_DIR/"
	cat >"$HELPER_DIR/envcrypt.conf" <<EOF
[kms.local]
dir = "$HELPER_DIR/kms"
root_key = "$HELPER_DIR/root.key"
EOF
	export ENVCRYPT_CONFIG=$HELPER_DIR/envcrypt.conf
}

helper_loop() {
	local file
	modprobe loop 2>/dev/null
	file=$(mktemp "$HELPER_DIR/disk.XXXXXX") || return 1
	truncate -s "${1}M" "$file" || return 1
	losetup --find --show "$file"
}

detach_at_exit() {
	on_exit dm_remove "$1"
	on_exit "$ENVCTL" detach "$1"
}

data_key() {
	"$DK_DUMP" "$@"
}

dk_absent() {
	local what=$1 dk=$2 found
	shift 2
	found=$(python3 - "$dk" "$@" <<'EOF'
import sys
dk_hex = sys.argv[1]
dk = bytes.fromhex(dk_hex)
needles = [dk[:32], dk[32:], dk_hex[:64].encode(), dk_hex[64:].encode(),
           dk_hex[:64].upper().encode(), dk_hex[64:].upper().encode()]
for path in sys.argv[2:]:
    with open(path, "rb") as f:
        data = f.read()
    for needle in needles:
        at = data.find(needle)
        if at >= 0:
            print(f"{path}: DK bytes at offset {at}")
EOF
	)
	expect_eq "$what" "" "$found"
}

no_envcrypt_keys() {
	expect_eq "$1" "" "$(grep -i envcrypt /proc/keys)"
}

install_udev_rules() {
	local tab=$1 rule
	shift
	mkdir -p /run/udev/rules.d
	sed "s|@SBINDIR@|$ENVCRYPT_TOP/build|g" "$ENVCRYPT_TOP/helper/udev/61-envcrypt.rules" \
		>/run/udev/rules.d/61-envcrypt.rules
	{
		echo "SUBSYSTEM==\"block\", ENV{ENVCRYPT_CONFIG}=\"$ENVCRYPT_CONFIG\", ENV{ENVCRYPT_TAB}=\"$tab\""
		for rule in "$@"; do
			echo "$rule"
		done
	} >/run/udev/rules.d/00-envcrypt-test.rules
	on_exit udevadm control --reload
	on_exit rm -f /run/udev/rules.d/61-envcrypt.rules /run/udev/rules.d/00-envcrypt-test.rules
	udevadm control --reload
}
