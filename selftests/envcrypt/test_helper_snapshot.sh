#!/bin/bash
# A copy of the backing device (a snapshot, as a storage cluster makes one)
# carries the header and so the same wrapped DK: while the original is
# attached, the copy attaches under another name with the same key and reads
# the same data.  Attaching the copy under the default name is refused (exit
# 8) because the original holds it; attaching the original twice is refused
# (exit 8).  Status lists both mappings with the same disk uuid.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"
. "$ENVCRYPT_TOP/helper/tests/guest_helper.sh"

helper_setup
orig=$(helper_loop 48) || tap_bail "loop device" "a 48 MiB loop device" "$(losetup -a 2>&1)"
on_exit losetup -d "$orig"

expect_succeeds "format" "$ENVCTL" format "$orig" || tap_done
uuid=$("$ENVCTL" --json inspect "$orig" | python3 -c 'import json,sys; print(json.load(sys.stdin)["uuid"])')
default_name=envcrypt-${uuid:0:8}
detach_at_exit "$default_name"
out=$("$ENVCTL" attach "$orig" 2>&1)
expect_match "attach without NAME uses envcrypt-<uuid8>" "/dev/mapper/$default_name" "$out" || tap_done
head -c 8M /dev/urandom >"$HELPER_DIR/payload"
dd if="$HELPER_DIR/payload" of="/dev/mapper/$default_name" bs=1M oflag=direct status=none
sync

snapfile="$HELPER_DIR/snapshot.img"
cp --sparse=always "$(losetup -nO BACK-FILE "$orig")" "$snapfile"
snap=$(losetup --find --show "$snapfile") || tap_bail "snapshot loop device" "losetup" "$snap"
on_exit losetup -d "$snap"

out=$("$ENVCTL" attach "$snap" 2>&1)
expect_eq "copy under the default name is refused with exit 8 ($out)" 8 "$?"
out=$("$ENVCTL" attach "$orig" second 2>&1)
expect_eq "original attached twice is refused with exit 8 ($out)" 8 "$?"
detach_at_exit snap
expect_succeeds "copy attaches as 'snap' while the original is attached" \
	"$ENVCTL" attach "$snap" snap || tap_done
expect_eq "copy reads the data written through the original" \
	"$(sha256sum <"$HELPER_DIR/payload")" \
	"$(head -c 8M /dev/mapper/snap | sha256sum)"
expect_eq "status lists both with the same disk uuid" 2 \
	"$("$ENVCTL" --json status | grep -c "\"uuid\": \"$uuid\"")"
no_envcrypt_keys "no envcrypt key left in any keyring"
expect_succeeds "detach the copy" "$ENVCTL" detach snap
expect_succeeds "detach the original" "$ENVCTL" detach "$default_name"
tap_done
