#!/bin/bash
# The test tooling's own promises, as TAP 13 (plan last):
#  - scripts/clang-tidy-cached.py: a clean file is checked once and then
#    taken from the cache; a comment added to a header it includes (a NOLINT
#    could be one) checks it again; a file with a finding fails, shows the
#    finding, and fails again on the next run (never recorded); the cache
#    is shared by a copy of the tree at another path.
#  - selftests/lib/guest.sh: tap_done repeats the failed checks, with the
#    first line of their evidence, after the plan.
#  - scripts/tap-summary.py: each suite's seconds and lanes.txt's lines in
#    the table (its first column as wide as the longest name), the closing
#    "N passed, N failed" last.
#  - scripts/lib/booted-test.sh: a booted test under which QEMU crashed,
#    or whose guest kernel oopsed on int3 (6.1's and 6.12's lines), runs
#    once more, and says so; no other failure (a NULL dereference's panic)
#    is run again.
#  - selftests/lib/debian-run-mount: the 9p share's mount is tried again
#    while it fails (a transport still binding its device), and given up
#    after DEBIAN_RUN_MOUNT_TRIES tries with one line naming the share.
#  - selftests/lib/debian-boot.sh: debian_boot_why names a kernel panic by
#    its cause (the panic line, the fault, where), not by its last line.
#  - scripts/debian-image.sh: a base made in one clone is taken from
#    DEBIAN_BASE_CACHE by the next (no mmdebstrap), and made again when it
#    is older than a week.
#  - scripts/check.sh, in a tree of stand-in suites: the shared suites are
#    taken longest first (an unlisted booted test first of all), by both
#    lanes; no booted test starts before host-test_deb ends, and one that
#    waited CHECK_PACKAGES_WAIT seconds for it fails, naming test and
#    kernel; a failing suite is counted in the closing line.
set -u
TOP=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/host/lib/tap.sh
. "$TOP/tests/host/lib/tap.sh"

echo "TAP version 13"
for tool in clang-tidy clang++ python3; do
	command -v "$tool" >/dev/null || skip_all "$tool not installed (make deps)"
done
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

check() { # check WHAT EXPECTED SEEN
	if [ "$2" = "$3" ]; then
		ok "$1"
	else
		not_ok "$1"
		printf 'expected: %s\nseen:     %s\n' "$2" "$3" | diag
	fi
}

# ---- clang-tidy-cached.py --------------------------------------------------

# tree DIR: a one-file project with its compilation database.
tree() {
	mkdir -p "$1"
	cp "$TOP/.clang-tidy" "$1/"
	printf 'int twice(int x);\n' >"$1/a.h"
	printf '#include "a.h"\nint twice(int x) { return 2 * x; }\n' >"$1/a.cc"
	printf '[{"directory": "%s", "command": "c++ -std=c++20 -I%s -o a.o -c %s/a.cc", "file": "%s/a.cc"}]\n' \
		"$1" "$1" "$1" "$1" >"$1/compile_commands.json"
}

# tidy DIR: the tool on DIR's a.cc as lint.sh runs it; its status, then its
# count line.
tidy() {
	(cd "$1" && "$TOP/scripts/clang-tidy-cached.py" -p "$1" --cache "$WORK/cache" a.cc -- \
		--warnings-as-errors='*') >"$WORK/tidy.out" 2>&1
	echo "$? $(grep '^clang-tidy-cached: ' "$WORK/tidy.out")"
}

tree "$WORK/one"
check "a clean file is checked" "0 clang-tidy-cached: 1 files, 0 clean in the cache, 1 checked, 0 failed" \
	"$(tidy "$WORK/one")"
check "and then taken from the cache" "0 clang-tidy-cached: 1 files, 1 clean in the cache, 0 checked, 0 failed" \
	"$(tidy "$WORK/one")"
cp -a "$WORK/one" "$WORK/other-path"
sed -i "s|$WORK/one|$WORK/other-path|g" "$WORK/other-path/compile_commands.json"
check "a copy of the tree at another path shares the entry" \
	"0 clang-tidy-cached: 1 files, 1 clean in the cache, 0 checked, 0 failed" "$(tidy "$WORK/other-path")"
echo '// NOLINT could be here' >>"$WORK/one/a.h"
check "a comment added to the header checks the file again" \
	"0 clang-tidy-cached: 1 files, 0 clean in the cache, 1 checked, 0 failed" "$(tidy "$WORK/one")"
printf 'int deref() {\n  int *p = nullptr;\n  return *p;\n}\n' >>"$WORK/one/a.cc"
check "a finding fails" "1 clang-tidy-cached: 1 files, 0 clean in the cache, 1 checked, 1 failed" \
	"$(tidy "$WORK/one")"
check "and is shown" 1 "$(grep -c 'a.cc:5:10: error: Dereference of null pointer' "$WORK/tidy.out")"
check "and fails again on the next run" "1 clang-tidy-cached: 1 files, 0 clean in the cache, 1 checked, 1 failed" \
	"$(tidy "$WORK/one")"

# ---- tap_done's summary ----------------------------------------------------

output=$(bash -c '. "$1/selftests/lib/guest.sh"
	tap_ok first
	expect_eq second yes "$(printf "no\nmore")"
	tap_fail third "a" "b"
	tap_done' sh "$TOP" 2>&1)
status=$?
check "tap_done: exit 1 and the failed checks repeated after the plan" "1
1..3
# not ok 2 - second: seen: no
# not ok 3 - third: seen: b
FAIL: 2 of 3 checks failed" "$status
$(sed -n '/^1\.\./,$p' <<<"$output")"

# ---- tap-summary.py --------------------------------------------------------

mkdir -p "$WORK/results"
printf 'TAP version 13\n1..2\nok 1 - a\nnot ok 2 - b\n' >"$WORK/results/x.tap"
echo 1 >"$WORK/results/x.rc"
echo 42 >"$WORK/results/x.seconds"
printf 'TAP version 13\n1..1\nok 1 - a # SKIP why\n' >"$WORK/results/y.tap"
echo 0 >"$WORK/results/y.rc"
printf 'lane 2 done after 10 s\nlane 1 done after 12 s\n' >"$WORK/results/lanes.txt"
output=$("$TOP/scripts/tap-summary.py" "$WORK/results" x y)
status=$?
check "tap-summary: seconds per suite, the lanes, the count last, exit 1" "1
suite                                     passed  failed  skipped  seconds
x                                              1       1        0       42
y                                              0       0        1        ?
lane 2 done after 10 s
lane 1 done after 12 s
1 skipped
1 passed, 1 failed" "$status
$output"
# A name longer than 40 characters (a booted test's suite) widens the
# column instead of shifting its own row.
long=debian-6.12.95+deb12-amd64-test_boot_outage_cache
printf 'TAP version 13\n1..1\nok 1 - a\n' >"$WORK/results/$long.tap"
echo 0 >"$WORK/results/$long.rc"
echo 374 >"$WORK/results/$long.seconds"
output=$("$TOP/scripts/tap-summary.py" "$WORK/results" y "$long" | sed -n 1,3p)
check "tap-summary: the suite column as wide as the longest name" "\
suite                                              passed  failed  skipped  seconds
y                                                       0       0        1        ?
debian-6.12.95+deb12-amd64-test_boot_outage_cache       1       0        0      374" "$output"

# ---- booted-test.sh --------------------------------------------------------

# fake_test WHAT...: a booted test's stand-in; run N (counted in
# $WORK/runs) does WHAT[N]: "crash" (debian-run's line for a QEMU crash,
# exit 1), "int3-6.1", "int3-6.12" (a panicked guest's oops on int3 as
# debian-run relays it, exit 1), "null" (the same for a NULL dereference),
# "fail" (exit 1) or "pass" (exit 0).
cat >"$WORK/fake_test" <<'EOF_FAKE'
#!/bin/bash
n=$(($(cat "$RUNS" 2>/dev/null || echo 0) + 1))
echo "$n" >"$RUNS"
shift $((n - 1))
echo "run $n"
case $1 in
crash)
	echo "# debian-run: kernel 6.1.0-57-amd64: QEMU crashed (SIGSEGV); the guest's console log is in /x/console.txt" >&2
	exit 1
	;;
int3-6.1 | int3-6.12 | null)
	case $1 in
	int3-6.1) echo "# # debian-run:   [    2.812345] int3: 0000 [#1] PREEMPT SMP NOPTI" ;;
	int3-6.12) echo "# # debian-run:   [   35.512345] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI" ;;
	null) echo "# # debian-run:   [   35.512345] BUG: kernel NULL pointer dereference, address: 0000000000000008" ;;
	esac
	echo "# # debian-run:   [   35.812345] Kernel panic - not syncing: Fatal exception in interrupt"
	exit 1
	;;
fail) exit 1 ;;
pass) exit 0 ;;
esac
EOF_FAKE
chmod +x "$WORK/fake_test"
# shellcheck source=scripts/lib/booted-test.sh
. "$TOP/scripts/lib/booted-test.sh"
booted() { # booted WHAT...: the runs, status, note and output of one test
	rm -f "$WORK/runs" "$WORK/booted.log" "$WORK/booted.log.first"
	output=$(RUNS=$WORK/runs booted_test_run "$WORK/booted.log" 60 "$WORK/fake_test" "$@"
		echo "status $BOOTED_TEST_STATUS, note '$BOOTED_TEST_NOTE'")
	echo "runs $(cat "$WORK/runs"), $output"
}
check "booted-test: a QEMU crash, then a pass: run twice, passed, said so" \
	"runs 2, # run 1
# # debian-run: kernel 6.1.0-57-amd64: QEMU crashed (SIGSEGV); the guest's console log is in /x/console.txt
# QEMU crashed (SIGSEGV) under fake_test: the emulator, not the system under test; running the test once more
# run 2
status 0, note 'QEMU crashed (SIGSEGV) in the first run; run again'" "$(booted crash pass)"
check "booted-test: the first run's output kept in LOG.first" "run 1" "$(head -n 1 "$WORK/booted.log.first")"
check "booted-test: two QEMU crashes: run twice, failed" \
	"runs 2, status 1, note 'QEMU crashed (SIGSEGV) in the first run; run again'" \
	"$(booted crash crash | sed -n '1s/,.*/,/p; $p' | paste -sd ' ')"
check "booted-test: a failure without a QEMU crash is not run again" \
	"runs 1, # run 1
status 1, note ''" "$(booted fail pass)"
for k in 6.1 6.12; do
	check "booted-test: $k's oops on int3, then a pass: run twice, passed, said so" \
		"runs 2, status 0, note 'the guest kernel oopsed on int3 (TCG) in the first run; run again'" \
		"$(booted "int3-$k" pass | sed -n '1s/,.*/,/p; $p' | paste -sd ' ')"
done
check "booted-test: a panic on a NULL dereference is not run again" \
	"runs 1, status 1, note ''" "$(booted null pass | sed -n '1s/,.*/,/p; $p' | paste -sd ' ')"

# ---- debian-run-mount ------------------------------------------------------
# A stand-in mount(8) first in PATH: fails FAILS times as the 9p transport
# does before its device is bound, then succeeds; records its arguments.
mkdir -p "$WORK/bin"
cat >"$WORK/bin/mount" <<'EOF_MOUNT'
#!/bin/sh
n=$(($(cat "$MOUNT_CALLS" 2>/dev/null || echo 0) + 1))
echo "$n" >"$MOUNT_CALLS"
echo "$*" >"$MOUNT_CALLS.args"
if [ "$n" -le "$FAILS" ]; then
	echo "mount: /run/debian-run: mount(2) system call failed: No such file or directory."
	exit 32
fi
EOF_MOUNT
chmod +x "$WORK/bin/mount"
run_mount() { # run_mount FAILS TRIES: the calls, exit status and stderr
	rm -f "$WORK/mount.calls"
	err=$(PATH=$WORK/bin:$PATH MOUNT_CALLS=$WORK/mount.calls FAILS=$1 DEBIAN_RUN_MOUNT_TRIES=$2 \
		"$TOP/selftests/lib/debian-run-mount" run /run/debian-run cache=none 2>&1)
	rc=$?
	echo "calls $(cat "$WORK/mount.calls"), exit $rc${err:+, $err}"
}
check "debian-run-mount: a share not bound yet is mounted on the fourth try" \
	"calls 4, exit 0" "$(run_mount 3 150)"
check "debian-run-mount: the options passed to mount" \
	"-t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=none run /run/debian-run" \
	"$(cat "$WORK/mount.calls.args")"
check "debian-run-mount: given up after DEBIAN_RUN_MOUNT_TRIES, one line naming the share" \
	"calls 3, exit 1, debian-run-mount: cannot mount the 9p share 'run' on /run/debian-run after 3 tries: mount: /run/debian-run: mount(2) system call failed: No such file or directory." \
	"$(run_mount 100 3)"

# ---- debian_boot_why -------------------------------------------------------
# A panicked guest's console as the serial port gives it (CR LF, the fault
# first, the offset line last).
BOOT_DIR=$WORK/boot2
mkdir -p "$BOOT_DIR"
printf '%s\r\n' '[   30.100000] systemd[1]: Starting envcrypt-attach@data\x2done.service...' \
	'[   35.500000] BUG: kernel NULL pointer dereference, address: 0000000000000008' \
	'[   35.600000] Oops: 0000 [#1] PREEMPT SMP NOPTI' \
	'[   35.700000] RIP: 0010:envcrypt_read_endio+0x12/0x80 [dm_envcrypt]' \
	'[   35.800000] Kernel panic - not syncing: Fatal exception in interrupt' \
	'[   35.818721] Kernel Offset: 0x38e00000 from 0xffffffff81000000' \
	'[   35.900000] ---[ end Kernel panic - not syncing: Fatal exception in interrupt ]---' \
	>"$BOOT_DIR/console.txt"
echo "debian-run: kernel K: guest died before the test finished" >"$BOOT_DIR.err"
# shellcheck disable=SC2016 # $1 and $2 are the inner shell's
why=$(bash -c '. "$1" && debian_boot_why "$2"' debian-boot "$TOP/selftests/lib/debian-boot.sh" "$BOOT_DIR")
check "debian_boot_why: a panic named by its cause, fault and place" \
	"debian-run: kernel K: guest died before the test finished; console: Kernel panic - not syncing: Fatal exception in interrupt | BUG: kernel NULL pointer dereference, address: 0000000000000008 | RIP: 0010:envcrypt_read_endio+0x12/0x80 [dm_envcrypt] (log: $BOOT_DIR/console.txt)" \
	"$why"

# ---- debian-image.sh's base cache -----------------------------------------
# A copy of the script in a stand-in tree (its .deb and module are dummies)
# and a stand-in mmdebstrap that writes a one-file base and counts its
# calls; --tree makes the file tree only (no mkfs).
image_tree() { # image_tree DIR: a stand-in clone
	mkdir -p "$1/scripts" "$1/selftests/lib" "$1/build/deb" "$1/build/kmod/$IMAGE_KVER"
	cp "$TOP/scripts/debian-image.sh" "$1/scripts/"
	cp "$TOP/selftests/lib/debian-run-mount" "$1/selftests/lib/"
	echo deb >"$1/build/deb/envcrypt_9.9.9_amd64.deb"
	echo ko >"$1/build/kmod/$IMAGE_KVER/dm-envcrypt.ko"
}
IMAGE_KVER=
for modules in /lib/modules/*/kernel; do
	kver=$(basename "$(dirname "$modules")")
	[ -r "/boot/vmlinuz-$kver" ] && IMAGE_KVER=$kver
done
mkdir -p "$WORK/bin"
cat >"$WORK/bin/mmdebstrap" <<'EOF'
#!/bin/bash
echo call >>"$MMDEBSTRAP_CALLS"
for arg; do
	case $arg in
	*/base.tar) mkdir -p "$arg.d/etc" && echo stub >"$arg.d/etc/hostname" &&
		tar -C "$arg.d" -cf "$arg" . && rm -rf "$arg.d" ;;
	esac
done
EOF
chmod +x "$WORK/bin/mmdebstrap"
image_run() { # image_run CLONE N: makes tree N; mmdebstrap's calls so far, the base's line
	local out
	out=$(PATH="$WORK/bin:$PATH" MMDEBSTRAP_CALLS=$WORK/mmdebstrap.calls \
		DEBIAN_BASE_CACHE=$WORK/base-cache "$1/scripts/debian-image.sh" --tree "$1/tree$2" "$IMAGE_KVER" 2>&1 >/dev/null)
	echo "$(wc -l <"$WORK/mmdebstrap.calls") $(grep -o 'base [a-z]* [a-z]*' <<<"$out")"
}
if [ -z "$IMAGE_KVER" ]; then
	not_ok "debian-image: a kernel with modules and an image in /boot (make deps)"
else
	touch "$WORK/mmdebstrap.calls"
	image_tree "$WORK/clone1"
	image_tree "$WORK/clone2"
	check "debian-image: the first clone makes the base" "1 base built in" "$(image_run "$WORK/clone1" 1)"
	check "debian-image: the second takes it from the cache" "1 base taken from" "$(image_run "$WORK/clone2" 1)"
	check "debian-image: the cache's base is in the tree" stub "$(cat "$WORK/clone2/tree1/etc/hostname" 2>&1)"
	touch -d '8 days ago' "$WORK"/base-cache/base-*.tar
	rm -f "$WORK/clone2/build/debian/base.stamp"
	check "debian-image: a base older than a week is made again" "2 base built in" "$(image_run "$WORK/clone2" 2)"
fi

# ---- check.sh's lanes and queue --------------------------------------------
# Every suite is a stand-in that logs its start and end to $STUB_LOG,
# sleeps (test_deb.sh: $DEB_SLEEP s, a shared suite 1 s, test_dkms.sh and
# test_initramfs_hook.sh 1.5 s, others 0.2 s) and
# reports one check, failed when its name has $STUB_FAIL in it.
CK=$WORK/ck
mkdir -p "$CK/scripts" "$CK/tests/host" "$CK/selftests/debian"
cp "$TOP/scripts/check.sh" "$TOP/scripts/tap-summary.py" "$CK/scripts/"
cat >"$CK/stub" <<'EOF'
#!/bin/bash
name="$(basename "$0")${DEBIAN_TESTS:+ $DEBIAN_TESTS}${1:+ $1}"
echo "start $name" >>"$STUB_LOG"
echo "$PPID $name" >>"$STUB_LOG.parents" # check.sh's lane
case $name in
test_deb.sh) sleep "$DEB_SLEEP" ;;
# Longer than check.sh's 1 s poll for the packages: lane 1, waiting on
# them with the first shared suite, starts it before lane 2 takes the next.
test_dkms.sh | test_initramfs_hook.sh) sleep 1.5 ;;
check-debian.sh* | bench-smoke.sh* | unit-tap.sh\ /* | test_rewrap_vm_crash.sh | test_vm_run.sh) sleep 1 ;;
*) sleep 0.2 ;;
esac
echo "end $name" >>"$STUB_LOG"
printf 'TAP version 13\n1..1\n'
if [ -n "${STUB_FAIL:-}" ] && [[ $name == *"$STUB_FAIL"* ]]; then
	echo "not ok 1 - $name"
	exit 1
fi
echo "ok 1 - $name"
EOF
chmod +x "$CK/stub"
for f in scripts/lint.sh scripts/kbuild-next.sh scripts/unit-tap.sh scripts/fuzz.sh \
	scripts/bench-smoke.sh scripts/check-debian.sh selftests/run.sh \
	tests/host/test_deb.sh tests/host/test_dkms.sh tests/host/test_initramfs_hook.sh \
	tests/host/test_rewrap_vm_crash.sh tests/host/test_vm_run.sh tests/host/test_other.sh \
	selftests/debian/test_boot_grub_root.sh selftests/debian/test_boot_local.sh \
	selftests/debian/test_boot_new.sh; do
	ln -s "$CK/stub" "$CK/$f"
done
run_check() { # run_check LOG DEB_SLEEP STUB_FAIL [VAR=VALUE]: the closing line and status
	local out rc
	out=$(env STUB_LOG="$1" DEB_SLEEP="$2" STUB_FAIL="$3" ${4:+"$4"} "$CK/scripts/check.sh" k1 k2 2>&1)
	rc=$?
	echo "$out" >"$1.out"
	echo "$(tail -n 1 <<<"$out"), exit $rc"
}
# The shared suites in the order the lanes started them.
shared_started() {
	sed -n 's/^start \(check-debian.sh\|bench-smoke.sh\|unit-tap.sh \/\|test_rewrap_vm_crash\|test_vm_run\)/&/p' "$1" |
		sed -e 's/^start //' -e 's/^check-debian.sh \(test_[a-z_]*\).sh \(k[12]\)/\2-\1/' \
			-e 's/^unit-tap.sh .*/unit-asan/' -e 's/^bench-smoke.sh.*/bench-smoke/' -e 's/\.sh$//' |
		paste -s -d ' '
}
check "check.sh: every suite passed" "20 passed, 0 failed, exit 0" "$(run_check "$WORK/ck1.log" 3 "")"
check "check.sh: shared suites taken longest first, unlisted booted test first" \
	"k1-test_boot_new k2-test_boot_new k1-test_boot_grub_root k2-test_boot_grub_root bench-smoke test_rewrap_vm_crash k1-test_boot_local k2-test_boot_local unit-asan test_vm_run" \
	"$(shared_started "$WORK/ck1.log")"
check "check.sh: no booted test started before host-test_deb ended" "" \
	"$(sed -n '/^end test_deb.sh$/q;/^start check-debian/p' "$WORK/ck1.log")"
check "check.sh: both lanes took shared suites" 2 \
	"$(grep -E ' (check-debian|bench-smoke|unit-tap.sh /|test_rewrap|test_vm_run)' "$WORK/ck1.log.parents" |
		cut -d' ' -f1 | sort -u | wc -l)"
check "check.sh: a failing booted suite counted" "19 passed, 1 failed, exit 1" \
	"$(run_check "$WORK/ck2.log" 3 "test_boot_local.sh k2")"
# host-test_deb outlasts all ten shared suites, which lane 1 runs alone.
check "check.sh: booted tests that waited CHECK_PACKAGES_WAIT for host-test_deb fail" "14 passed, 6 failed, exit 1" \
	"$(run_check "$WORK/ck3.log" 20 "" CHECK_PACKAGES_WAIT=1)"
check "check.sh: and name the test, the kernel and the wait" \
	"not ok 1 - k2: test_boot_new.sh: host-test_deb not done after 1 s" \
	"$(grep 'k2: test_boot_new.sh: host-test_deb' "$WORK/ck3.log.out")"
check "check.sh: a CHECK_PACKAGES_WAIT that is not a number is refused" \
	"check.sh: CHECK_PACKAGES_WAIT='soon' is not a number of seconds, exit 2" \
	"$(run_check "$WORK/ck4.log" 0 "" CHECK_PACKAGES_WAIT=soon)"

tap_finish
