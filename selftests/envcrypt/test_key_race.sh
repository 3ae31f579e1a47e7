#!/bin/bash
# Key messages, resume and status are serialised by the target, and no
# interleaving of them leaves a live device on a key nobody asked for.
#
# First, in order: a "key set" of a key that is in no keyring fails and
# leaves the target wiped (status "wiped"), and resume is then refused; so
# does a "key set" with a malformed reference; after a good "key set" the
# device resumes and reads back what was written before.
#
# Then, for DURATION seconds (longer, up to MAX_DURATION, until every kind of
# round has happened), at once: two processes cycle suspend /
# "key set" (alternating two descriptions of the same key) / resume,
# retrying the resume until it is accepted; one sends "key wipe" and one a
# "key set" of an absent key whenever the device is suspended (so a resume
# often meets a wiped key and must be refused); one reads "dmsetup status"
# and "dmsetup table" and checks their exact form (the table names one of
# the two descriptions, never freed memory: the suite runs with
# slub_debug=FZPU); one reads back a reference area with O_DIRECT; and fio
# writes and verifies (crc32c) another area over and over.  Passes when
# the reference never reads back wrong (a device live on a wiped key would
# return garbage), fio never reports an error, resumes were refused and
# accepted, the final resume works, and the kernel logged no warning.

. "$ENVCRYPT_TOP/selftests/lib/guest.sh"

KEY_DESC=envcrypt:race-a
KEY_DESC2=envcrypt:race-b
ABSENT=envcrypt:race-absent
NAME=keyrace
DURATION=60
# Under a loaded host the rounds are few: the loops go on past DURATION,
# up to MAX_DURATION, until every kind of round below has happened once.
MAX_DURATION=240
REF_MIB=4
FIO_MIB=4
STATE=/tmp/keyrace
CALL_TIMEOUT=60

guest_setup
dev=$(brd_device 32) || tap_bail "brd device" "/dev/ram0 of 32 MiB" "$(dmesg | tail -n 3)"
on_exit rmmod brd
head -c 64 /dev/urandom >/tmp/race.key
for desc in "$KEY_DESC" "$KEY_DESC2"; do
	add_logon_key "$desc" /tmp/race.key >/dev/null ||
		tap_bail "logon key $desc loads" "keyctl padd succeeds" "$(keyctl show @s 2>&1)"
done
dm_create "$NAME" "$(envcrypt_table 65536 "$dev" 0 "$KEY_DESC" 4096)" ||
	tap_bail "mapping created" "table loads" "$DM_ERROR"
devno=$(($(stat -c '0x%t' "$dev"))):$(($(stat -c '0x%T' "$dev")))
MAPPED=/dev/mapper/$NAME

message() {
	timeout "$CALL_TIMEOUT" dmsetup message "$NAME" 0 "$@" 2>&1
}

key_state() {
	dmsetup status "$NAME" | awk '{ print $6 }'
}

head -c $((REF_MIB * 1024 * 1024)) /dev/urandom >/tmp/race.ref
dd if=/tmp/race.ref of="$MAPPED" bs=1M oflag=direct conv=fsync status=none ||
	tap_bail "reference written" "dd succeeds" "$(dmesg | tail -n 3)"

ref_intact() {
	dd if="$MAPPED" bs=1M count=$REF_MIB iflag=direct status=none | cmp -s - /tmp/race.ref
}

# ---- in order --------------------------------------------------------------
dmesg_mark
dmsetup suspend "$NAME"
expect_fails "key set of a key in no keyring fails" message key set "logon:$ABSENT"
expect_eq "a failed key set leaves the key wiped" wiped "$(key_state)"
expect_fails "resume refused after the failed key set" dmsetup resume "$NAME"
expect_succeeds "key set of the real key" message key set "logon:$KEY_DESC"
expect_fails "key set with a malformed reference fails" message key set "user:$KEY_DESC"
expect_eq "the malformed key set leaves the key wiped" wiped "$(key_state)"
expect_fails "resume refused after the malformed key set" dmsetup resume "$NAME"
expect_succeeds "key wipe while suspended" message key wipe
expect_fails "resume refused after key wipe" dmsetup resume "$NAME"
expect_succeeds "key set of the real key again" message key set "logon:$KEY_DESC"
expect_succeeds "resume after key set" dmsetup resume "$NAME"
expect_eq "status valid after resume" valid "$(key_state)"
if ref_intact; then
	tap_ok "reference reads back after the sequence"
else
	tap_fail "reference reads back after the sequence" "the data written before" "a mismatch"
fi

# ---- windows held open -----------------------------------------------------
# kmod-test/envcrypt_delay.ko busy-waits in a kretprobe when a probed
# function returns in dmsetup, so a window of a few instructions lasts
# seconds and the interleaving below happens every time, on any build of
# the target (the same checks fail on a target without key_lock).
DELAY_MODULE=$ENVCRYPT_TOP/build/kmod-test/$ENVCRYPT_KVER/envcrypt_delay.ko
DELAY_HITS=/sys/module/envcrypt_delay/parameters/hits
DELAY_MS=2000
on_exit rmmod envcrypt_delay

hold_open() { # hold_open SYMBOL [CALLER_MODULE]
	insmod "$DELAY_MODULE" symbol="$1" delay_ms=$DELAY_MS ${2:+caller=$2} ||
		tap_bail "envcrypt_delay on $1 loads" "insmod succeeds" "$(dmesg | tail -n 3)"
}

wait_hits() { # wait_hits N: until N returns were held (at most 20 s)
	local tries
	for ((tries = 0; tries < 200; tries++)); do
		[ "$(cat "$DELAY_HITS")" -ge "$1" ] && return 0
		sleep 0.1
	done
	return 1
}

# A "key wipe" between a successful preresume and the device going live
# must be refused: accepted, the device goes live on a forgotten random key.
dmesg_mark
dmsetup suspend "$NAME"
hold_open envcrypt_preresume
dmsetup resume "$NAME" >/tmp/race.resume 2>&1 &
resume_pid=$!
if wait_hits 1; then
	expect_fails "key wipe refused while a resume is past its check" message key wipe
else
	tap_fail "key wipe refused while a resume is past its check" \
		"the resume held in preresume" "no hit in 20 s"
fi
wait "$resume_pid"
expect_eq "the held resume succeeds" "0" "$?"
rmmod envcrypt_delay
expect_eq "live with the key valid after the held resume" valid "$(key_state)"
if ref_intact; then
	tap_ok "reference reads back after the held resume"
else
	tap_fail "reference reads back after the held resume" "the data written before" \
		"a mismatch (live on a wiped key)"
fi

# A status read while a "key set" is between freeing the old description
# and storing the new one, then a second "key set" in the same window: the
# status must never print freed memory and the old description must be
# freed once (slub_debug=FZPU reports a second free).
dmesg_mark
dmsetup suspend "$NAME"
hold_open kfree dm_envcrypt
message key set "logon:$KEY_DESC2" >/tmp/race.set1 &
set1_pid=$!
wait_hits 1 || tap_fail "first key set held in kfree" "a hit" "none in 20 s"
held_table=$(dmsetup table "$NAME" 2>&1)
message key set "logon:$KEY_DESC" >/tmp/race.set2 &
set2_pid=$!
wait "$set1_pid"
set1_rc=$?
wait "$set2_pid"
set2_rc=$?
rmmod envcrypt_delay
expect_eq "both held key sets succeed" "0 0" "$set1_rc $set2_rc"
held_re="^0 65536 envcrypt $devno 0 logon:envcrypt:race-[ab] 1 sector_size:4096$"
expect_match "table read during a held key set names a key description" "$held_re" "$held_table"
expect_eq "no second free or poisoned object during the held key sets" "" \
	"$(dmesg_since_mark | grep -E 'BUG|Object already free|Poison overwritten|double free|WARNING')"
expect_succeeds "resume after the held key sets" dmsetup resume "$NAME"
if ref_intact; then
	tap_ok "reference reads back after the held key sets"
else
	tap_fail "reference reads back after the held key sets" "the data written before" "a mismatch"
fi

# ---- concurrently ----------------------------------------------------------
rm -rf "$STATE"
mkdir -p "$STATE"
stop_at=$((SECONDS + DURATION))
hard_stop_at=$((SECONDS + MAX_DURATION))
SEEN_KINDS="resumed refused wiped status reads fio"

every_kind_seen() {
	local kind
	for kind in $SEEN_KINDS; do
		[ -s "$STATE/$kind" ] || return 1
	done
}

running() {
	! [ -e "$STATE/stop" ] || return 1
	[ "$SECONDS" -lt "$stop_at" ] && return 0
	[ "$SECONDS" -lt "$hard_stop_at" ] && ! every_kind_seen
}

note() { # note FILE LINE: append one line of evidence
	echo "$2" >>"$STATE/$1"
}

cycler() {
	local id=$1 round=0 desc tries
	while running; do
		round=$((round + 1))
		desc=$KEY_DESC
		[ $((round % 2)) = 0 ] || desc=$KEY_DESC2
		# --noudevsync: no wait for udev per call, more rounds per second.
		# The two cyclers' suspends are serialised: device-mapper's own
		# ioctl checks "already suspended" without its lock, then
		# dm_suspend() refuses a device another caller suspended in
		# between with EINVAL (seen once in CI on 6.1).  That race is
		# in dm core, not in the target; the target's races are the key
		# messages and resumes below, which stay unserialised.
		flock "$STATE/suspend.lock" timeout "$CALL_TIMEOUT" \
			dmsetup suspend --noudevsync "$NAME" || note errors "cycler $id: suspend failed"
		for ((tries = 0; tries < 50; tries++)); do
			# Another process may wipe between these two.
			if message key set "logon:$desc" >/dev/null; then
				note set-ok "$id"
			fi
			if timeout "$CALL_TIMEOUT" dmsetup resume --noudevsync "$NAME" 2>/dev/null; then
				note resumed "$id"
				break
			fi
			note refused "$id"
		done
		[ "$tries" -lt 50 ] || note errors "cycler $id: no resume accepted in 50 tries"
	done
}

wiper() {
	while running; do
		message key wipe >/dev/null && note wiped 1
		sleep 0.0$((RANDOM % 10))
	done
}

bad_setter() {
	while running; do
		message key set "logon:$ABSENT" >/dev/null
		sleep 0.0$((RANDOM % 10))
	done
}

status_reader() {
	local status table
	local status_re="^0 65536 envcrypt [^ ]+ 4096 (valid|wiped) [0-9]+ [0-9]+ [0-9]+ [0-9]+ 0 [0-9]+ [0-9]+$"
	local table_a="0 65536 envcrypt $devno 0 logon:$KEY_DESC 1 sector_size:4096"
	local table_b="0 65536 envcrypt $devno 0 logon:$KEY_DESC2 1 sector_size:4096"
	while running; do
		status=$(dmsetup status "$NAME" 2>&1)
		[[ $status =~ $status_re ]] || note errors "status: $status"
		table=$(dmsetup table "$NAME" 2>&1)
		[ "$table" = "$table_a" ] || [ "$table" = "$table_b" ] || note errors "table: $table"
		note status 1
	done
}

ref_reader() {
	while running; do
		if ref_intact; then
			note reads 1
		else
			note errors "reference read back wrong while live"
		fi
	done
}

fio_loop() {
	local output
	while running; do
		if ! output=$(timeout 300 fio --name=keyrace --filename="$MAPPED" \
			--ioengine=libaio --direct=1 --iodepth=8 --rw=randwrite \
			--bsrange=4k-32k --offset=${REF_MIB}M --size=${FIO_MIB}M \
			--verify=crc32c --verify_fatal=1 --do_verify=1 2>&1); then
			note errors "fio: $(echo "$output" | grep -iE 'err|verify|bad' | head -n 5)"
		fi
		note fio 1
	done
}

dmesg_mark
pids=()
cycler 1 & pids+=($!)
cycler 2 & pids+=($!)
wiper & pids+=($!)
bad_setter & pids+=($!)
status_reader & pids+=($!)
ref_reader & pids+=($!)
fio_loop & pids+=($!)
# Each loop ends by itself after at most MAX_DURATION s (plus its current
# call, each bounded by CALL_TIMEOUT or fio's timeout); this bounds the wait.
deadline=$((SECONDS + MAX_DURATION + 400))
for pid in "${pids[@]}"; do
	while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
		sleep 1
	done
done
touch "$STATE/stop"
stuck=
for pid in "${pids[@]}"; do
	kill -0 "$pid" 2>/dev/null && stuck+=" $pid"
done
expect_eq "every loop ended in time" "" "$stuck"
wait

count() {
	[ -f "$STATE/$1" ] && wc -l <"$STATE/$1" || echo 0
}
echo "# rounds: resumed $(count resumed), refused $(count refused), key set ok $(count set-ok)," \
	"wipes $(count wiped), status reads $(count status), reference reads $(count reads), fio runs $(count fio)"
expect_eq "no process saw an error" "" "$(cat "$STATE/errors" 2>/dev/null | sort | uniq -c | head -n 20)"
for what in $SEEN_KINDS; do
	if [ "$(count $what)" -gt 0 ]; then
		tap_ok "$what: happened at least once"
	else
		tap_fail "$what: happened at least once" "a count > 0" 0
	fi
done

# Leave it live on the right key and check the data once more.
dmsetup suspend "$NAME"
message key set "logon:$KEY_DESC" >/dev/null
expect_succeeds "final resume" dmsetup resume "$NAME"
if ref_intact; then
	tap_ok "reference intact after the races"
else
	tap_fail "reference intact after the races" "the data written before" "a mismatch"
fi
expect_eq "target error counter" 0 "$(dmsetup status "$NAME" | awk '{ print $11 }')"
expect_eq "no kernel warning during the races" "" \
	"$(dmesg_since_mark | grep -E 'WARNING|BUG|Call Trace|refcount|list_(add|del) corruption|general protection')"
tap_done
