#!/bin/bash
# vm-run.sh: run one command as root in a throw-away QEMU guest booted from an
# installed Debian kernel, with the host's root file system (read-only) as the
# guest's root.  Every guest test, the demo and the benchmarks go through it.
#
#   selftests/vm-run.sh --kernel KVER --out DIR [--disk IMAGE]... [--mem MiB]
#                       [--cpus N] [--timeout SEC] [--append ARG]...
#                       [--nvme IMAGE] [--kernel-dir DIR] [--crash-boots N]
#                       [--tpm DIR] [--tcg-threads single|multi]
#                       -- COMMAND [ARGS...]
#
#   --kernel KVER   boot /boot/vmlinuz-KVER with modules from /lib/modules/KVER
#   --kernel-dir DIR  take the kernel from DIR instead of the host's /: the
#                   image DIR/boot/vmlinuz-KVER or DIR/lib/modules/KVER/vmlinuz,
#                   the modules DIR/lib/modules/KVER (depmod -b DIR KVER run),
#                   which the guest sees at /lib/modules/KVER (a 9p share on a
#                   tmpfs over /lib/modules); scripts/kernel-next.sh makes one
#   --out DIR       host directory shared writable with the guest at /run/out
#                   (created if missing); results land here
#   --disk IMAGE    raw image attached as virtio-blk, in order: /dev/vda,
#                   /dev/vdb, ...; written through, so the host sees every byte
#                   the guest wrote once vm-run returns
#   --nvme IMAGE    raw image attached as an emulated NVMe controller with
#                   one namespace (/dev/nvme0n1 once the guest loads nvme);
#                   with --append nvme.poll_queues=N it has poll queues
#   --mem MiB       guest memory (default 2048)
#   --cpus N        guest vCPUs (default 2)
#   --cpu MODEL     QEMU's -cpu (default max,erms=off,fsrm=off: below)
#   --tcg-threads single|multi  QEMU's -accel tcg,thread=: one host thread
#                   runs every vCPU in turn (single, the default: below) or
#                   one thread per vCPU (multi: the benchmark, whose probe
#                   measures all vCPUs at once)
#   --timeout SEC   wall-clock limit for the whole guest (default 1200)
#   --append ARG    one more kernel command-line parameter (no white space),
#                   e.g. slub_debug=FZPU (selftests/run.sh does)
#   --tpm DIR       a TPM 2.0 for the guest (/dev/tpm0, /dev/tpmrm0): swtpm
#                   with its state in DIR (created; kept, so a second run
#                   with the same DIR has the same TPM), on QEMU's tpm-tis
#   --crash-boots N for vm-run's own test: the first N boots crash the
#                   guest kernel (sysrq c) just before COMMAND would start
#
# A guest kernel that crashes while booting, before COMMAND has started, is
# booted once more, and vm-run says so on stderr (the first console log is
# kept as DIR/console-boot1.txt).  Seen in CI: Debian's 6.12 oopsed on an
# int3 in interrupt context 2.8 s into a boot under TCG, before any envcrypt
# code was loaded.  A crash after COMMAND started is never retried.  So a
# run can take up to twice --timeout.
#
# The guest runs `qemu-system-x86_64 -accel tcg,thread=single -cpu max,erms=off,fsrm=off
# -nographic` with no network (stock kernels hang under KVM on these machines).  A cached busybox
# initramfs (build/initramfs/KVER.cpio.gz, rebuilt when its inputs change)
# loads the virtio and 9p modules, mounts the host root read-only over 9p,
# tmpfs on /tmp and /run, DIR on /run/out, the repository read-only at its
# own path (so a checkout under /tmp works too), and switch_roots.  COMMAND then runs
# as root with cwd = the host's cwd (which must exist in the guest: not under
# /tmp or /run, which are the guest's own tmpfs), stdin from /dev/null, inside
# a fresh session keyring, with only this environment:
#   PATH (the usual sbin/bin dirs), HOME=/tmp, TERM=dumb, LANG=C.UTF-8,
#   ENVCRYPT_OUT=/run/out, ENVCRYPT_KVER=KVER, ENVCRYPT_TOP=<repo root>.
# udevd is not running; selftests/lib/guest.sh has helpers to start it.
#
# COMMAND's stdout and stderr stream to vm-run's stdout and are saved in
# DIR/output.txt.  The kernel console log goes to DIR/console.txt (never to
# stdout), the guest's dmesg after COMMAND to DIR/dmesg.txt, COMMAND's exit
# status to DIR/status.  DIR/.vm-run/ holds the run's control files.
#
# Exit status: COMMAND's, except
#   1    the guest kernel log shows BUG:, WARNING:, Oops, Call Trace, a kernel
#        panic or a general protection fault (the lines are printed), or the
#        guest died before COMMAND finished
#   124  the guest did not finish within --timeout (QEMU is killed)
#   125  vm-run itself could not start the guest (bad arguments, missing
#        kernel, QEMU failure)
# Every failure message on stderr names the kernel and the reason.

set -u

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KVER=
OUT=
DISKS=()
NVME=
MEM=2048
CPUS=2
# Without ERMS and FSRM the guest kernel copies and clears memory with
# `rep movsq`/`rep stosq` or plain loops instead of `rep movsb`/`rep stosb`,
# which TCG runs a byte per step: five guest tests took 9% less CPU time
# and 5% less time (489 against 536 s of CPU, 705 against 741 s, the two
# runs side by side).  The benchmark keeps plain max (bench/run.sh), the
# model its published numbers were measured on.
CPU_MODEL=max,erms=off,fsrm=off
# thread=single: the guest's vCPUs take turns on one host thread.  With a
# thread per vCPU (multi-threaded TCG, QEMU's default), a guest on a host
# whose two cores are shared with another guest, as in make check, spends
# much of its CPU time waiting for its other vCPU thread to be scheduled
# (TLB flushes and other work run on every vCPU at once): three guest tests
# beside two other guests took 99 and 101 s of CPU time (196 and 149 s of
# wall time) with one thread, 179 and 153 s (308 and 202 s) with one per
# vCPU, the runs alternating (2026-12-05).  The guest still has CPUS vCPUs.
TCG_THREADS=single
TIMEOUT=1200
APPEND=()
KERNEL_DIR=
CRASH_BOOTS=0
TPM_DIR=

usage() {
	sed -n '6,9p' "${BASH_SOURCE[0]}" | sed 's/^# *//' >&2
	exit 125
}

fail() {
	local status=$1
	shift
	echo "vm-run: kernel ${KVER:-<none>}: $*" >&2
	exit "$status"
}

is_number() {
	[[ $1 =~ ^[1-9][0-9]*$ ]]
}

while [ $# -gt 0 ]; do
	case $1 in
	--kernel) KVER=${2-} ;;
	--out) OUT=${2-} ;;
	--disk) DISKS+=("${2-}") ;;
	--nvme) NVME=${2-} ;;
	--mem) MEM=${2-} ;;
	--cpus) CPUS=${2-} ;;
	--cpu) CPU_MODEL=${2-} ;;
	--tcg-threads) TCG_THREADS=${2-} ;;
	--timeout) TIMEOUT=${2-} ;;
	--append) APPEND+=("${2-}") ;;
	--kernel-dir) KERNEL_DIR=${2-} ;;
	--crash-boots) CRASH_BOOTS=${2-} ;;
	--tpm) TPM_DIR=${2-} ;;
	--) shift; break ;;
	-h | --help) usage ;;
	*) echo "vm-run: unknown argument '$1'" >&2; usage ;;
	esac
	[ $# -ge 2 ] || { echo "vm-run: $1 needs a value" >&2; usage; }
	shift 2
done
[ -n "$KVER" ] && [ -n "$OUT" ] && [ $# -gt 0 ] || usage
is_number "$MEM" || fail 125 "--mem '$MEM' is not a positive number of MiB"
is_number "$CPUS" || fail 125 "--cpus '$CPUS' is not a positive number"
is_number "$TIMEOUT" || fail 125 "--timeout '$TIMEOUT' is not a positive number of seconds"
[[ $CRASH_BOOTS =~ ^[0-9]+$ ]] || fail 125 "--crash-boots '$CRASH_BOOTS' is not a number"
[[ $TCG_THREADS =~ ^(single|multi)$ ]] || fail 125 "--tcg-threads '$TCG_THREADS' is neither single nor multi"
# MODULES: the modules of KVER on the host; MODPROBE_ROOT: modprobe -d's
# argument for them (none for the host's own).
MODPROBE_ROOT=()
if [ -n "$KERNEL_DIR" ]; then
	[ -d "$KERNEL_DIR" ] || fail 125 "--kernel-dir '$KERNEL_DIR' is not a directory"
	KERNEL_DIR=$(cd "$KERNEL_DIR" && pwd -P)
	VMLINUZ=$KERNEL_DIR/boot/vmlinuz-$KVER
	[ -r "$VMLINUZ" ] || VMLINUZ=$KERNEL_DIR/lib/modules/$KVER/vmlinuz
	[ -r "$VMLINUZ" ] || fail 125 "no kernel image $KERNEL_DIR/boot/vmlinuz-$KVER or $KERNEL_DIR/lib/modules/$KVER/vmlinuz"
	MODULES=$KERNEL_DIR/lib/modules/$KVER
	[ -f "$MODULES/modules.dep" ] || fail 125 "no $MODULES/modules.dep (run depmod -b $KERNEL_DIR $KVER)"
	MODULES=$(cd "$MODULES" && pwd -P)
	MODPROBE_ROOT=(-d "$KERNEL_DIR")
	[[ $KVER =~ ^[A-Za-z0-9._+~-]+$ ]] || fail 125 "kernel name '$KVER' does not fit on the kernel command line"
else
	VMLINUZ=/boot/vmlinuz-$KVER
	[ -r "$VMLINUZ" ] || fail 125 "no kernel image /boot/vmlinuz-$KVER"
	MODULES=/lib/modules/$KVER
fi
[ -d "$MODULES/kernel" ] || fail 125 "no modules in $MODULES"
command -v qemu-system-x86_64 >/dev/null || fail 125 "qemu-system-x86_64 not installed (make deps)"
[ -x /bin/busybox ] || fail 125 "/bin/busybox missing (busybox-static, make deps)"
for disk in "${DISKS[@]}" ${NVME:+"$NVME"}; do
	[ -f "$disk" ] && [ -w "$disk" ] || fail 125 "disk '$disk' is not a writable image file"
done
# Absolute paths: QEMU runs in DIR (qemu_run_dumping).
for i in "${!DISKS[@]}"; do
	DISKS[i]=$(realpath "${DISKS[i]}")
done
[ -z "$NVME" ] || NVME=$(realpath "$NVME")
for arg in "${APPEND[@]}"; do
	[[ $arg =~ ^[^[:space:]]+$ ]] || fail 125 "--append '$arg' is empty or contains white space"
done
[[ $TOP != *[[:space:]]* ]] || fail 125 "the repository path '$TOP' contains white space (it goes on the kernel command line)"
mkdir -p "$OUT" || fail 125 "cannot create --out directory '$OUT'"
OUT=$(cd "$OUT" && pwd)

# The modules stage 1 needs, in load order, each with its dependencies.
initramfs_modules() {
	local module steps=
	for module in virtio_pci virtio_blk 9pnet_virtio 9p; do
		steps+=$(modprobe "${MODPROBE_ROOT[@]}" -S "$KVER" --show-depends "$module")$'\n' ||
			fail 125 "modprobe cannot resolve $module in $MODULES"
	done
	awk '$1 == "insmod" && !seen[$2]++ { print $2 }' <<<"$steps"
}

# Writes the initramfs for KVER into build/initramfs/, unless the cached one
# was made from the same init script, busybox and module files.
build_initramfs() {
	local dir=$TOP/build/initramfs
	local image=$dir/$KVER.cpio.gz
	local modules stamp stage module name
	mkdir -p "$dir" || fail 125 "cannot create $dir"
	modules=$(initramfs_modules) || exit 125
	stamp=$({
		sha256sum "$TOP/selftests/lib/initramfs-init"
		# shellcheck disable=SC2086
		stat -L -c '%n %s %Y' /bin/busybox $modules
	} | sha256sum | cut -d' ' -f1)
	INITRAMFS=$image
	exec 9>"$dir/$KVER.lock"
	flock 9
	if [ -f "$image" ] && [ "$(cat "$dir/$KVER.stamp" 2>/dev/null)" = "$stamp" ]; then
		exec 9>&-
		return
	fi
	stage=$(mktemp -d "$dir/.stage.XXXXXX") || fail 125 "cannot create a staging directory in $dir"
	mkdir -p "$stage"/{bin,dev,lib/modules,proc,sys,newroot}
	cp /bin/busybox "$stage/bin/busybox"
	cp "$TOP/selftests/lib/initramfs-init" "$stage/init"
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

write_control_files() {
	local control=$OUT/.vm-run
	rm -rf "$control" "$OUT/status" "$OUT/dmesg.txt" "$OUT/output.txt" "$OUT/console.txt" \
		"$OUT/console-boot1.txt"
	mkdir -p "$control" || fail 125 "cannot write to $OUT"
	{
		printf 'VMRUN_KVER=%q\n' "$KVER"
		printf 'VMRUN_TOP=%q\n' "$TOP"
	} >"$control/env"
	[ "$CRASH_BOOTS" = 0 ] || echo "$CRASH_BOOTS" >"$control/crash-boots"
	{
		printf 'cd -- %q 2>/dev/null || {\n' "$PWD"
		printf '\techo "vm-run: kernel %s: working directory %s does not exist in the guest" >&2\n' "$KVER" "$PWD"
		printf '\texit 125\n}\n'
		# A guest process has no session keyring; give the command its own.
		printf 'keyctl new_session >/dev/null || exit 125\n'
		printf 'exec'
		printf ' %q' "$@"
		printf '\n'
	} >"$control/command"
}

# shellcheck source=selftests/lib/kernel-log.sh
. "$TOP/selftests/lib/kernel-log.sh"
# shellcheck source=selftests/lib/qemu-crash.sh
. "$TOP/selftests/lib/qemu-crash.sh"

report_trouble() {
	local log=$1 lines
	lines=$(kernel_trouble "$log") || return 1
	echo "vm-run: kernel $KVER: guest kernel log ($log) shows:" >&2
	echo "$lines" | sed 's/^/vm-run:   /' >&2
	return 0
}

build_initramfs
write_control_files "$@"

# shellcheck disable=SC2054 # QEMU option values are comma-separated
qemu_args=(
	-accel "tcg,thread=$TCG_THREADS" -cpu "$CPU_MODEL" -smp "$CPUS" -m "$MEM"
	# Named threads ("ALL CPUs/TCG" or "CPU N/TCG"), in ps and in the
	# backtraces of a QEMU crash.
	-name vm-run,debug-threads=on
	-nographic -nodefaults -no-reboot -nic none
	-kernel "$VMLINUZ" -initrd "$INITRAMFS"
	-append "console=ttyS0 panic=-1 rdinit=/init envcrypt_top=$TOP envcrypt_stage2=$TOP/selftests/lib/vm-stage2.sh${KERNEL_DIR:+ envcrypt_modules=$KVER}${APPEND[*]:+ ${APPEND[*]}}"
	-serial "file:$(qemu_escape "$OUT/console.txt")" -serial stdio
	-fsdev local,path=/,readonly=on,security_model=none,multidevs=remap,id=root
	-device virtio-9p-pci,fsdev=root,mount_tag=root
	-fsdev "local,path=$(qemu_escape "$OUT"),security_model=none,multidevs=remap,id=out"
	-device virtio-9p-pci,fsdev=out,mount_tag=out
	-fsdev "local,path=$(qemu_escape "$TOP"),readonly=on,security_model=none,multidevs=remap,id=top"
	-device virtio-9p-pci,fsdev=top,mount_tag=top
)
if [ -n "$KERNEL_DIR" ]; then
	# Stage 1 mounts it at /lib/modules/KVER (envcrypt_modules=KVER).
	# shellcheck disable=SC2054 # QEMU option values are comma-separated
	qemu_args+=(-fsdev "local,path=$(qemu_escape "$MODULES"),readonly=on,security_model=none,multidevs=remap,id=modules"
		-device virtio-9p-pci,fsdev=modules,mount_tag=modules)
fi
for disk in "${DISKS[@]}"; do
	qemu_args+=(-drive "file=$(qemu_escape "$disk"),format=raw,if=virtio,cache=writethrough")
done
if [ -n "$TPM_DIR" ]; then
	mkdir -p "$TPM_DIR" || fail 125 "cannot create --tpm directory '$TPM_DIR'"
	TPM_DIR=$(cd "$TPM_DIR" && pwd)
	# shellcheck disable=SC2054 # QEMU option values are comma-separated
	qemu_args+=(-chardev "socket,id=chrtpm,path=$(qemu_escape "$TPM_DIR/ctrl.sock")"
		-tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-tis,tpmdev=tpm0)
fi
if [ -n "$NVME" ]; then
	# shellcheck disable=SC2054 # QEMU option values are comma-separated
	qemu_args+=(-drive "file=$(qemu_escape "$NVME"),format=raw,if=none,id=nvme0,cache=writethrough"
		-device nvme,serial=envcrypt0,drive=nvme0)
fi

# swtpm for --tpm: QEMU talks to it over DIR/ctrl.sock; --terminate ends
# it when QEMU closes that connection.  Waits (at most 10 s) for the socket.
start_swtpm() {
	local sock=$TPM_DIR/ctrl.sock i
	command -v swtpm >/dev/null || fail 125 "--tpm needs swtpm (make deps)"
	mkdir -p "$TPM_DIR" || fail 125 "cannot create --tpm directory '$TPM_DIR'"
	rm -f "$sock"
	swtpm socket --tpm2 --tpmstate "dir=$TPM_DIR" --ctrl "type=unixio,path=$sock" \
		--terminate --log "file=$TPM_DIR/swtpm.log" </dev/null >/dev/null 2>&1 &
	SWTPM_PID=$!
	for i in $(seq 1 100); do
		[ -S "$sock" ] && return 0
		kill -0 "$SWTPM_PID" 2>/dev/null || break
		sleep 0.1
	done
	fail 125 "swtpm did not start (see $TPM_DIR/swtpm.log)"
}

run_guest() {
	if [ -n "$TPM_DIR" ]; then
		start_swtpm
	fi
	qemu_run_dumping "$OUT" timeout -k 10 "$TIMEOUT" qemu-system-x86_64 "${qemu_args[@]}" </dev/null | tee "$OUT/output.txt"
	qemu_status=${PIPESTATUS[0]}
	if [ -n "$TPM_DIR" ]; then
		kill "$SWTPM_PID" 2>/dev/null
		wait "$SWTPM_PID" 2>/dev/null
	fi
	if [ "$qemu_status" = 124 ] || [ "$qemu_status" = 137 ]; then
		echo "vm-run: kernel $KVER: guest did not finish within $TIMEOUT s; QEMU killed. Last kernel log lines:" >&2
		tail -n 15 "$OUT/console.txt" | sed 's/^/vm-run:   /' >&2
		exit 124
	fi
	if QEMU_CRASH_PREFIX="vm-run:   " qemu_crash_report "$qemu_status" "$OUT"; then
		fail 125 "QEMU crashed ($(qemu_crash_signal "$qemu_status")); the guest's console log is in $OUT/console.txt"
	fi
	[ "$qemu_status" = 0 ] || fail 125 "qemu-system-x86_64 failed with status $qemu_status"
}

# True when the guest kernel crashed before stage 2 started COMMAND.
crashed_while_booting() {
	! [ -s "$OUT/status" ] && ! [ -e "$OUT/.vm-run/started" ] &&
		kernel_trouble "$OUT/console.txt" >/dev/null
}

run_guest
if crashed_while_booting; then
	report_trouble "$OUT/console.txt"
	echo "vm-run: kernel $KVER: the guest kernel crashed while booting, before the command started; booting once more (first console log in $OUT/console-boot1.txt)" >&2
	mv -f "$OUT/console.txt" "$OUT/console-boot1.txt"
	rm -f "$OUT/output.txt"
	run_guest
fi
if ! [ -s "$OUT/status" ]; then
	report_trouble "$OUT/console.txt" ||
		tail -n 15 "$OUT/console.txt" | sed 's/^/vm-run:   /' >&2
	fail 1 "guest died before the command finished (no $OUT/status; full log in $OUT/console.txt)"
fi
if report_trouble "$OUT/dmesg.txt"; then
	fail 1 "kernel trouble in the guest's dmesg (command status was $(cat "$OUT/status")); full log in $OUT/dmesg.txt"
fi
status=$(cat "$OUT/status")
[[ $status =~ ^[0-9]+$ ]] || fail 1 "guest wrote a malformed status '$status'"
exit "$status"
