#!/bin/bash
# test_disasters.sh: the three disasters of
# Documentation/admin-guide/disaster-recovery.rst, walked through on image
# files with the commands that document gives, against the local KMS and a
# real PyKMIP server (Debian python3-pykmip) on 127.0.0.1.
#
#   1. Keystore and root key lost: every disk of the local KMS fails with
#      "not found"; a keystore backup (kms backup) restored on the fresh
#      configuration opens both disks again; then, lost once more and with
#      no backup, recover each with the recovery private key under a CMK of
#      the new keystore.  A truncated backup is refused, nothing written.
#   2. KMIP key destroyed: the disk fails, the server no longer has the key;
#      recover under a local CMK.
#   3. Header destroyed: the primary copy alone (the disk still verifies
#      from the secondary; rewrap rewrites both), then both copies (not an
#      envcrypt disk); an old header backup whose CMK has since been
#      disabled goes back with header-restore --force, and recover moves it
#      to a working CMK.
#
# Refusals on the way: a wrong recovery private key (exit 4, the image byte
# for byte unchanged).  `verify` unwraps and checks the key check value
# without the kernel; the guest tests attach for real.  Output is TAP 13.
set -u

TOP=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${ENVCRYPT_BUILD:-$TOP/build}
CTL=$BUILD/envcryptctl
. "$TOP/tests/host/lib/kmip/pykmip.sh"
. "$TOP/tests/host/lib/tap.sh"

echo "TAP version 13"

[ -x "$CTL" ] || skip_all "$CTL not built (make helper)"
command -v openssl >/dev/null || skip_all "openssl not installed (make deps)"
kmip_have_pykmip || skip_all "PyKMIP not importable by $KMIP_PYTHON (apt-get install python3-pykmip)"

WORK=$(mktemp -d /tmp/envcrypt-disasters.XXXXXX)
cleanup() {
	kmip_server_stop
	rm -rf "$WORK"
}
trap cleanup EXIT
CONF=$WORK/envcrypt.conf
# No disk is "known" to the in-use guard: the walkthroughs destroy keys on
# purpose.
: >"$WORK/envcrypttab"
export ENVCRYPT_TAB=$WORK/envcrypttab

# expect_cli DESCRIPTION EXIT_CODE PATTERN ARGS...: envcryptctl --config
# $CONF ARGS exits with EXIT_CODE and its output matches PATTERN (ERE).
expect_cli() {
	local description=$1 expected=$2 pattern=$3 output status
	shift 3
	output=$("$CTL" --config "$CONF" "$@" 2>&1)
	status=$?
	if [ "$status" -eq "$expected" ] && grep -qE -- "$pattern" <<<"$output"; then
		ok "$description"
	else
		not_ok "$description"
		echo "#   envcryptctl $*: exit $status (expected $expected), output:"
		diag <<<"$output"
		echo "#   expected output matching: $pattern"
	fi
}

# new_cmk ALIAS [KMS]: creates a CMK, prints its URI (the last line).
new_cmk() {
	"$CTL" --config "$CONF" kms create-key --alias "$1" ${2:+--kms "$2"} 2>&1 | tail -n 1
}

verified() { # verified IMAGE CMK_URI: the pattern of a good verify
	printf '^%s: ok: the data key unwraps under %s \\(version 1\\) and matches the key check value$' \
		"$1" "$2"
}

if kmip_pki_make "$WORK/pki" && kmip_server_start "$WORK/pki"; then
	ok "PyKMIP server listening on 127.0.0.1:$KMIP_PORT after $KMIP_START_SECONDS s"
else
	bail "start the PyKMIP server"
fi
{
	printf '[kms.local]\ndir = "%s"\nroot_key = "%s"\n\n' "$WORK/keystore" "$WORK/root.key"
	kmip_endpoint_toml "$WORK/pki" main ca client-a
} >"$CONF"

# The recovery key pair, made offline as the document says.
openssl genpkey -algorithm X25519 -out "$WORK/recovery.key" 2>/dev/null &&
	openssl pkey -in "$WORK/recovery.key" -pubout -out "$WORK/recovery.pub" ||
	bail "openssl makes an X25519 recovery key pair"
openssl genpkey -algorithm X25519 -out "$WORK/wrong.key" 2>/dev/null ||
	bail "openssl makes a second X25519 key"

# ---- 1. keystore and root key lost -------------------------------------------
IMG1=$WORK/disk1.img
truncate -s 64M "$IMG1"
CMK1=$(new_cmk alias/data)
expect_cli "1: format under a local CMK with a recovery key" 0 "^formatted $IMG1: " \
	format "$IMG1" --cmk alias/data --recovery-key "$WORK/recovery.pub"
expect_cli "1: the disk verifies" 0 "$(verified "$IMG1" "$CMK1")" verify "$IMG1"
IMG1B=$WORK/disk1b.img
truncate -s 64M "$IMG1B"
expect_cli "1: a second disk under the service key" 0 "^formatted $IMG1B: " format "$IMG1B"
SERVICE=$("$CTL" --config "$CONF" inspect "$IMG1B" | sed -n 's/^ *cmk: *\([^ ]*\) .*/\1/p')
expect_cli "1: kms backup to the recovery public key" 0 "" \
	kms backup --to "$WORK/keystore.backup" --recovery-key "$WORK/recovery.pub"
rm -rf "$WORK/keystore" "$WORK/root.key"
expect_cli "1: keystore and root key lost: the CMK is not found (exit 3)" 3 \
	"^envcryptctl: verify $IMG1: key $CMK1 not found$" verify "$IMG1"
head -c 1000 "$WORK/keystore.backup" >"$WORK/truncated.backup"
expect_cli "1: a truncated backup is refused (exit 5)" 5 "truncated" \
	kms restore "$WORK/truncated.backup" --recovery-private-key "$WORK/recovery.key"
if [ -e "$WORK/keystore/local-1.keystore.json" ]; then
	not_ok "1: the refused restore wrote no keystore"
else
	ok "1: the refused restore wrote no keystore"
fi
expect_cli "1: kms restore of the backup on the fresh configuration" 0 \
	"^restored 2 keys of region local-1 from $WORK/keystore.backup$" \
	kms restore "$WORK/keystore.backup" --recovery-private-key "$WORK/recovery.key"
expect_cli "1: the first disk verifies after the restore" 0 "$(verified "$IMG1" "$CMK1")" \
	verify "$IMG1"
expect_cli "1: the second disk verifies after the restore" 0 "$(verified "$IMG1B" "$SERVICE")" \
	verify "$IMG1B"
rm -rf "$WORK/keystore" "$WORK/root.key"
NEW1=$(new_cmk alias/data-new)
cp "$IMG1" "$WORK/disk1.before"
expect_cli "1: a wrong recovery private key is refused (exit 4)" 4 \
	"^envcryptctl: recover $IMG1: wrong recovery key: the recovery wrap is for key [0-9a-f]{16}, not [0-9a-f]{16}$" \
	recover "$IMG1" --recovery-private-key "$WORK/wrong.key" --cmk alias/data-new
if cmp -s "$IMG1" "$WORK/disk1.before"; then
	ok "1: the refused recover left the image byte for byte unchanged"
else
	not_ok "1: the refused recover left the image byte for byte unchanged"
fi
expect_cli "1: recover under a CMK of the new keystore" 0 \
	"^$IMG1: recovered with recovery key [0-9a-f]{16}; the data key is now wrapped under $NEW1 \\(version 1\\)$" \
	recover "$IMG1" --recovery-private-key "$WORK/recovery.key" --cmk alias/data-new
expect_cli "1: the recovered disk verifies under the new CMK" 0 "$(verified "$IMG1" "$NEW1")" \
	verify "$IMG1"

# ---- 2. KMIP key destroyed ---------------------------------------------------
IMG2=$WORK/disk2.img
truncate -s 64M "$IMG2"
KCMK=$(new_cmk envcrypt-disaster kmip://main)
if [[ $KCMK =~ ^kmip://127\.0\.0\.1:$KMIP_PORT/[^/]+$ ]]; then
	ok "2: a CMK on the KMIP server: $KCMK"
else
	bail "2: kms create-key --kms kmip://main prints a kmip:// CMK URI (saw: $KCMK)"
fi
expect_cli "2: format under the KMIP CMK with a recovery key" 0 "^formatted $IMG2: " \
	format "$IMG2" --cmk "$KCMK" --recovery-key "$WORK/recovery.pub"
expect_cli "2: the disk verifies through KMIP" 0 "$(verified "$IMG2" "$KCMK")" verify "$IMG2"
expect_cli "2: the KMIP key is revoked" 0 "^disabled $KCMK$" kms disable-key --kms kmip://main "$KCMK"
expect_cli "2: and destroyed" 0 "PendingDeletion" \
	kms schedule-key-deletion --kms kmip://main --destroy-now "$KCMK"
expect_cli "2: the disk no longer unwraps: the server no longer has the key (exit 3)" 3 \
	"^envcryptctl: verify $IMG2: $KCMK: KMIP Decrypt failed: Item Not Found: " verify "$IMG2"
LOCAL2=$(new_cmk alias/after-kmip)
expect_cli "2: recover under a local CMK" 0 \
	"^$IMG2: recovered with recovery key [0-9a-f]{16}; the data key is now wrapped under $LOCAL2 \\(version 1\\)$" \
	recover "$IMG2" --recovery-private-key "$WORK/recovery.key" --cmk alias/after-kmip
expect_cli "2: the recovered disk verifies under the local CMK" 0 "$(verified "$IMG2" "$LOCAL2")" \
	verify "$IMG2"

# ---- 3. header destroyed -------------------------------------------------------
IMG3=$WORK/disk3.img
truncate -s 64M "$IMG3"
OLD3=$(new_cmk alias/old)
NOW3=$(new_cmk alias/now)
expect_cli "3: format under alias/old with a recovery key" 0 "^formatted $IMG3: " \
	format "$IMG3" --cmk alias/old --recovery-key "$WORK/recovery.pub"
expect_cli "3: a header backup right after format" 0 "^backed up the header of $IMG3 " \
	header-backup "$IMG3" "$WORK/disk3.header"
expect_cli "3: later moved to alias/now (the backup is now stale)" 0 \
	"^rewrapped $IMG3: $OLD3 version 1 -> $NOW3 version 1 \\(header sequence 1 -> 2, data untouched\\)$" \
	rewrap "$IMG3" --cmk alias/now
expect_cli "3: and alias/old disabled" 0 "^disabled alias/old$" kms disable-key alias/old
dd if=/dev/zero of="$IMG3" bs=4096 count=1 conv=notrunc status=none
expect_cli "3a: primary copy zeroed: the disk still verifies from the secondary" 0 \
	"$(verified "$IMG3" "$NOW3")" verify "$IMG3"
expect_cli "3a: rewrap rewrites both copies" 0 "both header copies rewritten" rewrap "$IMG3"
expect_cli "3a: both copies valid again" 0 "primary: +valid \\(sequence 3\\)" inspect "$IMG3"
dd if=/dev/zero of="$IMG3" bs=1M count=1 conv=notrunc status=none
expect_cli "3b: both copies zeroed: not an envcrypt disk (exit 3)" 3 "not an envcrypt disk" \
	verify "$IMG3"
expect_cli "3b: header-restore without --force refuses a device whose uuid cannot be read (exit 8)" 8 \
	"^envcryptctl: header-restore $IMG3: $IMG3 carries no envcrypt uuid to compare with the backup's; use --force if $WORK/disk3.header is this disk's header$" \
	header-restore "$IMG3" "$WORK/disk3.header"
expect_cli "3b: header-restore --force puts the old header back" 0 \
	"^restored the header of disk [0-9a-f-]{36} \\(sequence 1, CMK $OLD3\\) from $WORK/disk3.header to $IMG3$" \
	header-restore --force "$IMG3" "$WORK/disk3.header"
expect_cli "3b: the old header's CMK is disabled (exit 4)" 4 \
	"^envcryptctl: verify $IMG3: key $OLD3 is Disabled$" verify "$IMG3"
expect_cli "3b: recover under alias/now" 0 \
	"^$IMG3: recovered with recovery key [0-9a-f]{16}; the data key is now wrapped under $NOW3 \\(version 1\\)$" \
	recover "$IMG3" --recovery-private-key "$WORK/recovery.key" --cmk alias/now
expect_cli "3b: the disk verifies again" 0 "$(verified "$IMG3" "$NOW3")" verify "$IMG3"

tap_finish
