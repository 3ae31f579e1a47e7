#!/bin/bash
# run.sh: the envcrypt kselftest suite for one kernel, from the host.
#
#   selftests/run.sh --kernel KVER [--kernel-dir DIR] [--keep] [TEST...]
#
# --kernel-dir DIR boots KVER from DIR instead of the host's / (vm-run.sh's
# option of that name; scripts/kernel-next.sh makes one).
#
# Creates fresh disk images in a temporary directory under build/, boots ONE
# guest (selftests/vm-run.sh) that runs selftests/envcrypt/test_*.sh (or only
# the named TESTs) through lib/tap-runner.sh, then checks on the host what only
# the host can see: the guest kernel log and the raw ciphertext on the disk
# image (lib/xts_known_answer.py).  Prints one TAP 13 stream on stdout:
#
#   TAP version 13
#   1..N                      guest tests, then host checks
#   ok 1 - test_....sh        one line per guest test, numbered as in the guest
#   ...
#   ok K - host: guest kernel log clean
#   ok K+1 - host: known answer envcrypt-512
#   ...
#
# A guest test that never reported (guest died or timed out) is "not ok" with
# the reason.  Exit status 0 only if no line is "not ok".  The temporary
# directory (images, guest output, dmesg, per-test logs) is removed after a
# clean run and kept after a failure (or with --keep); its path is printed.

set -u

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SUITE=$TOP/selftests/envcrypt
DISK_MIB=64
# Per-test limits are in envcrypt/settings; this bounds the whole boot (the
# suite with slub_debug on a loaded 2-core machine can take 35 minutes).
VM_TIMEOUT=3600
# The whole suite runs with SLUB's consistency checks (F), red zones (Z),
# poisoning (P) and owner tracking (U) on every cache: a double free or a
# write past an object is reported ("BUG kmalloc-..."), and the host check
# of the kernel log fails the run, instead of passing unnoticed.
# test_slub_debug.sh checks the guest really booted with it.
# The NVMe disk gets poll queues for test_polled_io.sh (io_uring hipri).
# The guest has a TPM 2.0 (swtpm, state in the work directory) for
# test_tpm_root_key.sh.
KERNEL_ARGS=(slub_debug=FZPU nvme.poll_queues=2)
APPEND_ARGS=()
for arg in "${KERNEL_ARGS[@]}"; do
	APPEND_ARGS+=(--append "$arg")
done
KAT_REGIONS=(envcrypt-512 envcrypt-4096 dm-crypt-4096)

# shellcheck source=selftests/lib/kernel-log.sh
. "$TOP/selftests/lib/kernel-log.sh"

KVER=
KERNEL_DIR_ARGS=()
KEEP=0
TESTS=()
while [ $# -gt 0 ]; do
	case $1 in
	--kernel) KVER=${2-}; shift ;;
	--kernel-dir) KERNEL_DIR_ARGS=(--kernel-dir "${2-}"); shift ;;
	--keep) KEEP=1 ;;
	-h | --help | -*) sed -n '4p' "${BASH_SOURCE[0]}" | sed 's/^# *//' >&2; exit 2 ;;
	*) TESTS+=("$(basename "$1")") ;;
	esac
	shift
done
[ -n "$KVER" ] || { echo "run.sh: --kernel KVER is required" >&2; exit 2; }
if [ ${#TESTS[@]} = 0 ]; then
	for test in "$SUITE"/test_*.sh; do
		[ -e "$test" ] && TESTS+=("$(basename "$test")")
	done
fi
for test in "${TESTS[@]}"; do
	[ -f "$SUITE/$test" ] || { echo "run.sh: no test $SUITE/$test" >&2; exit 2; }
done

mkdir -p "$TOP/build"
WORK=$(mktemp -d "$TOP/build/selftests-$KVER.XXXXXX") || exit 1
OUT=$WORK/out
truncate -s "${DISK_MIB}M" "$WORK/kat.img" || exit 1
truncate -s "${DISK_MIB}M" "$WORK/nvme.img" || exit 1

number=0
failed=0

result() { # result ok|not-ok NAME [EVIDENCE]
	number=$((number + 1))
	if [ "$1" = ok ]; then
		echo "ok $number - $2"
	else
		failed=$((failed + 1))
		echo "not ok $number - $2"
	fi
	[ -z "${3-}" ] || echo "$3" | sed 's/^/#   /'
}

echo "TAP version 13"
echo "1..$((${#TESTS[@]} + 1 + ${#KAT_REGIONS[@]}))"
echo "# kernel $KVER; guest output and logs in $WORK"
start=$SECONDS

# The guest's own header and plan are replaced by the ones above.
"$TOP/selftests/vm-run.sh" --kernel "$KVER" "${KERNEL_DIR_ARGS[@]}" --out "$OUT" --disk "$WORK/kat.img" \
	--nvme "$WORK/nvme.img" --tpm "$WORK/tpm" --timeout "$VM_TIMEOUT" "${APPEND_ARGS[@]}" -- "$TOP/selftests/lib/tap-runner.sh" "$SUITE" "${TESTS[@]}" \
	2>"$WORK/vm-run.err" | grep --line-buffered -avE '^(TAP version 13|1\.\.[0-9]+)$' | tee "$WORK/guest.tap"
vm_status=${PIPESTATUS[0]}
sed 's/^/# /' "$WORK/vm-run.err"
echo "# guest finished with status $vm_status after $((SECONDS - start)) s"

for test in "${TESTS[@]}"; do
	number=$((number + 1))
	if line=$(grep -aE "^(ok|not ok) [0-9]+ - $test( |$)" "$WORK/guest.tap"); then
		[[ $line != not* ]] || failed=$((failed + 1))
	else
		failed=$((failed + 1))
		echo "not ok $number - $test # guest did not report it (vm-run status $vm_status)"
	fi
done

if [ -f "$OUT/dmesg.txt" ]; then
	if trouble=$(kernel_trouble "$OUT/dmesg.txt"); then
		result not-ok "host: guest kernel log clean" "$trouble"
	else
		result ok "host: guest kernel log clean"
	fi
else
	result not-ok "host: guest kernel log clean" \
		"no dmesg.txt: the guest did not finish; console log: $(kernel_trouble "$OUT/console.txt" || tail -n 5 "$OUT/console.txt" 2>/dev/null)"
fi

kat_ran=0
for test in "${TESTS[@]}"; do
	[ "$test" != test_known_answer.sh ] || kat_ran=1
done
for region in "${KAT_REGIONS[@]}"; do
	params=$OUT/known_answer/$region.params
	if [ "$kat_ran" = 0 ]; then
		number=$((number + 1))
		echo "ok $number - host: known answer $region # SKIP test_known_answer.sh not run"
	elif ! [ -f "$params" ]; then
		result not-ok "host: known answer $region" "the guest wrote no $params"
	elif evidence=$(/usr/bin/python3 "$TOP/selftests/lib/xts_known_answer.py" "$params" "$WORK/kat.img" 2>&1); then
		result ok "host: known answer $region" "$evidence"
	else
		result not-ok "host: known answer $region" "$evidence"
	fi
done

echo "# kernel $KVER: $failed failed of $number, $((SECONDS - start)) s"
if [ "$failed" = 0 ] && [ "$KEEP" = 0 ]; then
	rm -rf "$WORK"
else
	echo "# kept $WORK"
fi
[ "$failed" = 0 ]
