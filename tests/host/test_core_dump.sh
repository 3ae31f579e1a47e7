#!/bin/bash
# No key reaches a core file (Documentation/security/key-hierarchy.rst), as
# TAP 13.  The test build of envcryptctl (build/test/envcryptctl, with the
# hooks of helper/src/test_hooks.h) attaches an image file under a local KMS
# and aborts right after the DK is unwrapped, before any kernel involvement
# (ENVCRYPT_FAULT=attach:unwrapped:...), with core dumps allowed by the
# shell (ulimit -c unlimited) and the kernel's core_pattern pointed at a
# temporary directory (saved and restored; hence root):
#  - :abort, as a real crash would: no core file at all (the helper made
#    itself undumpable before reading anything);
#  - :dump, which makes the process dumpable again just before it aborts
#    (what a debugger or a changed policy could do): a core file is written,
#    and neither the DK (envcrypt-test-dk-dump) nor the root key, in binary
#    or hex, is in it (they live in OpenSSL's secure heap, excluded from
#    dumps, and nothing copied them elsewhere).
set -u
TOP=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/host/lib/tap.sh
. "$TOP/tests/host/lib/tap.sh"
TESTBIN=$TOP/build/test/envcryptctl
DK_DUMP=$TOP/build/test/envcrypt-test-dk-dump
PATTERN=/proc/sys/kernel/core_pattern

echo "TAP version 13"
[ -x "$TESTBIN" ] || skip_all "$TESTBIN not built (make test-programs)"
[ -x "$DK_DUMP" ] || skip_all "$DK_DUMP not built (make test-programs)"
[ "$(id -u)" = 0 ] || skip_all "needs root: the test points $PATTERN at its own directory"
[ -w "$PATTERN" ] || skip_all "$PATTERN is not writable here (a container?)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/envcrypt-core.XXXXXX")
saved_pattern=$(cat "$PATTERN")
restore() {
	printf '%s\n' "$saved_pattern" >"$PATTERN"
	rm -rf "$WORK"
}
trap restore EXIT
trap 'exit 1' INT TERM

printf '[kms.local]\ndir = "%s/kms"\nroot_key = "%s/root.key"\n' "$WORK" "$WORK" >"$WORK/envcrypt.conf"
export ENVCRYPT_CONFIG=$WORK/envcrypt.conf
truncate -s 32M "$WORK/disk.img"
"$TESTBIN" kms create-key --alias alias/core >/dev/null || bail "kms create-key"
"$TESTBIN" format "$WORK/disk.img" --cmk alias/core >/dev/null || bail "format"
dk=$("$DK_DUMP" "$WORK/disk.img") || bail "envcrypt-test-dk-dump"
root_key=$(od -An -v -tx1 "$WORK/root.key" | tr -d ' \n')
if [ "${#dk}" != 128 ] || [ "${#root_key}" != 64 ]; then
	bail "a 64-byte DK and a 32-byte root key"
fi

mkdir "$WORK/cores"
printf '%s\n' "$WORK/cores/core.%p" >"$PATTERN"

# crash ACTION: attach, aborted at attach:unwrapped with ACTION; the exit
# status (134 for SIGABRT).
crash() {
	(
		ulimit -c unlimited
		ENVCRYPT_FAULT=attach:unwrapped:$1 exec "$TESTBIN" attach "$WORK/disk.img" envcrypt-core-test
	) >"$WORK/out" 2>&1
}

# Where any of the needles (hex) is in FILE, binary or hex (either case).
key_bytes_in() { # FILE NAME=HEX...
	python3 - "$@" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
for arg in sys.argv[2:]:
    name, hexed = arg.split("=")
    raw = bytes.fromhex(hexed)
    halves = [raw[:len(raw) // 2], raw[len(raw) // 2:]]
    needles = halves + [h.hex().encode() for h in halves] + [h.hex().upper().encode() for h in halves]
    for needle in needles:
        at = data.find(needle)
        if at >= 0:
            print(f"{name}: {len(needle)} bytes at offset {at}")
PY
}

crash abort
status=$?
cores=$(find "$WORK/cores" -type f -printf '%f\n')
if [ "$status" = 134 ] && [ -z "$cores" ]; then
	ok "crash at attach:unwrapped (SIGABRT) with ulimit -c unlimited: no core file"
else
	not_ok "crash at attach:unwrapped (SIGABRT) with ulimit -c unlimited: no core file"
	{ echo "exit $status (expected 134), core files: ${cores:-none}"; cat "$WORK/out"; } | diag
	[ -n "$cores" ] && key_bytes_in "$WORK/cores/$(head -n1 <<<"$cores")" "DK=$dk" "root key=$root_key" | diag
fi
rm -f "$WORK"/cores/*

crash dump
status=$?
core=$(find "$WORK/cores" -type f -printf '%f\n' | head -n1)
if [ "$status" = 134 ] && [ -n "$core" ]; then
	ok "made dumpable again at attach:unwrapped: a core file ($(stat -c %s "$WORK/cores/$core") bytes)"
	found=$(key_bytes_in "$WORK/cores/$core" "DK=$dk" "root key=$root_key")
	if [ -z "$found" ]; then
		ok "neither the DK nor the root key is in that core"
	else
		not_ok "neither the DK nor the root key is in that core"
		echo "$found" | diag
	fi
else
	not_ok "made dumpable again at attach:unwrapped: a core file"
	{ echo "exit $status (expected 134), core file: ${core:-none}"; cat "$WORK/out"; } | diag
fi
tap_finish
