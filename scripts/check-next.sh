#!/bin/bash
# make check-next: the target's runtime check on the newest kernel of Debian
# trixie-backports (7.x: no "__xts(aes)", xts(aes) itself synchronous), not
# part of make check.
#
#   scripts/check-next.sh [TEST...]
#
# 1. scripts/kbuild-next.sh (make kmod-next) compiles the modules against
#    that kernel's headers and places dm-envcrypt.ko in build/kmod/<abi>/;
#    its TAP output is saved in build/check-next/kmod-next.tap.
# 2. scripts/kernel-next.sh fetches, verifies and unpacks the same kernel
#    into build/kernel-next/<abi>/ (cached).
# 3. selftests/run.sh --kernel <abi> --kernel-dir build/kernel-next/<abi>
#    runs the guest tests that exercise the cipher path (default below, or
#    the TESTs named) in one guest and checks the known answer on the host.
#
# stdout is run.sh's TAP 13 stream; progress and the reason of a failure
# before the guest (naming the kernel) go to stderr.  Exit status: run.sh's,
# or 1 when a step before it failed.
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
LOG_DIR=$TOP/build/check-next
TESTS=(test_known_answer.sh test_dmcrypt_interop.sh test_status.sh
	test_fio_verify.sh test_polled_io.sh test_bounce_cap.sh)
[ $# -eq 0 ] || TESTS=("$@")

abi=
fail() {
	echo "check-next: kernel ${abi:-<newest of trixie-backports>}: $*" >&2
	exit 1
}

mkdir -p "$LOG_DIR" || fail "cannot create $LOG_DIR"
echo "check-next: compiling the modules (scripts/kbuild-next.sh)" >&2
if ! timeout -k 30 3600 "$TOP/scripts/kbuild-next.sh" >"$LOG_DIR/kmod-next.tap" 2>&1; then
	grep -E '^not ok|^# ' "$LOG_DIR/kmod-next.tap" | head -n 20 >&2
	fail "make kmod-next failed or timed out (full output in $LOG_DIR/kmod-next.tap)"
fi
echo "check-next: fetching the kernel (scripts/kernel-next.sh)" >&2
line=$(timeout -k 30 2400 "$TOP/scripts/kernel-next.sh") || fail "scripts/kernel-next.sh failed or timed out"
read -r abi dir <<<"$line"
if [ -z "$abi" ] || ! [ -d "${dir:-}" ]; then
	fail "scripts/kernel-next.sh printed '$line', not '<abi> <dir>'"
fi

# The module must be the one kbuild-next just built for this very kernel.
module=$TOP/build/kmod/$abi/dm-envcrypt.ko
[ -f "$module" ] ||
	fail "no $module: kmod-next compiled against other headers ($(grep -m1 'kbuild root' "$LOG_DIR/kmod-next.tap"))"
vermagic=$(modinfo -F vermagic "$module" 2>/dev/null)
[ "${vermagic%% *}" = "$abi" ] || fail "$module is for '${vermagic%% *}', not $abi"
cmp -s "$module" "$TOP/build/kbuild-next/out/$abi/dm-envcrypt.ko" ||
	fail "$module is not the module kmod-next built (build/kbuild-next/out/$abi/dm-envcrypt.ko)"

echo "check-next: booting $abi from $dir" >&2
exec "$TOP/selftests/run.sh" --kernel "$abi" --kernel-dir "$dir" "${TESTS[@]}"
