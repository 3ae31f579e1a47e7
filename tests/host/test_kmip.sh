#!/bin/bash
# test_kmip.sh: the kmip:// KMS backend against a real KMIP server.
#
# Makes a throwaway CA and server/client certificates with openssl, starts a
# PyKMIP server (Debian python3-pykmip, /usr/bin/python3) on 127.0.0.1 on a
# free port, and checks: create-key and a wrap/unwrap round trip; a changed
# encryption context fails to unwrap; describe/list; revoke makes unwrap
# fail with the server's message; a second client identity (other CN) is
# refused; a client trusting the wrong CA fails with a TLS verification
# error; a client certificate from another CA is refused; and, with the
# server stopped, the error is clear and arrives within timeout_ms.  When
# build/envcryptctl has the kms and format commands, the same end to end
# through the CLI.  Output is TAP 13; exit 0 only if nothing failed, 4 when
# everything was skipped.
set -u

TOP=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${ENVCRYPT_BUILD:-$TOP/build}
UNIT_TESTS=$BUILD/helper/envcrypt_unit_tests
CTL=$BUILD/envcryptctl
. "$TOP/tests/host/lib/kmip/pykmip.sh"

echo "TAP version 13"

skip_all() {
	echo "1..0 # SKIP $1"
	exit 4
}
[ -x "$UNIT_TESTS" ] || skip_all "$UNIT_TESTS not built (make helper)"
command -v openssl >/dev/null || skip_all "openssl not installed (make deps)"
kmip_have_pykmip || skip_all "PyKMIP not importable by $KMIP_PYTHON (apt-get install python3-pykmip)"

WORK=$(mktemp -d /tmp/envcrypt-kmip.XXXXXX)
cleanup() {
	kmip_server_stop
	rm -rf "$WORK"
}
trap cleanup EXIT

TESTS=0
FAILED=0
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

# gtest DESCRIPTION FILTER: one test of kmip_live_test.cc, which must run and
# pass (a skip inside the binary is a failure here: the server is up).
gtest() {
	local description=$1 filter=$2 output
	output=$(ENVCRYPT_KMIP_TEST_CONFIG=$WORK/envcrypt.conf "$UNIT_TESTS" \
		--gtest_filter="$filter" 2>&1)
	if grep -q '^\[  PASSED  \] 1 test\.$' <<<"$output" &&
		! grep -q '^\[  SKIPPED \]' <<<"$output"; then
		ok "$description"
		grep -E '^(error seen|server stopped|bench)' <<<"$output" | diag
	else
		not_ok "$description"
		grep -vE '^\[(==========|----------)\]|^Running main|^Note: ' <<<"$output" | diag
	fi
}

if kmip_pki_make "$WORK/pki"; then
	ok "throwaway CA, server certificate (IP:127.0.0.1, DNS:localhost) and clientAuth client certificates"
else
	not_ok "make certificates with openssl"
	echo "1..$TESTS"
	exit 1
fi
if kmip_server_start "$WORK/pki"; then
	ok "PyKMIP server listening on 127.0.0.1:$KMIP_PORT (pid $KMIP_SERVER_PID)"
else
	not_ok "start the PyKMIP server"
	echo "1..$TESTS"
	exit 1
fi
kmip_write_config "$WORK/pki" "$WORK/envcrypt.conf"

gtest "create-key (Create + Activate), wrap (Encrypt AES-GCM) and unwrap (Decrypt) round trip" \
	'KmipLiveTest.CreateKeyWrapUnwrapRoundTrip'
gtest "a changed encryption context or ciphertext fails to unwrap (GCM tag)" \
	'KmipLiveTest.ChangedContextOrCiphertextFailsToUnwrap'
gtest "describe-key, list-keys, alias lookup by Locate, unknown key is not found" \
	'KmipLiveTest.DescribeAndListKeys'
gtest "disable-key (Revoke) -> unwrap refused with the server's message; no re-enable; deletion" \
	'KmipLiveTest.RevokedKeyRefusesUnwrapAndCannotComeBack'
gtest "alias commands answer 'not supported by KMIP server'" \
	'KmipLiveTest.AliasOperationsAreUnsupported'
gtest "a second client identity (other certificate CN) is refused" \
	'KmipLiveTest.AnotherClientIdentityIsRefused'
gtest "trusting the wrong CA is a TLS certificate verification failure" \
	'KmipLiveTest.WrongCaIsATlsVerificationFailure'
gtest "a client certificate from another CA is refused by the server" \
	'KmipLiveTest.ClientCertificateFromAnotherCaIsRefusedByTheServer'

# End to end through the CLI: waits for envcryptctl's kms and format commands.
if "$CTL" kms create-key --help >/dev/null 2>&1; then
	not_ok "envcryptctl kms create-key / format / verify against KMIP: CLI exists, test not written"
else
	skip "envcryptctl kms create-key / format / verify against KMIP" \
		"$CTL has no kms create-key yet"
fi

kmip_server_stop
output=$(ENVCRYPT_KMIP_TEST_SERVER_STOPPED=1 ENVCRYPT_KMIP_TEST_CONFIG=$WORK/envcrypt.conf \
	"$UNIT_TESTS" --gtest_filter='KmipServerStoppedTest.*' 2>&1)
if grep -q '^\[  PASSED  \] 1 test\.$' <<<"$output"; then
	ok "server stopped: clear kKmsUnreachable error within timeout_ms ($KMIP_TIMEOUT_MS ms)"
	grep -E '^(error seen|server stopped)' <<<"$output" | diag
else
	not_ok "server stopped: clear error within timeout_ms"
	diag <<<"$output"
fi

echo "1..$TESTS"
[ "$FAILED" -eq 0 ]
