#!/bin/bash
# A disk whose data key is wrapped by a KMIP server attaches and reads back.
# A PyKMIP server runs inside this guest on 127.0.0.1 (the guest has no
# network to the host) with a throwaway CA and client certificate; under it:
# envcryptctl kms create-key --kms kmip://main, format a block device with
# --cmk kmip://..., attach (unwrap through KMIP Decrypt), write and read back
# through the mapping, detach, attach again and find the data intact; the
# backing device holds no plaintext; after disable-key (KMIP Revoke) attach is
# refused with the server's message and no mapping is left behind.  Then
# disaster 2 of Documentation/admin-guide/disaster-recovery.rst: the key is
# destroyed on the server, attach exits 3, `recover` with the recovery key
# (the disk was formatted with one) moves the DK under a local CMK, and the
# disk attaches with its data intact.  Between the two, the outage cache
# (see its section below) with the server killed and started again.
# Python is slow under TCG: most of this test's time is the server starting.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"
. "$ENVCRYPT_TOP/tests/host/lib/kmip/pykmip.sh"

CTL=$ENVCRYPT_TOP/build/envcryptctl
NAME=kmipdisk
WORK=/tmp/kmip-guest
# Python under TCG starts slowly; the helper's own waits are bounded too.
KMIP_START_TIMEOUT_S=300
KMIP_TIMEOUT_MS=60000

[ -x "$CTL" ] || tap_skip "$CTL not built"
kmip_have_pykmip || tap_skip "PyKMIP not importable by $KMIP_PYTHON"
guest_setup

output=$(kmip_pki_make "$WORK" 2>&1) || tap_bail "throwaway PKI made" "openssl succeeds" "$output"
kmip_server_start "$WORK" 2>"$WORK/start.err" ||
	tap_bail "PyKMIP server starts in the guest" "listening on 127.0.0.1" "$(cat "$WORK/start.err")"
on_exit kmip_server_stop
tap_ok "PyKMIP server listening on 127.0.0.1:$KMIP_PORT inside the guest after $KMIP_START_SECONDS s"
kmip_write_endpoint_config "$WORK" "$WORK/envcrypt.conf" ca client-a
printf '[kms.local]\ndir = "%s"\nroot_key = "%s"\n' "$WORK/kms" "$WORK/root.key" \
	>>"$WORK/envcrypt.conf"
export ENVCRYPT_CONFIG=$WORK/envcrypt.conf
# No disk is known to the in-use guard: the test destroys the key on purpose.
: >"$WORK/envcrypttab"
export ENVCRYPT_TAB=$WORK/envcrypttab
openssl genpkey -algorithm X25519 -out "$WORK/recovery.key" 2>/dev/null &&
	openssl pkey -in "$WORK/recovery.key" -pubout -out "$WORK/recovery.pub" ||
	tap_bail "recovery key pair" "openssl genpkey succeeds" "$(openssl version 2>&1)"

output=$("$CTL" kms create-key --kms kmip://main --alias guest-disks 2>&1)
CMK=$(tail -n1 <<<"$output")
expect_match "kms create-key prints a kmip:// CMK URI" "^kmip://127\.0\.0\.1:$KMIP_PORT/[^/]+$" "$CMK" ||
	tap_bail "CMK created" "a kmip:// URI" "$output"

dev=$(brd_device 64) || tap_bail "brd device" "/dev/ram0 of 64 MiB" "$(dmesg | tail -n 3)"
on_exit rmmod brd
expect_succeeds "format $dev under the KMIP CMK" "$CTL" format "$dev" --cmk "$CMK" \
	--recovery-key "$WORK/recovery.pub" ||
	tap_bail "format" "exit 0" "see above"
expect_match "the header records the KMIP CMK" "cmk: +$CMK" "$("$CTL" inspect "$dev" 2>&1)"

expect_succeeds "attach unwraps the data key through KMIP" "$CTL" attach "$dev" "$NAME" ||
	tap_bail "attach" "exit 0" "see above"
on_exit dm_remove "$NAME"
head -c $((4 * 1024 * 1024)) /dev/urandom >/tmp/kmip.data
# A marker that must never reach the backing device in the clear.
printf 'envcrypt-kmip-plaintext-marker%.0s' $(seq 1 128) >>/tmp/kmip.data
expect_succeeds "write through the mapping" \
	dd if=/tmp/kmip.data of=/dev/mapper/$NAME bs=64K oflag=direct conv=fsync status=none
size=$(stat -c %s /tmp/kmip.data)
seen=$(head -c "$size" /dev/mapper/$NAME | cmp - /tmp/kmip.data 2>&1)
expect_eq "read back through the mapping" "" "$seen"
expect_succeeds "detach" "$CTL" detach "$NAME"

expect_succeeds "attach again (a second KMIP unwrap)" "$CTL" attach "$dev" "$NAME"
seen=$(head -c "$size" /dev/mapper/$NAME | cmp - /tmp/kmip.data 2>&1)
expect_eq "data intact after detach and attach" "" "$seen"
expect_succeeds "detach again" "$CTL" detach "$NAME"
leaked=$(grep -c 'envcrypt-kmip-plaintext-marker' "$dev" 2>&1)
expect_eq "the backing device holds no plaintext" "0" "$leaked"

# ---- the outage cache (Documentation/admin-guide/outage-cache.rst) ---------------
# The guest's TPM (swtpm, run.sh) seals the DK after an attach the server
# answered; with the server killed, attach uses it (connection refused is
# "unreachable"); past max_age it does not; the use reaches the audit trail
# at the next attach the server answers; the server's refusal below
# (disable-key) destroys the entry.
CACHE=$WORK/outage-cache
cache_config() { # cache_config MAX_AGE
	kmip_write_endpoint_config "$WORK" "$WORK/envcrypt.conf" ca client-a
	printf '[kms.local]\ndir = "%s"\nroot_key = "%s"\n' "$WORK/kms" "$WORK/root.key" \
		>>"$WORK/envcrypt.conf"
	printf '[outage_cache]\ndisks = ["%s"]\nmax_age = "%s"\ndir = "%s"\n' "$NAME" "$1" "$CACHE" \
		>>"$WORK/envcrypt.conf"
}
cache_config 1h
DISK_UUID=$("$CTL" inspect "$dev" 2>&1 | awk '$1 == "uuid:" { print $2 }')
expect_match "the disk's uuid" '^[0-9a-f]{8}-' "$DISK_UUID"
expect_succeeds "attach with the server up seals an outage cache entry" "$CTL" attach "$dev" "$NAME"
entry_mode=$(stat -c %a "$CACHE/$DISK_UUID.json" 2>&1)
expect_eq "the entry is $CACHE/<uuid>.json, mode 600" 600 "$entry_mode"
expect_match "status --keys shows the entry and until when it holds" \
	"^$NAME: .*; outage cache: valid until 20[0-9-]+T[0-9:]+Z$" \
	"$("$CTL" status --keys 2>&1 | grep "^$NAME: ")"
expect_match "preflight shows it too" "^$NAME: OK .*; outage cache: valid until " \
	"$("$CTL" preflight 2>&1 | grep "^$NAME: ")"
expect_succeeds "detach (cache)" "$CTL" detach "$NAME"

kmip_server_stop
output=$("$CTL" attach "$dev" "$NAME" 2>&1)
status=$?
expect_eq "server stopped: attach from the cache exits 0" 0 "$status"
expect_match "the line says so, with the reason and the end of validity" \
	"^envcryptctl: $NAME: attached from the outage cache, KMS unreachable: kmip://127\.0\.0\.1:$KMIP_PORT: connect: Connection refused.*, valid until 20[0-9-]+T[0-9:]+Z$" \
	"$(grep '^envcryptctl: ' <<<"$output")"
seen=$(head -c "$size" /dev/mapper/$NAME | cmp - /tmp/kmip.data 2>&1)
expect_eq "attached from the cache: data intact" "" "$seen"
expect_succeeds "detach (from the cache)" "$CTL" detach "$NAME"
uses=$(wc -l <"$CACHE/$DISK_UUID.uses" 2>&1)
expect_eq "the use is recorded until the next contact" 1 "$uses"

cache_config 1s
sleep 2
output=$("$CTL" attach "$dev" "$NAME" 2>&1)
status=$?
expect_eq "past max_age: attach exits 7 (unreachable)" 7 "$status"
expect_match "past max_age: the message says the entry expired" \
	"Connection refused.*\(outage cache not used: the entry expired at .*max_age 1s\)\)" "$output"
expect_fails "past max_age: nothing mapped" dmsetup info "$NAME"
cache_config 1h

KMIP_RESTART_PORT=$KMIP_PORT kmip_server_start "$WORK" 2>"$WORK/restart.err" ||
	tap_bail "PyKMIP server starts again on its port" "listening on $KMIP_PORT" "$(cat "$WORK/restart.err")"
output=$("$CTL" attach "$dev" "$NAME" 2>&1)
status=$?
expect_eq "server back: attach through the server, not the cache" "0:0" "$status:$(grep -c 'outage cache' <<<"$output")"
expect_eq "the recorded use is gone from the cache directory" "absent" \
	"$([ -e "$CACHE/$DISK_UUID.uses" ] && echo present || echo absent)"
audit=$("$CTL" kms audit --disk "$DISK_UUID" 2>&1)
expect_eq "the use is in the audit trail, once" 1 "$(grep -c 'OutageCacheUse' <<<"$audit")"
expect_succeeds "the audit trail verifies" "$CTL" kms audit --verify
expect_succeeds "detach (server back)" "$CTL" detach "$NAME"

expect_succeeds "kms disable-key (KMIP Revoke)" "$CTL" kms disable-key --kms kmip://main "$CMK"
output=$("$CTL" attach "$dev" "$NAME" 2>&1)
status=$?
expect_eq "attach after revoke exits 4 (denied)" 4 "$status"
expect_match "attach after revoke names the server's reason" \
	"KMIP Decrypt failed: Permission Denied" "$output"
expect_match "the refusal destroyed the outage cache entry" \
	"Permission Denied.*\(its outage cache entry is destroyed\)" "$output"
expect_eq "the entry file is gone" "absent" \
	"$([ -e "$CACHE/$DISK_UUID.json" ] && echo present || echo absent)"
expect_fails "no mapping left behind by the refused attach" dmsetup info "$NAME"

# ---- disaster 2: the KMIP key destroyed ------------------------------------------
expect_succeeds "kms schedule-key-deletion --destroy-now (KMIP Destroy)" \
	"$CTL" kms schedule-key-deletion --kms kmip://main --destroy-now "$CMK"
output=$("$CTL" attach "$dev" "$NAME" 2>&1)
status=$?
expect_eq "attach after destroy exits 3 (not found)" 3 "$status"
expect_match "attach after destroy names the server's reason" \
	"KMIP Decrypt failed: Item Not Found" "$output"
LOCAL=$("$CTL" kms create-key --alias alias/after-kmip 2>&1 | tail -n 1)
output=$("$CTL" recover "$dev" --recovery-private-key "$WORK/recovery.key" \
	--cmk alias/after-kmip 2>&1)
expect_match "recover under a local CMK" \
	"the data key is now wrapped under $LOCAL \\(version 1\\)$" "$output"
expect_succeeds "attach after recover" "$CTL" attach "$dev" "$NAME"
seen=$(head -c "$size" /dev/mapper/$NAME | cmp - /tmp/kmip.data 2>&1)
expect_eq "data intact after recover" "" "$seen"
expect_succeeds "detach after recover" "$CTL" detach "$NAME"
tap_done
