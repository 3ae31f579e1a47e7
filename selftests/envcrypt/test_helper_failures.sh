#!/bin/bash
# envcryptctl's failure paths on real devices, and format --wipe:
#   - a device with an ext4 file system is refused (exit 8) unless --force;
#   - a device that is not envcrypt: attach exits 3, probe exits non-zero;
#   - one corrupted header copy: attach still works and warns;
#   - both copies corrupted: attach exits 5, nothing mapped, no key left, and
#     the device's bytes are unchanged;
#   - format --wipe fills the data area with ciphertext of zeros (no zero
#     block left on the raw device, zeros read through the mapping), printing
#     no progress bar when stderr is not a terminal.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"
. "$ENVCRYPT_TOP/helper/tests/guest_helper.sh"

NAME=helper-fail

helper_setup
dev=$(helper_loop 40) || tap_bail "loop device" "a 40 MiB loop device" "$(losetup -a 2>&1)"
on_exit losetup -d "$dev"
detach_at_exit "$NAME"

mkfs.ext4 -q -F "$dev"
out=$("$ENVCTL" format "$dev" 2>&1)
expect_eq "ext4 device refused with exit 8 ($out)" 8 "$?"
expect_match "refusal names the file system" "ext4" "$out"

out=$("$ENVCTL" attach "$dev" "$NAME" 2>&1)
expect_eq "attach of a non-envcrypt device exits 3 ($out)" 3 "$?"
expect_fails "probe of a non-envcrypt device fails" "$ENVCTL" probe "$dev"

err=$("$ENVCTL" format --force --wipe "$dev" 2>&1 >/dev/null)
expect_eq "format --force --wipe succeeds quietly without a terminal" "" "$err"
zero_blocks=$(python3 - "$dev" <<'EOF'
import sys
with open(sys.argv[1], "rb") as f:
    f.seek(16 << 20)
    data = f.read()
zero = bytes(4096)
print(sum(1 for i in range(0, len(data), 4096) if data[i:i + 4096] == zero))
EOF
)
expect_eq "no all-zero 4 KiB block left in the data area" 0 "$zero_blocks"
expect_succeeds "attach after wipe" "$ENVCTL" attach "$dev" "$NAME"
expect_eq "the mapping reads zeros" "$(head -c 1M /dev/zero | sha256sum)" \
	"$(head -c 1M "/dev/mapper/$NAME" | sha256sum)"
expect_succeeds "detach" "$ENVCTL" detach "$NAME"

printf '\x5a' | dd of="$dev" bs=1 seek=300 conv=notrunc status=none
out=$("$ENVCTL" attach "$dev" "$NAME" 2>&1)
expect_eq "one bad copy: attach still exits 0" 0 "$?"
expect_match "one bad copy: a warning names it" "warning: .*primary: bad checksum" "$out"
expect_succeeds "detach" "$ENVCTL" detach "$NAME"

printf '\x5a' | dd of="$dev" bs=1 seek=$((512 * 1024 + 300)) conv=notrunc status=none
before=$(head -c 1M "$dev" | sha256sum)
out=$("$ENVCTL" attach "$dev" "$NAME" 2>&1)
expect_eq "both copies bad: attach exits 5 ($out)" 5 "$?"
expect_match "both copies bad: the message says why" "no valid header copy" "$out"
expect_fails "both copies bad: no mapping" dmsetup info "$NAME"
no_envcrypt_keys "both copies bad: no key in any keyring"
expect_eq "both copies bad: header area unchanged" "$before" "$(head -c 1M "$dev" | sha256sum)"
tap_done
