#!/bin/bash
# A system disk made the way Documentation/admin-guide/system-disk.rst says
# ("Making an encrypted image"), booted through its own GRUB on QEMU's
# default BIOS firmware: a plaintext /boot partition, the root partition
# encrypted by `envcryptctl image encrypt --partition` under a KMIP CMK.
#
#   selftests/debian/test_boot_grub_root.sh --kernel KVER
#
# On the host:
#   * the file tree of scripts/debian-image.sh --tree (Debian 12, systemd,
#     initramfs-tools, grub-pc-bin, the envcrypt package, KVER's modules
#     and dm-envcrypt), with the host's /boot/vmlinuz-KVER and config;
#   * a PyKMIP server on 127.0.0.1 whose certificate names 10.0.2.2 (the
#     host's loopback as the guest reaches it), a CMK made there;
#   * in the tree, as an administrator would in the image: envcrypt.conf
#     with the endpoint, its credentials under /etc/envcrypt/pki and
#     default_cmk = that CMK, envcrypttab "root /dev/disk/by-partuuid/
#     5eed0001-02", fstab with / on /dev/mapper/root and /boot on
#     partition 1; then `update-initramfs -c` in a chroot: the package's
#     hook plans the root for default_cmk (the partition has no header yet:
#     one warning, checked word for word), and GRUB: the image's own
#     grub-mkimage, boot.img in the MBR, core.img after it, grub.cfg
#     written by hand (update-grub probes the running system's devices; a
#     chroot over a tree has none);
#   * plain.img: an MBR disk (label-id 0x5eed0001), partition 1 /boot
#     (ext4, 128 MiB), partition 2 the root file system (mkfs.ext4 -d, no
#     loop device) with the 16 MiB the header area takes free at its end;
#   * `image encrypt plain.img kmip.img --partition 2 --cmk CMK`; the MBR,
#     GRUB's core image after it and /boot are byte for byte as in
#     plain.img.
#   boot 1 (debian-run.sh --firmware-boot: SeaBIOS, then the image's GRUB,
#     kernel and initramfs): multi-user.target; / on /dev/mapper/root, an
#     envcrypt mapping of /dev/vda2; /boot from /dev/vda1; the kernel
#     command line is GRUB's (BOOT_IMAGE=); the initramfs holds the hook's
#     envcrypttab line; initramfs-plan now reads the CMK from the header;
#     no failed unit; a marker written to /root (encrypted) and one to
#     /boot (plaintext, the control).
#   The disk after boot 1 is converted to a raw file: the /boot marker is
#   in it, the /root marker is not.
#   boot 2: that byte copy boots the same way; the marker reads back.
#   The key server is stopped.
#   boot 3 (the copy again): the initramfs gives up at the attach deadline
#     (30 s) and panics with one line naming disk, CMK, endpoint and reason
#     (panic=-1 in grub.cfg: QEMU exits); multi-user.target is not reached.
#
# Then the same disk with the CMK on the local KMS, whose root key is
# sealed to a TPM (swtpm; issue 20): the host makes the CMK with a swtpm on
# a state directory, seals the root key there (`kms seal-root-key`), and
# update-initramfs in the tree carries the sealed key, the keystore and the
# TPM drivers.
#   boot 4 (debian-run.sh --tpm with that state: the same TPM): the same
#     checks as boot 1, and the sealed root key but no plaintext one in
#     the initramfs and in the booted system's /etc/envcrypt; the root
#     marker is not in the raw disk after it.
#   boot 5 (a byte copy of that disk on a machine with another TPM): the
#     TPM does not load the sealed key; the initramfs stops with one
#     line naming disk, CMK, the keystore and the TPM's refusal.
#
# Output: TAP.  Exit 0 if every check passed, 1 if not.  In the guest the
# same file runs as `test_boot_grub_root.sh --guest first|copy WORK CMK
# MARKER`.

# shellcheck source=selftests/lib/guest.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/guest.sh"
# shellcheck source=selftests/lib/debian-boot.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/debian-boot.sh"

# MBR disk identifier: partition 2's PARTUUID is 5eed0001-02.
LABEL_ID=5eed0001
ROOT_LINE="root /dev/disk/by-partuuid/$LABEL_ID-02"

# ---- guest side -----------------------------------------------------------

guest_check() { # guest_check first|copy WORK CMK MARKER
	local phase=$1 work=$2 cmk=$3 marker=$4 kver=$ENVCRYPT_KVER plan
	expect_eq "/ is mounted from /dev/mapper/root" /dev/mapper/root \
		"$(findmnt -n -o SOURCE / 2>&1)"
	expect_match "mapping root is an envcrypt target" '^0 [0-9]+ envcrypt ' \
		"$(dmsetup table root 2>&1)"
	expect_eq "the mapping's device is /dev/vda2" "$(cat /sys/class/block/vda2/dev 2>&1)" \
		"$(dmsetup table root 2>/dev/null | awk '{ print $4 }')"
	expect_eq "/boot is the plaintext partition 1" "/dev/vda1 ext4" \
		"$(findmnt -n -o SOURCE,FSTYPE /boot 2>&1)"
	expect_eq "the kernel command line is GRUB's" \
		"BOOT_IMAGE=/vmlinuz-$kver root=/dev/mapper/root ro console=ttyS0 panic=-1 debian_run=1" \
		"$(cat /proc/cmdline)"
	rm -rf /tmp/initrd
	expect_eq "the initramfs made in the image holds the root's line" \
		"$ROOT_LINE x-systemd.device-timeout=90000ms" \
		"$(unmkinitramfs "/boot/initrd.img-$kver" /tmp/initrd >/dev/null 2>&1 &&
			cat /tmp/initrd/main/etc/envcrypttab /tmp/initrd/etc/envcrypttab 2>/dev/null)"
	if [[ $cmk == local://* ]]; then
		expect_eq "the sealed root key, and no plaintext one, in the initramfs and the system" \
			"initramfs: 1 sealed, 0 plain; system: 1 sealed, 0 plain" \
			"initramfs: $(find /tmp/initrd -name root.key.tpm | wc -l) sealed, $(find /tmp/initrd -name root.key | wc -l) plain; system: $(find /etc/envcrypt -name root.key.tpm | wc -l) sealed, $(find /etc/envcrypt -name root.key | wc -l) plain"
	fi
	expect_eq "the attach unit found the root attached" active \
		"$(systemctl is-active envcrypt-attach@root.service 2>&1)"
	plan=$(envcryptctl initramfs-plan 2>&1)
	expect_eq "initramfs-plan on the running system reads the CMK from the header" \
		"DISK_CMK=$cmk DISK_CMK_FROM=header" \
		"$(grep -E '^DISK_CMK(_FROM)?=' <<<"$plan" | tr '\n' ' ' | sed 's/ $//')"
	if [ "$phase" = first ]; then
		printf '%s\n' "$marker-root" >/root/envcrypt-marker
		printf '%s\n' "$marker-boot" >/boot/envcrypt-marker
		sync
	fi
	expect_eq "the marker on the encrypted root reads back" "$marker-root" \
		"$(cat /root/envcrypt-marker 2>&1)"
	echo "# work $work"
}

if [ "${1-}" = --guest ]; then
	case ${2-} in
	first | copy) guest_check "$2" "${3:?}" "${4:?}" "${5:?}" ;;
	*) tap_bail "phase" "first or copy" "'${2-}'" ;;
	esac
	tap_done
fi

# ---- host side ------------------------------------------------------------

debian_boot_host "$@"
CTL=$TOP/build/envcryptctl
ATTACH_TIMEOUT=30
# shellcheck source=tests/host/lib/kmip/pykmip.sh
. "$TOP/tests/host/lib/kmip/pykmip.sh"

for tool in sfdisk mkfs.ext4 qemu-img unshare swtpm; do
	command -v "$tool" >/dev/null || tap_bail "$tool" "installed" "missing (make deps)"
done
[ -x "$CTL" ] || tap_bail "envcryptctl" "$CTL built" "missing (make helper)"
kmip_have_pykmip || tap_bail "PyKMIP" "importable by $KMIP_PYTHON" "not installed (make deps)"

debian_boot_work boot_grub_root
TREE=$WORK/tree
SWTPM_PID=
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
	kmip_server_stop
	[ -z "$SWTPM_PID" ] || kill "$SWTPM_PID" 2>/dev/null
	rm -rf --one-file-system "$TREE"
}
trap cleanup EXIT
echo "# kernel $KVER, work $WORK"
MARKER=envcrypt-grub-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')

# new_tree: the image's file tree in $TREE with the kernel in /boot and
# what every variant writes the same: envcrypttab, fstab, initramfs-tools'
# settings.
new_tree() {
	rm -rf --one-file-system "$TREE"
	"$TOP/scripts/debian-image.sh" --quiet --tree "$TREE" "$KVER" >/dev/null ||
		tap_bail "image tree for $KVER" "scripts/debian-image.sh --tree succeeds" "it failed (messages above)"
	cp "/boot/vmlinuz-$KVER" "/boot/config-$KVER" "$TREE/boot/" ||
		tap_bail "kernel" "copied into the tree's /boot" "cp failed"
	printf '%s\n' "$ROOT_LINE" >"$TREE/etc/envcrypttab"
	cat >"$TREE/etc/fstab" <<-EOF
		# written by test_boot_grub_root.sh
		/dev/mapper/root	/	ext4	errors=remount-ro	0	1
		PARTUUID=$LABEL_ID-01	/boot	ext4	defaults	0	2
	EOF
	# A small initramfs: the drivers of a QEMU guest only (MODULES=most
	# would carry every storage driver; a chroot has no devices for
	# MODULES=dep).
	sed -i -e 's/^MODULES=.*/MODULES=list/' -e '/^UMASK=/d' "$TREE/etc/initramfs-tools/initramfs.conf"
	echo UMASK=0077 >>"$TREE/etc/initramfs-tools/initramfs.conf"
	printf 'virtio_pci\nvirtio_blk\nvirtio_net\next4\n' >>"$TREE/etc/initramfs-tools/modules"
}

# make_disk NAME CMK HOSTCONF: what the tree's envcrypt.conf says goes
# into its initramfs (update-initramfs in a chroot), GRUB, the disk
# layout, and $WORK/NAME.img, the root partition encrypted under CMK.
make_disk() {
	local name=$1 cmk=$2 conf=$3 status boot_uuid root_mib p2_sectors core_sectors
	# proc, sys and dev for mkinitramfs, in a mount namespace of its own
	# (gone with it).
	# shellcheck disable=SC2016 # the inner shell expands its own arguments
	unshare -m --propagation private sh -ec '
		tree=$1 kver=$2
		mount -t proc proc "$tree/proc"
		mount -t sysfs sys "$tree/sys"
		mount --rbind /dev "$tree/dev"
		chroot "$tree" update-initramfs -c -k "$kver"
	' sh "$TREE" "$KVER" >"$WORK/$name-update-initramfs.out" 2>&1
	status=$?
	if [ "$status" = 0 ] && [ -s "$TREE/boot/initrd.img-$KVER" ]; then
		tap_ok "$name: update-initramfs in the image, with the package's hook ($(du -h "$TREE/boot/initrd.img-$KVER" | cut -f1))"
	else
		tap_bail "$name: update-initramfs in the image" "exit 0" "exit $status: $(tail -n 3 "$WORK/$name-update-initramfs.out")"
	fi
	expect_eq "$name: the hook planned the root for default_cmk, with one warning" \
		"envcryptctl: warning: /etc/envcrypttab:1: disk root (fstab /): cannot read its CMK from the header (/dev/disk/by-partuuid/$LABEL_ID-02 does not exist): planned for default_cmk $cmk" \
		"$(grep 'envcryptctl: warning' "$WORK/$name-update-initramfs.out")"

	# GRUB for a BIOS machine, as grub-install would put it: its modules
	# under /boot/grub, boot.img in the MBR's first 440 bytes, core.img
	# (which reads its modules and grub.cfg from partition 1) after it.
	boot_uuid=$(cat /proc/sys/kernel/random/uuid)
	mkdir -p "$TREE/boot/grub"
	cp -a "$TREE/usr/lib/grub/i386-pc" "$TREE/boot/grub/"
	cat >"$TREE/boot/grub/grub.cfg" <<-EOF
		# written by test_boot_grub_root.sh (update-grub needs the running disk)
		serial --unit=0 --speed=115200
		terminal_input serial
		terminal_output serial
		set timeout=0
		menuentry 'Debian GNU/Linux, root on envcrypt' {
			insmod part_msdos
			insmod ext2
			search --no-floppy --fs-uuid --set=root $boot_uuid
			linux /vmlinuz-$KVER root=/dev/mapper/root ro console=ttyS0 panic=-1 debian_run=1
			initrd /initrd.img-$KVER
		}
	EOF
	chroot "$TREE" grub-mkimage -O i386-pc -o /boot/grub/i386-pc/core.img \
		-p "(hd0,msdos1)/grub" biosdisk part_msdos ext2 >"$WORK/grub-mkimage.out" 2>&1 ||
		tap_bail "$name: grub-mkimage" "exit 0" "$(tail -n 3 "$WORK/grub-mkimage.out")"
	# boot.img finds core.img at sector 1 and core.img's first sector
	# lists the rest from sector 2 (their defaults; grub-mkimage fills in
	# the length): no grub-setup is needed when core.img sits right after
	# the MBR.
	core_sectors=$((($(stat -c %s "$TREE/boot/grub/i386-pc/core.img") + 511) / 512))
	[ "$core_sectors" -lt 2048 ] || tap_bail "core.img" "fits before partition 1" "$core_sectors sectors"
	cp "$TREE/boot/grub/i386-pc/boot.img" "$TREE/boot/grub/i386-pc/core.img" "$WORK/"

	# plain.img: MBR, /boot in partition 1, the root in partition 2 with
	# the 16 MiB the header area takes free at its end.
	rm -rf "${WORK:?}/boot"
	if ! mv "$TREE/boot" "$WORK/boot" || ! mkdir -m 0755 "$TREE/boot"; then
		tap_bail "/boot" "moved out of the tree" "mv failed"
	fi
	root_mib=$(($(du -sm "$TREE" | cut -f1) * 3 / 2 + 256))
	if ! mkfs.ext4 -q -F -L boot -U "$boot_uuid" -d "$WORK/boot" "$WORK/boot.fs" 128M >"$WORK/mkfs.out" 2>&1 ||
		! mkfs.ext4 -q -F -L root -d "$TREE" "$WORK/root.fs" "${root_mib}M" >>"$WORK/mkfs.out" 2>&1; then
		tap_bail "$name: file systems" "made by mkfs.ext4 -d" "$(tail -n 3 "$WORK/mkfs.out")"
	fi
	rm -rf --one-file-system "$TREE" "${WORK:?}/boot"
	p2_sectors=$(((root_mib + 16) * 2048))
	rm -f "$WORK/plain.img"
	truncate -s $(((1 + 128 + root_mib + 16) * 1024 * 1024)) "$WORK/plain.img"
	printf 'label: dos\nlabel-id: 0x%s\nstart=2048, size=262144, type=83, bootable\nstart=264192, size=%s, type=83\n' \
		"$LABEL_ID" "$p2_sectors" | sfdisk -q "$WORK/plain.img" >"$WORK/sfdisk.out" 2>&1 ||
		tap_bail "partition table" "written by sfdisk" "$(cat "$WORK/sfdisk.out")"
	if ! dd if="$WORK/boot.fs" of="$WORK/plain.img" bs=1M seek=1 conv=notrunc,sparse status=none ||
		! dd if="$WORK/root.fs" of="$WORK/plain.img" bs=1M seek=129 conv=notrunc,sparse status=none ||
		! dd if="$WORK/boot.img" of="$WORK/plain.img" bs=440 count=1 conv=notrunc status=none ||
		! dd if="$WORK/core.img" of="$WORK/plain.img" bs=512 seek=1 conv=notrunc status=none; then
		tap_bail "plain.img" "assembled" "dd failed"
	fi
	rm -f "$WORK/boot.fs" "$WORK/root.fs"
	tap_ok "$name: plain.img: MBR $LABEL_ID, /boot 128 MiB, root $root_mib MiB, GRUB ($core_sectors sectors of core image)"

	if "$CTL" --config "$conf" image encrypt "$WORK/plain.img" "$WORK/$name.img" \
		--partition 2 --cmk "$cmk" >"$WORK/$name-encrypt.out" 2>&1; then
		tap_ok "$name: image encrypt --partition 2 under $cmk"
	else
		tap_bail "$name: image encrypt" "exit 0" "$(tail -n 3 "$WORK/$name-encrypt.out")"
	fi
	# The bytes before partition 2 (MBR, GRUB, /boot) are plain.img's.
	expect_eq "$name: the MBR, GRUB's core image and /boot are unchanged by the encryption" \
		"$(head -c $((129 * 1024 * 1024)) "$WORK/plain.img" | sha256sum)" \
		"$(head -c $((129 * 1024 * 1024)) "$WORK/$name.img" | sha256sum)"
	rm -f "$WORK/plain.img"
}

# boot N IMAGE PHASE CMK [ARG...]: one boot of IMAGE through its own boot
# loader (on an overlay of its own), ARGs to debian-run.sh; status in
# $status.
boot() {
	local n=$1 image=$2 phase=$3 cmk=$4
	shift 4
	rm -f "$WORK/overlay$n.qcow2"
	"$TOP/selftests/debian-run.sh" --kernel "$KVER" --image "$image" --firmware-boot "$@" \
		--overlay "$WORK/overlay$n.qcow2" --out "$WORK/boot$n" --timeout "$RUN_TIMEOUT" -- \
		"$TOP/selftests/debian/test_boot_grub_root.sh" --guest "$phase" "$WORK" "$cmk" "$MARKER" \
		>"$WORK/boot$n.tap" 2>"$WORK/boot$n.err"
	status=$?
	debian_boot_relay "$n" "$WORK/boot$n"
}

# first_boot N IMAGE CMK DETAIL [ARG...]: boot N, then the disk it left as
# one raw file, $WORK/copyN.img: the markers checked in it.
first_boot() {
	local n=$1 image=$2 cmk=$3 detail=$4
	shift 4
	boot "$n" "$image" first "$cmk" "$@"
	debian_boot_multi_user "$n" "$WORK/boot$n" "$detail"
	expect_eq "boot $n: the guest side finished" 0 "$status"
	expect_eq "boot $n: no failed unit" "" "$(cat "$WORK/boot$n/share/failed-units.txt" 2>&1)"
	qemu-img convert -O raw "$WORK/overlay$n.qcow2" "$WORK/copy$n.img" ||
		tap_bail "copy" "qemu-img convert of boot $n's disk" "it failed"
	rm -f "$WORK/overlay$n.qcow2" "$image"
	expect_eq "boot $n: the raw disk holds the /boot marker (plaintext, the control) and not the root's" \
		"boot: 1, root: 0" \
		"boot: $(grep -a -c "$MARKER-boot" "$WORK/copy$n.img"), root: $(grep -a -c "$MARKER-root" "$WORK/copy$n.img")"
}

# expect_panic N REGEX: boot N stopped in the initramfs with one line
# matching REGEX and did not reach multi-user.target.
expect_panic() {
	local n=$1 regex=$2 lines
	lines=$(grep -a '^envcrypt: attach failed: ' "$WORK/boot$n/console.txt" | tr -d '\r')
	if [ "$(grep -c . <<<"$lines")" = 1 ] && [[ $lines =~ $regex ]]; then
		tap_ok "boot $n: one panic line on the console naming disk, CMK, KMS and reason"
		echo "# $lines"
	else
		tap_fail "boot $n: one panic line naming disk, CMK, KMS and reason" "$regex" \
			"${lines:-none (console log: $WORK/boot$n/console.txt)}"
	fi
	expect_eq "boot $n: multi-user.target not reached" "" "$(cat "$WORK/boot$n/share/multi-user-usec" 2>/dev/null)"
	expect_eq "boot $n: debian-run reports the guest died (the panic rebooted it)" 1 "$status"
	debian_boot_died "$n" "$WORK/boot$n"
}

# ---- the CMK on a KMIP server ---------------------------------------------

new_tree
tap_ok "the image's file tree, with the kernel in /boot"
PKI=$WORK/pki
debian_guest_pki "$PKI" envcrypt-grub-root
kmip_server_start "$PKI" "$WORK/kmip" ||
	tap_bail "PyKMIP server" "listening on 127.0.0.1" "it did not start (messages above)"
tap_ok "PyKMIP server listening on 127.0.0.1:$KMIP_PORT (pid $KMIP_SERVER_PID)"
cat >"$WORK/host.conf" <<-EOF
	[kms.kmip.main]
	servers = ["10.0.2.2:$KMIP_PORT", "127.0.0.1:$KMIP_PORT"]
	ca = "$PKI/ca.pem"
	cert = "$PKI/client-a.pem"
	key = "$PKI/client-a.key"
	timeout_ms = 5000
EOF
chmod 0600 "$WORK/host.conf"
CMK=$("$CTL" --config "$WORK/host.conf" kms create-key --kms kmip://main 2>"$WORK/create-key.err" | tail -n 1)
expect_match "a CMK on the key server" "^kmip://10\\.0\\.2\\.2:$KMIP_PORT/" "$CMK" ||
	tap_bail "CMK" "made" "$(cat "$WORK/create-key.err")"

# The administrator's files in the image.
install -d -m 0700 "$TREE/etc/envcrypt/pki"
install -m 0644 "$PKI/ca.pem" "$PKI/client-a.pem" "$TREE/etc/envcrypt/pki/"
install -m 0600 "$PKI/client-a.key" "$TREE/etc/envcrypt/pki/"
cat >"$TREE/etc/envcrypt/envcrypt.conf" <<-EOF
	default_cmk = "$CMK"

	[kms.kmip.main]
	host = "10.0.2.2"
	port = $KMIP_PORT
	ca = "/etc/envcrypt/pki/ca.pem"
	cert = "/etc/envcrypt/pki/client-a.pem"
	key = "/etc/envcrypt/pki/client-a.key"
	timeout_ms = 5000

	[boot]
	attach_timeout_seconds = $ATTACH_TIMEOUT
EOF
chmod 0600 "$TREE/etc/envcrypt/envcrypt.conf"
make_disk kmip "$CMK" "$WORK/host.conf"

first_boot 1 "$WORK/kmip.img" "$CMK" "SeaBIOS, GRUB, the initramfs's attach over KMIP"
grep -a -m 3 'Booting `\|envcrypt' "$WORK/boot1/console.txt" | tr -d '\r' |
	sed 's/\x1b\[[0-9;?]*[A-Za-z]//g; s/^/# console: /'

boot 2 "$WORK/copy1.img" copy "$CMK"
debian_boot_multi_user 2 "$WORK/boot2" "a byte copy of the disk"
expect_eq "boot 2: the guest side finished" 0 "$status"

kmip_server_stop
boot 3 "$WORK/copy1.img" copy "$CMK"
expect_panic 3 "^envcrypt: attach failed: disk=root device=/dev/disk/by-partuuid/$LABEL_ID-02 cmk=${CMK//./\\.} endpoint=\"kmip 10\\.0\\.2\\.2:$KMIP_PORT\" step=unwrap code=7 reason=\"kmip://10\\.0\\.2\\.2:$KMIP_PORT: connect: Connection refused \\([^)]*\\)\" \\(gave up at the attach deadline after [0-9]+ attempts in [0-9.]+ s; \\[boot\\] attach_timeout_seconds = $ATTACH_TIMEOUT\\)$"
result=$(grep -a '^root: failed ' "$WORK/boot3/console.txt" | tr -d '\r')
seconds=$(sed -n 's/.* \[\([0-9]*\)\.[0-9]* s\]$/\1/p' <<<"$result")
if [[ $seconds =~ ^[0-9]+$ ]] && [ "$seconds" -ge "$ATTACH_TIMEOUT" ] && [ "$seconds" -lt $((ATTACH_TIMEOUT + 6)) ]; then
	tap_ok "boot 3: the disk gave up ${seconds} s after its first attempt (deadline $ATTACH_TIMEOUT s)"
else
	tap_fail "boot 3: the disk gave up at the deadline" "$ATTACH_TIMEOUT to $((ATTACH_TIMEOUT + 5)) s" "${result:-no result line}"
fi
rm -f "$WORK/copy1.img"

# ---- the CMK on the local KMS, its root key sealed to the TPM --------------

new_tree
# The machine's TPM: a swtpm on a state directory that the host uses now
# (TCP, for tpm2-tss's swtpm TCTI) and the guest later (debian-run.sh
# --tpm): one TPM, as the image builder would seal to the target
# machine's.
port=$(kmip_free_port)
mkdir -p "$WORK/tpm"
swtpm socket --tpm2 --server "type=tcp,port=$port,bindaddr=127.0.0.1" \
	--ctrl "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1" --tpmstate "dir=$WORK/tpm" \
	--flags not-need-init,startup-clear --log "file=$WORK/tpm-host.log" </dev/null >/dev/null 2>&1 &
SWTPM_PID=$!
for _ in $(seq 50); do kmip_port_open "$port" && break; sleep 0.1; done
# The image builder's keystore, copied into the image once sealed (make_disk
# removes the tree before image encrypt, which uses this copy).
# The CMK is made for the machine the image is for: its principal,
# host/<the image's host name>, owns it.
cat >"$WORK/host-local.conf" <<-EOF
	principal = "host/$(cat "$TREE/etc/hostname")"

	[kms.local]
	dir = "$WORK/local/kms"
	root_key = "$WORK/local/root.key"
	tpm_tcti = "swtpm:host=127.0.0.1,port=$port"
EOF
LOCAL_CMK=$("$CTL" --config "$WORK/host-local.conf" kms create-key 2>"$WORK/create-local.err" | tail -n 1)
expect_match "a CMK on the image's local KMS" '^local://local-1/' "$LOCAL_CMK" ||
	tap_bail "local CMK" "made" "$(cat "$WORK/create-local.err")"
if "$CTL" --config "$WORK/host-local.conf" kms seal-root-key >"$WORK/seal.out" 2>&1 &&
	[ -f "$WORK/local/root.key.tpm" ] && [ ! -e "$WORK/local/root.key" ]; then
	tap_ok "kms seal-root-key: the image's root key sealed to the machine's TPM, the plaintext file gone"
else
	tap_bail "kms seal-root-key" "root.key.tpm and no root.key" "$(tail -n 3 "$WORK/seal.out")"
fi
if ! mkdir -p "$TREE/var/lib/envcrypt/kms" "$TREE/etc/envcrypt" ||
	! cp -a "$WORK/local/kms/." "$TREE/var/lib/envcrypt/kms/" ||
	! cp -a "$WORK/local/root.key.tpm" "$TREE/etc/envcrypt/root.key.tpm"; then
	tap_bail "the keystore" "copied into the image" "cp failed"
fi
cat >"$TREE/etc/envcrypt/envcrypt.conf" <<-EOF
	default_cmk = "$LOCAL_CMK"

	[boot]
	attach_timeout_seconds = $ATTACH_TIMEOUT
EOF
make_disk local "$LOCAL_CMK" "$WORK/host-local.conf"
kill "$SWTPM_PID"
wait "$SWTPM_PID" 2>/dev/null
SWTPM_PID=

first_boot 4 "$WORK/local.img" "$LOCAL_CMK" "the root key unsealed by the TPM in the initramfs" --tpm "$WORK/tpm"
boot 5 "$WORK/copy4.img" copy "$LOCAL_CMK" --tpm "$WORK/other-tpm"
expect_panic 5 "^envcrypt: attach failed: disk=root device=/dev/disk/by-partuuid/$LABEL_ID-02 cmk=$LOCAL_CMK endpoint=\"local keystore /var/lib/envcrypt/kms\" step=unwrap code=5 reason=\"root key /etc/envcrypt/root\\.key\\.tpm: TPM at device:/dev/tpmrm0: the sealed key does not load \\(sealed on another TPM, the TPM was cleared, or the file is damaged\\): tpm:parameter\\(1\\):integrity check failed\"$"

if [ "$TAP_FAILED" = 0 ]; then
	rm -rf "$WORK"
else
	echo "# evidence kept in $WORK"
fi
tap_done
