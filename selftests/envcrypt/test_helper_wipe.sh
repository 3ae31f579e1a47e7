#!/bin/bash
# envcryptctl format --wipe: the data area is filled with ciphertext of
# zeros through the new mapping, so used and unused blocks look alike.
# Checks: after the wipe the mapped disk reads back as zeros end to end,
# while the raw data area holds no zero block (it is ciphertext); with
# stderr on a terminal (a pty from script(1)) the wipe draws a progress bar
# with bytes, rate and ETA, and with stderr not a terminal it prints none.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"
. "$ENVCRYPT_TOP/helper/tests/guest_helper.sh"

NAME=helper-wipe
helper_setup
dev=$(helper_loop 48) || tap_bail "loop device" "a 48 MiB loop device" "$(losetup -a 2>&1)"
on_exit losetup -d "$dev"

# Not a terminal: no progress output at all on stderr.
"$ENVCTL" format "$dev" --wipe --label wipe >/tmp/wipe.out 2>/tmp/wipe.err
rc=$?
expect_eq "format --wipe succeeds without a terminal" 0 "$rc"
expect_eq "no progress bar when stderr is not a terminal" "" "$(tr -d '\n' </tmp/wipe.err)"

detach_at_exit "$NAME"
"$ENVCTL" attach "$dev" "$NAME" >/dev/null 2>&1 || tap_bail "attach after wipe" "exit 0" "$("$ENVCTL" attach "$dev" "$NAME" 2>&1)"
mapped=/dev/mapper/$NAME
size=$(blockdev --getsize64 "$mapped")
expect_eq "the whole mapped disk reads as zeros" 0 \
	"$(cmp -n "$size" "$mapped" /dev/zero >/dev/null 2>&1; echo $?)"
offset=$("$ENVCTL" --json inspect "$dev" |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["data_offset"])')
[ -n "$offset" ] || tap_bail "inspect gives the data offset" "a number" "nothing"
zero_blocks=$(python3 - "$dev" "$offset" "$size" <<'PY'
import sys
dev, offset, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
zero = bytes(4096)
count = 0
with open(dev, "rb") as f:
    f.seek(offset)
    for _ in range(size // 4096):
        if f.read(4096) == zero:
            count += 1
print(count)
PY
)
expect_eq "no all-zero 4 KiB block in the raw data area (offset $offset)" 0 "$zero_blocks"
"$ENVCTL" detach "$NAME" >/dev/null 2>&1

# A terminal: the progress bar shows bytes, rate and ETA.
script -qec "$ENVCTL format $dev --wipe --force --label wipe2" /tmp/wipe.tty >/dev/null 2>&1
rc=$?
expect_eq "format --wipe --force succeeds on a terminal" 0 "$rc"
expect_match "progress bar with percent, bytes, rate and ETA" \
	'wipe: +[0-9]+%  [0-9.]+ [KMGTP]?i?B / [0-9.]+ [KMGTP]?i?B  [0-9.]+ [KMGTP]?i?B/s  ETA [0-9]+:[0-9]{2}' \
	"$(tr '\r' '\n' </tmp/wipe.tty)"
expect_match "the bar ends at 100%" 'wipe: 100%' "$(tr '\r' '\n' </tmp/wipe.tty)"
tap_done
