#!/bin/bash
# Boot a Debian 12 whose root file system is an envcrypt disk under a KMIP
# CMK, attached by an initramfs-tools initramfs that the envcrypt hook made
# (Documentation/admin-guide/system-disk.rst), then boot it again with the
# key server stopped.
#
#   selftests/debian/test_boot_initramfs_root.sh --kernel KVER
#
# On the host:
#   * the image of scripts/debian-image.sh, copied, its /etc/fstab mounting
#     / from /dev/mapper/root (debugfs, no mount);
#   * a PyKMIP server on 127.0.0.1 whose certificate names 10.0.2.2 (the
#     host's loopback as the guest reaches it), a CMK made there;
#   * `envcryptctl image encrypt` of the whole image under that CMK: the
#     guest's /dev/vda is the envcrypt disk, its root file system inside;
#   * the initramfs: the host's mkinitramfs with the tree's hook and
#     local-top script (mkinitramfs -d, MODULES=list: virtio and ext4),
#     envcrypttab "root UUID=<disk uuid>", an fstab mounting / from
#     /dev/mapper/root (so the hook finds the root disk as
#     cryptsetup-initramfs would), and the guest's envcrypt.conf
#     (endpoint 10.0.2.2, [boot] attach_timeout_seconds = 30); the disk is
#     on a read-only loop device meanwhile, so the hook reads its CMK.
#   boot 1 (selftests/debian-run.sh --initrd, root=/dev/mapper/root
#     ip=dhcp): multi-user.target is reached; in the guest / is mounted
#     from /dev/mapper/root, an envcrypt mapping of /dev/vda, and
#     `envcryptctl initramfs-plan` (the tree's) finds that attached disk
#     from fstab and prints exactly the plan the host's hook used.
#   The key server is stopped.
#   boot 2: the initramfs gives up at the attach deadline and panics with
#     one line naming disk, CMK, endpoint and reason (panic=-1: QEMU
#     exits); the console shows it; multi-user.target is not reached.
#   boot 3: envcrypt=yes rd.envcrypt=no: the local-top script's one
#     warning, no network, no attach, and initramfs-tools' "ALERT!
#     /dev/mapper/root does not exist" (rootdelay=5).
#
# Output: TAP.  Exit 0 if every check passed, 1 if not.  In the guest the
# same file runs as `test_boot_initramfs_root.sh --guest check WORK CMK`.

# shellcheck source=selftests/lib/guest.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/guest.sh"
# shellcheck source=selftests/lib/debian-boot.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/debian-boot.sh"

# ---- guest side -----------------------------------------------------------

guest_check() {
	expect_eq "/ is mounted from /dev/mapper/root" /dev/mapper/root \
		"$(findmnt -n -o SOURCE / 2>&1)"
	expect_match "mapping root is an envcrypt target" '^0 [0-9]+ envcrypt ' \
		"$(dmsetup table root 2>&1)"
	expect_eq "the mapping's device is /dev/vda" "$(cat /sys/block/vda/dev 2>&1)" \
		"$(dmsetup table root 2>/dev/null | awk '{ print $4 }')"
	echo "# dmesg about envcrypt: $(dmesg | grep -i envcrypt | tr '\n' ' ')"
	# What the hook would ask on this running system, where the root disk
	# is attached (held by its mapping): the tree's envcryptctl, the
	# host's files (the guest sees the repository at its host path).
	local work=$1 cmk=$2 pki=$1/pki expected seen
	expected="NEEDED=yes
NETWORK=yes
TPM=no
CONFIG=$work/guest.conf
DISK=root
DISK_WHY=fstab /
DISK_CMK=$cmk
DISK_CMK_FROM=header
DISK_KMS=kmip:main
TAB_LINE=$(cat "$work/envcrypttab") x-systemd.device-timeout=90000ms
FILE=$pki/ca.pem
FILE=$pki/client-a.pem
FILE=$pki/client-a.key"
	seen=$(ENVCRYPT_CONFIG=$work/guest.conf "$ENVCRYPT_TOP/build/envcryptctl" initramfs-plan \
		--tab "$work/envcrypttab" --fstab /etc/fstab 2>&1)
	expect_eq "initramfs-plan on the running system finds the attached root disk from fstab" \
		"$expected" "$seen"
}

if [ "${1-}" = --guest ]; then
	case ${2-} in
	check) guest_check "${3:?}" "${4:?}" ;;
	*) tap_bail "phase" "check" "'${2-}'" ;;
	esac
	tap_done
fi

# ---- host side ------------------------------------------------------------

debian_boot_host "$@"
CTL=$TOP/build/envcryptctl
ATTACH_TIMEOUT=30
# shellcheck source=tests/host/lib/kmip/pykmip.sh
. "$TOP/tests/host/lib/kmip/pykmip.sh"

for tool in mkinitramfs debugfs losetup; do
	command -v "$tool" >/dev/null || tap_bail "$tool" "installed" "missing (make deps)"
done
[ -x "$CTL" ] || tap_bail "envcryptctl" "$CTL built" "missing (make helper)"
[ -f "$TOP/build/kmod/$KVER/dm-envcrypt.ko" ] ||
	tap_bail "dm-envcrypt for $KVER" "built" "missing (make kmod-matrix)"
kmip_have_pykmip || tap_bail "PyKMIP" "importable by $KMIP_PYTHON" "not installed (make deps)"

debian_boot_image
debian_boot_work boot_initramfs_root
LOOP=
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
	kmip_server_stop
	[ -n "$LOOP" ] && losetup -d "$LOOP"
}
trap cleanup EXIT

# The plaintext root: the image, with / from /dev/mapper/root.
cp --sparse=always "$IMAGE" "$WORK/plain.img"
printf '# written by test_boot_initramfs_root.sh\n/dev/mapper/root\t/\text4\terrors=remount-ro\t0\t1\n' \
	>"$WORK/fstab"
if debugfs -w -R "rm /etc/fstab" "$WORK/plain.img" >/dev/null 2>&1 &&
	debugfs -w -R "write $WORK/fstab /etc/fstab" "$WORK/plain.img" >/dev/null 2>&1 &&
	[ "$(debugfs -R "cat /etc/fstab" "$WORK/plain.img" 2>/dev/null)" = "$(cat "$WORK/fstab")" ]; then
	tap_ok "the image's fstab mounts / from /dev/mapper/root"
else
	tap_bail "the image's fstab" "rewritten by debugfs" "debugfs failed"
fi

# The PKI and the key server.
PKI=$WORK/pki
debian_guest_pki "$PKI" envcrypt-initramfs-root
kmip_server_start "$PKI" "$WORK/kmip" ||
	tap_bail "PyKMIP server" "listening on 127.0.0.1" "it did not start (messages above)"
tap_ok "PyKMIP server listening on 127.0.0.1:$KMIP_PORT (pid $KMIP_SERVER_PID)"

# The host dials 127.0.0.1 (after 10.0.2.2, which the CMK URI names and
# the guest dials); the guest's configuration has 10.0.2.2 only.
endpoint() {
	cat <<-EOF
		[kms.kmip.main]
		$1
		ca = "$PKI/ca.pem"
		cert = "$PKI/client-a.pem"
		key = "$PKI/client-a.key"
		timeout_ms = 5000

		[boot]
		attach_timeout_seconds = $ATTACH_TIMEOUT
	EOF
}
endpoint "servers = [\"10.0.2.2:$KMIP_PORT\", \"127.0.0.1:$KMIP_PORT\"]" >"$WORK/host.conf"
endpoint "host = \"10.0.2.2\"
		port = $KMIP_PORT" >"$WORK/guest.conf"
chmod 0600 "$WORK/host.conf" "$WORK/guest.conf"
CMK=$("$CTL" --config "$WORK/host.conf" kms create-key --kms kmip://main 2>"$WORK/create-key.err" | tail -n 1)
expect_match "a CMK on the key server" "^kmip://10\\.0\\.2\\.2:$KMIP_PORT/" "$CMK" ||
	tap_bail "CMK" "made" "$(cat "$WORK/create-key.err")"
if "$CTL" --config "$WORK/host.conf" image encrypt "$WORK/plain.img" "$WORK/root.img" --cmk "$CMK" \
	>"$WORK/encrypt.out" 2>&1; then
	tap_ok "image encrypt of the whole root image under $CMK"
else
	tap_bail "image encrypt" "exit 0" "$(tail -n 3 "$WORK/encrypt.out")"
fi
rm -f "$WORK/plain.img"
UUID=$("$CTL" --json inspect "$WORK/root.img" 2>/dev/null |
	sed -n 's/.*"uuid": *"\([0-9a-fA-F-]*\)".*/\1/p' | head -n 1)
expect_match "the disk's uuid" '^[0-9a-f-]{36}$' "$UUID" || tap_done

# The initramfs, from the tree's hook and script.
CONF=$WORK/initramfs-conf
mkdir -p "$CONF/hooks" "$CONF/scripts/local-top" "$CONF/conf.d"
printf 'MODULES=list\nBUSYBOX=auto\nKEYMAP=n\nCOMPRESS=gzip\nDEVICE=\nNFSROOT=auto\nRUNSIZE=10%%\nFSTYPE=auto\n' \
	>"$CONF/initramfs.conf"
printf 'virtio_pci\nvirtio_blk\nvirtio_net\next4\n' >"$CONF/modules"
cp "$TOP/helper/initramfs/hooks/envcrypt" "$CONF/hooks/envcrypt"
cp "$TOP/helper/initramfs/scripts/local-top/envcrypt" "$CONF/scripts/local-top/envcrypt"
printf 'root UUID=%s\n' "$UUID" >"$WORK/envcrypttab"
LOOP=$(losetup -r -f --show "$WORK/root.img") || tap_bail "loop device" "set up" "losetup failed"
ENVCRYPT_CONFIG=$WORK/guest.conf ENVCRYPT_TAB=$WORK/envcrypttab ENVCRYPT_FSTAB=$WORK/fstab \
	ENVCRYPT_INITRAMFS_CTL=$CTL ENVCRYPT_INITRAMFS_MODULE=$TOP/build/kmod/$KVER/dm-envcrypt.ko \
	nice -n 10 mkinitramfs -d "$CONF" -o "$WORK/initrd.img" "$KVER" >"$WORK/mkinitramfs.out" 2>&1
status=$?
losetup -d "$LOOP"
LOOP=
if [ "$status" = 0 ]; then
	tap_ok "mkinitramfs with the envcrypt hook ($(du -h "$WORK/initrd.img" | cut -f1))"
else
	tap_bail "mkinitramfs" "exit 0" "exit $status: $(tail -n 3 "$WORK/mkinitramfs.out")"
fi

# boot N PHASE: one boot through our initramfs; status in $status.
boot() {
	local n=$1 phase=$2
	"$TOP/selftests/debian-run.sh" --kernel "$KVER" --image "$WORK/root.img" \
		--overlay "$WORK/overlay.qcow2" --initrd "$WORK/initrd.img" \
		--append root=/dev/mapper/root --append ip=dhcp \
		--out "$WORK/boot$n" --timeout "$RUN_TIMEOUT" -- \
		"$TOP/selftests/debian/test_boot_initramfs_root.sh" --guest "$phase" "$WORK" "$CMK" \
		>"$WORK/boot$n.tap" 2>"$WORK/boot$n.err"
	status=$?
	debian_boot_relay "$n" "$WORK/boot$n"
}

echo "# kernel $KVER, work $WORK"
boot 1 check
debian_boot_multi_user 1 "$WORK/boot1"
expect_eq "boot 1: the guest side finished" 0 "$status"
grep -a 'envcrypt' "$WORK/boot1/console.txt" | head -n 5 | sed 's/^/# console: /'

kmip_server_stop
boot 2 check
panic_lines=$(grep -a '^envcrypt: attach failed: ' "$WORK/boot2/console.txt")
expected_re="^envcrypt: attach failed: disk=root device=/dev/vda cmk=${CMK//./\\.} endpoint=\"kmip 10\\.0\\.2\\.2:$KMIP_PORT\" step=unwrap code=7 reason=\"kmip://10\\.0\\.2\\.2:$KMIP_PORT: connect: Connection refused \\([^)]*\\)\" \\(gave up at the attach deadline after [0-9]+ attempts in [0-9.]+ s; \\[boot\\] attach_timeout_seconds = $ATTACH_TIMEOUT\\)$"
if [ "$(grep -c . <<<"$panic_lines")" = 1 ] && [[ $(tr -d '\r' <<<"$panic_lines") =~ $expected_re ]]; then
	tap_ok "boot 2: one panic line on the console naming disk, CMK, endpoint and reason"
	echo "# $panic_lines"
else
	tap_fail "boot 2: one panic line naming disk, CMK, endpoint and reason" "$expected_re" \
		"${panic_lines:-none (console log: $WORK/boot2/console.txt)}"
fi
# attach-all's own result line: when the disk gave up, by its clock.
result=$(grep -a '^root: failed /dev/vda: ' "$WORK/boot2/console.txt" | tr -d '\r')
seconds=$(sed -n 's/.* \[\([0-9]*\)\.[0-9]* s\]$/\1/p' <<<"$result")
if [[ $seconds =~ ^[0-9]+$ ]] && [ "$seconds" -ge "$ATTACH_TIMEOUT" ] && [ "$seconds" -lt $((ATTACH_TIMEOUT + 6)) ]; then
	tap_ok "boot 2: the disk gave up ${seconds} s after its first attempt (deadline $ATTACH_TIMEOUT s, KMS calls cut at it)"
else
	tap_fail "boot 2: the disk gave up at the deadline" "$ATTACH_TIMEOUT to $((ATTACH_TIMEOUT + 5)) s" "${result:-no result line}"
fi
expect_eq "boot 2: multi-user.target not reached" "" "$(cat "$WORK/boot2/share/multi-user-usec" 2>/dev/null)"
expect_eq "boot 2: debian-run reports the guest died (the panic rebooted it)" 1 "$status"
debian_boot_died 2 "$WORK/boot2"

# boot 3: the switch on the kernel command line.  Nothing is attached, so
# the initramfs does not find its root (rootdelay=5 instead of 180 s).
"$TOP/selftests/debian-run.sh" --kernel "$KVER" --image "$WORK/root.img" \
	--overlay "$WORK/overlay.qcow2" --initrd "$WORK/initrd.img" \
	--append root=/dev/mapper/root --append ip=dhcp --append rootdelay=5 \
	--append envcrypt=yes --append rd.envcrypt=no \
	--out "$WORK/boot3" --timeout "$RUN_TIMEOUT" -- \
	"$TOP/selftests/debian/test_boot_initramfs_root.sh" --guest check "$WORK" "$CMK" \
	>"$WORK/boot3.tap" 2>"$WORK/boot3.err"
status=$?
sed 's/^/# /' "$WORK/boot3.err"
console=$(tr -d '\r' <"$WORK/boot3/console.txt")
# initramfs-tools' log_warning_msg prints "Warning: ...", maybe after a
# "Begin: ... " on the same line.
expect_eq "boot 3 (envcrypt=yes rd.envcrypt=no): the one warning of the local-top script" \
	"Warning: envcrypt: turned off on the kernel command line (envcrypt=no): no disk attached" \
	"$(grep -ao 'Warning: envcrypt: .*' <<<"$console")"
expect_match "boot 3: no network brought up, no attach, the root not found" \
	'^0:0:[1-9]' "$(grep -c 'IP-Config' <<<"$console"):$(grep -c 'attach failed' <<<"$console"):$(grep -c 'ALERT!  */dev/mapper/root does not exist' <<<"$console")"
expect_eq "boot 3: debian-run reports the guest died (no root)" 1 "$status"
debian_boot_died 3 "$WORK/boot3"

if [ "$TAP_FAILED" = 0 ]; then
	rm -rf "$WORK"
else
	echo "# evidence kept in $WORK"
fi
tap_done
