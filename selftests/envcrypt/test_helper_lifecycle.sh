#!/bin/bash
# The key lifecycle on real devices (Documentation/kms/lifecycle.rst):
#  - rotate-key, then rewrap of an ATTACHED disk while dd writes to it: the
#    header moves to version 2, the data read back before, during and after
#    (and after a re-attach) has the same checksums, and disable-key refuses
#    (exit 8) while the disk is attached, naming it;
#  - BYOK with the real `openssl pkeyutl ... rsa_oaep_md:sha256`: import,
#    format, write; delete-key-material makes the disk unattachable (exit 4,
#    PendingImport); importing the same material again restores it, data intact;
#  - rewrap to a disabled CMK fails with exit 4 and leaves the header as it was;
#  - grants: another principal sharing the keystore is denied attach (exit 4),
#    attaches with a decrypt grant, is denied again once it is revoked, and
#    each denial is an audit line naming that principal;
#  - kms audit --verify passes, then reports an edited line (exit 5);
#  - the DK appears in no header, keystore file or audit line.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"
. "$ENVCRYPT_TOP/helper/tests/guest_helper.sh"

NAME=helper-life
BYOK_NAME=helper-byok

helper_setup
dev=$(helper_loop 64) || tap_bail "loop device" "a 64 MiB loop device" "$(losetup -a 2>&1)"
on_exit losetup -d "$dev"
byok_dev=$(helper_loop 48) || tap_bail "loop device" "a 48 MiB loop device" "$(losetup -a)"
on_exit losetup -d "$byok_dev"
detach_at_exit "$NAME"
detach_at_exit "$BYOK_NAME"
load_envcrypt || tap_bail "dm-envcrypt" "loaded" "$(dmesg | tail -n5)"

# sha256 of MiB [FIRST, FIRST+COUNT) of a device.
sum_of() {
	dd if="$1" bs=1M skip="$2" count="$3" iflag=direct status=none | sha256sum | cut -d' ' -f1
}

# ----- rotation and rewrap while attached and written -----
uri=$("$ENVCTL" kms create-key --alias test/life | tail -n1)
expect_succeeds "format under alias/test/life" "$ENVCTL" format "$dev" --cmk alias/test/life
expect_succeeds "attach" "$ENVCTL" attach "$dev" "$NAME"
mapper=/dev/mapper/$NAME
head -c $((16 << 20)) /dev/urandom >"$HELPER_DIR/fixed"
head -c $((16 << 20)) /dev/urandom >"$HELPER_DIR/moving"
dd if="$HELPER_DIR/fixed" of="$mapper" bs=1M oflag=direct status=none
fixed_sum=$(sha256sum <"$HELPER_DIR/fixed" | cut -d' ' -f1)
moving_sum=$(sha256sum <"$HELPER_DIR/moving" | cut -d' ' -f1)
expect_eq "data written through the mapping reads back" "$fixed_sum" "$(sum_of "$mapper" 0 16)"

expect_match "rotate-key makes version 2 primary" "^rotated $uri: version 2 is primary" \
	"$("$ENVCTL" kms rotate-key alias/test/life)"
(for _ in 1 2 3; do
	dd if="$HELPER_DIR/moving" of="$mapper" bs=1M seek=16 oflag=direct status=none
done) &
writer=$!
out=$("$ENVCTL" rewrap "$dev" 2>&1)
expect_eq "rewrap while attached and written" \
	"rewrapped $dev: $uri version 1 -> $uri version 2 (header sequence 1 -> 2, data untouched)" \
	"$out"
wait "$writer"
expect_eq "writer finished" 0 "$?"
expect_match "header now under version 2" "cmk: +$uri \(version 2\)" "$("$ENVCTL" inspect "$dev")"
expect_eq "data written before rewrap unchanged" "$fixed_sum" "$(sum_of "$mapper" 0 16)"
expect_eq "data written during rewrap intact" "$moving_sum" "$(sum_of "$mapper" 16 16)"

out=$("$ENVCTL" kms disable-key alias/test/life 2>&1)
expect_eq "disable-key refused while the disk is attached (exit 8)" 8 "$?"
expect_eq "refusal names the disk" \
	"envcryptctl: kms disable-key alias/test/life: key $uri still wraps 1 disk this host knows: $NAME ($dev); rewrap them under another key first, or use --force" \
	"$out"

expect_succeeds "detach" "$ENVCTL" detach "$NAME"
expect_succeeds "re-attach under the new wrap" "$ENVCTL" attach "$dev" "$NAME"
expect_eq "first region after re-attach" "$fixed_sum" "$(sum_of "$mapper" 0 16)"
expect_eq "second region after re-attach" "$moving_sum" "$(sum_of "$mapper" 16 16)"
expect_succeeds "detach" "$ENVCTL" detach "$NAME"

# ----- rewrap to a disabled CMK -----
off=$("$ENVCTL" kms create-key --alias test/off | tail -n1)
"$ENVCTL" kms disable-key alias/test/off >/dev/null
before=$("$ENVCTL" --json inspect "$dev")
out=$("$ENVCTL" rewrap "$dev" --cmk alias/test/off 2>&1)
expect_eq "rewrap to a disabled CMK exits 4" 4 "$?"
expect_eq "rewrap to a disabled CMK says so" "envcryptctl: rewrap $dev: key $off is Disabled" "$out"
expect_eq "header unchanged" "$before" "$("$ENVCTL" --json inspect "$dev")"

# ----- BYOK -----
byok=$("$ENVCTL" kms create-key --origin EXTERNAL --alias test/byok | tail -n1)
get_parameters() {
	"$ENVCTL" kms get-parameters-for-import alias/test/byok \
		--public-key "$HELPER_DIR/pub.pem" --token "$HELPER_DIR/token" >/dev/null &&
		openssl pkeyutl -encrypt -pubin -inkey "$HELPER_DIR/pub.pem" \
			-in "$HELPER_DIR/material.bin" -out "$HELPER_DIR/material.wrapped" \
			-pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256
}
head -c 32 /dev/urandom >"$HELPER_DIR/material.bin"
expect_succeeds "get-parameters-for-import and openssl pkeyutl wrap" get_parameters
import=("$ENVCTL" kms import-key-material alias/test/byok
	--material "$HELPER_DIR/material.wrapped" --token "$HELPER_DIR/token")
expect_eq "import-key-material enables the key" "imported key material into $byok: Enabled" \
	"$("${import[@]}" 2>&1)"
expect_succeeds "format under the imported key" "$ENVCTL" format "$byok_dev" --cmk alias/test/byok
expect_succeeds "attach it" "$ENVCTL" attach "$byok_dev" "$BYOK_NAME"
dd if="$HELPER_DIR/fixed" of="/dev/mapper/$BYOK_NAME" bs=1M oflag=direct status=none
expect_succeeds "detach it" "$ENVCTL" detach "$BYOK_NAME"
expect_eq "delete-key-material" "deleted the key material of $byok: PendingImport" \
	"$("$ENVCTL" kms delete-key-material alias/test/byok 2>&1)"
out=$("$ENVCTL" attach "$byok_dev" "$BYOK_NAME" 2>&1)
expect_eq "attach without material exits 4" 4 "$?"
# The error is the last line; the attach-failure diagnostic line precedes it.
expect_eq "attach without material says PendingImport" \
	"envcryptctl: attach $byok_dev: key $byok is PendingImport" "${out##*$'\n'}"
expect_fails "no mapping left" dmsetup info "$BYOK_NAME"
expect_succeeds "new import parameters, same material wrapped again" get_parameters
expect_eq "re-import of the same material" "imported key material into $byok: Enabled" \
	"$("${import[@]}" 2>&1)"
expect_succeeds "attach again" "$ENVCTL" attach "$byok_dev" "$BYOK_NAME"
expect_eq "data intact after re-import" "$fixed_sum" "$(sum_of "/dev/mapper/$BYOK_NAME" 0 16)"
expect_succeeds "detach" "$ENVCTL" detach "$BYOK_NAME"

# ----- grants -----
alice_config=$HELPER_DIR/alice.conf
{
	echo 'principal = "user/alice"'
	sed -n '/^\[kms.local\]/,$p' "$ENVCRYPT_CONFIG"
} >"$alice_config"
as_alice() { ENVCRYPT_CONFIG=$alice_config "$ENVCTL" "$@"; }
out=$(as_alice attach "$dev" "$NAME" 2>&1)
expect_eq "attach without a grant exits 4" 4 "$?"
expect_eq "attach without a grant says why" \
	"envcryptctl: attach $dev: principal user/alice holds no decrypt grant on key $uri" \
	"${out##*$'\n'}"
grant=$("$ENVCTL" --json kms create-grant alias/test/life user/alice decrypt |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["grant_id"])')
expect_match "create-grant returns an id" '^[0-9a-f]{32}$' "$grant"
expect_succeeds "attach with the decrypt grant" as_alice attach "$dev" "$NAME"
expect_eq "data as alice" "$fixed_sum" "$(sum_of "$mapper" 0 16)"
expect_succeeds "detach" "$ENVCTL" detach "$NAME"
expect_eq "revoke-grant" "revoked grant $grant" \
	"$("$ENVCTL" kms revoke-grant alias/test/life "$grant" 2>&1)"
out=$(as_alice attach "$dev" "$NAME" 2>&1)
expect_eq "attach after revoke exits 4" 4 "$?"
denials=$("$ENVCTL" kms audit --key alias/test/life |
	grep -c " user/alice Decrypt .*: principal user/alice holds no decrypt grant")
expect_eq "both denials audited with the principal" 2 "$denials"

# ----- audit chain -----
expect_match "audit --verify on the untouched log" "lines, MAC chain intact" \
	"$("$ENVCTL" kms audit --verify 2>&1)"
log=$HELPER_DIR/kms/audit.log
dk=$(data_key "$dev")
dk_absent "DK in no header, keystore or audit file" "$dk" "$dev" "$log" "$HELPER_DIR"/kms/*.json
edited=$(grep -n '"result":"ok"' "$log" | head -n 1 | cut -d: -f1)
sed -i "${edited}s/\"result\":\"ok\"/\"result\":\"OK\"/" "$log"
out=$("$ENVCTL" kms audit --verify 2>&1)
expect_eq "audit --verify on an edited log exits 5" 5 "$?"
expect_eq "it names the edited line" \
	"envcryptctl: kms audit: $log: line $edited was altered: its MAC does not verify under this root key" \
	"$out"
tap_done
