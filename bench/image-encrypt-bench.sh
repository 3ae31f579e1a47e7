#!/bin/bash
# Host-side throughput of `envcryptctl image encrypt` (userspace AES-256-XTS,
# every CPU) on a plaintext image of random data, against two references on
# the same image: `qemu-img convert -O luks` (AES-256-XTS, plain64, the
# other userspace way to make an encrypted image) and `cp --sparse=never`
# (the copy alone, no cipher).  Each writes a new file and makes it durable
# (image encrypt fsyncs itself; the others are followed by `sync FILE`),
# from a source already in the page cache.  Prints one line per tool and
# the ratios, and writes them to $OUT/image-encrypt.txt.
#
#   bench/image-encrypt-bench.sh [OUT]
#
# BENCH_IMAGE_MIB: the image's size (default 2048).  The LUKS image is
# created (qemu-img create -f luks, with its PBKDF) before the clock starts,
# and the timed qemu-img convert -n writes into it: the key derivation is
# not what is compared.
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$TOP/build/bench}
MIB=${BENCH_IMAGE_MIB:-2048}
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

# timed NAME CMD...: seconds (3 decimals) for CMD, the source cached first
# and the destination removed after.  NAME luks first creates the LUKS
# container, untimed.
timed() {
	local name=$1 start end
	shift
	if [ "$name" = luks ]; then
		qemu-img create -q -f luks --object secret,id=sec0,data=bench \
			-o key-secret=sec0,cipher-alg=aes-256,cipher-mode=xts,ivgen-alg=plain64 \
			"$WORK/dst.img" "${MIB}M" >"$WORK/luks-create.log" 2>&1 ||
			{ echo "image-encrypt-bench: qemu-img create -f luks failed: $(tail -n 3 "$WORK/luks-create.log")" >&2; exit 1; }
	fi
	cat "$WORK/src.img" >/dev/null
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

t_envcrypt=$(timed envcrypt "$ENVCTL" image encrypt "$WORK/src.img" "$WORK/dst.img") || exit 1
t_luks=$(timed luks luks) || exit 1
t_cp=$(timed cp copy) || exit 1
rate() { printf '%.1f' "$(echo "scale=1; $MIB / $1" | bc)"; }
ratio() { printf '%.2f' "$(echo "scale=2; $1 / $2" | bc)"; }
{
	echo "image encrypt bench: $MIB MiB of random data, $(nproc) CPUs"
	printf '%-44s %8s s %8s MiB/s\n' "envcryptctl image encrypt" "$t_envcrypt" "$(rate "$t_envcrypt")"
	printf '%-44s %8s s %8s MiB/s\n' "qemu-img convert to luks (aes-256-xts)" "$t_luks" "$(rate "$t_luks")"
	printf '%-44s %8s s %8s MiB/s\n' "cp --sparse=never" "$t_cp" "$(rate "$t_cp")"
	echo "image encrypt / qemu-img luks speed: $(ratio "$t_luks" "$t_envcrypt")x"
	echo "image encrypt / cp speed:            $(ratio "$t_cp" "$t_envcrypt")x"
} | tee "$OUT/image-encrypt.txt"
