#!/bin/bash
# Guest half of tests/host/test_rewrap_vm_crash.sh; runs in a vm-run.sh guest.
#
#   rewrap-vm-guest.sh EXPECTED_VERSION|- NEXT_STEP|-
#
# EXPECTED_VERSION may list versions, "2|3": either is right.
#
# /dev/vda is the envcrypt disk, /dev/vdb an ext4 file system holding the
# KMS (keystore, root key, config) and the data written at the start, so
# both survive the guest being killed.  With EXPECTED_VERSION "-" the disk
# is formatted and DATA written through a mapping first; otherwise the disk
# must verify, carry that CMK version and read back DATA.  With a NEXT_STEP
# the key is rotated and rewrap started with ENVCRYPT_FAULT=rewrap:STEP:pause;
# its stderr goes to /run/out/rewrap.err, and the host kills QEMU once it
# says "paused".  Each result is one "guest: ..." line; exit 0 if all held.
set -u
TOP=$ENVCRYPT_TOP
# The test build: the release envcryptctl ignores ENVCRYPT_FAULT.
ENVCTL=$TOP/build/test/envcryptctl
expected=$1
next_step=$2
failed=0

say() { echo "guest: $*"; }
check_eq() { # WHAT EXPECTED SEEN
	if [ "$2" = "$3" ]; then
		say "ok: $1"
	else
		say "FAIL: $1: expected '$2', seen '$3'"
		failed=1
	fi
}

# shellcheck source=selftests/lib/guest.sh
. "$TOP/selftests/lib/guest.sh" >/dev/null
load_envcrypt || { say "FAIL: dm-envcrypt does not load"; exit 1; }
modprobe ext4 2>/dev/null
mkdir -p /run/state
mount /dev/vdb /run/state || { say "FAIL: cannot mount the state disk"; exit 1; }
export ENVCRYPT_CONFIG=/run/state/envcrypt.conf
data_sum=$(sha256sum </run/state/data.bin | cut -d' ' -f1)

read_back() {
	"$ENVCTL" attach /dev/vda crash >/dev/null || return 1
	dd if=/dev/mapper/crash bs=1M count=8 iflag=direct status=none | sha256sum | cut -d' ' -f1
	"$ENVCTL" detach crash >/dev/null
}

if [ "$expected" = - ]; then
	"$ENVCTL" kms create-key --alias crash >/dev/null &&
		"$ENVCTL" format /dev/vda --cmk alias/crash >/dev/null &&
		"$ENVCTL" attach /dev/vda crash >/dev/null &&
		dd if=/run/state/data.bin of=/dev/mapper/crash bs=1M oflag=direct status=none &&
		"$ENVCTL" detach crash >/dev/null || { say "FAIL: format and write"; exit 1; }
	say "ok: formatted, data written"
else
	check_eq "verify after the kill" 0 "$("$ENVCTL" verify /dev/vda >/dev/null 2>&1; echo $?)"
	version=$("$ENVCTL" --json inspect /dev/vda | sed -n 's/^  "cmk_version": \([0-9]*\),$/\1/p')
	case "|$expected|" in
	*"|$version|"*) say "ok: CMK version of the wrap in force: $version (expected $expected)" ;;
	*) say "FAIL: CMK version of the wrap in force: expected $expected, seen $version" && failed=1 ;;
	esac
	check_eq "data read back through a new attach" "$data_sum" "$(read_back)"
	"$ENVCTL" rewrap /dev/vda >/dev/null 2>&1
	check_eq "rewrap run again leaves both copies valid" 2 \
		"$("$ENVCTL" inspect /dev/vda | grep -c '^  \(primary\|secondary\): *valid')"
fi

if [ "$next_step" != - ]; then
	"$ENVCTL" kms rotate-key alias/crash >/dev/null || { say "FAIL: rotate-key"; exit 1; }
	sync
	ENVCRYPT_FAULT=rewrap:$next_step:pause "$ENVCTL" rewrap /dev/vda 2>/run/out/rewrap.err
	say "FAIL: rewrap returned instead of pausing at $next_step: $(cat /run/out/rewrap.err)"
	exit 1
fi
umount /run/state
exit "$failed"
