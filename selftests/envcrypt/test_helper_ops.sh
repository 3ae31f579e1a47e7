#!/bin/bash
# The operations commands against real attached disks and the real module:
# preflight passes for attached disks (by UUID= and by path, and one attached
# by hand that the table does not list), fails with the KMS's reason for a
# disk whose CMK is disabled (exit 4) and ignores a missing nofail disk;
# header-backup of an attached disk, header-restore refused while attached
# (exit 8) and for another disk's header (exit 8), restored after both copies
# were destroyed, and the restored disk attaches with its data intact; an
# attach failure prints one structured line (stderr and syslog) naming disk,
# CMK, endpoint, step and reason, status shows it as the disk's last attach
# error and a successful attach clears it; status --keys names each disk's
# CMK version; a mapping without a table (another attach's, not loaded yet)
# fails neither status nor an attach.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"
. "$ENVCRYPT_TOP/helper/tests/guest_helper.sh"

helper_setup
TAB=$HELPER_DIR/envcrypttab
KMS=$HELPER_DIR/kms

uuid_of() {
	"$ENVCTL" --json inspect "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["uuid"])'
}

cmk_of() {
	"$ENVCTL" --json inspect "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cmk"])'
}

on_exit "$ENVCTL" detach-all --tab "$TAB"
detach_at_exit adhoc
one=$(helper_loop 24) && two=$(helper_loop 24) && three=$(helper_loop 24) && four=$(helper_loop 24) ||
	tap_bail "loop devices" "four" "$(losetup -a)"
for dev in "$one" "$two" "$three" "$four"; do on_exit losetup -d "$dev"; done

"$ENVCTL" kms create-key --alias alias/ops-off >/dev/null || tap_bail "create a CMK" "exit 0" "failed"
for dev in "$one" "$two" "$four"; do
	"$ENVCTL" format "$dev" >/dev/null || tap_bail "format $dev" "exit 0" "failed"
done
"$ENVCTL" format "$three" --cmk alias/ops-off >/dev/null || tap_bail "format $three" "exit 0" "failed"
service=$(cmk_of "$one")
off=$(cmk_of "$three")
endpoint="local keystore $KMS"

cat >"$TAB" <<EOF
one     UUID=$(uuid_of "$one")
two     $two
three   $three
absent  /dev/disk/by-id/no-such-disk   nofail
EOF

head -c 1M /dev/urandom >"$HELPER_DIR/one.data"
out=$("$ENVCTL" attach-all --tab "$TAB" 2>&1)
expect_eq "attach-all attaches the three present disks ($out)" 0 "$?"
dd if="$HELPER_DIR/one.data" of=/dev/mapper/one bs=1M oflag=direct status=none
"$ENVCTL" attach "$four" adhoc >/dev/null || tap_bail "attach $four by hand as adhoc" "exit 0" "failed"

# preflight: everything would attach; the missing nofail disk does not count.
out=$("$ENVCTL" preflight --tab "$TAB" 2>&1)
status=$?
echo "$out" | sed 's/^/#   /'
expect_eq "preflight exits 0 when only a nofail disk would fail" 0 "$status"
expect_eq "preflight: the disk by UUID= is OK" \
	"one: OK (device $one, attached as one, CMK $service, endpoint $endpoint)" \
	"$(grep '^one:' <<<"$out")"
expect_eq "preflight: the disk by path is OK" \
	"two: OK (device $two, attached as two, CMK $service, endpoint $endpoint)" \
	"$(grep '^two:' <<<"$out")"
expect_eq "preflight: the disk attached by hand is checked too" \
	"adhoc: OK (device $four, attached as adhoc, CMK $service, endpoint $endpoint)" \
	"$(grep '^adhoc:' <<<"$out")"
expect_eq "preflight: the missing nofail disk is shown, not counted" \
	"absent: FAIL at device: /dev/disk/by-id/no-such-disk does not exist (device /dev/disk/by-id/no-such-disk) (nofail: not counted)" \
	"$(grep '^absent:' <<<"$out")"
expect_eq "preflight: the summary" "preflight: 4 ok, 1 failed (1 nofail)" "$(tail -n1 <<<"$out")"
json=$("$ENVCTL" --json preflight --tab "$TAB" 2>/dev/null)
expect_eq "preflight --json: each disk's result and the module step" \
	"one:OK:module=True two:OK:module=True three:OK:module=True absent:FAIL:module=True adhoc:OK:module=True" \
	"$(python3 -c '
import json, sys
report = json.load(sys.stdin)
print(" ".join(d["name"] + ":" + d["result"] + ":module=" +
               str(any(c["step"] == "module" and c["ok"] for c in d["checks"])) for d in report["disks"]))' <<<"$json")"

expect_succeeds "disable the third disk's CMK (--force: it still wraps that disk)" "$ENVCTL" kms disable-key alias/ops-off --force
out=$("$ENVCTL" preflight --tab "$TAB" 2>&1)
status=$?
expect_eq "preflight exits 4 when a disk's CMK is disabled" 4 "$status"
expect_eq "preflight names disk, step, CMK and endpoint" \
	"three: FAIL at state: CMK $off is Disabled (device $three, attached as three, CMK $off, endpoint $endpoint)" \
	"$(grep '^three:' <<<"$out")"
expect_eq "preflight's error line" \
	"envcryptctl: preflight: 1 of 5 disks would not attach, first three at state: CMK $off is Disabled" \
	"$(tail -n1 <<<"$out")"

# status --keys: every disk is on its CMK's primary version.
out=$("$ENVCTL" status --keys --tab "$TAB" 2>&1)
expect_eq "status --keys lists each disk's wrap" \
	"one: CMK $service, wrapped by version 1, primary version 1: current
two: CMK $service, wrapped by version 1, primary version 1: current
three: CMK $off, wrapped by version 1, primary version 1: current" "$(grep -v '^absent:\|^adhoc:' <<<"$out")"

# Attach failures: the structured line on stderr and to syslog, the record, status.
python3 - "$HELPER_DIR/syslog" <<'EOF' &
# A stand-in syslog daemon: the first datagram sent to /dev/log.
import os, socket, sys
with open(sys.argv[1], "wb") as out:
    try:
        if os.path.lexists("/dev/log"):
            os.unlink("/dev/log")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind("/dev/log")
        s.settimeout(60)
        out.write(s.recv(4096))
    except OSError as e:
        out.write(f"no /dev/log listener: {e}".encode())
EOF
syslogd=$!
for _ in $(seq 50); do [ -S /dev/log ] && break; sleep 0.1; done
on_exit rm -f /dev/log
expect_succeeds "detach three" "$ENVCTL" detach three
line="attach failed: disk=three device=$three cmk=$off endpoint=\"$endpoint\" step=unwrap code=4 reason=\"key $off is Disabled\""
out=$("$ENVCTL" attach "$three" three 2>&1)
status=$?
expect_eq "attach with a disabled CMK exits 4" 4 "$status"
expect_eq "the attach failure is one structured line, then the error" \
	"envcryptctl: $line
envcryptctl: attach $three: key $off is Disabled" "$out"
wait "$syslogd"
expect_match "the same line reaches syslog (daemon.err, ident envcryptctl)" \
	"^<27>.*envcryptctl\[[0-9]+\]: $(sed 's/[][\\.*^$()+?{}|]/\\&/g' <<<"$line")\$" \
	"$(tr -d '\0' <"$HELPER_DIR/syslog")"
expect_eq "the last error is recorded, root-only" "600" "$(stat -c %a /run/envcrypt/attach-errors/three 2>&1)"
expect_match "status shows the last attach error of the configured disk" \
	"three: last attach failed [0-9T:Z-]+: disk=three device=$three cmk=$off .*step=unwrap code=4" \
	"$("$ENVCTL" status --tab "$TAB" 2>&1 | grep '^three: last attach failed')"
out=$("$ENVCTL" attach-all --tab "$TAB" --name three 2>&1)
expect_match "attach-all logs the same line for the disk" "envcryptctl: $(sed 's/[][\\.*^$()+?{}|]/\\&/g' <<<"$line")" "$out"
expect_succeeds "enable the CMK again" "$ENVCTL" kms enable-key alias/ops-off
expect_succeeds "attach three" "$ENVCTL" attach "$three" three
expect_eq "a successful attach clears the record" "" \
	"$("$ENVCTL" status --tab "$TAB" 2>&1 | grep '^three: last attach failed')"

# Header backup and restore.
backup=$HELPER_DIR/one.hdr
uuid_one=$(uuid_of "$one")
out=$("$ENVCTL" header-backup "$one" "$backup" 2>&1)
expect_eq "header-backup of an attached disk" \
	"backed up the header of $one (uuid $uuid_one, sequence 1) to $backup" "$out"
out=$("$ENVCTL" header-restore "$one" "$backup" 2>&1)
status=$?
expect_eq "header-restore refuses an attached disk (exit 8)" \
	"8 envcryptctl: header-restore $one: $one is attached as one: detach it before restoring its header" \
	"$status $out"
expect_succeeds "detach one" "$ENVCTL" detach one
# One byte in each copy: both checksums fail, the uuids stay readable.
printf Z | dd of="$one" bs=1 seek=200 conv=notrunc status=none
printf Z | dd of="$one" bs=1 seek=$((512 * 1024 + 200)) conv=notrunc status=none
out=$("$ENVCTL" attach "$one" one 2>&1)
status=$?
expect_eq "with both copies damaged attach exits 5" 5 "$status"
expect_match "and its line names the header step" \
	"^envcryptctl: attach failed: disk=one device=$one cmk=- endpoint=- step=header code=5 reason=" "$out"
expect_succeeds "detach two" "$ENVCTL" detach two
out=$("$ENVCTL" header-restore "$two" "$backup" 2>&1)
status=$?
expect_eq "header-restore refuses another disk's header (exit 8)" \
	"8 envcryptctl: header-restore $two: $backup is the header of disk $uuid_one, $two is disk $(uuid_of "$two") (use --force to restore it anyway)" \
	"$status $out"
out=$("$ENVCTL" header-restore "$one" "$backup" 2>&1)
status=$?
expect_eq "header-restore onto the damaged header, uuid checked" \
	"0 restored the header of disk $uuid_one (sequence 1, CMK $service) from $backup to $one" "$status $out"
expect_succeeds "the restored disk attaches" "$ENVCTL" attach "$one" one
expect_eq "and reads its data back" "$(sha256sum <"$HELPER_DIR/one.data")" \
	"$(head -c 1M /dev/mapper/one | sha256sum)"
expect_eq "the attach cleared the record" "" \
	"$("$ENVCTL" status --tab "$TAB" 2>&1 | grep '^one: last attach failed')"

# A mapping that another process has created but not yet loaded (no live
# table: parallel envcrypt-attach@ units at boot make one for an instant)
# breaks neither a listing of every mapping nor an attach of another disk.
# Its dm uuid is an envcrypt one, as attach gives it before the table.
notable_uuid=ENVCRYPT-00112233445566778899aabbccddeeff-ops-notable
if dmsetup create --notable -u "$notable_uuid" ops-notable >/dev/null 2>&1; then
	on_exit dmsetup remove ops-notable
	expect_succeeds "status of every mapping while one has no table" "$ENVCTL" status
	"$ENVCTL" detach adhoc >/dev/null 2>&1
	expect_succeeds "attach of another disk while a mapping has no table" "$ENVCTL" attach "$four" adhoc
	dmsetup remove ops-notable >/dev/null 2>&1
else
	tap_fail "a mapping without a table" "dmsetup create --notable succeeds" "$(dmsetup create --notable -u "$notable_uuid" ops-notable 2>&1)"
fi
tap_done
