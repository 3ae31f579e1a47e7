#!/bin/bash
# envcryptctl attach-all / detach-all at "boot" (udevd running, no envcrypt
# rules): an envcrypttab lists three disks under the service key (by UUID=,
# by /dev path, an image file with discard), a fourth whose customer CMK is
# disabled, and a fifth that is missing but nofail.  attach-all attaches the
# three with their data, reports the fourth as failed (the KMS's "disabled")
# and the fifth as missing, and exits 4 (denied) because the fourth has no
# nofail; it does not stop at the failure (the disk listed after it is
# attached).  A second run leaves attached disks alone.  detach-all removes
# every mapping, last line first.  Without the disabled disk, the missing
# nofail disk alone does not fail the run (exit 0); a missing disk without
# nofail does (exit 3).  A device timeout waits for a late device (bounded);
# a bad line is logged (file, line, problem) and skipped, the others attach
# and the run exits 2; --json reports each disk.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"
. "$ENVCRYPT_TOP/helper/tests/guest_helper.sh"

helper_setup
modprobe loop
TAB=$HELPER_DIR/envcrypttab

uuid_of() {
	"$ENVCTL" --json inspect "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["uuid"])'
}

mappings() {
	dmsetup ls --target envcrypt 2>/dev/null | awk '$1 != "No" { print $1 }' | sort | tr '\n' ' '
}

# Each disk gets 1 MiB of its own random data through a first attach.
fill() { # fill DEVICE FILE
	head -c 1M /dev/urandom >"$HELPER_DIR/$2.data"
	"$ENVCTL" attach "$1" "fill-$2" >/dev/null || return 1
	dd if="$HELPER_DIR/$2.data" of="/dev/mapper/fill-$2" bs=1M oflag=direct status=none
	"$ENVCTL" detach "fill-$2" >/dev/null
}

reads_back() { # reads_back NAME FILE
	expect_eq "$1 reads its data" "$(sha256sum <"$HELPER_DIR/$2.data")" \
		"$(head -c 1M "/dev/mapper/$1" | sha256sum)"
}

on_exit "$ENVCTL" detach-all --tab "$TAB"
one=$(helper_loop 24) && two=$(helper_loop 24) && four=$(helper_loop 24) ||
	tap_bail "loop devices" "three" "$(losetup -a)"
for dev in "$one" "$two" "$four"; do on_exit losetup -d "$dev"; done
three=$HELPER_DIR/three.img
truncate -s 24M "$three"

"$ENVCTL" kms create-key --alias alias/boot-off --description "attach-all test" >/dev/null ||
	tap_bail "create a customer CMK" "exit 0" "failed"
for dev in "$one" "$two" "$three"; do
	"$ENVCTL" format "$dev" >/dev/null || tap_bail "format $dev under the service key" "exit 0" "failed"
done
"$ENVCTL" format "$four" --cmk alias/boot-off >/dev/null ||
	tap_bail "format $four under alias/boot-off" "exit 0" "failed"
fill "$one" one && fill "$two" two && fill "$three" three && fill "$four" four ||
	tap_bail "write each disk's data" "attach, dd, detach" "failed"
expect_succeeds "disable the fourth disk's CMK" "$ENVCTL" kms disable-key alias/boot-off

cat >"$TAB" <<EOF
# attach-all test: three good, one disabled CMK, one missing nofail
one     UUID=$(uuid_of "$one")
two     $two
four    $four
three   $three   discard
absent  /dev/disk/by-id/no-such-disk   nofail
EOF

out=$("$ENVCTL" attach-all --tab "$TAB" 2>&1)
status=$?
echo "$out" | sed 's/^/#   /'
expect_eq "attach-all exits 4 (denied: a disk without nofail failed)" 4 "$status"
expect_eq "three disks attached, the others not" "one three two " "$(mappings)"
expect_match "the disabled disk is reported with the KMS's reason" "four: failed $four: .*[Dd]isabled" "$out"
expect_match "the missing nofail disk is reported missing" "absent: missing .*nofail" "$out"
expect_match "the summary counts every disk" "attach-all: 3 attached, 1 missing \(1 nofail\), 1 failed" "$out"
expect_match "the error line names the failed disk" "envcryptctl: attach-all: 1 of 5 disks failed, first four" "$out"
reads_back one one
reads_back two two
reads_back three three
expect_match "the discard option maps with allow_discards" "allow_discards" "$(dmsetup table three)"

out=$("$ENVCTL" attach-all --tab "$TAB" 2>&1)
expect_match "a second run leaves attached disks alone" "one: already attached" "$out"
expect_eq "and attaches nothing new" "one three two " "$(mappings)"

json=$("$ENVCTL" --json attach-all --tab "$TAB" 2>/dev/null)
expect_eq "--json reports each disk's outcome" \
	"one:already attached two:already attached four:failed three:already attached absent:missing" \
	"$(python3 -c 'import json,sys; print(" ".join(d["name"] + ":" + d["outcome"] for d in json.load(sys.stdin)["disks"]))' <<<"$json")"

out=$("$ENVCTL" detach-all --tab "$TAB" 2>&1)
expect_eq "detach-all exits 0 ($out)" 0 "$?"
expect_match "detach-all goes last line first" "^absent: not attached.*three: detached.*four: not attached.*two: detached.*one: detached" "$(echo "$out" | tr '\n' ' ')"
expect_eq "no mapping left" "" "$(mappings)"

sed -i '/^four /d' "$TAB"
out=$("$ENVCTL" attach-all --tab "$TAB" 2>&1)
status=$?
expect_eq "a missing nofail disk alone does not fail the run (exit 0; ${out##*$'\n'})" 0 "$status"
"$ENVCTL" detach-all --tab "$TAB" >/dev/null

echo "gone    /dev/disk/by-id/no-such-disk" >>"$TAB"
out=$("$ENVCTL" attach-all --tab "$TAB" 2>&1)
status=$?
expect_eq "a missing disk without nofail fails the run with exit 3 (${out##*$'\n'})" 3 "$status"
expect_eq "the others are attached all the same" "one three two " "$(mappings)"
"$ENVCTL" detach-all --tab "$TAB" >/dev/null

# A device that appears 2 s after attach-all starts, with a 20 s timeout.
late_img=$HELPER_DIR/late.img
truncate -s 24M "$late_img"
"$ENVCTL" format "$late_img" >/dev/null
late_loop=$(losetup --find)
echo "late  $late_loop  x-systemd.device-timeout=20" >"$HELPER_DIR/late.tab"
(sleep 2 && losetup "$late_loop" "$late_img") &
start=$SECONDS
out=$("$ENVCTL" attach-all --tab "$HELPER_DIR/late.tab" 2>&1)
status=$?
wait
on_exit losetup -d "$late_loop"
expect_eq "a late device is waited for and attached ($out)" "0 late " "$status $(mappings)"
"$ENVCTL" detach-all --tab "$HELPER_DIR/late.tab" >/dev/null
echo "never  /dev/disk/by-id/never  x-systemd.device-timeout=3" >"$HELPER_DIR/never.tab"
start=$SECONDS
"$ENVCTL" attach-all --tab "$HELPER_DIR/never.tab" >/dev/null 2>&1
status=$?
took=$((SECONDS - start))
if [ "$status" = 3 ] && [ "$took" -ge 3 ] && [ "$took" -le 10 ]; then
	tap_ok "a device that never comes is given up after its timeout (${took} s, exit 3)"
else
	tap_fail "a device that never comes is given up after its timeout" "exit 3 after 3-10 s" \
		"exit $status after $took s"
fi

# A bad line is logged and skipped; the good lines around it still attach,
# and the run then exits 2 (it did not do all the table asked).
printf 'one %s\nbad /dev/vdc discard,bogus\ntwo %s\n' "$one" "$two" >"$HELPER_DIR/bad.tab"
out=$("$ENVCTL" attach-all --tab "$HELPER_DIR/bad.tab" 2>"$HELPER_DIR/bad.err")
status=$?
expect_eq "a bad line makes the run exit 2" 2 "$status"
expect_eq "the lines around it are attached" "one two " "$(mappings)"
expect_eq "the bad line is logged with file, line and problem, then the run fails" \
	"envcryptctl: warning: $HELPER_DIR/bad.tab:2: unknown option 'bogus' (line skipped)
envcryptctl: attach-all: 1 envcrypttab line skipped, first $HELPER_DIR/bad.tab:2: unknown option 'bogus'" \
	"$(cat "$HELPER_DIR/bad.err")"
"$ENVCTL" detach-all --tab "$HELPER_DIR/bad.tab" >/dev/null 2>&1
tap_done
