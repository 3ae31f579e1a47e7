#!/bin/bash
# attach-all at "boot" with a netdev disk whose KMIP server is down: the run
# is bounded by [boot] attach_timeout_seconds.  A PyKMIP server in the guest
# wraps the remote disk's data key, then is stopped.  envcrypttab lists the
# remote disk first (netdev,nofail) and a local-KMS disk after it:
# attach-all attaches the local disk without waiting for the remote one's
# deadline, retries the remote one until its deadline (30 s) and gives up
# there, naming the server and the reason, and exits 0 (nofail).  Without
# nofail the same run exits 7 (KMS unreachable) at the deadline.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"
. "$ENVCRYPT_TOP/helper/tests/guest_helper.sh"
. "$ENVCRYPT_TOP/tests/host/lib/kmip/pykmip.sh"

# Long enough that the local disk's attach (3 s on an idle machine, 8 s on a
# loaded one under TCG; udev processes the new dm device) ends well inside it,
# so "did not wait for the remote disk" is told apart from "took long".
ATTACH_TIMEOUT_S=30
# Process start and the last attempt's end under TCG emulation.
MARGIN_S=15
# How far past its deadline the remote disk may give up: its last attempt's
# KMS call is cut at the deadline, and returning from it (closing the
# socket, releasing the device) on a guest whose vCPU shares a saturated
# 2-core host with another guest can take over a second.
GIVE_UP_SLACK_S=3
KMIP_START_TIMEOUT_S=300
# Setting up waits as long as PyKMIP needs under TCG (seconds per request);
# the attach-all runs use 2 s per server.
SETUP_TIMEOUT_MS=60000
BOOT_TIMEOUT_MS=2000

kmip_have_pykmip || tap_skip "PyKMIP not importable by $KMIP_PYTHON"
helper_setup
TAB=$HELPER_DIR/envcrypttab

output=$(kmip_pki_make "$HELPER_DIR/pki" 2>&1) || tap_bail "throwaway PKI made" "openssl succeeds" "$output"
kmip_server_start "$HELPER_DIR/pki" 2>"$HELPER_DIR/start.err" ||
	tap_bail "PyKMIP server starts in the guest" "listening" "$(cat "$HELPER_DIR/start.err")"
on_exit kmip_server_stop
tap_ok "PyKMIP server listening on 127.0.0.1:$KMIP_PORT after $KMIP_START_SECONDS s"
BASE_CONFIG=$(cat "$ENVCRYPT_CONFIG")
{
	echo "$BASE_CONFIG"
	KMIP_TIMEOUT_MS=$SETUP_TIMEOUT_MS kmip_endpoint_toml "$HELPER_DIR/pki" main ca client-a
} >"$HELPER_DIR/setup.conf"
{
	echo "$BASE_CONFIG"
	KMIP_TIMEOUT_MS=$BOOT_TIMEOUT_MS kmip_endpoint_toml "$HELPER_DIR/pki" main ca client-a
	printf '[boot]\nattach_timeout_seconds = %s\n' "$ATTACH_TIMEOUT_S"
} >"$HELPER_DIR/boot.conf"
export ENVCRYPT_CONFIG=$HELPER_DIR/setup.conf

on_exit "$ENVCTL" detach-all --tab "$TAB"
remote=$(helper_loop 24) && local=$(helper_loop 24) || tap_bail "loop devices" "two" "$(losetup -a)"
on_exit losetup -d "$remote"
on_exit losetup -d "$local"
CMK=$("$ENVCTL" kms create-key --kms kmip://main --alias boot-deadline 2>&1 | tail -n1)
expect_match "kms create-key on the KMIP server" "^kmip://127\.0\.0\.1:$KMIP_PORT/" "$CMK" ||
	tap_bail "KMIP CMK" "a kmip:// URI" "$CMK"
expect_succeeds "format the remote disk under the KMIP CMK" "$ENVCTL" format "$remote" --cmk "$CMK"
expect_succeeds "format the local disk under the service key" "$ENVCTL" format "$local"
kmip_server_stop
export ENVCRYPT_CONFIG=$HELPER_DIR/boot.conf

# attach_all_timed TAB: runs attach-all --json; sets OUT, STATUS, SECONDS_TAKEN.
attach_all_timed() {
	local started=$SECONDS
	OUT=$("$ENVCTL" --json attach-all --tab "$1" 2>&1)
	STATUS=$?
	SECONDS_TAKEN=$((SECONDS - started))
	echo "$OUT" | sed 's/^/#   /'
}

# disk_field NAME FIELD: one field of one disk in the --json report.
disk_field() {
	sed -n '/^{/,/^}/p' <<<"$OUT" | python3 -c '
import json, sys
for disk in json.load(sys.stdin)["disks"]:
    if disk["name"] == sys.argv[1]:
        print(disk.get(sys.argv[2], ""))' "$1" "$2"
}

printf 'remote %s netdev,nofail\nlocal %s\n' "$remote" "$local" >"$TAB"
attach_all_timed "$TAB"
expect_eq "server down, remote disk nofail: attach-all exits 0" 0 "$STATUS"
expect_eq "the local disk is attached" "attached" "$(disk_field local outcome)"
local_seconds=$(disk_field local seconds)
expect_succeeds "the local disk did not wait for the remote one's deadline ($local_seconds s)" \
	python3 -c "import sys; sys.exit(float('$local_seconds') >= $ATTACH_TIMEOUT_S)"
expect_eq "the remote disk failed" "failed" "$(disk_field remote outcome)"
expect_match "its error names the server, the reason and the deadline" \
	"kmip://127\.0\.0\.1:$KMIP_PORT: connect: Connection refused.*gave up at the attach deadline after [0-9]+ attempts?.*attach_timeout_seconds = $ATTACH_TIMEOUT_S" \
	"$(disk_field remote error)"
remote_seconds=$(disk_field remote seconds)
# It gives up at its deadline, or, if the local disk's attach (seconds under
# TCG) ran past it, as soon as that ends: the first pass is its first KMS
# call (at most BOOT_TIMEOUT_MS) and the local attach.
expect_succeeds "the remote disk gave up at its deadline ($remote_seconds s, deadline $ATTACH_TIMEOUT_S s, local attach $local_seconds s)" \
	python3 -c "import sys; first_pass = $BOOT_TIMEOUT_MS / 1000 + float('$local_seconds')
sys.exit(not $ATTACH_TIMEOUT_S <= float('$remote_seconds') <= max($ATTACH_TIMEOUT_S, first_pass) + $GIVE_UP_SLACK_S)"
expect_succeeds "the whole run took $SECONDS_TAKEN s (at most $ATTACH_TIMEOUT_S + $MARGIN_S)" \
	test "$SECONDS_TAKEN" -le $((ATTACH_TIMEOUT_S + MARGIN_S))
"$ENVCTL" detach-all --tab "$TAB" >/dev/null

printf 'remote %s netdev\n' "$remote" >"$TAB"
attach_all_timed "$TAB"
expect_eq "without nofail: attach-all exits 7 (KMS unreachable)" 7 "$STATUS"
expect_succeeds "and still within the deadline ($SECONDS_TAKEN s)" \
	test "$SECONDS_TAKEN" -le $((ATTACH_TIMEOUT_S + MARGIN_S))
expect_fails "no mapping left behind" dmsetup info remote
tap_done
