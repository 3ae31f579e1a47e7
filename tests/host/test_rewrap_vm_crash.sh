#!/bin/bash
# rewrap survives the whole machine dying, as TAP 13.  For each kernel of the
# matrix (or ENVCRYPT_REWRAP_KERNELS) one guest (selftests/vm-run.sh) formats
# a virtio disk and writes 8 MiB through the mapping; then, for each step of
# rewrap (helper/src/boot/rewrap.h: reencrypted, first-copy-written,
# first-copy-flushed, second-copy-written, second-copy-flushed), a guest
# rotates the key and runs rewrap paused at that step
# (ENVCRYPT_FAULT=rewrap:<step>:pause), the host kills QEMU with SIGKILL, and
# the next guest checks that the disk verifies and attaches with the right
# wrap -- the old version when killed before anything was written, either
# when the first copy was written but not flushed (the guest's page cache
# died with it, or had been written back), the new one from the first flush
# on -- and reads back the same data.  The
# disks use QEMU's cache=writethrough, so what reached QEMU is on the image:
# a kill loses exactly what the guest had not yet sent.
# Guest half: tests/host/lib/rewrap-vm-guest.sh, with the test build
# build/test/envcryptctl (make test-programs): only it obeys ENVCRYPT_FAULT.
# The kernels' sequences run at the same time, each on its own disks (a
# guest mostly waits on TCG and on its pause, so two share the two cores
# well); their results are printed in kernel order once all are done.
# ENVCRYPT_QEMU_LOCK=FILE runs every QEMU under flock FILE instead (one
# guest at a time, on a machine shared with other guests).
set -u
TOP=$(cd "$(dirname "$0")/../.." && pwd)
KERNELS=${ENVCRYPT_REWRAP_KERNELS:-$("$TOP/scripts/kernels.sh")}
STEPS="reencrypted first-copy-written first-copy-flushed second-copy-written second-copy-flushed"
WORK=$(mktemp -d "$TOP/build/rewrap-vm.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# Results are lines "ok - WHAT" or "not ok - WHAT" plus "#   " details,
# without numbers: each kernel's sequence writes its own file, numbered at
# the end.
ok() { echo "ok - $1"; }
not_ok() { # WHAT DETAIL
	echo "not ok - $1"
	printf '%s\n' "$2" | sed 's/^/#   /'
}

with_qemu_lock() {
	if [ -n "${ENVCRYPT_QEMU_LOCK:-}" ]; then
		flock "$ENVCRYPT_QEMU_LOCK" "$@"
	else
		"$@"
	fi
}

# guest KVER OUT EXPECTED NEXT_STEP: one guest over the kernel's two disks.
guest() {
	with_qemu_lock "$TOP/selftests/vm-run.sh" --kernel "$1" --out "$2" --timeout 600 \
		--disk "$WORK/$1/disk.img" --disk "$WORK/$1/state.img" -- \
		"$TOP/tests/host/lib/rewrap-vm-guest.sh" "$3" "$4"
}

# The QEMU process among the descendants of process $1
# (subshell -> flock -> vm-run.sh -> timeout -> qemu-system-x86_64).
qemu_below() {
	local child
	for child in $(ps -o pid= --ppid "$1"); do
		if [ "$(ps -o comm= -p "$child")" = qemu-system-x86 ]; then
			echo "$child"
			return 0
		fi
		qemu_below "$child" && return 0
	done
	return 1
}

# Boots a guest that pauses at STEP and kills its QEMU once it has paused.
kill_at_step() { # KVER OUT EXPECTED STEP
	local vm qemu i
	rm -f "$2/rewrap.err"
	mkdir -p "$2"
	guest "$@" >"$2.log" 2>&1 &
	vm=$!
	for ((i = 0; i < 600; i++)); do
		grep -q "paused at rewrap:$4" "$2/rewrap.err" 2>/dev/null && break
		kill -0 "$vm" 2>/dev/null || break
		sleep 1
	done
	if ! grep -q "paused at rewrap:$4" "$2/rewrap.err" 2>/dev/null; then
		wait "$vm"
		return 1
	fi
	qemu=$(qemu_below "$vm") || return 1
	kill -KILL "$qemu"
	wait "$vm"
	return 0
}

# check_result WHAT LOG: the guest's checks in LOG all held.
check_result() {
	if grep -q '^guest: ok: data read back' "$2" && ! grep -q '^guest: FAIL' "$2"; then
		ok "$1"
	else
		not_ok "$1" "$(grep '^guest:' "$2"; tail -n 5 "$2")"
	fi
}

count=$(($(echo "$KERNELS" | wc -w) * $(echo "$STEPS" | wc -w) * 2))
echo "TAP version 13"
if [ ! -x "$TOP/build/test/envcryptctl" ]; then
	echo "1..1"
	echo "not ok 1 - $TOP/build/test/envcryptctl built (make test-programs)"
	exit 1
fi
echo "1..$count"

# sequence KVER: the whole kill-and-check sequence on one kernel.
sequence() {
	local kver=$1 dir=$WORK/$1 state step out start primary expected previous
	mkdir -p "$dir"
	truncate -s 64M "$dir/disk.img"
	state=$dir/state-root
	mkdir -p "$state"
	head -c $((8 << 20)) /dev/urandom >"$state/data.bin"
	cat >"$state/envcrypt.conf" <<EOF
[kms.local]
dir = "/run/state/kms"
root_key = "/run/state/root.key"
EOF
	truncate -s 64M "$dir/state.img"
	mkfs.ext4 -q -F -d "$state" "$dir/state.img"
	primary=1  # the key's primary version
	expected=- # the version the previous step must have left in force
	previous=  # what the next guest checks
	for step in $STEPS; do
		out=$dir/$step
		start=$(date +%s)
		if kill_at_step "$kver" "$out" "$expected" "$step"; then
			ok "$kver: guest paused at rewrap:$step, QEMU SIGKILLed ($(($(date +%s) - start)) s)"
		else
			not_ok "$kver: guest paused at rewrap:$step" "$(tail -n 20 "$out.log")"
		fi
		[ -n "$previous" ] && check_result "$previous" "$out.log"
		primary=$((primary + 1))
		# Killed before anything was written: the old wrap.  Killed with the
		# first copy written but not flushed, the guest's page cache may or
		# may not have reached the disk: either wrap.  Later: the new wrap.
		case $step in
		reencrypted) expected=$((primary - 1)) ;;
		first-copy-written) expected="$((primary - 1))|$primary" ;;
		*) expected=$primary ;;
		esac
		previous="$kver: killed at $step, the disk verifies, attaches under version $expected, data intact"
	done
	out=$dir/final
	guest "$kver" "$out" "$expected" - >"$out.log" 2>&1
	check_result "$previous" "$out.log"
}

for kver in $KERNELS; do
	sequence "$kver" >"$WORK/$kver.results" 2>&1 &
done
wait
n=0
failed=0
for kver in $KERNELS; do
	while IFS= read -r line; do
		case $line in
		"ok - "*)
			n=$((n + 1))
			echo "ok $n - ${line#ok - }"
			;;
		"not ok - "*)
			n=$((n + 1))
			failed=$((failed + 1))
			echo "not ok $n - ${line#not ok - }"
			;;
		*) echo "$line" ;;
		esac
	done <"$WORK/$kver.results"
done
if [ "$n" -ne "$count" ]; then
	failed=$((failed + 1))
	echo "not ok $((n + 1)) - every kernel's sequence reported ($n of $count results)"
fi
echo "# $((n - failed)) passed, $failed failed"
[ "$failed" = 0 ]
