#!/bin/bash
# A disk formatted under a customer CMK is attachable only while the CMK is
# Enabled: after `kms disable-key` attach fails with exit 4 and a message
# naming the Disabled key; after `kms schedule-key-deletion` it fails with
# exit 4 naming PendingDeletion; neither failure leaves a mapping or a key in
# any keyring.  enable-key and cancel-key-deletion make it attachable again.
# The service key refuses to be disabled.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"
. "$ENVCRYPT_TOP/helper/tests/guest_helper.sh"

NAME=helper-cmk

helper_setup
dev=$(helper_loop 48) || tap_bail "loop device" "a 48 MiB loop device" "$(losetup -a 2>&1)"
on_exit losetup -d "$dev"
detach_at_exit "$NAME"

uri=$("$ENVCTL" kms create-key --alias test/cmk-states --description "guest test" | tail -n1)
expect_match "create-key prints the CMK URI last" '^local://local-1/[0-9a-f-]+$' "$uri" || tap_done
expect_succeeds "format under the customer CMK" "$ENVCTL" format "$dev" --cmk alias/test/cmk-states
expect_match "header names the CMK" "cmk: +$uri" "$("$ENVCTL" inspect "$dev")"

# attach_refused WHAT STATE: attach must exit 4 naming STATE and leave nothing.
attach_refused() {
	local out rc
	out=$("$ENVCTL" attach "$dev" "$NAME" 2>&1)
	rc=$?
	expect_eq "$1: attach exits 4" 4 "$rc"
	# stderr: the diagnostics line (also sent to syslog; operations.rst),
	# then the one-line error; nothing else.
	expect_match "$1: diagnostics line names disk, device, CMK, step and reason" \
		"^envcryptctl: attach failed: disk=$NAME device=$dev cmk=local://local-1/[-0-9a-f]+ endpoint=\"local keystore [^\"]+\" step=unwrap code=4 reason=\"key local://local-1/[-0-9a-f]+ is $2\"\$" \
		"$(sed -n 1p <<<"$out")"
	expect_match "$1: error line names the key state" "^envcryptctl: attach $dev: .*$2\$" \
		"$(sed -n 2p <<<"$out")"
	expect_eq "$1: two lines on stderr, no more" 2 "$(printf '%s\n' "$out" | wc -l)"
	expect_fails "$1: no mapping left" dmsetup info "$NAME"
	no_envcrypt_keys "$1: no key left in any keyring"
}

expect_succeeds "disable-key" "$ENVCTL" kms disable-key "$uri"
attach_refused "disabled CMK" Disabled
expect_fails "verify refuses too" "$ENVCTL" verify "$dev"
expect_succeeds "enable-key" "$ENVCTL" kms enable-key "$uri"
expect_succeeds "attach once enabled" "$ENVCTL" attach "$dev" "$NAME"
expect_succeeds "detach" "$ENVCTL" detach "$NAME"

expect_succeeds "schedule-key-deletion (7 days)" \
	"$ENVCTL" kms schedule-key-deletion "$uri" --pending-window-days 7
expect_match "describe-key shows PendingDeletion" '"state": "PendingDeletion"' \
	"$("$ENVCTL" --json kms describe-key "$uri")"
attach_refused "pending-deletion CMK" PendingDeletion
expect_succeeds "cancel-key-deletion" "$ENVCTL" kms cancel-key-deletion "$uri"
"$ENVCTL" kms enable-key "$uri" >/dev/null 2>&1
expect_succeeds "attach after cancel and enable" "$ENVCTL" attach "$dev" "$NAME"
expect_succeeds "detach" "$ENVCTL" detach "$NAME"

out=$("$ENVCTL" kms disable-key alias/acs/ecs 2>&1)
expect_eq "service key refuses disable with exit 4 ($out)" 4 "$?"
tap_done
