#!/bin/bash
# make demo: envelope encryption of a virtio disk, end to end, narrated.
#
# On the host: a fresh 256 MiB disk image, then a guest (the 6.1 kernel of
# the matrix, selftests/vm-run.sh) that loads dm-envcrypt and, on the embedded
# defaults (local KMS, service key alias/acs/ecs; the only configuration is a
# keystore location on the writable share, since the guest's /var/lib and
# /etc are the host's, read-only):
#   formats /dev/vda, attaches it, makes an ext4 file system, writes a text
#   file, detaches.
# Back on the host: the image holds only ciphertext (the text is not found in
# it; the header names the CMK but holds only the wrapped DK, and the DK
# itself is nowhere in the image).  A second guest attaches the disk again and
# reads the file back.  Every step is narrated; any failure exits non-zero.
#
#   scripts/demo.sh            (as root; `make demo` builds first)
#   scripts/demo.sh --guest PHASE   internal: the part that runs in the guest
set -u

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENVCTL=$TOP/build/envcryptctl
DK_DUMP=$TOP/build/test/envcrypt-test-dk-dump
NAME=demo
MNT=/tmp/demo-mnt
TEXT="Envelope encryption demo: this sentence is written in plaintext inside the guest."

say() { printf '\n==> %s\n' "$*"; }
die() {
	printf 'demo: FAILED: %s\n' "$*" >&2
	exit 1
}
# run CMD...: shows the command, runs it, fails the demo if it fails.
run() {
	printf '    $ %s\n' "$*"
	"$@" 2>&1 | sed 's/^/    /'
	[ "${PIPESTATUS[0]}" = 0 ] || die "'$*' failed"
}

guest_config() {
	mkdir -m 0700 "$ENVCRYPT_OUT/keys" 2>/dev/null || chmod 0700 "$ENVCRYPT_OUT/keys"
	cat >"$ENVCRYPT_OUT/envcrypt.conf" <<EOF
[kms.local]
dir = "$ENVCRYPT_OUT/keys/kms"
root_key = "$ENVCRYPT_OUT/keys/root.key"
EOF
	export ENVCRYPT_CONFIG=$ENVCRYPT_OUT/envcrypt.conf
}

guest_format() {
	say "In the guest ($(uname -r)): load dm-envcrypt"
	modprobe dm_mod || die "modprobe dm_mod"
	run insmod "$TOP/build/kmod/$(uname -r)/dm-envcrypt.ko"
	run dmsetup targets

	say "Format /dev/vda under the service key alias/acs/ecs (created on first use)"
	run "$ENVCTL" format /dev/vda --label demo
	run "$ENVCTL" kms list-keys

	say "Attach: the KMS unwraps the DK, the kernel gets it as a logon key, the table references it by name"
	local start ms
	start=$(date +%s%N)
	run "$ENVCTL" attach /dev/vda "$NAME"
	ms=$((($(date +%s%N) - start) / 1000000))
	echo "    (attach took $ms ms under TCG emulation)"
	run "$ENVCTL" status "$NAME"
	run dmsetup table "$NAME"
	if grep -qi envcrypt /proc/keys; then
		die "an envcrypt key is still in a keyring after attach"
	fi
	echo "    /proc/keys: no envcrypt key left in any keyring"

	say "Make a file system and write a text file"
	run mkfs.ext4 -q "/dev/mapper/$NAME"
	mkdir -p "$MNT"
	run mount "/dev/mapper/$NAME" "$MNT"
	echo "$TEXT" >"$MNT/hello.txt"
	run cat "$MNT/hello.txt"
	run umount "$MNT"

	say "Detach"
	run "$ENVCTL" detach "$NAME"
}

guest_reattach() {
	say "In a new guest: load dm-envcrypt and attach the same disk again"
	modprobe dm_mod || die "modprobe dm_mod"
	run insmod "$TOP/build/kmod/$(uname -r)/dm-envcrypt.ko"
	run "$ENVCTL" verify /dev/vda
	run "$ENVCTL" attach /dev/vda "$NAME"
	mkdir -p "$MNT"
	run mount -o ro "/dev/mapper/$NAME" "$MNT"
	say "Read the file back"
	run cat "$MNT/hello.txt"
	[ "$(cat "$MNT/hello.txt")" = "$TEXT" ] || die "the file read back differs"
	run umount "$MNT"
	run "$ENVCTL" detach "$NAME"
}

if [ "${1-}" = --guest ]; then
	guest_config
	case ${2-} in
	format) guest_format ;;
	reattach) guest_reattach ;;
	*) die "unknown guest phase '${2-}'" ;;
	esac
	exit 0
fi

if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null || die "run as root (loop devices, QEMU, modules)"
	exec sudo "$0" "$@"
fi

KVER=$("$TOP/scripts/kernels.sh" | grep '^6\.1\.' | head -n1)
[ -n "$KVER" ] || die "no 6.1 kernel with a build tree installed (make deps)"
for f in "$ENVCTL" "$DK_DUMP" "$TOP/build/kmod/$KVER/dm-envcrypt.ko"; do
	[ -e "$f" ] || die "$f is missing (run make demo, which builds it)"
done

WORK=$TOP/build/demo
rm -rf "$WORK"
mkdir -p "$WORK"
IMAGE=$WORK/disk.img
truncate -s 256M "$IMAGE"

cat <<EOF
envcrypt demo: a virtio disk encrypted with its own data key (DK), the DK
wrapped by a customer master key that never leaves the KMS.
Kernel $KVER under QEMU (TCG); disk image $IMAGE.
EOF

# vm-run needs a cwd that exists in the guest: the repository.
cd "$TOP" || die "cd $TOP"
guest() {
	"$TOP/selftests/vm-run.sh" --kernel "$KVER" --out "$WORK/out-$1" --disk "$IMAGE" \
		--timeout 900 -- "$TOP/scripts/demo.sh" --guest "$1"
}
mkdir -p "$WORK/out-format" "$WORK/out-reattach"
guest format || die "the first guest failed (see $WORK/out-format/)"

say "Back on the host: what does the disk image hold?"
hits=$(grep -c -a -F "$TEXT" "$IMAGE")
echo "    $ grep -c -a -F '<the text>' $IMAGE"
echo "    $hits"
[ "$hits" = 0 ] || die "the plaintext is in the image"
echo "    the text written in the guest is not in the image: only ciphertext reached the disk"
run "$ENVCTL" inspect "$IMAGE"
CONFIG=$WORK/out-format/envcrypt.conf
# The guest's paths are under its /run/out; on the host they are out-format/.
sed "s|/run/out|$WORK/out-format|g" "$CONFIG" >"$WORK/host.conf"
dk=$("$DK_DUMP" --config "$WORK/host.conf" "$IMAGE") || die "cannot unwrap the DK on the host"
found=$(python3 - "$dk" "$IMAGE" <<'EOF'
import sys
dk = bytes.fromhex(sys.argv[1])
data = open(sys.argv[2], "rb").read()
print(sum(data.count(part) for part in (dk[:32], dk[32:])))
EOF
)
echo "    DK bytes found in the image: $found (the header holds only the wrapped DK)"
[ "$found" = 0 ] || die "DK bytes are in the image"

# The second guest finds the keystore where the first left it.
cp -a "$WORK/out-format/keys" "$WORK/out-reattach/"
guest reattach || die "the second guest failed (see $WORK/out-reattach/)"

say "Demo complete: format, attach, write, detach, ciphertext-only image, re-attach and read back all passed"
