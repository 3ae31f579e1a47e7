#!/bin/bash
# test_initramfs_hook.sh: the initramfs-tools hook and local-top script of
# helper/initramfs/ under the host's real mkinitramfs, for one kernel of the
# matrix whose dm-envcrypt.ko is built (make kmod-matrix).  The hook and
# script are run from a configuration directory of their own (mkinitramfs
# -d), so nothing is installed on the host.  Each case has its own
# envcrypt.conf, envcrypttab and fstab (ENVCRYPT_CONFIG, ENVCRYPT_TAB,
# ENVCRYPT_FSTAB) and image files formatted by build/envcryptctl:
#   * the root (fstab /dev/mapper/sys /) under a KMIP CMK on a PyKMIP server:
#     the image holds envcryptctl (it runs there: its libraries came along),
#     dm-envcrypt.ko in modules.dep, envcrypt.conf, exactly the needed line,
#     the KMIP client credentials, network=yes, the local-top script in
#     its ORDER, and no root key;
#   * a local-KMS line with a plaintext root key: mkinitramfs fails with
#     exactly the plan's refusal and writes no image;
#   * the same once `kms seal-root-key` sealed the key to a swtpm: accepted,
#     the sealed key and keystore inside, the plaintext key nowhere, the
#     TPM's TCTI library copied;
#   * no line needing it: nothing of envcrypt but the local-top script;
#   * the local-top script, run with initramfs-tools' functions replaced by
#     stubs that record calls: envcrypt=no attaches nothing; with the key
#     server stopped it gives up at the attach deadline and panics with one
#     message naming disk, CMK, endpoint and reason; before attach-all it
#     names the kernel after the system's /etc/hostname while it has none.
# Output is TAP 13; exit 0 only if nothing failed, 4 when all was skipped.
set -u

TOP=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${ENVCRYPT_BUILD:-$TOP/build}
CTL=$BUILD/envcryptctl
HOOK=$TOP/helper/initramfs/hooks/envcrypt
LOCAL_TOP=$TOP/helper/initramfs/scripts/local-top/envcrypt
# shellcheck source=tests/host/lib/kmip/pykmip.sh
. "$TOP/tests/host/lib/kmip/pykmip.sh"
# shellcheck source=tests/host/lib/tap.sh
. "$TOP/tests/host/lib/tap.sh"

echo "TAP version 13"

[ "$(id -u)" = 0 ] || skip_all "mkinitramfs and unmkinitramfs need root"
[ -x "$CTL" ] || skip_all "$CTL not built (make helper)"
if ! command -v mkinitramfs >/dev/null || ! command -v unmkinitramfs >/dev/null; then
	skip_all "initramfs-tools not installed (make deps)"
fi
KVER=
for k in ${ENVCRYPT_KERNELS:-6.1.0-57-amd64 6.12.95+deb12-amd64}; do
	if [ -f "$BUILD/kmod/$k/dm-envcrypt.ko" ] && [ -f "/lib/modules/$k/modules.dep" ]; then
		KVER=$k
		break
	fi
done
[ -n "$KVER" ] || skip_all "no build/kmod/<kernel>/dm-envcrypt.ko with /lib/modules/<kernel> (make kmod-matrix)"
MODULE=$BUILD/kmod/$KVER/dm-envcrypt.ko

WORK=$(mktemp -d /tmp/envcrypt-initramfs.XXXXXX)
SWTPM_PID=
cleanup() {
	kmip_server_stop
	[ -n "$SWTPM_PID" ] && kill "$SWTPM_PID" 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT

# mkinitramfs -d: the host's initramfs.conf with few modules and a fast
# compressor, and our hook and script.
CONF=$WORK/conf
mkdir -p "$CONF/hooks" "$CONF/scripts/local-top" "$CONF/conf.d"
cat >"$CONF/initramfs.conf" <<'EOF'
MODULES=list
BUSYBOX=auto
KEYMAP=n
COMPRESS=gzip
DEVICE=
NFSROOT=auto
RUNSIZE=10%
FSTYPE=auto
EOF
: >"$CONF/modules"
cp "$HOOK" "$CONF/hooks/envcrypt"
cp "$LOCAL_TOP" "$CONF/scripts/local-top/envcrypt"

# build CASE: mkinitramfs for the case's files; $WORK/CASE.initrd, .out (both
# streams), .rc; unpacked into $WORK/CASE.d (its main archive in $ROOT).
build() {
	local case=$1
	ENVCRYPT_CONFIG=$WORK/$case.conf ENVCRYPT_TAB=$WORK/$case.tab ENVCRYPT_FSTAB=$WORK/$case.fstab \
		ENVCRYPT_INITRAMFS_CTL=$CTL ENVCRYPT_INITRAMFS_MODULE=$MODULE \
		nice -n 10 mkinitramfs -d "$CONF" -o "$WORK/$case.initrd" "$KVER" >"$WORK/$case.out" 2>&1
	echo $? >"$WORK/$case.rc"
	ROOT=
	if [ -s "$WORK/$case.initrd" ]; then
		unmkinitramfs "$WORK/$case.initrd" "$WORK/$case.d" >/dev/null 2>&1
		ROOT=$WORK/$case.d
		[ -d "$ROOT/main" ] && ROOT=$ROOT/main
	fi
}

# expect_file WHAT PATH EXPECTED: PATH in the unpacked image holds exactly EXPECTED.
expect_file() {
	local what=$1 path=$2 expected=$3
	if [ -f "$ROOT/$path" ] && [ "$(cat "$ROOT/$path"; echo x)" = "${expected}x" ]; then
		ok "$what"
	else
		not_ok "$what"
		{ echo "expected /$path:"; printf '%s' "$expected"; echo "found:"; cat "$ROOT/$path" 2>&1; } | diag
	fi
}

# expect_same WHAT PATH SOURCE: PATH in the image is a byte copy of SOURCE.
expect_same() {
	if cmp -s "$ROOT/$2" "$3"; then ok "$1"; else not_ok "$1"; cmp "$ROOT/$2" "$3" 2>&1 | diag; fi
}

# ---- the root on a KMIP CMK, found from fstab ----------------------------
if ! kmip_have_pykmip; then
	skip "root under a KMIP CMK" "PyKMIP not importable by $KMIP_PYTHON (apt-get install python3-pykmip)"
elif ! kmip_pki_make "$WORK/pki" >/dev/null 2>&1 || ! kmip_server_start "$WORK/pki" 2>/dev/null; then
	not_ok "start a PyKMIP server"
else
	kmip_write_endpoint_config "$WORK/pki" "$WORK/kmip.conf" ca client-a
	printf '[boot]\nattach_timeout_seconds = 4\n' >>"$WORK/kmip.conf"
	truncate -s 32M "$WORK/kmip.disk"
	CMK=$("$CTL" --config "$WORK/kmip.conf" kms create-key --kms kmip://main 2>&1 | tail -n 1)
	"$CTL" --config "$WORK/kmip.conf" format "$WORK/kmip.disk" --cmk "$CMK" >/dev/null 2>&1 ||
		bail "format an image under the KMIP CMK $CMK"
	printf 'other /dev/disk/by-id/not-here\nsys %s discard\n' "$WORK/kmip.disk" >"$WORK/kmip.tab"
	printf '/dev/mapper/sys / ext4 defaults 0 1\nUUID=9a1e /boot ext4 defaults 0 2\n' >"$WORK/kmip.fstab"
	build kmip
	if [ "$(cat "$WORK/kmip.rc")" = 0 ] && [ -n "$ROOT" ]; then
		ok "mkinitramfs $KVER with the root disk (fstab /dev/mapper/sys /) under $CMK"
	else
		not_ok "mkinitramfs $KVER with the root disk under a KMIP CMK"
		diag <"$WORK/kmip.out"
	fi
	if [ -n "$ROOT" ]; then
		if [ "$(chroot "$ROOT" /usr/sbin/envcryptctl --version 2>&1)" = "$("$CTL" --version 2>&1)" ]; then
			ok "envcryptctl is in the image and runs there (chroot): its libraries came along"
		else
			not_ok "envcryptctl runs in the image"
			chroot "$ROOT" /usr/sbin/envcryptctl --version 2>&1 | diag
		fi
		if cmp -s "$ROOT/usr/lib/modules/$KVER/updates/dm-envcrypt.ko" "$MODULE" &&
			grep -q '^updates/dm-envcrypt.ko:' "$ROOT/usr/lib/modules/$KVER/modules.dep" &&
			grep -q '^kernel/drivers/md/dm-mod.ko:' "$ROOT/usr/lib/modules/$KVER/modules.dep"; then
			ok "dm-envcrypt.ko (byte copy of $MODULE) and dm-mod.ko in the image's modules.dep"
		else
			not_ok "dm-envcrypt.ko and dm-mod.ko in the image"
			grep -E 'dm-envcrypt|dm-mod' "$ROOT/usr/lib/modules/$KVER/modules.dep" 2>&1 | diag
		fi
		expect_same "the configuration, as /etc/envcrypt/envcrypt.conf" etc/envcrypt/envcrypt.conf "$WORK/kmip.conf"
		expect_file "envcrypttab holds the root's line only, with a 90 s device timeout" etc/envcrypttab \
			"sys $WORK/kmip.disk discard,x-systemd.device-timeout=90000ms
"
		expect_file "the local-top script is told to bring the network up" etc/envcrypt/initramfs "network=yes
"
		if [ -n "$(find "$ROOT/usr/lib/modules/$KVER/kernel/drivers/net" -name 'virtio_net.ko*' 2>/dev/null)" ]; then
			ok "MODULES=list: the network drivers came along (virtio_net among them)"
		else
			not_ok "MODULES=list: the network drivers came along"
		fi
		for f in ca.pem client-a.pem client-a.key; do
			expect_same "the KMIP credential $f at its configured path" "$WORK/pki/$f" "$WORK/pki/$f"
		done
		if [ "$(stat -c %a "$ROOT/$WORK/pki/client-a.key")" = "$(stat -c %a "$WORK/pki/client-a.key")" ]; then
			ok "the client key keeps its mode ($(stat -c %a "$WORK/pki/client-a.key"))"
		else
			not_ok "the client key keeps its mode"
		fi
		if cmp -s "$ROOT/scripts/local-top/envcrypt" "$LOCAL_TOP" &&
			grep -qx '/scripts/local-top/envcrypt "$@"' "$ROOT/scripts/local-top/ORDER"; then
			ok "the local-top script is in the image and in scripts/local-top/ORDER"
		else
			not_ok "the local-top script is in the image and its ORDER"
			diag <"$ROOT/scripts/local-top/ORDER"
		fi
		found=$(find "$ROOT" -name 'root.key*')
		if [ -z "$found" ]; then ok "no local root key in the image"; else not_ok "no local root key in the image"; diag <<<"$found"; fi
	fi
fi

# ---- an image built before its root is encrypted: no header yet -----------
if [ -n "${CMK:-}" ]; then
	{ printf 'default_cmk = "%s"\n' "$CMK"; cat "$WORK/kmip.conf"; } >"$WORK/offline.conf"
	chmod 0600 "$WORK/offline.conf"
	part=/dev/disk/by-partuuid/00000000-0000-0000-0000-00000000abcd
	printf 'root %s\n' "$part" >"$WORK/offline.tab"
	printf '/dev/mapper/root / ext4 defaults 0 1\n' >"$WORK/offline.fstab"
	build offline
	warning="envcryptctl: warning: $WORK/offline.tab:1: disk root (fstab /): cannot read its CMK from the header ($part does not exist): planned for default_cmk $CMK"
	if [ "$(cat "$WORK/offline.rc")" = 0 ] && [ -n "$ROOT" ] && grep -qxF "$warning" "$WORK/offline.out"; then
		ok "root disk not encrypted yet (no header): built for default_cmk, with exactly one warning line"
	else
		not_ok "root disk without a header: built for default_cmk with the warning"
		{ echo "expected line: $warning"; cat "$WORK/offline.out"; } | diag
	fi
	if [ -n "$ROOT" ]; then
		expect_file "its line in the image" etc/envcrypttab "root $part x-systemd.device-timeout=90000ms
"
		expect_same "default_cmk's KMIP client key in the image" "$WORK/pki/client-a.key" "$WORK/pki/client-a.key"
	fi
else
	skip "root disk not encrypted yet" "needs the KMIP CMK of the first case"
fi

# ---- a local-KMS line with a plaintext root key: refused ------------------
printf '[kms.local]\ndir = "%s"\nroot_key = "%s"\n' "$WORK/local-kms" "$WORK/local-root.key" >"$WORK/plain.conf"
truncate -s 32M "$WORK/plain.disk"
out=$("$CTL" --config "$WORK/plain.conf" format "$WORK/plain.disk" 2>&1) || bail "format an image under the local KMS"
LOCAL_CMK=$(sed -n 's/.*CMK \(local:[^ ]*\) .*/\1/p' <<<"$out")
printf '# the system\nsys %s initramfs\n' "$WORK/plain.disk" >"$WORK/plain.tab"
printf '/dev/vda1 / ext4 defaults 0 1\n' >"$WORK/plain.fstab"
build plain
refusal="envcryptctl: initramfs-plan: $WORK/plain.tab:2: disk sys (option initramfs), CMK $LOCAL_CMK: a plaintext local root key in the initramfs would lie next to the disk it opens; seal it with envcryptctl kms seal-root-key or use a KMIP CMK"
if [ "$(cat "$WORK/plain.rc")" != 0 ] && grep -qxF "$refusal" "$WORK/plain.out" && [ ! -s "$WORK/plain.initrd" ]; then
	ok "plaintext local root key: mkinitramfs fails (exit $(cat "$WORK/plain.rc")) with the refusal line, nothing written to the image (mkinitramfs leaves it empty; update-initramfs keeps the old one)"
else
	not_ok "plaintext local root key: refused with the exact message"
	{ echo "exit $(cat "$WORK/plain.rc"), expected line: $refusal"; cat "$WORK/plain.out"; } | diag
fi

# ---- the same key sealed to a TPM (swtpm): accepted -----------------------
if ! command -v swtpm >/dev/null; then
	skip "sealed local root key accepted" "swtpm not installed (make deps)"
else
	port=$(kmip_free_port)
	mkdir -p "$WORK/tpm"
	swtpm socket --tpm2 --server "type=tcp,port=$port,bindaddr=127.0.0.1" \
		--ctrl "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1" --tpmstate "dir=$WORK/tpm" \
		--flags not-need-init,startup-clear --log "file=$WORK/tpm/log" </dev/null >/dev/null 2>&1 &
	SWTPM_PID=$!
	for _ in $(seq 50); do kmip_port_open "$port" && break; sleep 0.1; done
	cp "$WORK/plain.conf" "$WORK/sealed.conf"
	printf 'tpm_tcti = "swtpm:host=127.0.0.1,port=%s"\n' "$port" >>"$WORK/sealed.conf"
	cp "$WORK/plain.tab" "$WORK/sealed.tab"
	cp "$WORK/plain.fstab" "$WORK/sealed.fstab"
	if out=$("$CTL" --config "$WORK/sealed.conf" kms seal-root-key 2>&1) && [ -f "$WORK/local-root.key.tpm" ] &&
		[ ! -e "$WORK/local-root.key" ]; then
		build sealed
		if [ "$(cat "$WORK/sealed.rc")" = 0 ] && [ -n "$ROOT" ]; then
			ok "sealed local root key: mkinitramfs accepts the line"
		else
			not_ok "sealed local root key: mkinitramfs accepts the line"
			diag <"$WORK/sealed.out"
		fi
		if [ -n "$ROOT" ]; then
			expect_same "the sealed root key is in the image" "$WORK/local-root.key.tpm" "$WORK/local-root.key.tpm"
			expect_same "the keystore is in the image" "$WORK/local-kms/local-1.keystore.json" "$WORK/local-kms/local-1.keystore.json"
			found=$(find "$ROOT" -name 'local-root.key')
			if [ -z "$found" ]; then ok "no plaintext root key in the image"; else not_ok "no plaintext root key in the image"; fi
			if compgen -G "$ROOT/usr/lib/*/libtss2-tcti-device.so.0" >/dev/null; then
				ok "the TPM's TCTI library (libtss2-tcti-device.so.0) is in the image"
			else
				not_ok "the TPM's TCTI library is in the image"
			fi
			expect_file "no network for a local KMS" etc/envcrypt/initramfs "network=no
"
		fi
	else
		not_ok "kms seal-root-key on swtpm"
		diag <<<"$out"
	fi
fi

# ---- no line needs the initramfs ------------------------------------------
cp "$WORK/plain.conf" "$WORK/none.conf"
printf 'sys %s\n' "$WORK/plain.disk" >"$WORK/none.tab"
printf '/dev/vda1 / ext4 defaults 0 1\n/dev/mapper/sys /srv ext4 defaults 0 2\n' >"$WORK/none.fstab"
build none
if [ "$(cat "$WORK/none.rc")" = 0 ] && [ -n "$ROOT" ] && [ ! -e "$ROOT/usr/sbin/envcryptctl" ] &&
	[ ! -e "$ROOT/etc/envcrypttab" ] && [ ! -e "$ROOT/etc/envcrypt" ] &&
	[ -z "$(find "$ROOT" -name 'dm-envcrypt.ko')" ]; then
	ok "no line needs it (plaintext root key, /srv only): image built without envcryptctl, module or configuration"
else
	not_ok "no line needs it: image built without envcrypt"
	diag <"$WORK/none.out"
fi

# ---- the local-top script ---------------------------------------------------
# A stand-in for /: the table, the hook's network file, and initramfs-tools'
# functions as stubs that record what they were asked.
FAKE=$WORK/fake
mkdir -p "$FAKE/etc/envcrypt" "$FAKE/scripts" "$FAKE/bin" "$FAKE/run"
cat >"$FAKE/scripts/functions" <<EOF
log_warning_msg() { echo "Warning: \$*" >>"$FAKE/calls"; }
panic() { echo "panic: \$*" >>"$FAKE/calls"; }
configure_networking() { echo "configure_networking" >>"$FAKE/calls"; }
wait_for_udev() { echo "wait_for_udev \$*" >>"$FAKE/calls"; }
EOF
printf '#!/bin/sh\necho "modprobe $*" >>"%s/calls"\n' "$FAKE" >"$FAKE/bin/modprobe"
chmod +x "$FAKE/bin/modprobe"

# local_top CMDLINE: runs the script; its exit status in $rc, calls in $calls.
local_top() {
	printf '%s\n' "$1" >"$FAKE/cmdline"
	: >"$FAKE/calls"
	started=$SECONDS
	PATH=$FAKE/bin:$PATH ENVCRYPT_INITRAMFS_ROOT=$FAKE ENVCRYPT_CMDLINE=$FAKE/cmdline \
		ENVCRYPT_RUN_DIR=$FAKE/run ENVCRYPT_CONFIG=$WORK/kmip.conf sh "$LOCAL_TOP" >"$FAKE/out" 2>&1
	rc=$?
	elapsed=$((SECONDS - started))
	calls=$(cat "$FAKE/calls")
}

# The script's own logic, with envcryptctl a stub that fails as attach-all
# does when two disks' KMS stays unreachable (what a real run printed in
# the guest, selftests/debian/test_boot_initramfs_root.sh): on stderr a
# warning, one "attach failed" line per attempt, the summary; on stdout
# each disk's result, the first one's saying it gave up at the deadline;
# exit 7.  A disk named "s" is there to catch a match on a name's prefix.
cat >"$FAKE/bin/envcryptctl" <<STUB
#!/bin/sh
echo "envcryptctl \$*" >>"$FAKE/calls"
echo "envcryptctl: warning: something earlier" >&2
echo 'envcryptctl: attach failed: disk=sys device=/dev/vda2 cmk=kmip://kms1.example:5696/42 endpoint="kmip kms1.example:5696" step=unwrap code=7 reason="kmip://kms1.example:5696: connect: Connection refused (1 server, 6 attempts in 5001 ms; deadline 5000 ms)"' >&2
echo 'envcryptctl: attach failed: disk=s device=/dev/vda3 cmk=kmip://kms1.example:5696/43 endpoint="kmip kms1.example:5696" step=unwrap code=7 reason=unreachable' >&2
echo 'envcryptctl: attach failed: disk=sys device=/dev/vda2 cmk=kmip://kms1.example:5696/42 endpoint="kmip kms1.example:5696" step=unwrap code=7 reason="kmip://kms1.example:5696: connect: Connection refused (1 server, 5 attempts in 2420 ms; deadline 2417 ms)"' >&2
echo 'envcryptctl: attach failed: disk=s device=/dev/vda3 cmk=kmip://kms1.example:5696/43 endpoint="kmip kms1.example:5696" step=unwrap code=7 reason=unreachable-last' >&2
echo "envcryptctl: attach-all: 2 of 2 disks failed, first sys: ..." >&2
echo 'sys: failed /dev/vda2: kmip://kms1.example:5696: connect: Connection refused (1 server, 5 attempts in 2420 ms; deadline 2417 ms) (gave up at the attach deadline after 5 attempts in 90.08 s; [boot] attach_timeout_seconds = 90) [90.08 s]'
echo 's: failed /dev/vda3: unreachable-last (gave up at the attach deadline after 9 attempts in 91.00 s; [boot] attach_timeout_seconds = 90) [91.00 s]'
echo 'attach-all: 2 failed'
exit 7
STUB
chmod +x "$FAKE/bin/envcryptctl"
printf 'sys /dev/vda2 remote-kms,x-systemd.device-timeout=90000ms\n' >"$FAKE/etc/envcrypttab"
echo network=yes >"$FAKE/etc/envcrypt/initramfs"

local_top "root=/dev/mapper/sys ro envcrypt=yes rd.envcrypt=No"
if [ "$rc" = 0 ] && [ "$calls" = "Warning: envcrypt: turned off on the kernel command line (envcrypt=no): no disk attached" ]; then
	ok "rd.envcrypt=No after envcrypt=yes: the last wins, nothing loaded or attached, one warning"
else
	not_ok "rd.envcrypt=No turns the script off"
	{ echo "exit $rc"; echo "$calls"; cat "$FAKE/out"; } | diag
fi

local_top "root=/dev/mapper/sys envcrypt=maybe envcrypt=0 rd.envcrypt quiet"
expected="Warning: envcrypt: kernel command line: envcrypt=maybe is not a boolean (yes/no), ignored
modprobe -q dm_mod
modprobe -q dm-envcrypt
configure_networking
wait_for_udev 10
envcryptctl attach-all --tab $FAKE/etc/envcrypttab
panic: envcrypt: attach failed: disk=sys device=/dev/vda2 cmk=kmip://kms1.example:5696/42 endpoint=\"kmip kms1.example:5696\" step=unwrap code=7 reason=\"kmip://kms1.example:5696: connect: Connection refused (1 server, 5 attempts in 2420 ms; deadline 2417 ms)\" (gave up at the attach deadline after 5 attempts in 90.08 s; [boot] attach_timeout_seconds = 90)"
if [ "$rc" = 1 ] && [ "$calls" = "$expected" ] && grep -qx 'attach-all: 2 failed' "$FAKE/out"; then
	ok "envcrypt=maybe ignored, a bare rd.envcrypt after envcrypt=0 means yes; modules, network, attach-all (results shown), then one panic: the summary's first disk, its last attach failed line and when it gave up"
else
	not_ok "modules, network, attach-all, then one panic with the first attach failed line"
	{ echo "exit $rc; calls:"; echo "$calls"; echo "expected:"; echo "$expected"; cat "$FAKE/out"; } | diag
fi

echo network=no >"$FAKE/etc/envcrypt/initramfs"
sed -i 's/^exit 7$/exit 0/' "$FAKE/bin/envcryptctl"
# The kernel's host name before the attach: the system's, from its
# /etc/hostname, while the kernel has none; never replaced otherwise.
echo envcrypt-guest >"$FAKE/etc/hostname"
sed -i "2i echo \"host name at attach-all: \$(cat $FAKE/hostname)\" >>\"$FAKE/calls\"" "$FAKE/bin/envcryptctl"
echo "(none)" >"$FAKE/hostname"
ENVCRYPT_HOSTNAME_FILE=$FAKE/hostname local_top "root=/dev/mapper/sys"
host_calls=$(grep '^host name' <<<"$calls")
echo builder >"$FAKE/hostname"
ENVCRYPT_HOSTNAME_FILE=$FAKE/hostname local_top "root=/dev/mapper/sys"
host_calls="$host_calls / $(grep '^host name' <<<"$calls")"
if [ "$host_calls" = "host name at attach-all: envcrypt-guest / host name at attach-all: builder" ]; then
	ok "the kernel is named after the system's /etc/hostname before attach-all, only while it has none"
else
	not_ok "the kernel named after /etc/hostname before attach-all, only while it has none"
	diag <<<"$host_calls"
fi
rm -f "$FAKE/etc/hostname"
sed -i '2d' "$FAKE/bin/envcryptctl"
local_top "root=/dev/mapper/sys"
if [ "$rc" = 0 ] && ! grep -q -e '^panic' -e configure_networking <<<"$calls" &&
	grep -qx 'envcryptctl: warning: something earlier' "$FAKE/out"; then
	ok "attach-all succeeds, network=no: no network, no panic, its messages passed on"
else
	not_ok "attach-all succeeds: no network, no panic, messages passed on"
	{ echo "exit $rc"; echo "$calls"; cat "$FAKE/out"; } | diag
fi

rm "$FAKE/etc/envcrypttab"
local_top "root=/dev/vda1"
if [ "$rc" = 0 ] && [ -z "$calls" ]; then
	ok "no envcrypttab in the initramfs: the script does nothing"
else
	not_ok "no envcrypttab in the initramfs: nothing done"
	diag <<<"$calls"
fi

# The real envcryptctl against the stopped key server: its attach needs
# device-mapper in the host's kernel (it looks for the mapping first).
if [ -z "${CMK:-}" ]; then
	skip "real attach-all gives up at the deadline" "needs the KMIP disk of the first case"
elif ! grep -qw device-mapper /proc/misc; then
	skip "real attach-all gives up at the deadline" "this host's kernel has no device-mapper (/proc/misc)"
else
	rm "$FAKE/bin/envcryptctl"
	ln -s "$CTL" "$FAKE/bin/envcryptctl"
	printf 'sys %s x-systemd.device-timeout=90000ms\n' "$WORK/kmip.disk" >"$FAKE/etc/envcrypttab"
	echo network=yes >"$FAKE/etc/envcrypt/initramfs"
	kmip_server_stop
	local_top "root=/dev/mapper/sys ro quiet"
	panic_line=$(grep '^panic: ' <<<"$calls")
	expected_re="^panic: envcrypt: attach failed: disk=sys device=$WORK/kmip.disk cmk=${CMK//./\\.} endpoint=\"kmip [^\"]+\" step=unwrap code=7 reason=\"[^\"]+\" \(gave up at the attach deadline after [0-9]+ attempts in [0-9.]+ s; \[boot\] attach_timeout_seconds = 4\)$"
	if [ "$rc" = 1 ] && [ "$(grep -c '^panic: ' <<<"$calls")" = 1 ] && [[ $panic_line =~ $expected_re ]] &&
		[ "$elapsed" -ge 4 ] && [ "$elapsed" -le 12 ]; then
		ok "key server stopped: one panic after ${elapsed} s naming disk, CMK, endpoint and reason"
		diag <<<"$panic_line"
	else
		not_ok "key server stopped: one panic naming disk, CMK, endpoint and reason, at the deadline"
		{ echo "exit $rc after $elapsed s; calls:"; echo "$calls"; echo "output:"; cat "$FAKE/out"; } | diag
	fi
fi

tap_finish
