#!/bin/bash
# Test hooks exist only in test builds (helper/src/util/test_hooks.h), as TAP 13:
#  - the release build/envcryptctl (what `make` builds and `make install`
#    installs) holds no "ENVCRYPT_FAULT" string, and a rewrap run with
#    ENVCRYPT_FAULT=rewrap:reencrypted completes (exit 0, new wrap in force);
#  - the test build, build/test/envcryptctl, dies at that hook (SIGKILL,
#    the old wrap in force), so the spelling checked above is the live one;
#  - the default target of a fresh CMake configuration (what `make helper`
#    builds) has envcryptctl and neither envcrypt-test-dk-dump nor the test
#    envcryptctl.
# Image files and a local KMS under a temporary directory: no kernel module.
set -u
TOP=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/host/lib/tap.sh
. "$TOP/tests/host/lib/tap.sh"
RELEASE=$TOP/build/envcryptctl
TESTBIN=$TOP/build/test/envcryptctl
WORK=$(mktemp -d "${TMPDIR:-/tmp}/envcrypt-hooks.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

echo "TAP version 13"
[ -x "$RELEASE" ] || skip_all "$RELEASE not built (make helper)"
[ -x "$TESTBIN" ] || skip_all "$TESTBIN not built (make test-programs)"

printf '[kms.local]\ndir = "%s/kms"\nroot_key = "%s/root.key"\n' "$WORK" "$WORK" >"$WORK/envcrypt.conf"
ctl() { "$RELEASE" --config "$WORK/envcrypt.conf" "$@"; }

# A disk under version 1 of its key, the key then rotated: rewrap has work.
formatted_and_rotated() { # IMAGE
	truncate -s 32M "$1" &&
		ctl format "$1" --cmk alias/hooks >/dev/null &&
		ctl kms rotate-key alias/hooks >/dev/null
}
wrap_version() { ctl --json inspect "$1" | sed -n 's/^  "cmk_version": \([0-9]*\),$/\1/p'; }

count=$(grep -c ENVCRYPT_FAULT "$RELEASE")
if [ "$count" = 0 ]; then
	ok "release envcryptctl holds no ENVCRYPT_FAULT string"
else
	not_ok "release envcryptctl holds no ENVCRYPT_FAULT string"
	echo "found on $count lines of the binary" | diag
fi

ctl kms create-key --alias alias/hooks >/dev/null || bail "kms create-key"
formatted_and_rotated "$WORK/release.img" || bail "format and rotate"
ENVCRYPT_FAULT=rewrap:reencrypted ctl rewrap "$WORK/release.img" >"$WORK/out" 2>&1
status=$?
version=$(wrap_version "$WORK/release.img")
if [ "$status" = 0 ] && [ "$version" = 2 ]; then
	ok "release envcryptctl ignores ENVCRYPT_FAULT=rewrap:reencrypted: rewrap done, version 2"
else
	not_ok "release envcryptctl ignores ENVCRYPT_FAULT=rewrap:reencrypted"
	{ echo "exit $status (expected 0), wrap version $version (expected 2)"; cat "$WORK/out"; } | diag
fi

formatted_and_rotated "$WORK/test.img" || bail "format and rotate (test build)"
before=$(wrap_version "$WORK/test.img")
# (In a command substitution: no "Killed" report from bash.)
status=$(ENVCRYPT_FAULT=rewrap:reencrypted "$TESTBIN" --config "$WORK/envcrypt.conf" \
	rewrap "$WORK/test.img" >"$WORK/out" 2>&1; echo $?)
version=$(wrap_version "$WORK/test.img")
if [ "$status" = 137 ] && [ "$version" = "$before" ]; then
	ok "test envcryptctl is SIGKILLed at rewrap:reencrypted, the old wrap still in force"
else
	not_ok "test envcryptctl is SIGKILLed at rewrap:reencrypted"
	{ echo "exit $status (expected 137), wrap version $version (expected $before)"; cat "$WORK/out"; } | diag
fi

# What `make helper` builds: the targets of a fresh configuration's `all`
# (Unix Makefiles: CMakeFiles/Makefile2 lists them as "all: CMakeFiles/T.dir/all").
what="make's helper build has envcryptctl, not envcrypt-test-dk-dump nor the test envcryptctl"
if cmake -G "Unix Makefiles" -S "$TOP/helper" -B "$WORK/cmake" -DENVCRYPT_BIN_DIR="$WORK/bin" \
	>"$WORK/cmake.log" 2>&1; then
	in_all=$(sed -n 's|^all: CMakeFiles/\(.*\)\.dir/all$|\1|p' "$WORK/cmake/CMakeFiles/Makefile2" |
		grep 'envcryptctl\|dk-dump' | sort | tr '\n' ' ')
	if [ "$in_all" = "envcryptctl " ]; then
		ok "$what"
	else
		not_ok "$what"
		echo "in all: $in_all" | diag
	fi
else
	not_ok "$what"
	tail -n 20 "$WORK/cmake.log" | diag
fi
tap_finish
