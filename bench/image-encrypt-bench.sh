#!/bin/bash
# Host-side throughput of `envcryptctl image encrypt` (userspace AES-256-XTS,
# every CPU) on a plaintext image of random data, against two references on
# the same image: `qemu-img convert -O luks` (AES-256-XTS, plain64, the
# other userspace way to make an encrypted image) and `cp --sparse=never`
# (the copy alone, no cipher).  Each writes a new file and makes it durable
# (image encrypt fsyncs itself; the others are followed by `sync FILE`),
# from a source already in the page cache.  Prints one line per tool, the
# ratios, OpenSSL's AES-256-XTS rate (`openssl speed`) times the threads
# image encrypt used, and whether the targets of the design are met (at
# least 1.0x qemu-img's rate; at least 80% of the lower of cp's rate and
# that cipher bound), and writes them to $OUT/image-encrypt.txt.
#
#   bench/image-encrypt-bench.sh [OUT]
#
# BENCH_IMAGE_MIB: the image's size (default 2048); BENCH_IMAGE_ROUNDS: how
# many times each tool runs, in alternation (default 3): the median counts,
# every run is printed.  Each run starts with nothing dirty (sync): the
# source was just written, and each run's destination removed, and their
# writeback would otherwise land in the next run's time.  The LUKS image is
# created (qemu-img create -f luks, with its PBKDF) before the clock starts,
# and the timed qemu-img convert -n writes into it: the key derivation is
# not what is compared.
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$TOP/build/bench}
MIB=${BENCH_IMAGE_MIB:-2048}
ROUNDS=${BENCH_IMAGE_ROUNDS:-3}
ENVCTL=$TOP/build/envcryptctl
for tool in "$ENVCTL" qemu-img; do
	command -v "$tool" >/dev/null || { echo "image-encrypt-bench: $tool missing" >&2; exit 1; }
done
mkdir -p "$OUT"
WORK=$(mktemp -d "$OUT/image-encrypt.XXXXXX") || exit 1
trap 'rm -rf "$WORK"' EXIT
printf '[kms.local]\ndir = "%s/kms"\nroot_key = "%s/root.key"\n' "$WORK" "$WORK" >"$WORK/envcrypt.conf"
export ENVCRYPT_CONFIG=$WORK/envcrypt.conf ENVCRYPT_RUN_DIR=$WORK/run

head -c $((MIB * 1024 * 1024)) /dev/urandom >"$WORK/src.img" || exit 1

# The LUKS container, untimed.  qemu-img times its PBKDF by the thread's
# CPU time and gives up ("Unable to get accurate CPU usage") when a sample
# reads 0 ms, which a busy host makes happen: up to three tries.
luks_create() {
	local try
	for try in 1 2 3; do
		rm -f "$WORK/dst.img"
		qemu-img create -q -f luks --object secret,id=sec0,data=bench \
			-o key-secret=sec0,cipher-alg=aes-256,cipher-mode=xts,ivgen-alg=plain64 \
			"$WORK/dst.img" "${MIB}M" >"$WORK/luks-create.log" 2>&1 && return 0
		echo "image-encrypt-bench: qemu-img create -f luks, try $try: $(tail -n 1 "$WORK/luks-create.log")" >&2
	done
	return 1
}

# timed NAME CMD...: seconds (3 decimals) for CMD, the source cached first
# and the destination removed after.  NAME luks first creates the LUKS
# container, untimed.
timed() {
	local name=$1 start end
	shift
	if [ "$name" = luks ]; then
		luks_create || { echo "image-encrypt-bench: qemu-img create -f luks failed 3 times: $(tail -n 3 "$WORK/luks-create.log")" >&2; exit 1; }
	fi
	cat "$WORK/src.img" >/dev/null
	sync
	start=$(date +%s%N)
	"$@" >"$WORK/$name.log" 2>&1 || { echo "image-encrypt-bench: $name failed: $(tail -n 3 "$WORK/$name.log")" >&2; exit 1; }
	end=$(date +%s%N)
	rm -f "$WORK/dst.img"
	printf '%.3f' "$(echo "scale=3; ($end - $start) / 1000000000" | bc)"
}

luks() {
	qemu-img convert -n --object secret,id=sec0,data=bench --target-image-opts \
		"$WORK/src.img" "driver=luks,key-secret=sec0,file.filename=$WORK/dst.img" &&
		sync "$WORK/dst.img"
}
copy() {
	cp --sparse=never "$WORK/src.img" "$WORK/dst.img" && sync "$WORK/dst.img"
}

runs_envcrypt=() runs_luks=() runs_cp=()
for _ in $(seq "$ROUNDS"); do
	t=$(timed envcrypt "$ENVCTL" image encrypt "$WORK/src.img" "$WORK/dst.img") || exit 1
	runs_envcrypt+=("$t")
	t=$(timed luks luks) || exit 1
	runs_luks+=("$t")
	t=$(timed cp copy) || exit 1
	runs_cp+=("$t")
done
median() { printf '%s\n' "$@" | sort -n | sed -n "$((($# + 1) / 2))p"; }
t_envcrypt=$(median "${runs_envcrypt[@]}")
t_luks=$(median "${runs_luks[@]}")
t_cp=$(median "${runs_cp[@]}")
rate() { printf '%.1f' "$(echo "scale=1; $MIB / $1" | bc)"; }
ratio() { printf '%.2f' "$(echo "scale=2; $1 / $2" | bc)"; }
# OpenSSL's own AES-256-XTS rate on one CPU, 4 KiB messages (the unit image
# encrypt uses), in MiB/s; times the threads image encrypt ran is the most
# its cipher could do.
threads=$(sed -n 's/.*, \([0-9]*\) threads\{0,1\})$/\1/p' "$WORK/envcrypt.log")
ossl_k=$(openssl speed -seconds 2 -bytes 4096 -evp aes-256-xts 2>/dev/null |
	awk '$1 == "AES-256-XTS" { sub(/k$/, "", $2); print $2 }')
if [ -z "$threads" ] || [ -z "$ossl_k" ]; then
	echo "image-encrypt-bench: no thread count ('$threads') or openssl speed rate ('$ossl_k')" >&2
	exit 1
fi
ossl_rate=$(echo "scale=1; $ossl_k * 1000 / 1048576" | bc)
cipher_bound=$(echo "scale=1; $ossl_rate * $threads" | bc)
copy_rate=$(rate "$t_cp")
lower=$(echo "if ($cipher_bound < $copy_rate) $cipher_bound else $copy_rate" | bc)
# met NAME VALUE AT-LEAST: the target's line, "met" or "missed".
met() {
	if [ "$(echo "$2 >= $3" | bc)" = 1 ]; then echo "target $1: $2 >= $3: met"; else echo "target $1: $2 < $3: missed"; fi
}
{
	echo "image encrypt bench: $MIB MiB of random data, $(nproc) CPUs, median of $ROUNDS alternating runs"
	echo "runs (s): image encrypt ${runs_envcrypt[*]}; qemu-img ${runs_luks[*]}; cp ${runs_cp[*]}"
	printf '%-44s %8s s %8s MiB/s\n' "envcryptctl image encrypt" "$t_envcrypt" "$(rate "$t_envcrypt")"
	printf '%-44s %8s s %8s MiB/s\n' "qemu-img convert to luks (aes-256-xts)" "$t_luks" "$(rate "$t_luks")"
	printf '%-44s %8s s %8s MiB/s\n' "cp --sparse=never" "$t_cp" "$(rate "$t_cp")"
	echo "image encrypt / qemu-img luks speed: $(ratio "$t_luks" "$t_envcrypt")x"
	echo "image encrypt / cp speed:            $(ratio "$t_cp" "$t_envcrypt")x"
	echo "openssl speed aes-256-xts (4 KiB, 1 CPU): $ossl_rate MiB/s; x $threads threads: $cipher_bound MiB/s"
	echo "lower of cp and the cipher bound:    $lower MiB/s"
	met "image encrypt / qemu-img luks speed" "$(ratio "$t_luks" "$t_envcrypt")" 1.0
	met "image encrypt / lower bound" "$(ratio "$(rate "$t_envcrypt")" "$lower")" 0.80
} | tee "$OUT/image-encrypt.txt"
