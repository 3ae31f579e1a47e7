# shellcheck shell=bash
# Helpers for commands that run inside a selftests/vm-run.sh guest.  Source it
# from bash:  . "$ENVCRYPT_TOP/selftests/lib/guest.sh"
#
# Set-up
#   start_udevd                 start systemd-udevd once (in its own session
#                               keyring) and settle (bounded),
#                               so dmsetup/cryptsetup get /dev/mapper nodes
#   load_envcrypt               insmod build/kmod/$ENVCRYPT_KVER/dm-envcrypt.ko
#                               (after dm-mod) unless the target is registered
#   guest_setup                 both of the above; fails the test if either fails
#   brd_device MiB              a fresh /dev/ram0 of that size (reloads brd)
#   loop_device MiB             a loop device over a new zeroed file in /tmp
#   add_logon_key DESC FILE     load FILE (64 raw bytes) as logon key DESC into
#                               the session keyring; prints the key id
#   hex_to_bin                  stdin hex text -> stdout bytes
#   on_exit CMD...              run CMD at exit (last registered runs first)
#   envcrypt_table LEN DEV OFFSET KEY_DESC SECTOR_SIZE [OPTION...]
#   dmcrypt_table LEN DEV OFFSET KEY_DESC SECTOR_SIZE
#                               one-line tables (start 0) for the envcrypt
#                               target and for the equivalent dm-crypt mapping
#                               (aes-xts-plain64 with the same logon key)
#   dm_create NAME TABLE        create a mapping, removed again at exit; on
#                               failure returns 1 with dmsetup's error and the
#                               newest kernel log lines in $DM_ERROR (call it
#                               directly, not in $(...), or the removal at
#                               exit is lost)
#   dm_remove NAME              remove a mapping if it exists (retrying)
#   dev_sectors DEV             size of DEV in 512-byte sectors
#   dmesg_mark                  remember the end of the kernel log
#   dmesg_since_mark            kernel log lines after the last dmesg_mark
#
# Results (a test script is one kselftest test; these print its sub-checks
# as TAP lines, which the suite runner shows as comments; each returns 0 if
# its check passed, 1 if not)
#   tap_ok WHAT                 one passed check
#   tap_fail WHAT EXPECTED SEEN one failed check, with the evidence
#   tap_skip REASON             the whole test is skipped: exit 4
#   expect_eq WHAT EXPECTED SEEN
#   expect_match WHAT REGEX SEEN
#   expect_fails WHAT CMD...    CMD must exit non-zero
#   expect_succeeds WHAT CMD... CMD must exit 0 (its output is the evidence)
#   tap_done                    exit 0 if every check passed, else 1
#
# Everything here assumes the environment vm-run.sh gives: ENVCRYPT_TOP,
# ENVCRYPT_KVER, ENVCRYPT_OUT, root, a session keyring.

KSFT_PASS=0
KSFT_FAIL=1
KSFT_SKIP=4

TAP_CHECKS=0
TAP_FAILED=0
# One line per failed check, repeated by tap_done: a long test's failures
# then stand together at the end of its output, which is the part a CI
# summary shows.
TAP_FAILURES=()

tap_ok() {
	TAP_CHECKS=$((TAP_CHECKS + 1))
	echo "ok $TAP_CHECKS - $1"
}

tap_fail() {
	TAP_CHECKS=$((TAP_CHECKS + 1))
	TAP_FAILED=$((TAP_FAILED + 1))
	echo "not ok $TAP_CHECKS - $1"
	echo "#   expected: $2"
	echo "#   seen:     ${3//$'\n'/$'\n'#             }"
	tap_record_failure "$1" "$3"
	return 1
}

# tap_record_failure WHAT SEEN: the summary line of check $TAP_CHECKS,
# SEEN's first line cut to 300 bytes.
tap_record_failure() {
	local seen=${2%%$'\n'*}
	[ "${#seen}" -le 300 ] || seen="${seen:0:300}..."
	TAP_FAILURES+=("not ok $TAP_CHECKS - $1${seen:+: seen: $seen}")
}

tap_skip() {
	echo "SKIP: $1"
	exit "$KSFT_SKIP"
}

tap_done() {
	echo "1..$TAP_CHECKS"
	[ "$TAP_FAILED" = 0 ] || {
		printf '# %s\n' "${TAP_FAILURES[@]}"
		echo "FAIL: $TAP_FAILED of $TAP_CHECKS checks failed"
		exit "$KSFT_FAIL"
	}
	exit "$KSFT_PASS"
}

# Stops the test at once (set-up that later checks cannot do without).
tap_bail() {
	tap_fail "$@"
	tap_done
}

expect_eq() {
	if [ "$2" = "$3" ]; then
		tap_ok "$1"
	else
		tap_fail "$1" "$2" "$3"
	fi
}

expect_match() {
	if [[ $3 =~ $2 ]]; then
		tap_ok "$1"
	else
		tap_fail "$1" "a match for /$2/" "$3"
	fi
}

expect_fails() {
	local what=$1 output
	shift
	if output=$("$@" 2>&1); then
		tap_fail "$what" "'$*' to fail" "it succeeded: $output"
	else
		tap_ok "$what"
	fi
}

expect_succeeds() {
	local what=$1 output
	shift
	if output=$("$@" 2>&1); then
		tap_ok "$what"
	else
		tap_fail "$what" "'$*' to succeed" "status $?: $output"
	fi
}

EXIT_ACTIONS=()

run_exit_actions() {
	local i
	for ((i = ${#EXIT_ACTIONS[@]} - 1; i >= 0; i--)); do
		eval "${EXIT_ACTIONS[i]}" >/dev/null 2>&1
	done
}
trap run_exit_actions EXIT

on_exit() {
	EXIT_ACTIONS+=("$(printf '%q ' "$@")")
}

start_udevd() {
	if ! [ -S /run/udev/control ]; then
		# udevd outlives the test that starts it: give it an empty session
		# keyring of its own, or it keeps that test's keys alive.
		# (Its stdio goes to a file: the daemon may keep it open.)
		if ! keyctl session - /lib/systemd/systemd-udevd --daemon >/tmp/udevd.start 2>&1; then
			cat /tmp/udevd.start >&2
			return 1
		fi
		local tries=0
		until [ -S /run/udev/control ]; do
			tries=$((tries + 1))
			[ "$tries" -lt 100 ] || {
				echo "start_udevd: no /run/udev/control after 10 s" >&2
				return 1
			}
			sleep 0.1
		done
		udevadm trigger --action=add --subsystem-match=block
	fi
	udevadm settle --timeout=60
}

# The module under test: build/kmod/KVER's, unless ENVCRYPT_MODULE names
# another file (tests/host/lib/dkms-guest.sh: the one DKMS built).
envcrypt_module() {
	echo "${ENVCRYPT_MODULE:-$ENVCRYPT_TOP/build/kmod/$ENVCRYPT_KVER/dm-envcrypt.ko}"
}

load_envcrypt() {
	local module
	module=$(envcrypt_module)
	modprobe dm_mod || return 1
	dmsetup targets | grep -q '^envcrypt ' && return 0
	if ! [ -f "$module" ]; then
		echo "load_envcrypt: $module not built (make kmod-matrix)" >&2
		return 1
	fi
	insmod "$module" || return 1
	dmsetup targets | grep -q '^envcrypt '
}

guest_setup() {
	local output
	# Registered first, so they run last (after the mappings on them): the
	# guest's /tmp is one tmpfs that every test of a boot shares, and a loop
	# device keeps its file's pages even once the file is unlinked.
	# loop_device runs in $(...), where an on_exit would be lost.
	on_exit release_loop_files
	output=$(start_udevd 2>&1) || tap_bail "udevd starts and settles" "udevd running" "$output"
	output=$(load_envcrypt 2>&1) || tap_bail "dm-envcrypt loads" "target 'envcrypt' registered" "$output"
	return 0
}

brd_device() {
	if grep -q '^brd ' /proc/modules; then
		rmmod brd || return 1
	fi
	modprobe brd rd_nr=1 rd_size=$(($1 * 1024)) max_part=0 || return 1
	udevadm settle --timeout=30 2>/dev/null
	echo /dev/ram0
}

# Detaches every loop device whose backing file's path starts with PREFIX.
release_loops_under() {
	local dev file
	while read -r dev file; do
		case $file in "$1"*) losetup -d "$dev" ;; esac
	done < <(losetup --list --noheadings --output NAME,BACK-FILE)
}

release_loop_files() {
	release_loops_under /tmp/loop.
	rm -f /tmp/loop.*
}

loop_device() {
	local file
	file=$(mktemp /tmp/loop.XXXXXX) || return 1
	truncate -s "${1}M" "$file" || return 1
	losetup --find --show "$file"
}

hex_to_bin() {
	python3 -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(sys.stdin.read()))'
}

add_logon_key() {
	keyctl padd logon "$1" @s <"$2"
}

envcrypt_table() {
	local length=$1 dev=$2 offset=$3 desc=$4 sector_size=$5
	shift 5
	echo "0 $length envcrypt $dev $offset logon:$desc $(($# + 1)) sector_size:$sector_size${*:+ $*}"
}

dmcrypt_table() {
	echo "0 $1 crypt aes-xts-plain64 :64:logon:$4 0 $2 $3 1 sector_size:$5"
}

DM_ERROR=

# shellcheck disable=SC2034 # DM_ERROR is for the caller
dm_create() {
	local output
	if ! output=$(dmsetup create "$1" --table "$2" 2>&1); then
		DM_ERROR="dmsetup create $1 --table '$2' failed: $output"$'\n'$(dmesg | tail -n 3)
		return 1
	fi
	on_exit dm_remove "$1"
}

dm_remove() {
	dmsetup info "$1" >/dev/null 2>&1 || return 0
	dmsetup remove --retry "$1"
}

dev_sectors() {
	blockdev --getsz "$1"
}

DMESG_MARK=

dmesg_mark() {
	DMESG_MARK="envcrypt-selftest mark $$.$RANDOM.$SECONDS"
	echo "$DMESG_MARK" >/dev/kmsg
}

dmesg_since_mark() {
	dmesg | awk -v mark="$DMESG_MARK" 'found { print } index($0, mark) { found = 1 }'
}
