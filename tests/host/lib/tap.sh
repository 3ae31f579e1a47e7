# shellcheck shell=bash
# TAP 13 for the host tests that print their plan at the end
# (tests/host/test_kmip*.sh): numbered results, diagnostics, skips that count
# as skips.  Source it, print "TAP version 13", then:
#   skip_all WHY      the whole file is skipped (plan 1..0, exit 4)
#   ok WHAT / not_ok WHAT / skip WHAT WHY
#   diag              stdin as "#   " diagnostic lines
#   bail WHAT         one failure, the plan so far, exit 1
#   tap_finish        the plan; exit status 0 only if nothing failed
TESTS=0
FAILED=0

skip_all() {
	echo "1..0 # SKIP $1"
	exit 4
}

ok() {
	TESTS=$((TESTS + 1))
	echo "ok $TESTS - $1"
}

not_ok() {
	TESTS=$((TESTS + 1))
	FAILED=$((FAILED + 1))
	echo "not ok $TESTS - $1"
}

skip() {
	TESTS=$((TESTS + 1))
	echo "ok $TESTS - $1 # SKIP $2"
}

diag() {
	sed 's/^/#   /'
}

bail() {
	not_ok "$1"
	echo "1..$TESTS"
	exit 1
}

tap_finish() {
	echo "1..$TESTS"
	[ "$FAILED" -eq 0 ]
}
