#!/bin/bash
# The --json documents only a guest can produce, against the table of
# Documentation/admin-guide/json-output.rst (scripts/json-schema.py), as
# tests/host/test_json_output.sh does for the others: attach, status with
# a mapping, attach-all and detach-all with a disk, detach, and the local
# KMS root key sealed into the guest's TPM and unsealed again.
. "$ENVCRYPT_TOP/selftests/lib/guest.sh"
. "$ENVCRYPT_TOP/helper/tests/guest_helper.sh"

DOC=$ENVCRYPT_TOP/Documentation/admin-guide/json-output.rst
SCHEMA=$ENVCRYPT_TOP/scripts/json-schema.py
NAME=json-out

helper_setup
command -v python3 >/dev/null || tap_bail "python3 in the guest" "python3" "missing"

# check ROW ARGS...: envcryptctl --json ARGS succeeds and its document fits ROW.
check() {
	local row=$1 output problems
	shift
	if ! output=$("$ENVCTL" --json "$@" 2>"$HELPER_DIR/err"); then
		tap_fail "$row: envcryptctl --json $* succeeds" "exit 0" "$(cat "$HELPER_DIR/err")"
		return
	fi
	if problems=$("$SCHEMA" "$DOC" "$row" <<<"$output" 2>&1); then
		tap_ok "$row: the document of envcryptctl --json $* fits the table"
	else
		tap_fail "$row: the document of envcryptctl --json $* fits the table" \
			"no mismatch" "$problems"$'\n'"$output"
	fi
}

disk=$(helper_loop 32) || tap_bail "loop device" "a 32 MiB loop device" "$(losetup -a 2>&1)"
detach_at_exit "$NAME"
"$ENVCTL" format "$disk" >/dev/null 2>&1 ||
	tap_bail "format" "exit 0" "$("$ENVCTL" format "$disk" 2>&1)"

check "attach" attach "$disk" "$NAME"
check "status" status
printf '%s %s\n' "$NAME" "$disk" >"$HELPER_DIR/tab"
check "detach-all" detach-all --tab "$HELPER_DIR/tab"
check "attach-all" attach-all --tab "$HELPER_DIR/tab"
check "detach" detach "$NAME"

if [ -c /dev/tpmrm0 ]; then
	check "kms seal-root-key" kms seal-root-key
	check "kms unseal-root-key" kms unseal-root-key
else
	tap_fail "the guest has a TPM" "/dev/tpmrm0 (run.sh boots with vm-run.sh --tpm)" \
		"$(ls /dev/tpm* 2>&1)"
fi
tap_done
