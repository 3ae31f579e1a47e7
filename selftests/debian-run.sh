#!/bin/bash
# debian-run.sh: boot the Debian 12 image of scripts/debian-image.sh with
# systemd as PID 1 on one of the host's kernels, run one command in the
# booted system and bring its output and exit status back.
#
#   selftests/debian-run.sh --kernel KVER --image IMG [--overlay FILE]
#                           [--disk IMG]... [--out DIR] [--timeout SEC]
#                           [--append ARG]... [--monitor SOCKET] [--tpm DIR]
#                           [--firmware-boot] -- TEST [ARGS...]
#
#   --kernel KVER   boot /boot/vmlinuz-KVER (the image must hold its modules)
#   --image IMG     the raw image (build/debian/KVER.img); never written: the
#                   guest's /dev/vda is a qcow2 overlay backed by it
#   --overlay FILE  keep that overlay (created if missing, reused if not), so
#                   that a later run boots what this one left; without it a
#                   temporary overlay in DIR is removed after the run
#   --disk IMG      raw image as virtio-blk, in order /dev/vdb, /dev/vdc, ...,
#                   written through (the host sees every byte once we return)
#   --out DIR       results (created; default a new build/debian-run/KVER.*)
#   --timeout SEC   wall-clock limit of the whole guest (default 900)
#   --append ARG    one more kernel command-line parameter (no white space)
#   --initrd FILE   boot this initramfs instead of ours (an initramfs-tools
#                   one: then --append root=... says where the root is)
#   --monitor SOCKET  QEMU's human monitor on this Unix socket (created;
#                   removed after the run), for a test that hot-plugs
#                   devices while its command runs (device_add, device_del)
#   --tpm DIR       a TPM 2.0 for the guest (tpm-tis): swtpm with its state
#                   in DIR (created; kept, so a later run with the same DIR
#                   has the same TPM, as a machine keeps its TPM over reboots)
#   --firmware-boot boot the image's own boot loader through QEMU's default
#                   BIOS (SeaBIOS) instead of -kernel: the image is a whole
#                   disk with a boot sector, its boot loader's configuration
#                   puts debian_run=1 and the console on ttyS0 on the kernel
#                   command line (--append, --initrd are refused)
#
# The guest: qemu-system-x86_64 -accel tcg,thread=single -cpu max,erms=off,fsrm=off, 2 vCPUs
# (taking turns on one host thread), 2 GiB, the
# host's kernel and an initramfs of our own (busybox, virtio and ext4
# modules; cached in build/debian/initramfs/) that switch_roots into the
# image's /sbin/init; -nic user (the host's loopback is 10.0.2.2 in the
# guest).  debian-run.service in the image mounts DIR/share (9p, tag "run")
# at /run/debian-run after multi-user.target and runs
# selftests/lib/debian-guest.sh from there, which runs TEST with ARGS in the
# repository (mounted read-only at its host path), as root, with stdin from
# /dev/null and the environment ENVCRYPT_TOP, ENVCRYPT_KVER, ENVCRYPT_OUT
# (/run/debian-run/out = DIR/share/out) and DEBIAN_RUN_BOOT (--overlay: the
# number of this boot of that overlay, from 1, counted in FILE.boots; else
# 1).  Then it powers off.
#
# After the run DIR holds console.txt (the serial console: kernel, systemd
# and the test unit's output), and DIR/share: output.txt (TEST's stdout and
# stderr, also printed on our stdout), status, boot-time.txt (systemd-analyze
# time), multi-user-usec (CLOCK_MONOTONIC of multi-user.target), journal.txt,
# dmesg.txt, failed-units.txt, system-state.txt and out/.
#
# Under debian_run=1 the image's emergency and rescue shells print the failed
# units and the boot's errors on the console and power off, so a boot that
# stops there fails at once ("guest stopped in emergency mode"), with those
# lines on stderr and in DIR/emergency.txt, instead of waiting for --timeout
# (selftests/debian/test_boot_emergency.sh).
#
# Exit status: TEST's, except 1 when the guest died (or stopped in emergency
# mode) before TEST finished or its kernel log shows BUG:, WARNING:, Oops, a
# panic ..., 124 when it did not finish within --timeout (QEMU is killed),
# 125 when it could not be started.
# Every failure message on stderr starts "debian-run: kernel KVER:".

set -u

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KVER=
IMAGE=
OVERLAY=
OUT=
DISKS=()
INITRD=
TIMEOUT=900
APPEND=()
MONITOR=
TPM_DIR=
FIRMWARE_BOOT=

usage() {
	sed -n '6,9p' "${BASH_SOURCE[0]}" | sed 's/^# *//' >&2
	exit 125
}

fail() {
	local status=$1
	shift
	echo "debian-run: kernel ${KVER:-<none>}: $*" >&2
	exit "$status"
}

while [ $# -gt 0 ]; do
	case $1 in
	--kernel) KVER=${2-} ;;
	--image) IMAGE=${2-} ;;
	--overlay) OVERLAY=${2-} ;;
	--disk) DISKS+=("${2-}") ;;
	--out) OUT=${2-} ;;
	--timeout) TIMEOUT=${2-} ;;
	--append) APPEND+=("${2-}") ;;
	--initrd) INITRD=${2-} ;;
	--monitor) MONITOR=${2-} ;;
	--tpm) TPM_DIR=${2-} ;;
	--firmware-boot)
		FIRMWARE_BOOT=1
		shift
		continue
		;;
	--) shift; break ;;
	-h | --help) usage ;;
	*) echo "debian-run: unknown argument '$1'" >&2; usage ;;
	esac
	[ $# -ge 2 ] || { echo "debian-run: $1 needs a value" >&2; usage; }
	shift 2
done
if [ -z "$KVER" ] || [ -z "$IMAGE" ] || [ $# = 0 ]; then
	usage
fi
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || fail 125 "--timeout '$TIMEOUT' is not a positive number of seconds"
[ -r "/boot/vmlinuz-$KVER" ] || fail 125 "no kernel image /boot/vmlinuz-$KVER"
[ -d "/lib/modules/$KVER/kernel" ] || fail 125 "no modules in /lib/modules/$KVER"
[ -f "$IMAGE" ] || fail 125 "no image '$IMAGE' (scripts/debian-image.sh $KVER makes it)"
IMAGE=$(realpath "$IMAGE")
for tool in qemu-system-x86_64 qemu-img; do
	command -v "$tool" >/dev/null || fail 125 "$tool not installed (make deps)"
done
[ -x /bin/busybox ] || fail 125 "/bin/busybox missing (busybox-static, make deps)"
for disk in "${DISKS[@]}"; do
	if ! [ -f "$disk" ] || ! [ -w "$disk" ]; then
		fail 125 "disk '$disk' is not a writable image file"
	fi
done
# Absolute paths: QEMU runs in DIR (qemu_run_dumping).
[ -z "$OVERLAY" ] || OVERLAY=$(realpath -m "$OVERLAY")
[ -z "$TPM_DIR" ] || TPM_DIR=$(realpath -m "$TPM_DIR")
[ -z "$MONITOR" ] || MONITOR=$(realpath -m "$MONITOR")
for i in "${!DISKS[@]}"; do
	DISKS[i]=$(realpath "${DISKS[i]}")
done
for arg in "${APPEND[@]}"; do
	[[ $arg =~ ^[^[:space:]]+$ ]] || fail 125 "--append '$arg' is empty or contains white space"
done
if [ -n "$FIRMWARE_BOOT" ] && { [ -n "$INITRD" ] || [ "${#APPEND[@]}" != 0 ]; }; then
	fail 125 "--firmware-boot boots the image's own kernel command line: --initrd and --append do not apply"
fi
[[ $TOP != *[[:space:]]* ]] || fail 125 "the repository path '$TOP' contains white space"
if [ -z "$OUT" ]; then
	mkdir -p "$TOP/build/debian-run" || fail 125 "cannot create $TOP/build/debian-run"
	OUT=$(mktemp -d "$TOP/build/debian-run/$KVER.XXXXXX") ||
		fail 125 "cannot create a directory in $TOP/build/debian-run"
fi
mkdir -p "$OUT" || fail 125 "cannot create --out directory '$OUT'"
OUT=$(cd "$OUT" && pwd)

# The modules the initramfs loads, in order, with their dependencies.
initramfs_modules() {
	local module steps=
	for module in virtio_pci virtio_blk ext4; do
		steps+=$(modprobe -S "$KVER" --show-depends "$module")$'\n' ||
			fail 125 "modprobe cannot resolve $module in /lib/modules/$KVER"
	done
	awk '$1 == "insmod" && !seen[$2]++ { print $2 }' <<<"$steps"
}

# build/debian/initramfs/KVER.cpio.gz, unless the cached one was made from
# the same init script, busybox and module files.
build_initramfs() {
	local dir=$TOP/build/debian/initramfs
	local image=$dir/$KVER.cpio.gz
	local modules stamp stage module name
	mkdir -p "$dir" || fail 125 "cannot create $dir"
	modules=$(initramfs_modules) || exit 125
	stamp=$({
		sha256sum "$TOP/selftests/lib/debian-initramfs-init"
		# shellcheck disable=SC2086
		stat -L -c '%n %s %Y' /bin/busybox $modules
	} | sha256sum | cut -d' ' -f1)
	INITRAMFS=$image
	exec 9>"$dir/$KVER.lock"
	timeout 600 flock 9 || fail 125 "$dir/$KVER.lock held for 10 minutes"
	if [ -f "$image" ] && [ "$(cat "$dir/$KVER.stamp" 2>/dev/null)" = "$stamp" ]; then
		exec 9>&-
		return
	fi
	stage=$(mktemp -d "$dir/.stage.XXXXXX") || fail 125 "cannot create a staging directory in $dir"
	mkdir -p "$stage"/{bin,dev,lib/modules,proc,sys,newroot}
	cp /bin/busybox "$stage/bin/busybox"
	cp "$TOP/selftests/lib/debian-initramfs-init" "$stage/init"
	chmod 755 "$stage/init"
	mknod "$stage/dev/console" c 5 1
	for module in $modules; do
		# busybox insmod takes plain .ko files only.
		name=$(basename "$module")
		case $name in
		*.ko.xz) xz -dc "$module" >"$stage/lib/modules/${name%.xz}" ;;
		*.ko.zst) zstd -qdc "$module" >"$stage/lib/modules/${name%.zst}" ;;
		*.ko.gz) gzip -dc "$module" >"$stage/lib/modules/${name%.gz}" ;;
		*) cp "$module" "$stage/lib/modules/$name" ;;
		esac || fail 125 "cannot unpack $module"
		echo "${name%.ko*}.ko" >>"$stage/modules.list"
	done
	(cd "$stage" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 | gzip -1) >"$image.tmp" ||
		fail 125 "cannot write $image"
	mv -f "$image.tmp" "$image"
	echo "$stamp" >"$dir/$KVER.stamp"
	rm -rf "$stage"
	exec 9>&-
}

# QEMU option values escape a comma by doubling it.
qemu_escape() {
	printf '%s' "${1//,/,,}"
}

# The overlay: qcow2 over the raw image, so the cached image stays clean.
BOOT=1
if [ -n "$OVERLAY" ]; then
	if [ -f "$OVERLAY" ]; then
		BOOT=$(($(cat "$OVERLAY.boots" 2>/dev/null || echo 0) + 1))
	else
		qemu-img create -q -f qcow2 -b "$IMAGE" -F raw "$OVERLAY" ||
			fail 125 "cannot create the overlay $OVERLAY over $IMAGE"
	fi
	echo "$BOOT" >"$OVERLAY.boots"
else
	OVERLAY=$OUT/overlay.qcow2
	rm -f "$OVERLAY"
	qemu-img create -q -f qcow2 -b "$IMAGE" -F raw "$OVERLAY" ||
		fail 125 "cannot create the overlay $OVERLAY over $IMAGE"
	trap 'rm -f "$OVERLAY"' EXIT
fi

SHARE=$OUT/share
rm -rf "$SHARE" "$OUT/console.txt"
mkdir -p "$SHARE/out" || fail 125 "cannot write to $OUT"
cp "$TOP/selftests/lib/debian-guest.sh" "$SHARE/guest.sh" || fail 125 "cannot write to $SHARE"
{
	printf 'DEBIAN_RUN_KVER=%q\n' "$KVER"
	printf 'DEBIAN_RUN_TOP=%q\n' "$TOP"
	printf 'DEBIAN_RUN_BOOT=%q\n' "$BOOT"
} >"$SHARE/env"
{
	printf 'exec'
	printf ' %q' "$@"
	printf '\n'
} >"$SHARE/command"

# shellcheck source=selftests/lib/kernel-log.sh
. "$TOP/selftests/lib/kernel-log.sh"
# shellcheck source=selftests/lib/qemu-crash.sh
. "$TOP/selftests/lib/qemu-crash.sh"

if [ -n "$FIRMWARE_BOOT" ]; then
	boot_args=()
else
	if [ -n "$INITRD" ]; then
		[ -f "$INITRD" ] || fail 125 "no initramfs '$INITRD'"
		INITRAMFS=$(realpath "$INITRD")
	else
		build_initramfs
	fi
	boot_args=(-kernel "/boot/vmlinuz-$KVER" -initrd "$INITRAMFS"
		-append "console=ttyS0 panic=-1 rdinit=/init debian_run=1${APPEND[*]:+ ${APPEND[*]}}")
fi

# erms=off: with ERMS the guest clears pages with `rep stosb`, which TCG
# runs one byte per step; three booted runs reported an RCU stall with a
# CPU inside clear_page_erms (6.12: modprobe's vmalloc; 6.1: the page
# allocator under a dm-envcrypt worker).  Without it the kernel uses
# `rep stosq` (clear_page_rep), an eighth of the steps.  fsrm=off for
# the same reason: with FSRM, memcpy and copies to and from user space are
# `rep movsb` (vm-run.sh: 9% less CPU time for the guest tests).
# thread=single: both vCPUs take turns on one host thread; beside another
# guest, as in make check, a thread per vCPU spends much of its CPU time
# waiting for the other (vm-run.sh's TCG_THREADS: about a third less CPU
# time for the same guest tests).
# shellcheck disable=SC2054 # QEMU option values are comma-separated
qemu_args=(
	-accel tcg,thread=single -cpu max,erms=off,fsrm=off -smp 2 -m 2048
	-nographic -nodefaults -no-reboot
	"${boot_args[@]}"
	-serial "file:$(qemu_escape "$OUT/console.txt")"
	-drive "file=$(qemu_escape "$OVERLAY"),format=qcow2,if=virtio,cache=writeback"
	-nic user,model=virtio-net-pci
	-fsdev "local,path=$(qemu_escape "$SHARE"),security_model=none,multidevs=remap,id=run"
	-device virtio-9p-pci,fsdev=run,mount_tag=run
	-fsdev "local,path=$(qemu_escape "$TOP"),readonly=on,security_model=none,multidevs=remap,id=top"
	-device virtio-9p-pci,fsdev=top,mount_tag=top
)
for disk in "${DISKS[@]}"; do
	qemu_args+=(-drive "file=$(qemu_escape "$disk"),format=raw,if=virtio,cache=writethrough")
done
if [ -n "$MONITOR" ]; then
	# sun_path holds 107 bytes and a NUL.
	[ "${#MONITOR}" -le 107 ] || fail 125 "--monitor path '$MONITOR' is longer than a Unix socket name may be"
	rm -f "$MONITOR"
	qemu_args+=(-monitor "unix:$(qemu_escape "$MONITOR"),server=on,wait=off")
fi

# swtpm for --tpm: QEMU talks to it over DIR/ctrl.sock; --terminate ends
# it when QEMU closes that connection.  Waits (at most 10 s) for the socket.
SWTPM_PID=
start_swtpm() {
	local sock=$TPM_DIR/ctrl.sock
	command -v swtpm >/dev/null || fail 125 "--tpm needs swtpm (make deps)"
	mkdir -p "$TPM_DIR" || fail 125 "cannot create --tpm directory '$TPM_DIR'"
	[ "${#sock}" -le 107 ] || fail 125 "--tpm directory '$TPM_DIR' is too long for a Unix socket name"
	rm -f "$sock"
	swtpm socket --tpm2 --tpmstate "dir=$TPM_DIR" --ctrl "type=unixio,path=$sock" \
		--terminate --log "file=$TPM_DIR/swtpm.log" </dev/null >/dev/null 2>&1 &
	SWTPM_PID=$!
	for _ in $(seq 1 100); do
		[ -S "$sock" ] && return 0
		kill -0 "$SWTPM_PID" 2>/dev/null || break
		sleep 0.1
	done
	fail 125 "swtpm did not start (see $TPM_DIR/swtpm.log)"
}
if [ -n "$TPM_DIR" ]; then
	start_swtpm
	# shellcheck disable=SC2054 # QEMU option values are comma-separated
	qemu_args+=(-chardev "socket,id=chrtpm,path=$(qemu_escape "$TPM_DIR/ctrl.sock")"
		-tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-tis,tpmdev=tpm0)
fi

start=$SECONDS
# A dead guest's console outlives DIR, which CI removes with its clone:
# a copy in DEATHS (DEBIAN_RUN_DEATHS, default
# /var/tmp/envcrypt-guest-deaths; 0 keeps none), the newest 20 kept.
# Prints the copy's path.
keep_dead_console() {
	local deaths=${DEBIAN_RUN_DEATHS:-/var/tmp/envcrypt-guest-deaths} kept
	[ "$deaths" != 0 ] && mkdir -p "$deaths" || return 1
	# DIR's parent names the test and its run (boot_local-KVER.XXXXXX), or
	# DIR itself does (KVER.XXXXXX): two guests never share a name.
	kept=$deaths/$(date -u +%Y%m%dT%H%M%SZ)-$(basename "$(dirname "$OUT")")-$(basename "$OUT").console.txt
	cp "$OUT/console.txt" "$kept" || return 1
	find "$deaths" -maxdepth 1 -name '*.console.txt' -printf '%T@ %p\n' | sort -rn |
		tail -n +21 | cut -d' ' -f2- | xargs -r -d '\n' rm -f
	echo "$kept"
}

qemu_run_dumping "$OUT" timeout -k 10 "$TIMEOUT" qemu-system-x86_64 "${qemu_args[@]}" </dev/null >"$OUT/qemu.txt" 2>&1
qemu_status=$?
if [ -n "$SWTPM_PID" ]; then
	kill "$SWTPM_PID" 2>/dev/null
	wait "$SWTPM_PID" 2>/dev/null
fi
echo "$((SECONDS - start))" >"$OUT/seconds"
[ -z "$MONITOR" ] || rm -f "$MONITOR"
[ -f "$SHARE/output.txt" ] && cat "$SHARE/output.txt"

if [ "$qemu_status" = 124 ] || [ "$qemu_status" = 137 ]; then
	echo "debian-run: kernel $KVER: guest did not finish within $TIMEOUT s; QEMU killed. Last console lines:" >&2
	tail -n 15 "$OUT/console.txt" | sed 's/^/debian-run:   /' >&2
	exit 124
fi
[ "$qemu_status" = 0 ] || {
	sed 's/^/debian-run:   /' "$OUT/qemu.txt" >&2
	# The words check-debian.sh looks for to run the test again.
	QEMU_CRASH_PREFIX="debian-run:   " qemu_crash_report "$qemu_status" "$OUT" &&
		fail 125 "QEMU crashed ($(qemu_crash_signal "$qemu_status")); the guest's console log is in $OUT/console.txt"
	fail 125 "qemu-system-x86_64 failed with status $qemu_status"
}
if ! [ -s "$SHARE/status" ]; then
	# The image's emergency and rescue shells print why and power off
	# (scripts/debian-image.sh): their lines say more than the shutdown's.
	stopped=$(grep -a -m 1 -o '^debian-run: [a-z]* mode: ' "$OUT/console.txt" | tr -d '\r')
	if [ -n "$stopped" ]; then
		sed -n '/^debian-run: [a-z]* mode: the boot stopped/,/^debian-run: [a-z]* mode: powering off/p' \
			"$OUT/console.txt" | tr -d '\r' >"$OUT/emergency.txt"
		sed 's/^/debian-run:   /' "$OUT/emergency.txt" >&2
		stopped=${stopped#debian-run: }
		fail 1 "guest stopped in ${stopped%%: *} before the test finished (no status; console log in $OUT/console.txt)"
	fi
	{ kernel_trouble "$OUT/console.txt" || tail -n 15 "$OUT/console.txt"; } | sed 's/^/debian-run:   /' >&2
	kept=$(keep_dead_console) && kept=", kept in $kept"
	fail 1 "guest died before the test finished (no status; console log in $OUT/console.txt${kept:-})"
fi
if kernel_trouble "$SHARE/dmesg.txt" >"$OUT/trouble.txt"; then
	sed 's/^/debian-run:   /' "$OUT/trouble.txt" >&2
	fail 1 "kernel trouble in the guest's log (test status was $(cat "$SHARE/status")); full log in $SHARE/dmesg.txt"
fi
status=$(cat "$SHARE/status")
[[ $status =~ ^[0-9]+$ ]] || fail 1 "guest wrote a malformed status '$status'"
exit "$status"
