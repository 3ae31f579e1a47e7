#!/bin/bash
# The local KMS root key sealed to the guest's TPM 2.0 (swtpm through QEMU's
# tpm-tis: selftests/run.sh boots the suite with vm-run.sh --tpm), then used
# by attach (Documentation/kms/local.rst, "Root key in a TPM").
#  - seal with PCR 7 and a PIN: root.key.tpm written (mode 0600), root.key
#    gone, and its 32 bytes found nowhere on the file system's disk, in
#    binary or hex, once unmounted;
#  - attach with the right PIN reads back what was written before sealing;
#    a wrong PIN is refused (exit 4, "wrong PIN"), nothing mapped;
#  - unseal-root-key gives back the same 32 bytes;
#  - sealed again with PCR 7 alone: attach needs no PIN; a TPM that is not
#    there (tpm_tcti naming a missing device) is refused (exit 3) with its
#    path; PCR 7 extended as a changed boot would: refused (exit 4) naming
#    PCR 7, nothing mapped and no plaintext root key created.
. "$ENVCRYPT_TOP/selftests/lib/guest.sh"
. "$ENVCRYPT_TOP/helper/tests/guest_helper.sh"

NAME=tpm-root
PIN=guest-pin-4711
export TPM2TOOLS_TCTI=device:/dev/tpmrm0

helper_setup
[ -c /dev/tpmrm0 ] || tap_bail "the guest has a TPM" "/dev/tpmrm0 (run.sh boots with vm-run.sh --tpm)" "$(ls /dev/tpm* 2>&1)"

# /etc/envcrypt of the test: its own small ext4, so that its blocks can be
# searched once unmounted.
ETC=$HELPER_DIR/etc
ETC_IMAGE=$HELPER_DIR/etc.img
truncate -s 16M "$ETC_IMAGE"
mkfs.ext4 -q "$ETC_IMAGE" || tap_bail "ext4 for the root key" "mkfs.ext4 succeeds" "failed"
mkdir -p "$ETC"
modprobe loop 2>/dev/null
etc_loop=$(losetup --find --show "$ETC_IMAGE") || tap_bail "loop device for the root key's file system" "losetup succeeds" "$(losetup -a 2>&1)"
on_exit losetup -d "$etc_loop"
mount "$etc_loop" "$ETC" || tap_bail "mount the root key's file system" "mounted" "$(dmesg | tail -n 3)"
on_exit umount "$ETC"
chmod 700 "$ETC"
ROOT_KEY=$ETC/root.key
write_config() { # [TCTI]
	{
		echo "[kms.local]"
		echo "dir = \"$HELPER_DIR/kms\""
		echo "root_key = \"$ROOT_KEY\""
		[ -z "${1-}" ] || echo "tpm_tcti = \"$1\""
	} >"$HELPER_DIR/envcrypt.conf"
}
write_config

disk=$(helper_loop 32) || tap_bail "loop device" "a 32 MiB loop device" "$(losetup -a 2>&1)"
on_exit losetup -d "$disk"
detach_at_exit "$NAME"
"$ENVCTL" format "$disk" >/dev/null 2>&1 || tap_bail "format under a plaintext root key" "exit 0" "$("$ENVCTL" format "$disk" 2>&1)"
"$ENVCTL" attach "$disk" "$NAME" >/dev/null 2>&1 || tap_bail "attach" "exit 0" "$("$ENVCTL" attach "$disk" "$NAME" 2>&1)"
head -c 1M /dev/urandom >"$HELPER_DIR/data"
dd if="$HELPER_DIR/data" of="/dev/mapper/$NAME" bs=1M oflag=direct status=none
"$ENVCTL" detach "$NAME"
root_key=$(od -An -v -tx1 "$ROOT_KEY" | tr -d ' \n')
expect_eq "a 32-byte plaintext root key to begin with" 64 "${#root_key}" || tap_done

# Where the root key is in FILE: binary, or hex in either case.
key_in() { # FILE
	python3 - "$1" "$root_key" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
key = bytes.fromhex(sys.argv[2])
for needle in (key, sys.argv[2].encode(), sys.argv[2].upper().encode()):
    at = data.find(needle)
    if at >= 0:
        print(f"root key bytes at offset {at}")
PY
}

attach_reads_back() { # WHAT
	local output
	if output=$("$ENVCTL" attach "$disk" "$NAME" 2>&1); then
		expect_eq "$1" "" "$(cmp "$HELPER_DIR/data" <(head -c 1M "/dev/mapper/$NAME") 2>&1)"
		"$ENVCTL" detach "$NAME"
	else
		tap_fail "$1" "attach exits 0" "status $?: $output"
	fi
}

# expect_refused WHAT STATUS MESSAGE [ENV...]: attach exits STATUS with
# exactly MESSAGE, maps nothing and creates no plaintext root key.
expect_refused() {
	local what=$1 status=$2 message=$3 output seen
	shift 3
	output=$(env "$@" "$ENVCTL" attach "$disk" "$NAME" 2>&1)
	seen=$?
	expect_eq "$what: exit $status" "$status" "$seen"
	expect_eq "$what: the message" "$message" "$(grep -F "envcryptctl: attach $disk: " <<<"$output")"
	expect_eq "$what: nothing mapped, no plaintext root key" "no-no" \
		"$(dmsetup info "$NAME" >/dev/null 2>&1 && echo mapped || echo no)-$([ -e "$ROOT_KEY" ] && echo key || echo no)"
}

output=$(ENVCRYPT_TPM_PIN=$PIN "$ENVCTL" kms seal-root-key --pcrs 7 --pin 2>&1)
expect_eq "seal-root-key --pcrs 7 --pin" \
	"sealed the root key into $ROOT_KEY.tpm (bound to PCR 7 and PIN); $ROOT_KEY overwritten and removed" "$output"
expect_eq "root.key is gone, root.key.tpm has mode 600" "no 600" \
	"$([ -e "$ROOT_KEY" ] && echo yes || echo no) $(stat -c %a "$ROOT_KEY.tpm" 2>&1)"
expect_eq "root.key.tpm does not hold the key" "" "$(key_in "$ROOT_KEY.tpm")"
umount "$ETC"
expect_eq "the key's old blocks: not on the file system's disk" "" "$(key_in "$etc_loop")"
mount "$etc_loop" "$ETC" || tap_bail "mount again" "mounted" "$(dmesg | tail -n 3)"

ENVCRYPT_TPM_PIN=$PIN attach_reads_back "attach with the right PIN reads back the data written before sealing"
expect_refused "a wrong PIN" 4 \
	"envcryptctl: attach $disk: root key $ROOT_KEY.tpm: TPM at device:/dev/tpmrm0: unseal: wrong PIN: tpm:session(1):the authorization HMAC check failed and DA counter incremented" \
	ENVCRYPT_TPM_PIN=wrong-pin

output=$(ENVCRYPT_TPM_PIN=$PIN "$ENVCTL" kms unseal-root-key 2>&1)
expect_eq "unseal-root-key" "unsealed the root key into $ROOT_KEY; $ROOT_KEY.tpm removed" "$output"
expect_eq "the same 32 bytes are back" "$root_key" "$(od -An -v -tx1 "$ROOT_KEY" | tr -d ' \n')"

output=$("$ENVCTL" kms seal-root-key --pcrs 7 2>&1)
expect_eq "seal-root-key --pcrs 7" \
	"sealed the root key into $ROOT_KEY.tpm (bound to PCR 7); $ROOT_KEY overwritten and removed" "$output"
attach_reads_back "attach without a PIN reads back the data"

write_config device:/dev/tpmrm9
expect_refused "no TPM" 3 \
	"envcryptctl: attach $disk: root key $ROOT_KEY.tpm: no TPM: /dev/tpmrm9 does not exist"
write_config

tpm2_pcrextend 7:sha256=0000000000000000000000000000000000000000000000000000000000000001 ||
	tap_fail "extend PCR 7" "tpm2_pcrextend succeeds" "failed"
expect_refused "PCR 7 extended" 4 \
	"envcryptctl: attach $disk: root key $ROOT_KEY.tpm: PCR 7 (sha256) changed since the key was sealed: the TPM refuses to unseal it"
tap_done
