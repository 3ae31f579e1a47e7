#!/bin/bash
# The helper is built hardened (helper/CMakeLists.txt), as TAP 13: for the
# release build/envcryptctl (what `make install` installs) and the test
# build/test/envcryptctl, read from the ELF file itself:
#  - a position-independent executable (type DYN, DT_FLAGS_1 PIE);
#  - full RELRO: a GNU_RELRO segment and immediate binding (BIND_NOW), so
#    the GOT is read-only once the program runs;
#  - a non-executable stack (GNU_STACK without E);
#  - the stack protector (imports __stack_chk_fail) and _FORTIFY_SOURCE
#    (imports checked __*_chk functions).
set -u
TOP=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/host/lib/tap.sh
. "$TOP/tests/host/lib/tap.sh"

echo "TAP version 13"
command -v readelf >/dev/null || skip_all "readelf not installed (binutils: make deps)"

check() { # check BINARY DESCRIPTION EXPECTED SEEN
	if [ "$3" = "$4" ]; then
		ok "$1: $2"
	else
		not_ok "$1: $2"
		printf 'expected: %s\nseen:     %s\n' "$3" "$4" | diag
	fi
}

hardening() { # hardening BINARY
	local bin=$1 name=${1#"$TOP"/} dynamic segments symbols
	if ! [ -x "$bin" ]; then
		not_ok "$name is built (make helper test-programs)"
		return
	fi
	dynamic=$(readelf -dW "$bin")
	segments=$(readelf -lW "$bin")
	symbols=$(readelf --dyn-syms -W "$bin")
	check "$name" "ELF type" "DYN" "$(readelf -hW "$bin" | awk '$1 == "Type:" { print $2 }')"
	check "$name" "DT_FLAGS_1 has PIE" yes \
		"$(grep -q 'FLAGS_1.*PIE' <<<"$dynamic" && echo yes || echo no)"
	check "$name" "a GNU_RELRO segment" 1 "$(grep -c ' GNU_RELRO ' <<<"$segments")"
	check "$name" "immediate binding (BIND_NOW or NOW)" yes \
		"$(grep -Eq '\(FLAGS\).*BIND_NOW|FLAGS_1.* NOW' <<<"$dynamic" && echo yes || echo no)"
	check "$name" "GNU_STACK is RW, not executable" RW \
		"$(awk '$1 == "GNU_STACK" { print $7 }' <<<"$segments")"
	check "$name" "imports __stack_chk_fail" 1 "$(grep -c ' __stack_chk_fail' <<<"$symbols")"
	check "$name" "imports fortified __*_chk functions" yes \
		"$(grep -Eq ' __[a-z_]+_chk(@| |$)' <<<"$symbols" && echo yes || echo no)"
}

hardening "$TOP/build/envcryptctl"
hardening "$TOP/build/test/envcryptctl"
tap_finish
