#!/bin/bash
# Runs inside the bench guest after the fio runs (bench/guest-bench.sh): the
# helper's own timings on the local KMS, warm (dm-envcrypt and the AES-NI
# modules are loaded by then, as on a host that has attached one disk).
#   attach     envcryptctl attach of one loop-backed disk (KMS unwrap, key
#              into the keyring, table load), BENCH_RUNS times;
#   attach-all envcryptctl attach-all of 32 disks listed in an envcrypttab,
#              and detach-all of them, BENCH_RUNS times.
# Writes "<what> <milliseconds>" lines to $ENVCRYPT_OUT/helper-timings.txt.
set -u
RUNS=${BENCH_RUNS:-3}
DISKS=32
ENVCTL=$ENVCRYPT_TOP/build/envcryptctl
OUT=$ENVCRYPT_OUT/helper-timings.txt
WORK=$(mktemp -d /tmp/envcrypt-helper-bench.XXXXXX)

die() {
	echo "bench: helper: $*" >&2
	exit 1
}

now_ms() {
	echo $(($(date +%s%N) / 1000000))
}

timed() { # timed <label> <command...>: appends "<label> <ms>" to OUT
	local what=$1 start
	shift
	start=$(now_ms)
	"$@" >/dev/null || die "$what: '$*' failed"
	echo "$what $(($(now_ms) - start))" >>"$OUT"
}

[ -x "$ENVCTL" ] || die "no $ENVCTL (make helper)"
cat >"$WORK/envcrypt.conf" <<CONF
[kms.local]
dir = "$WORK/kms"
root_key = "$WORK/root.key"
CONF
export ENVCRYPT_CONFIG=$WORK/envcrypt.conf
: >"$OUT"
modprobe loop 2>/dev/null

# Sparse images on the guest's tmpfs: the disk's speed is not what is timed.
: >"$WORK/envcrypttab"
for i in $(seq 1 "$DISKS"); do
	truncate -s 32M "$WORK/disk$i.img"
	"$ENVCTL" format "$WORK/disk$i.img" >/dev/null || die "format disk$i failed"
	loop=$(losetup --find --show "$WORK/disk$i.img") || die "losetup disk$i failed"
	echo "bench$i $loop" >>"$WORK/envcrypttab"
done

one=$(awk 'NR == 1 { print $2 }' "$WORK/envcrypttab")
for run in $(seq 1 "$RUNS"); do
	timed attach "$ENVCTL" attach "$one" bench1
	"$ENVCTL" detach bench1 >/dev/null || die "detach bench1 failed"
done
for run in $(seq 1 "$RUNS"); do
	timed "attach-all-$DISKS" "$ENVCTL" attach-all --tab "$WORK/envcrypttab"
	[ "$(dmsetup ls --target envcrypt | grep -c '^bench')" = "$DISKS" ] ||
		die "attach-all: $(dmsetup ls --target envcrypt | grep -c '^bench') of $DISKS attached"
	timed "detach-all-$DISKS" "$ENVCTL" detach-all --tab "$WORK/envcrypttab"
done
losetup -D
rm -rf "$WORK"
echo "bench: helper timings done" >&2
