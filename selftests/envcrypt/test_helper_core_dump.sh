#!/bin/bash
# No key reaches a core file (Documentation/security/key-hierarchy.rst, "Core
# dumps").  The test build of envcryptctl (build/test/envcryptctl, with the
# hooks of helper/src/util/test_hooks.h) attaches a loop device under a local KMS
# and aborts right after the DK is unwrapped, before anything is mapped
# (ENVCRYPT_FAULT=attach:unwrapped:...), with core dumps allowed by the shell
# (ulimit -c unlimited) and core_pattern pointed at the test's directory
# (restored at exit).  A guest test: attach needs device-mapper before the
# unwrap, which the build hosts lack.
#  - :abort, as a real crash: SIGABRT and no core file at all (the helper
#    made itself undumpable before reading anything);
#  - :dump, which makes the process dumpable again just before it aborts
#    (what a debugger or a changed policy could do): a core file, and neither
#    the DK (envcrypt-test-dk-dump) nor the root key, in binary or hex, is in
#    it (they live in OpenSSL's secure heap, left out of dumps).
. "$ENVCRYPT_TOP/selftests/lib/guest.sh"
. "$ENVCRYPT_TOP/helper/tests/guest_helper.sh"

TESTCTL=$ENVCRYPT_TOP/build/test/envcryptctl
PATTERN=/proc/sys/kernel/core_pattern
NAME=helper-core

helper_setup
[ -x "$TESTCTL" ] || tap_bail "test envcryptctl built" "$TESTCTL" "missing (make test-programs)"
dev=$(helper_loop 32) || tap_bail "loop device" "a 32 MiB loop device" "$(losetup -a 2>&1)"
on_exit losetup -d "$dev"
"$ENVCTL" format "$dev" >/dev/null || tap_bail "format" "exit 0" "$("$ENVCTL" format "$dev" 2>&1)"
dk=$(data_key "$dev")
root_key=$(od -An -v -tx1 "$HELPER_DIR/root.key" | tr -d ' \n')
expect_eq "a 64-byte DK and a 32-byte root key to look for" "128 64" "${#dk} ${#root_key}" || tap_done

cp "$PATTERN" "$HELPER_DIR/core_pattern.saved"
restore_pattern() { cat "$HELPER_DIR/core_pattern.saved" >"$PATTERN"; }
on_exit restore_pattern
mkdir "$HELPER_DIR/cores"
echo "$HELPER_DIR/cores/core.%p" >"$PATTERN"

# crash ACTION: attach aborted at attach:unwrapped with ACTION; prints the
# exit status (134: SIGABRT) and the core files written.
crash() {
	local status
	rm -f "$HELPER_DIR"/cores/*
	status=$(
		ulimit -c unlimited
		ENVCRYPT_FAULT=attach:unwrapped:$1 "$TESTCTL" attach "$dev" "$NAME" >"$HELPER_DIR/out" 2>&1
		echo $?
	)
	echo "exit $status, cores: $(find "$HELPER_DIR/cores" -type f -printf '%f ' | sed 's/[0-9]//g')"
}

# Where either half of each key is in FILE, in binary or hex (either case).
key_bytes_in() { # FILE NAME=HEX...
	python3 - "$@" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
for arg in sys.argv[2:]:
    name, hexed = arg.split("=")
    raw = bytes.fromhex(hexed)
    halves = [raw[:len(raw) // 2], raw[len(raw) // 2:]]
    for half in halves:
        for needle in (half, half.hex().encode(), half.hex().upper().encode()):
            at = data.find(needle)
            if at >= 0:
                print(f"{name}: {len(needle)} bytes at offset {at}")
PY
}

expect_eq "crash at attach:unwrapped with ulimit -c unlimited: SIGABRT, no core file" \
	"exit 134, cores: " "$(crash abort)"
for core in "$HELPER_DIR"/cores/core.*; do
	[ -e "$core" ] && key_bytes_in "$core" "DK=$dk" "root key=$root_key" | sed 's/^/#   /'
done
expect_eq "made dumpable again at attach:unwrapped: SIGABRT, one core file" \
	"exit 134, cores: core. " "$(crash dump)"
for core in "$HELPER_DIR"/cores/core.*; do
	[ -e "$core" ] || continue
	echo "# core file: $(stat -c %s "$core") bytes"
	expect_eq "neither the DK nor the root key is in that core" "" \
		"$(key_bytes_in "$core" "DK=$dk" "root key=$root_key")"
done
expect_eq "no mapping was left" "" "$(dmsetup ls 2>/dev/null | grep "^$NAME")"
tap_done
