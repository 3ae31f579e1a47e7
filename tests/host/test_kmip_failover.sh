#!/bin/bash
# test_kmip_failover.sh: KMS failover between two real PyKMIP servers that
# hold the same key.
#
# Starts PyKMIP server 1, creates a key and formats an image file under it
# with envcryptctl, copies server 1's database to server 2 (same uid,
# material and owner) and starts server 2; then checks, with envcryptctl
# verify (header read, KMIP Decrypt, key check value) and an endpoint that
# lists both servers (timeout_ms 1000 each, deadline_ms 4000):
#   - both up: unwraps through server 1; listed the other way round,
#     through server 2 (its log shows the Decrypt);
#   - a hung first server (TCP accepted, never answers): fails over after
#     its timeout_ms;
#   - the key revoked on server 1 only: Permission Denied at once, no
#     failover to server 2, which still unwraps when asked first;
#   - server 1 stopped: unwraps through server 2 (the failover time is
#     printed);
#   - both stopped: exit 7 at the deadline, within [deadline, deadline + 1 s],
#     naming both servers and why.
# Output is TAP 13; exit 0 only if nothing failed, 4 when skipped.
# The conditions given to expect() are evaluated there, hence in single quotes.
# shellcheck disable=SC2016
set -u

TOP=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${ENVCRYPT_BUILD:-$TOP/build}
CTL=$BUILD/envcryptctl
. "$TOP/tests/host/lib/kmip/pykmip.sh"
. "$TOP/tests/host/lib/tap.sh"

TIMEOUT_MS=1000
DEADLINE_MS=4000
# How far past the deadline a failure may end: process start, reading the
# header, the last attempt's cleanup, on a loaded 2-CPU machine.
MARGIN_MS=1000

echo "TAP version 13"

[ -x "$CTL" ] || skip_all "$CTL not built (make helper)"
command -v openssl >/dev/null || skip_all "openssl not installed (make deps)"
kmip_have_pykmip || skip_all "PyKMIP not importable by $KMIP_PYTHON (apt-get install python3-pykmip)"

WORK=$(mktemp -d /tmp/envcrypt-kmip-failover.XXXXXX)
PID1='' PID2='' KMIP_SILENT_PID=''
cleanup() {
	kmip_stop_pid "$PID1"
	kmip_stop_pid "$PID2"
	kmip_stop_pid "$KMIP_SILENT_PID"
	rm -rf "$WORK"
}
trap cleanup EXIT

# endpoint_config FILE PORT...: one endpoint "cluster" listing the servers
# in that order, with the test's short timeouts.
endpoint_config() {
	local file=$1 list='' port
	shift
	for port; do
		list+="${list:+, }\"127.0.0.1:$port\""
	done
	cat >"$file" <<TOML
[kms.kmip.cluster]
servers = [$list]
ca = "$WORK/pki/ca.pem"
cert = "$WORK/pki/client-a.pem"
key = "$WORK/pki/client-a.key"
timeout_ms = $TIMEOUT_MS
deadline_ms = $DEADLINE_MS
TOML
}

# run_verify CONFIG: envcryptctl verify of the image; sets STATUS, OUTPUT
# and ELAPSED_MS.
run_verify() {
	local started
	started=$(date +%s%N)
	OUTPUT=$("$CTL" --config "$1" verify "$IMAGE" 2>&1)
	STATUS=$?
	ELAPSED_MS=$((($(date +%s%N) - started) / 1000000))
}

decrypts_logged() {
	grep -c "Processing operation: Decrypt" "$1/server.log" 2>/dev/null
}

# expect DESCRIPTION CONDITION: ok when the shell CONDITION holds, else the
# evidence of the last run.
expect() {
	if eval "$2"; then
		ok "$1"
		diag <<<"$OUTPUT"
	else
		not_ok "$1"
		echo "#   exit $STATUS after $ELAPSED_MS ms; failed: $2; output:"
		diag <<<"$OUTPUT"
	fi
}

kmip_pki_make "$WORK/pki" || bail "make certificates with openssl"
mkdir -p "$WORK/s1" "$WORK/s2"
kmip_server_start "$WORK/pki" "$WORK/s1" || bail "start PyKMIP server 1"
PID1=$KMIP_SERVER_PID P1=$KMIP_PORT
ok "PyKMIP server 1 listening on 127.0.0.1:$P1 (pid $PID1)"

endpoint_config "$WORK/s1.conf" "$P1"
OUTPUT=$("$CTL" --config "$WORK/s1.conf" kms create-key --kms kmip://cluster \
	--alias envcrypt-failover --description test_kmip_failover.sh 2>&1)
CMK=$(tail -n1 <<<"$OUTPUT")
[[ $CMK =~ ^kmip://127\.0\.0\.1:$P1/[^/]+$ ]] || bail "create-key on server 1: $OUTPUT"
IMAGE=$WORK/disk.img
truncate -s 64M "$IMAGE"
OUTPUT=$("$CTL" --config "$WORK/s1.conf" format "$IMAGE" --cmk "$CMK" 2>&1) ||
	bail "format the image under $CMK: $OUTPUT"
ok "key $CMK created on server 1, image formatted under it"

kmip_copy_database "$WORK/s1/pykmip.db" "$WORK/s2/pykmip.db" ||
	bail "copy server 1's database"
kmip_server_start "$WORK/pki" "$WORK/s2" || bail "start PyKMIP server 2"
PID2=$KMIP_SERVER_PID P2=$KMIP_PORT
ok "PyKMIP server 2 listening on 127.0.0.1:$P2 (pid $PID2) on a copy of server 1's database"

endpoint_config "$WORK/both.conf" "$P1" "$P2"
endpoint_config "$WORK/reversed.conf" "$P2" "$P1"

run_verify "$WORK/both.conf"
BASELINE_MS=$ELAPSED_MS
expect "both up: verify unwraps through server 1 in $ELAPSED_MS ms" \
	'[ "$STATUS" -eq 0 ] && grep -q "matches the key check value" <<<"$OUTPUT"'

before=$(decrypts_logged "$WORK/s2")
run_verify "$WORK/reversed.conf"
after=$(decrypts_logged "$WORK/s2")
expect "servers listed the other way round: server 2 holds the same key and unwraps it" \
	'[ "$STATUS" -eq 0 ] && [ "$after" -eq $((before + 1)) ]'

kmip_silent_start "$WORK" || bail "start a listener that never answers"
endpoint_config "$WORK/hung.conf" "$KMIP_SILENT_PORT" "$P2" "$P1"
run_verify "$WORK/hung.conf"
expect "hung first server: fails over after its timeout_ms ($TIMEOUT_MS): $ELAPSED_MS ms" \
	'[ "$STATUS" -eq 0 ] && [ "$ELAPSED_MS" -ge "$TIMEOUT_MS" ] &&
	[ "$ELAPSED_MS" -le $((TIMEOUT_MS + MARGIN_MS)) ]'
echo "# failover past a hung server: ${ELAPSED_MS} ms (timeout_ms $TIMEOUT_MS, verify alone ${BASELINE_MS} ms)"
kmip_stop_pid "$KMIP_SILENT_PID"
KMIP_SILENT_PID=

OUTPUT=$("$CTL" --config "$WORK/s1.conf" kms disable-key --kms kmip://cluster "$CMK" 2>&1) ||
	bail "disable-key on server 1: $OUTPUT"
before=$(decrypts_logged "$WORK/s2")
run_verify "$WORK/both.conf"
after=$(decrypts_logged "$WORK/s2")
expect "key revoked on server 1 only: Permission Denied (exit 4) at once, no failover" \
	'[ "$STATUS" -eq 4 ] && grep -q "127.0.0.1:$P1/.*Permission Denied" <<<"$OUTPUT" &&
	! grep -q ":$P2" <<<"$OUTPUT" && [ "$after" -eq "$before" ] &&
	[ "$ELAPSED_MS" -lt "$TIMEOUT_MS" ]'
run_verify "$WORK/reversed.conf"
expect "the copy on server 2 is still active and unwraps when asked first" '[ "$STATUS" -eq 0 ]'

kmip_stop_pid "$PID1"
PID1=
run_verify "$WORK/both.conf"
expect "server 1 stopped: verify unwraps through server 2 in $ELAPSED_MS ms" \
	'[ "$STATUS" -eq 0 ] && [ "$ELAPSED_MS" -lt "$DEADLINE_MS" ]'
echo "# failover past a stopped server: ${ELAPSED_MS} ms (verify with both up ${BASELINE_MS} ms)"

kmip_stop_pid "$PID2"
PID2=
run_verify "$WORK/both.conf"
expect "both stopped: exit 7 after $ELAPSED_MS ms, within [$DEADLINE_MS, $((DEADLINE_MS + MARGIN_MS))] ms, naming both servers" \
	'[ "$STATUS" -eq 7 ] && [ "$ELAPSED_MS" -ge "$DEADLINE_MS" ] &&
	[ "$ELAPSED_MS" -le $((DEADLINE_MS + MARGIN_MS)) ] &&
	grep -q "kmip://127.0.0.1:$P1: connect: Connection refused" <<<"$OUTPUT" &&
	grep -q "kmip://127.0.0.1:$P2: connect: Connection refused" <<<"$OUTPUT" &&
	grep -q "deadline $DEADLINE_MS ms" <<<"$OUTPUT"'
echo "# deadline accuracy: failed after ${ELAPSED_MS} ms for deadline_ms $DEADLINE_MS"

tap_finish
