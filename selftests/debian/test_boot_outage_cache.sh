#!/bin/bash
# Boot a real Debian 12 (systemd as PID 1) with a TPM that keeps its state
# (swtpm) and a remote-kms disk under a CMK on a KMIP server, and show what
# the outage cache (Documentation/admin-guide/outage-cache.rst) does across
# real reboots: the boot unit attaches the disk from the cache while the key
# server is down, not with another machine's TPM, not past max_age, and
# never once the server refused the key.
#
#   selftests/debian/test_boot_outage_cache.sh --kernel KVER
#
# On the host this makes (or reuses) the image of scripts/debian-image.sh,
# starts a PyKMIP server on 127.0.0.1 (tests/host/lib/kmip/pykmip.sh; its
# certificate names 10.0.2.2, the host's loopback as the guest reaches it)
# and boots six times through selftests/debian-run.sh on one overlay, with
# one fresh 64 MiB data disk as /dev/vdb and a TPM (debian-run.sh --tpm):
# WORK/tpm, this machine's, kept from boot to boot, except in boot 4.
#
#   boot 1 (prepare, server up): the KMIP endpoint in envcrypt.conf
#     (timeout_ms = 4000, so one KMS call gives up after 4 s; [boot]
#     attach_timeout_seconds = 30; [kms.local] tpm_tcti left at its
#     default, device:/dev/tpmrm0); a CMK made on the PyKMIP server; /dev/vdb
#     formatted under it, an ext4 file system and a marker file written;
#     /etc/envcrypttab "cache-data UUID=<uuid> remote-kms", /etc/fstab mounts
#     /dev/mapper/cache-data on /srv/cache-data (_netdev); then [outage_cache]
#     disks = ["cache-data"], max_age = "1h".  No entry exists yet, and
#     `status --keys` says "outage cache: none".
#   boot 2 (check, server up): envcrypt-attach@cache\x2ddata.service attached
#     the disk through the server (its attach-all line, no word of the
#     cache), the mount holds the marker; the entry
#     /var/lib/envcrypt/outage-cache/<uuid>.json exists, mode 600, confirmed
#     during this boot; `status --keys` shows it valid until its
#     confirmation + 1 h, exactly.
#   The PyKMIP server is stopped.
#   boot 3 (cached, server down, same TPM): the unit is active, the mapping
#     an envcrypt table, the mount mounted with its marker; the journal holds
#     exactly one syslog warning "cache-data: attached from the outage cache,
#     KMS unreachable: <connection refused>, valid until <boot 2's time>";
#     attach-all's line says attached; the unit took less than half the
#     attach deadline and multi-user.target came after the mount; the use is
#     recorded (one line in <uuid>.uses) and did not move the confirmation.
#   boot 4 (foreign, server down, a fresh TPM: another machine's): the unit
#     failed with exit 7, its line names the refused connection, "(outage
#     cache not used: TPM at device:/dev/tpmrm0: the sealed key does not load
#     (...))" and the attach deadline; nothing mapped or mounted; the entry
#     kept, no use recorded.  Then max_age becomes "1min".
#   boot 5 (expired, server down, this machine's TPM): exit 7 again, now
#     "(outage cache not used: the entry expired at <confirmation + 60 s>
#     (confirmed <confirmation>, max_age 60s))"; nothing mapped; `status
#     --keys` says "expired at" that time.  Then max_age is "1h" again.
#   On the host: the server started again on its port and state, and the
#   CMK disabled there (build/envcryptctl kms disable-key, KMIP Revoke).
#   boot 6 (refused, server up, this machine's TPM): the unit failed with
#     exit 4 (denied) at once, its line ends "(its outage cache entry is
#     destroyed)"; nothing mapped; the entry file is gone and `status --keys`
#     says "outage cache: none".
#
# Output: TAP; each boot's checks under "boot N:", the boot times as
# comments.  Exit 0 if every check passed, 1 if not.  In the guest the same
# file runs as `test_boot_outage_cache.sh --guest PHASE MARKER PORT PKI`.

# shellcheck source=selftests/lib/guest.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/guest.sh"
# shellcheck source=selftests/lib/debian-boot.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/debian-boot.sh"

NAME=cache-data
ATTACH_TIMEOUT=30
# The endpoint's timeout_ms, and so the deadline of one KMS call (one
# server): the KMIP client retries a refused connection until then, and the
# cache is tried after that one call, not at the attach deadline.
KMS_TIMEOUT_MS=4000
CACHE_DIR=/var/lib/envcrypt/outage-cache
# What boot 2 learns and the later boots compare with, on the overlay.
STATE=/root/test-boot-outage-cache
# The max_age of every boot but boot 5 (3600 s), and boot 5's.
MAX_AGE=1h
MAX_AGE_SECONDS=3600
SHORT_AGE=1min
SHORT_AGE_SHOWN=60s
SHORT_AGE_SECONDS=60
# What the TPM of another machine (a fresh swtpm) says of the entry.
SEALED_ON_ANOTHER_TPM="TPM at device:/dev/tpmrm0: the sealed key does not load (sealed on another TPM, the TPM was cleared, or the file is damaged): tpm:parameter(1):integrity check failed"

# ---- guest side -----------------------------------------------------------

attach_unit() {
	systemd-escape --template=envcrypt-attach@.service "$1"
}

mount_unit() {
	systemd-escape --path --suffix=mount "/srv/$1"
}

# RFC 3339 in UTC, as the helper prints times.
rfc3339() {
	date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ
}

# The unit's own lines (stdout, stderr, syslog) in this boot, one a line.
unit_lines() {
	journalctl -b --no-pager -o cat "_SYSTEMD_UNIT=$(attach_unit "$NAME")" 2>&1
}

# The "<name>: ..." result line of attach-all in this boot (not the
# "<name>: attached from the outage cache" line).
result_line() {
	unit_lines | grep -E "^$NAME: (attached|failed|missing) /dev/"
}

# TEXT as an extended regular expression that matches only TEXT.
re_escape() {
	# shellcheck disable=SC2001,SC2016 # a bracket expression, not an expansion
	sed 's/[][\\.*^$(){}+?|]/\\&/g' <<<"$1"
}

# `envcryptctl status --keys` on the disk's line, after "; outage cache: ".
cache_state() {
	local line
	line=$(envcryptctl status --keys 2>/dev/null | grep "^$NAME: ")
	case $line in
	*"; outage cache: "*) echo "${line##*; outage cache: }" ;;
	*) echo "no outage cache part in: $line" ;;
	esac
}

set_max_age() {
	sed -i "s/^max_age = .*/max_age = \"$1\"/" /etc/envcrypt/envcrypt.conf
	sync
	expect_eq "max_age is now $1" "max_age = \"$1\"" "$(grep '^max_age = ' /etc/envcrypt/envcrypt.conf)"
}

# The uuid, CMK and confirmation boot 1 and 2 saved.
load_state() {
	UUID=$(cat "$STATE.uuid" 2>/dev/null)
	CMK=$(cat "$STATE.cmk" 2>/dev/null)
	CONFIRMED=$(cat "$STATE.confirmed" 2>/dev/null)
	expect_match "the disk's uuid and CMK from boot 1, the confirmation from boot 2" \
		'^[0-9a-f-]{36} kmip://[^ ]+ [1-9][0-9]*$' "$UUID $CMK $CONFIRMED" || tap_done
	ENTRY=$CACHE_DIR/$UUID.json
	USES=$CACHE_DIR/$UUID.uses
}

# The unit failed with exit STATUS; nothing is mapped or mounted.
check_failed() {
	local status=$1 unit
	unit=$(attach_unit "$NAME")
	expect_eq "$unit failed: state, result, exit status" "failed exit-code $status" \
		"$(systemctl show -p ActiveState --value "$unit") $(systemctl show -p Result --value "$unit") $(systemctl show -p ExecMainStatus --value "$unit")"
	expect_eq "$NAME is not mapped" "" "$(dmsetup ls 2>&1 | awk -v n="$NAME" '$1 == n')"
	expect_eq "/srv/$NAME is not mounted" "" "$(findmnt -n -o SOURCE "/srv/$NAME" 2>&1)"
}

# refused_re PORT [DEADLINE-RE]: the connection refused, as the KMIP client
# words it after retrying until its deadline (the guest dials the host's
# loopback, where nothing listens).  An attempt cut short by the attach
# deadline has a shorter deadline of its own.
refused_re() {
	echo "kmip://10\\.0\\.2\\.2:$1: connect: Connection refused \\(1 server, [0-9]+ attempts? in [0-9]+ ms; deadline ${2:-[0-9]+} ms\\)"
}

guest_prepare() {
	local marker=$1 port=$2 pki=$3 cmk json uuid
	install -d -m 0700 /etc/envcrypt/kmip
	install -m 0644 "$pki/ca.pem" /etc/envcrypt/kmip/ca.pem
	install -m 0644 "$pki/client-a.pem" /etc/envcrypt/kmip/client.pem
	install -m 0600 "$pki/client-a.key" /etc/envcrypt/kmip/client.key
	cat >>/etc/envcrypt/envcrypt.conf <<-EOF

		# written by test_boot_outage_cache.sh
		[kms.kmip.main]
		host = "10.0.2.2"
		port = $port
		ca = "/etc/envcrypt/kmip/ca.pem"
		cert = "/etc/envcrypt/kmip/client.pem"
		key = "/etc/envcrypt/kmip/client.key"
		timeout_ms = $KMS_TIMEOUT_MS

		[boot]
		attach_timeout_seconds = $ATTACH_TIMEOUT
	EOF
	expect_eq "[kms.local] tpm_tcti is not set (its default is device:/dev/tpmrm0)" "" \
		"$(grep -E '^[[:space:]]*tpm_tcti' /etc/envcrypt/envcrypt.conf)"
	expect_eq "the guest has a TPM: /dev/tpmrm0" yes "$([ -c /dev/tpmrm0 ] && echo yes || echo no)"
	cmk=$(envcryptctl kms create-key --kms kmip://main --alias envcrypt-boot-outage-cache 2>&1 | tail -n 1)
	expect_match "a CMK on the host's PyKMIP server" "^kmip://10\\.0\\.2\\.2:$port/[^/]+\$" "$cmk" ||
		tap_done
	expect_succeeds "envcryptctl format /dev/vdb --cmk $cmk" envcryptctl format /dev/vdb --cmk "$cmk" ||
		tap_done
	json=$(envcryptctl --json inspect /dev/vdb 2>&1)
	uuid=$(sed -n 's/.*"uuid": *"\([0-9a-fA-F-]*\)".*/\1/p' <<<"$json" | head -n 1)
	expect_match "the uuid of /dev/vdb" '^[0-9a-f-]{36}$' "$uuid" || tap_done
	expect_succeeds "attach /dev/vdb for the first write" envcryptctl attach /dev/vdb prep ||
		tap_done
	expect_succeeds "mkfs.ext4 on the mapping" mkfs.ext4 -q /dev/mapper/prep
	mkdir -p /mnt/prep
	if mount /dev/mapper/prep /mnt/prep; then
		echo "$marker" >/mnt/prep/marker
		sync
		expect_succeeds "unmount the new file system" umount /mnt/prep
	else
		tap_fail "mount the new file system" "mounted" "mount failed"
	fi
	expect_succeeds "detach /dev/vdb" envcryptctl detach prep
	printf '# written by test_boot_outage_cache.sh\n%s UUID=%s remote-kms\n' "$NAME" "$uuid" \
		>/etc/envcrypttab
	printf '/dev/mapper/%s /srv/%s ext4 _netdev 0 2\n' "$NAME" "$NAME" >>/etc/fstab
	mkdir -p "/srv/$NAME"
	# The cache only now: the attach above made no entry, so boot 2's is
	# the boot unit's.
	cat >>/etc/envcrypt/envcrypt.conf <<-EOF

		[outage_cache]
		disks = ["$NAME"]
		max_age = "$MAX_AGE"
	EOF
	echo "$uuid" >"$STATE.uuid"
	echo "$cmk" >"$STATE.cmk"
	echo "$cmk" >"$ENVCRYPT_OUT/cmk"
	sync
	echo "# uuid $uuid, CMK $cmk"
	expect_eq "no outage cache entry yet ($CACHE_DIR absent)" absent \
		"$([ -e "$CACHE_DIR" ] && echo present || echo absent)"
	expect_eq "status --keys: the disk is enabled, no entry" none "$(cache_state)"
}

guest_check() {
	local marker=$1 unit lines booted now confirmed until
	unit=$(attach_unit "$NAME")
	load_state_boot1
	expect_eq "$unit is active" active "$(systemctl is-active "$unit" 2>&1)" ||
		systemctl status --no-pager "$unit" 2>&1 | sed 's/^/#   /'
	lines=$(unit_lines)
	echo "${lines//$'\n'/$'\n'# }" | sed '1s/^/# /'
	expect_match "attach-all attached it through the server" \
		"^$NAME: attached /dev/vdb as /dev/mapper/$NAME \\[[0-9.]+ s\\]\$" "$(result_line)"
	expect_eq "no word of the outage cache in the unit's lines" 0 "$(grep -c 'outage cache' <<<"$lines")"
	expect_match "mapping $NAME is an envcrypt target" '^0 [0-9]+ envcrypt ' "$(dmsetup table "$NAME" 2>&1)"
	expect_eq "/srv/$NAME is mounted from /dev/mapper/$NAME, with the marker" \
		"/dev/mapper/$NAME $marker" "$(findmnt -n -o SOURCE "/srv/$NAME" 2>&1) $(cat "/srv/$NAME/marker" 2>&1)"
	expect_eq "the entry $ENTRY: a file of mode 600, the directory 700" "600 700" \
		"$(stat -c %a "$ENTRY" 2>&1) $(stat -c %a "$CACHE_DIR" 2>&1)"
	confirmed=$(sed -n 's/^ *"confirmed_at": *\([0-9]*\),\{0,1\}$/\1/p' "$ENTRY" 2>/dev/null)
	now=$(date +%s)
	booted=$((now - $(cut -d. -f1 /proc/uptime)))
	echo "# booted at $(rfc3339 "$booted"), entry confirmed at $(rfc3339 "${confirmed:-0}"), now $(rfc3339 "$now")"
	if [[ $confirmed =~ ^[1-9][0-9]*$ ]] && [ "$confirmed" -ge $((booted - 2)) ] && [ "$confirmed" -le "$now" ]; then
		tap_ok "the entry was confirmed during this boot (by the boot unit's attach)"
	else
		tap_fail "the entry was confirmed during this boot" "$booted <= confirmed_at <= $now" "'$confirmed'"
		confirmed=0
	fi
	echo "$confirmed" >"$STATE.confirmed"
	sync
	until=$(rfc3339 $((confirmed + MAX_AGE_SECONDS)))
	expect_eq "status --keys: valid until the confirmation + $MAX_AGE" "valid until $until" "$(cache_state)"
	expect_match "status --keys --json: enabled, valid, the same time" \
		"\"outage_cache\": \\{[[:space:]]*\"condition\": \"valid\",[[:space:]]*\"enabled\": true,[[:space:]]*\"valid_until\": \"$until\"[[:space:]]*\\}" \
		"$(envcryptctl --json status --keys 2>/dev/null)"
	expect_eq "no use recorded" absent "$([ -e "$USES" ] && echo present || echo absent)"
}

# Boot 2 has only boot 1's state.
load_state_boot1() {
	UUID=$(cat "$STATE.uuid" 2>/dev/null)
	CMK=$(cat "$STATE.cmk" 2>/dev/null)
	expect_match "the disk's uuid and CMK from boot 1" '^[0-9a-f-]{36} kmip://[^ ]+$' "$UUID $CMK" ||
		tap_done
	ENTRY=$CACHE_DIR/$UUID.json
	USES=$CACHE_DIR/$UUID.uses
}

guest_cached() {
	local marker=$1 port=$2 unit until warnings lines started active mu mounted uses
	unit=$(attach_unit "$NAME")
	load_state
	until=$(rfc3339 $((CONFIRMED + MAX_AGE_SECONDS)))
	expect_eq "$unit is active" active "$(systemctl is-active "$unit" 2>&1)" ||
		systemctl status --no-pager "$unit" 2>&1 | sed 's/^/#   /'
	lines=$(unit_lines)
	echo "${lines//$'\n'/$'\n'# }" | sed '1s/^/# /'
	# The syslog warning (priority 4): the unit's stderr lines are info.
	warnings=$(journalctl -b --no-pager -o cat -t envcryptctl -p warning..warning 2>&1)
	echo "# warnings of envcryptctl: ${warnings//$'\n'/ | }"
	if [ "$(grep -c . <<<"$warnings")" = 1 ] &&
		[[ $warnings =~ ^$NAME:\ attached\ from\ the\ outage\ cache,\ KMS\ unreachable:\ $(refused_re "$port" "$KMS_TIMEOUT_MS"),\ valid\ until\ $until$ ]]; then
		tap_ok "the journal has exactly the line '$warnings'"
	else
		tap_fail "the journal has exactly one line '$NAME: attached from the outage cache, KMS unreachable: <connection refused>, valid until $until'" \
			"^$NAME: attached from the outage cache, KMS unreachable: $(refused_re "$port" "$KMS_TIMEOUT_MS"), valid until $until\$" "$warnings"
	fi
	expect_eq "it came from the boot unit" "$unit" \
		"$(journalctl -b --no-pager -o 'export' -t envcryptctl -p warning..warning 2>&1 | sed -n 's/^_SYSTEMD_UNIT=//p' | sort -u)"
	expect_match "attach-all attached it" \
		"^$NAME: attached /dev/vdb as /dev/mapper/$NAME \\[[0-9.]+ s\\]\$" "$(result_line)"
	expect_match "mapping $NAME is an envcrypt target" '^0 [0-9]+ envcrypt ' "$(dmsetup table "$NAME" 2>&1)"
	expect_eq "/srv/$NAME is mounted from /dev/mapper/$NAME, with the marker" \
		"/dev/mapper/$NAME $marker" "$(findmnt -n -o SOURCE "/srv/$NAME" 2>&1) $(cat "/srv/$NAME/marker" 2>&1)"
	expect_eq "$(mount_unit "$NAME") is active" active "$(systemctl is-active "$(mount_unit "$NAME")" 2>&1)"
	# The boot did not wait for the attach deadline: the unit ended in
	# less than half of it, and multi-user.target came after the mount.
	started=$(systemctl show -p ExecMainStartTimestampMonotonic --value "$unit")
	active=$(systemctl show -p ActiveEnterTimestampMonotonic --value "$unit")
	mounted=$(systemctl show -p ActiveEnterTimestampMonotonic --value "$(mount_unit "$NAME")")
	mu=$(systemctl show -p ActiveEnterTimestampMonotonic --value multi-user.target)
	echo "# $unit started $started us, active $active us; mount active $mounted us; multi-user.target $mu us"
	if [[ $started =~ ^[1-9][0-9]*$ ]] && [[ $active =~ ^[1-9][0-9]*$ ]] &&
		[ $((active - started)) -lt $((ATTACH_TIMEOUT * 1000000 / 2)) ]; then
		tap_ok "the unit attached in $(((active - started) / 1000)) ms, less than half the attach deadline ($ATTACH_TIMEOUT s)"
	else
		tap_fail "the unit attached in less than half the attach deadline" \
			"ActiveEnter - ExecMainStart < $((ATTACH_TIMEOUT / 2)) s" "$started, $active"
	fi
	if [[ $mounted =~ ^[1-9][0-9]*$ ]] && [[ $mu =~ ^[1-9][0-9]*$ ]] && [ "$mounted" -lt "$mu" ] &&
		[ "$active" -lt "$mounted" ]; then
		tap_ok "attach ($((active / 1000)) ms), mount ($((mounted / 1000)) ms), multi-user.target ($((mu / 1000)) ms) in that order"
	else
		tap_fail "attach, mount, multi-user.target in that order" "$active < $mounted < $mu" "$active $mounted $mu"
	fi
	uses=$(cat "$USES" 2>&1)
	echo "# $USES: $uses"
	if [ "$(grep -c . <<<"$uses")" = 1 ] && [[ $uses == *"\"valid_until\":$((CONFIRMED + MAX_AGE_SECONDS))"* ]] &&
		[[ $uses =~ \"reason\":\"$(refused_re "$port" "$KMS_TIMEOUT_MS")\" ]]; then
		tap_ok "the use is recorded: one line in $USES, with the reason and the end of validity"
	else
		tap_fail "one use recorded in $USES" "one line with the reason and valid_until $((CONFIRMED + MAX_AGE_SECONDS))" "$uses"
	fi
	expect_eq "the use did not move the confirmation" "$CONFIRMED" \
		"$(sed -n 's/^ *"confirmed_at": *\([0-9]*\),\{0,1\}$/\1/p' "$ENTRY" 2>&1)"
	expect_eq "status --keys: still valid until boot 2's confirmation + $MAX_AGE" "valid until $until" \
		"$(cache_state)"
}

guest_foreign() {
	local port=$1 line
	load_state
	unit_lines | sed 's/^/# /'
	check_failed 7
	line=$(result_line)
	if [[ $line =~ ^$NAME:\ failed\ /dev/vdb:\ $(refused_re "$port")\ \(outage\ cache\ not\ used:\ (.*)\)\ \(gave\ up\ at\ the\ attach\ deadline\ after\ [0-9]+\ attempts?\ in\ [0-9.]+\ s\;\ \[boot\]\ attach_timeout_seconds\ =\ $ATTACH_TIMEOUT\)\ \[[0-9.]+\ s\]$ ]] &&
		[ "${BASH_REMATCH[1]}" = "$SEALED_ON_ANOTHER_TPM" ]; then
		tap_ok "exit 7: connection refused, the cache not used (another TPM), given up at the deadline"
	else
		tap_fail "exit 7: connection refused, the cache not used (another TPM), given up at the deadline" \
			"$NAME: failed /dev/vdb: kmip://10.0.2.2:$port: connect: Connection refused (...) (outage cache not used: $SEALED_ON_ANOTHER_TPM) (gave up at the attach deadline ...) [...]" \
			"$line"
	fi
	expect_eq "the journal has no attach from the cache" 0 \
		"$(journalctl -b --no-pager -o cat 2>&1 | grep -c 'attached from the outage cache')"
	expect_eq "the entry is kept (a TPM that cannot unseal destroys nothing)" present \
		"$([ -e "$ENTRY" ] && echo present || echo absent)"
	expect_eq "no use recorded: still boot 3's one line" 1 "$(grep -c . "$USES" 2>&1)"
	set_max_age "$SHORT_AGE"
}

guest_expired() {
	local port=$1 line expired
	load_state
	unit_lines | sed 's/^/# /'
	check_failed 7
	expired=$(rfc3339 $((CONFIRMED + SHORT_AGE_SECONDS)))
	line=$(result_line)
	expect_match "exit 7: connection refused, the cache not used: the entry expired at boot 2's confirmation + $SHORT_AGE" \
		"^$NAME: failed /dev/vdb: $(refused_re "$port") \\(outage cache not used: the entry expired at $expired \\(confirmed $(rfc3339 "$CONFIRMED"), max_age $SHORT_AGE_SHOWN\\)\\) \\(gave up at the attach deadline after [0-9]+ attempts? in [0-9.]+ s; \\[boot\\] attach_timeout_seconds = $ATTACH_TIMEOUT\\) \\[[0-9.]+ s\\]\$" \
		"$line"
	expect_eq "the journal has no attach from the cache" 0 \
		"$(journalctl -b --no-pager -o cat 2>&1 | grep -c 'attached from the outage cache')"
	expect_eq "status --keys: expired at that time" "expired at $expired" "$(cache_state)"
	expect_eq "the entry is kept, no use recorded" "present 1" \
		"$([ -e "$ENTRY" ] && echo present || echo absent) $(grep -c . "$USES" 2>&1)"
	set_max_age "$MAX_AGE"
}

guest_refused() {
	local port=$1 unit line started ended
	unit=$(attach_unit "$NAME")
	load_state
	unit_lines | sed 's/^/# /'
	check_failed 4
	line=$(result_line)
	expect_match "exit 4: the server's refusal, and the entry destroyed" \
		"^$NAME: failed /dev/vdb: $(re_escape "$CMK: KMIP Decrypt failed: Permission Denied: The decryption key must be in the Active state to be used for decryption. (its outage cache entry is destroyed)") \\[[0-9.]+ s\\]\$" \
		"$line"
	expect_eq "the reason ends '(its outage cache entry is destroyed)'" "(its outage cache entry is destroyed)" \
		"$(sed -n 's/.*\((its outage cache entry is destroyed)\) \[[0-9.]* s\]$/\1/p' <<<"$line")"
	# A refusal is final: one attempt, no wait for the deadline.
	started=$(systemctl show -p ExecMainStartTimestampMonotonic --value "$unit")
	ended=$(systemctl show -p ExecMainExitTimestampMonotonic --value "$unit")
	if [[ $started =~ ^[1-9][0-9]*$ ]] && [[ $ended =~ ^[1-9][0-9]*$ ]] &&
		[ $((ended - started)) -lt $((ATTACH_TIMEOUT * 1000000 / 2)) ]; then
		tap_ok "the refusal was not retried: the unit failed after $(((ended - started) / 1000)) ms"
	else
		tap_fail "the refusal was not retried" "ExecMainExit - ExecMainStart < $((ATTACH_TIMEOUT / 2)) s" "$started, $ended"
	fi
	expect_eq "the entry file is gone" absent "$([ -e "$ENTRY" ] && echo present || echo absent)"
	expect_eq "status --keys: no entry" none "$(cache_state)"
	expect_eq "status --keys --json: enabled, none, no time" \
		'"outage_cache": { "condition": "none", "enabled": true, "valid_until": null }' \
		"$(envcryptctl --json status --keys 2>/dev/null | tr -s ' \n' ' ' | grep -o '"outage_cache": {[^}]*}')"
}

if [ "${1-}" = --guest ]; then
	case ${2-} in
	prepare) guest_prepare "${3:?}" "${4:?}" "${5:?}" ;;
	check) guest_check "${3:?}" ;;
	cached) guest_cached "${3:?}" "${4:?}" ;;
	foreign) guest_foreign "${4:?}" ;;
	expired) guest_expired "${4:?}" ;;
	refused) guest_refused "${4:?}" ;;
	*) tap_bail "phase" "prepare, check, cached, foreign, expired or refused" "'${2-}'" ;;
	esac
	tap_done
fi

# ---- host side ------------------------------------------------------------

debian_boot_host "$@"
CTL=$TOP/build/envcryptctl
# shellcheck source=tests/host/lib/kmip/pykmip.sh
. "$TOP/tests/host/lib/kmip/pykmip.sh"

command -v swtpm >/dev/null || tap_bail "swtpm" "installed" "missing (make deps)"
[ -x "$CTL" ] || tap_bail "envcryptctl" "$CTL built (it disables the CMK on the host)" "missing (make helper)"
kmip_have_pykmip || tap_bail "PyKMIP" "importable by $KMIP_PYTHON" "not installed (make deps)"
debian_boot_image
debian_boot_work boot_outage_cache
trap 'kmip_server_stop' EXIT
truncate -s 64M "$WORK/vdb.img"
MARKER=marker-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')

# The PKI: the guest checks the server's certificate against the address it
# dials, 10.0.2.2.  It lives under build/, which the guest sees read-only.
PKI=$WORK/pki
debian_guest_pki "$PKI" envcrypt-boot-outage-cache
chmod 0600 "$PKI/client-a.key"
kmip_server_start "$PKI" "$WORK/kmip" ||
	tap_bail "PyKMIP server" "listening on 127.0.0.1" "it did not start (messages above)"
tap_ok "PyKMIP server listening on 127.0.0.1:$KMIP_PORT (pid $KMIP_SERVER_PID) after $KMIP_START_SECONDS s"

# boot N PHASE TPM-DIR: one boot; its checks become ours, prefixed "boot N:".
boot() {
	local n=$1 phase=$2 tpm=$3 status
	"$TOP/selftests/debian-run.sh" --kernel "$KVER" --image "$IMAGE" \
		--overlay "$WORK/overlay.qcow2" --disk "$WORK/vdb.img" --tpm "$tpm" \
		--out "$WORK/boot$n" --timeout "$RUN_TIMEOUT" -- \
		"$TOP/selftests/debian/test_boot_outage_cache.sh" --guest "$phase" "$MARKER" "$KMIP_PORT" "$PKI" \
		>"$WORK/boot$n.tap" 2>"$WORK/boot$n.err"
	status=$?
	debian_boot_relay "$n" "$WORK/boot$n"
	debian_boot_multi_user "$n" "$WORK/boot$n" "$(head -n 1 "$WORK/boot$n/share/boot-time.txt" 2>/dev/null); guest $(cat "$WORK/boot$n/seconds" 2>/dev/null) s"
	debian_boot_finished "$n" "$phase" "$status"
}

echo "# kernel $KVER, image $IMAGE, work $WORK"
boot 1 prepare "$WORK/tpm"
CMK=$(cat "$WORK/boot1/share/out/cmk" 2>/dev/null)
expect_match "boot 1 made the CMK on 10.0.2.2:$KMIP_PORT" "^kmip://10\\.0\\.2\\.2:$KMIP_PORT/[^/]+\$" "$CMK" ||
	tap_done
boot 2 check "$WORK/tpm"
kmip_server_stop
boot 3 cached "$WORK/tpm"
# Another machine's TPM: a fresh swtpm state.
boot 4 foreign "$WORK/tpm-other"
boot 5 expired "$WORK/tpm"

# The server again, on its port (the CMK URI names it) and its database;
# the CMK disabled there, from the host (which reaches it on 127.0.0.1).
KMIP_RESTART_PORT=$KMIP_PORT kmip_server_start "$PKI" "$WORK/kmip" ||
	tap_bail "PyKMIP server started again" "listening on 127.0.0.1:$KMIP_PORT" "it did not start (messages above)"
tap_ok "PyKMIP server listening again on 127.0.0.1:$KMIP_PORT (pid $KMIP_SERVER_PID) after $KMIP_START_SECONDS s"
cat >"$WORK/host.conf" <<EOF
[kms.kmip.main]
host = "127.0.0.1"
port = $KMIP_PORT
ca = "$PKI/ca.pem"
cert = "$PKI/client-a.pem"
key = "$PKI/client-a.key"
timeout_ms = 10000
EOF
chmod 0600 "$WORK/host.conf"
: >"$WORK/host-envcrypttab"
out=$(ENVCRYPT_TAB=$WORK/host-envcrypttab "$CTL" --config "$WORK/host.conf" \
	kms disable-key --kms kmip://main "${CMK##*/}" 2>&1)
expect_eq "host: kms disable-key of the CMK on the server (KMIP Revoke)" "disabled ${CMK##*/}" "$out"
boot 6 refused "$WORK/tpm"

if [ "$TAP_FAILED" = 0 ]; then
	rm -rf "$WORK"
else
	echo "# evidence kept in $WORK"
fi
tap_done
