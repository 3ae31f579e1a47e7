#!/bin/bash
# debian-image.sh KVER: a bootable Debian 12 (bookworm) root image for the
# booted-system tests (selftests/debian-run.sh), with systemd as init, the
# envcrypt package of `make deb` installed through apt, dm-envcrypt for
# KVER and the host's modules of KVER.  Prints the image's path on stdout;
# progress and errors go to stderr.
#
#   scripts/debian-image.sh [--quiet] [--tree DIR] KVER
#
# With --tree DIR, the image's file tree is made in DIR (which must not
# exist) instead of an image, and DIR is printed: the system-disk test
# (selftests/debian/test_boot_grub_root.sh) lays it out on partitions of
# its own.  Only the base is cached then.
#
# Two cached steps, each rebuilt only when its inputs change:
#
#   build/debian/base.tar    mmdebstrap --variant=minbase of bookworm with
#                            PACKAGES below, envcrypt_*.deb installed by apt
#                            from the local file, and the image's own
#                            configuration (fstab, network, the debian-run
#                            unit); base.stamp hashes this script, the
#                            package list, the mirror and the .deb files.
#                            A copy is kept in DEBIAN_BASE_CACHE (below),
#                            shared by every clone on the host.
#   build/debian/KVER.img    raw ext4 (mkfs.ext4 -d, no loop device): the
#                            base, /lib/modules/KVER copied from the host
#                            (minus drivers a QEMU guest never needs) and
#                            build/kmod/KVER/dm-envcrypt.ko in updates/;
#                            KVER.stamp hashes the base stamp, KVER, the
#                            host's module index and the module.
#
# Why the module is not built by envcrypt-dkms in the image: DKMS would need
# linux-headers-KVER (6.12's from bookworm-backports) and gcc in the image,
# several hundred MiB and minutes of compiling per kernel and per rebuild,
# for the same source that `make kmod-matrix` already compiles against the
# same headers and that every other guest test loads.  The DKMS path
# (envcrypt-dkms installed with the real DKMS, built for both kernels, a
# kernel's headers installed later, upgraded, purged) is
# tests/host/test_dkms.sh's, in a root of its own; the image has envcrypt
# only.
#
# The base is also kept in DEBIAN_BASE_CACHE (default
# /var/cache/envcrypt/debian-base; 0 keeps nothing) as base-STAMP.tar,
# outside build/ like ccache: CI starts from a clean clone, and making the
# base took 83 s alone (CI's first booted suite: 627 s with it, 547 s
# without).  `make deb` is reproducible (the same source gives the same
# .deb, byte for byte, whatever the clone's path), so the stamp matches
# from one clone to the next.  The newest
# BASE_CACHE_KEEP bases are kept, and one older than BASE_MAX_AGE_DAYS is
# made again, so that Debian's updates reach the tests within a week.
#
# Environment: DEBIAN_IMAGE_DIR (default build/debian), DEBIAN_BASE_CACHE,
# DEBIAN_IMAGE_MIRROR (default http://deb.debian.org/debian),
# DEBIAN_IMAGE_TIMEOUT (s, for mmdebstrap, default 1800).  Runs as root
# (mmdebstrap --mode=root, the files' owners).  Exit 0 with the path, or 1
# with the reason.

set -u
set -o pipefail

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF=$TOP/scripts/debian-image.sh
DIR=${DEBIAN_IMAGE_DIR:-$TOP/build/debian}
MIRROR=${DEBIAN_IMAGE_MIRROR:-http://deb.debian.org/debian}
BASE_CACHE=${DEBIAN_BASE_CACHE:-/var/cache/envcrypt/debian-base}
BASE_CACHE_KEEP=3
BASE_MAX_AGE_DAYS=7
MMDEBSTRAP_TIMEOUT=${DEBIAN_IMAGE_TIMEOUT:-1800}
SUITE=bookworm
# systemd as PID 1 and what the tests use; envcrypt's own dependencies
# come from its .deb through apt.  initramfs-tools, busybox and
# grub-pc-bin are for the system-disk test, which makes the image's own
# initramfs (with envcrypt's hook) and boot loader inside a copy of it.
PACKAGES=systemd-sysv,udev,dbus,kmod,dmsetup,keyutils,e2fsprogs,iproute2,procps,nbd-client,initramfs-tools,busybox,grub-pc-bin
# Module trees a QEMU guest with virtio devices never loads; left out of the
# image to keep it small (6.1's modules are 396 MiB uncompressed).
PRUNE=(kernel/sound kernel/drivers/gpu kernel/drivers/media
	kernel/drivers/net/wireless kernel/drivers/infiniband
	kernel/drivers/staging kernel/net/bluetooth kernel/drivers/bluetooth)

# The customize hook: runs with the root directory as $1, outside it, and
# the machine id as $2.
customize() {
	local root=$1
	cat >"$root/etc/fstab" <<-'EOF'
		# Written by scripts/debian-image.sh: the image is /dev/vda.
		/dev/vda	/	ext4	errors=remount-ro	0	1
	EOF
	echo envcrypt-guest >"$root/etc/hostname"
	printf '127.0.0.1\tlocalhost\n127.0.1.1\tenvcrypt-guest\n' >"$root/etc/hosts"
	# A fixed machine id: no first-boot logic, the same id on every boot.
	echo "$2" >"$root/etc/machine-id"
	# Root logs in on the serial console without a password (debugging).
	chroot "$root" passwd -d root >/dev/null || return 1
	# QEMU's user-mode network: DHCP on the first Ethernet interface.
	mkdir -p "$root/etc/systemd/network"
	cat >"$root/etc/systemd/network/50-qemu-user.network" <<-'EOF'
		[Match]
		Name=en* eth*

		[Network]
		DHCP=ipv4
	EOF
	# The test entry point of selftests/debian-run.sh: only when the kernel
	# command line says debian_run=1, after multi-user.target, it mounts
	# the runner's 9p share and runs its guest script (which powers off).
	# Should that fail, the guest powers off at once instead of waiting
	# for the runner's time-out.
	cat >"$root/etc/systemd/system/debian-run.service" <<-'EOF'
		[Unit]
		Description=Test run of selftests/debian-run.sh
		ConditionKernelCommandLine=debian_run=1
		After=multi-user.target

		[Service]
		Type=exec
		ExecStartPre=/bin/mkdir -p /run/debian-run
		ExecStartPre=/usr/local/sbin/debian-run-mount run /run/debian-run cache=none
		ExecStart=/bin/bash /run/debian-run/guest.sh
		FailureAction=poweroff
		StandardOutput=journal+console
		StandardError=journal+console

		[Install]
		WantedBy=multi-user.target
	EOF
	install -D -m 0755 "$TOP/selftests/lib/debian-run-mount" "$root/usr/local/sbin/debian-run-mount" || return 1
	systemctl --root="$root" enable systemd-networkd.service debian-run.service
	# Under debian_run=1 the emergency and rescue shells, which would wait
	# on a console nobody types into until debian-run.sh's time-out, print
	# why the boot stopped and power off: the test fails at once, with the
	# reason on the console.  Without debian_run=1 they are the usual
	# shells.
	cat >"$root/usr/local/sbin/debian-run-shell" <<-'EOF'
		#!/bin/sh
		# debian-run-shell emergency|rescue: see scripts/debian-image.sh.
		if grep -qw debian_run=1 /proc/cmdline; then
		    {
		        echo "debian-run: $1 mode: the boot stopped; failed units and errors:"
		        systemctl --failed --no-legend --no-pager
		        # A unit stopped by a failed dependency (local-fs.target after
		        # a mount's device timed out) is not "failed": PID 1's
		        # warning names it.
		        journalctl -b --no-pager -o short-monotonic | grep 'Dependency failed for' | tail -n 10
		        journalctl -b -p err --no-pager -o short-monotonic | tail -n 20
		        echo "debian-run: $1 mode: powering off"
		    } >/dev/console 2>&1
		    # An orderly power-off once udev is idle: modprobe killed in the
		    # middle of loading a module (systemctl --force poweroff during
		    # coldplug) left 6.1 with an oops in enqueue_timer and a hung
		    # guest.
		    udevadm settle --timeout=60
		    exec systemctl poweroff
		fi
		exec /lib/systemd/systemd-sulogin-shell "$1"
	EOF
	chmod 0755 "$root/usr/local/sbin/debian-run-shell"
	local shell
	for shell in emergency rescue; do
		mkdir -p "$root/etc/systemd/system/$shell.service.d"
		printf '[Service]\nExecStart=\nExecStart=-/usr/local/sbin/debian-run-shell %s\n' "$shell" \
			>"$root/etc/systemd/system/$shell.service.d/debian-run.conf"
	done
}
if [ "${1-}" = --customize-hook ]; then
	customize "${2:?}" "${3:?}"
	exit
fi

QUIET=
if [ "${1-}" = --quiet ]; then
	QUIET=1
	shift
fi
TREE=
if [ "${1-}" = --tree ]; then
	TREE=${2-}
	shift 2 || set --
fi
KVER=${1-}

fail() {
	echo "debian-image: kernel ${KVER:-<none>}: $*" >&2
	exit 1
}

say() {
	[ -n "$QUIET" ] || echo "debian-image: $*" >&2
}

if [ $# != 1 ] || [ -z "$KVER" ]; then
	echo "usage: scripts/debian-image.sh [--quiet] [--tree DIR] KVER" >&2
	exit 1
fi
if [ -n "$TREE" ] && [ -e "$TREE" ]; then
	fail "--tree $TREE exists: give a new directory"
fi
[ "$(id -u)" = 0 ] || fail "must run as root (mmdebstrap --mode=root, file owners in the image)"
[ -d "/lib/modules/$KVER/kernel" ] || fail "no modules in /lib/modules/$KVER"
[ -r "/boot/vmlinuz-$KVER" ] || fail "no kernel image /boot/vmlinuz-$KVER"
for tool in mmdebstrap mkfs.ext4 depmod; do
	command -v "$tool" >/dev/null || fail "$tool is not installed"
done

mkdir -p "$DIR" || fail "cannot create $DIR"
exec 9>"$DIR/lock"
timeout 3600 flock 9 || fail "another debian-image.sh held $DIR/lock for an hour"

# The envcrypt package, made by `make deb` when missing.
find_deb() {
	local debs=("$TOP"/build/deb/envcrypt_*_amd64.deb)
	[ "${#debs[@]}" = 1 ] && [ -f "${debs[0]}" ] && echo "${debs[0]}"
}
if ! DEB=$(find_deb); then
	say "no build/deb/envcrypt_*_amd64.deb: running make deb"
	timeout 3600 nice make -C "$TOP" deb >"$DIR/make-deb.log" 2>&1 ||
		fail "make deb failed (log: $DIR/make-deb.log)"
	DEB=$(find_deb) || fail "make deb made no single build/deb/envcrypt_*_amd64.deb"
fi
MODULE=$TOP/build/kmod/$KVER/dm-envcrypt.ko
if ! [ -f "$MODULE" ]; then
	say "no $MODULE: running make kmod-matrix"
	timeout 1800 nice make -C "$TOP" kmod-matrix >"$DIR/kmod-matrix.log" 2>&1 ||
		fail "make kmod-matrix failed (log: $DIR/kmod-matrix.log)"
	[ -f "$MODULE" ] || fail "make kmod-matrix made no $MODULE"
fi

BASE=$DIR/base.tar
base_stamp=$({
	sha256sum "$SELF" "$TOP/selftests/lib/debian-run-mount" | cut -d' ' -f1
	echo "$SUITE $MIRROR $PACKAGES"
	sha256sum "$DEB" | cut -d' ' -f1
} | sha256sum | cut -d' ' -f1)

build_base() {
	local work=$DIR/base.work
	rm -rf --one-file-system "$work"
	mkdir -p "$work" || return 1
	cp "$DEB" "$work/" || return 1
	say "mmdebstrap $SUITE ($PACKAGES) with $(basename "$DEB") (log: $DIR/base.log)"
	# shellcheck disable=SC2016 # $1 is the hook's argument, not ours
	timeout -k 30 "$MMDEBSTRAP_TIMEOUT" nice -n 10 mmdebstrap --mode=root \
		--variant=minbase --format=tar \
		--dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-include=/usr/share/doc/*/copyright' \
		--dpkgopt='path-exclude=/usr/share/man/*' \
		--dpkgopt='path-exclude=/usr/share/locale/*' \
		--include="$PACKAGES" \
		--customize-hook="copy-in $work/$(basename "$DEB") /tmp" \
		--customize-hook="chroot \"\$1\" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends /tmp/$(basename "$DEB")" \
		--customize-hook='rm -f "$1"/tmp/*.deb' \
		--customize-hook="\"$SELF\" --customize-hook \"\$1\" $(echo "$base_stamp" | cut -c1-32)" \
		"$SUITE" "$work/base.tar" "deb $MIRROR $SUITE main" \
		>"$DIR/base.log" 2>&1
	local rc=$?
	[ "$rc" != 124 ] && [ "$rc" != 137 ] ||
		echo "debian-image: mmdebstrap killed after $MMDEBSTRAP_TIMEOUT s" >>"$DIR/base.log"
	[ "$rc" = 0 ] || return 1
	mv -f "$work/base.tar" "$BASE" && echo "$base_stamp" >"$DIR/base.stamp" &&
		rm -rf "$work"
}

# link_or_copy FROM TO: TO is FROM (a hard link when both are on one file
# system, else a copy), put in place atomically.  The bases are only ever
# read (tar -x) and replaced by mv, never written in place.
link_or_copy() {
	rm -f "$2.tmp"
	{ ln -f "$1" "$2.tmp" 2>/dev/null || cp "$1" "$2.tmp"; } && mv -f "$2.tmp" "$2"
}

# The cache's entry for this stamp, if it is there and fresh.
cached_base() {
	local cached=$BASE_CACHE/base-$base_stamp.tar
	[ "$BASE_CACHE" != 0 ] && [ -f "$cached" ] &&
		[ -n "$(find "$cached" -mmin "-$((BASE_MAX_AGE_DAYS * 24 * 60))")" ] &&
		echo "$cached"
}

# base_cache_locked COMMAND...: COMMAND under the cache's lock (other
# clones read and prune it too).
base_cache_locked() {
	mkdir -p "$BASE_CACHE" || return 1
	(
		exec 8>"$BASE_CACHE/lock"
		timeout 600 flock 8 || exit 1
		"$@"
	)
}

base_from_cache() {
	local cached
	cached=$(cached_base) || return 1
	link_or_copy "$cached" "$BASE" && echo "$base_stamp" >"$DIR/base.stamp"
}

# Keeps the new base and forgets all but the newest BASE_CACHE_KEEP.
base_to_cache() {
	local old
	link_or_copy "$BASE" "$BASE_CACHE/base-$base_stamp.tar" || return 1
	touch "$BASE_CACHE/base-$base_stamp.tar"
	old=$(find "$BASE_CACHE" -maxdepth 1 -name 'base-*.tar' -printf '%T@ %p\n' |
		sort -rn | tail -n "+$((BASE_CACHE_KEEP + 1))" | cut -d' ' -f2-)
	[ -z "$old" ] || xargs -d '\n' rm -f <<<"$old"
}

start=$SECONDS
if ! [ -f "$BASE" ] || [ "$(cat "$DIR/base.stamp" 2>/dev/null)" != "$base_stamp" ]; then
	rm -f "$DIR/base.stamp"
	if [ "$BASE_CACHE" != 0 ] && base_cache_locked base_from_cache; then
		say "base taken from $BASE_CACHE ($(cut -c1-12 <<<"$base_stamp"))"
	else
		build_base || {
			tail -n 20 "$DIR/base.log" | sed 's/^/debian-image:   /' >&2
			fail "mmdebstrap of the base failed (log: $DIR/base.log)"
		}
		say "base built in $((SECONDS - start)) s"
		[ "$BASE_CACHE" = 0 ] || base_cache_locked base_to_cache ||
			say "could not keep the base in $BASE_CACHE (carrying on without)"
	fi
fi

IMAGE=$DIR/$KVER.img
image_stamp=$({
	echo "$base_stamp $KVER"
	sha256sum "$MODULE" | cut -d' ' -f1
	sha256sum "/lib/modules/$KVER/modules.dep" "/boot/vmlinuz-$KVER" | cut -d' ' -f1
} | sha256sum | cut -d' ' -f1)

# fill_tree DIR: the base, KVER's modules and dm-envcrypt in DIR.
fill_tree() {
	local stage=$1 mods dir
	mkdir -p "$stage" || return 1
	tar -C "$stage" --numeric-owner --xattrs --xattrs-include='*' -xpf "$BASE" || return 1
	# bookworm is merged-/usr: /lib is a link to usr/lib.
	mods=$stage/usr/lib/modules/$KVER
	mkdir -p "$mods" || return 1
	(cd "/lib/modules/$KVER" && tar --exclude=./build --exclude=./source -cf - .) |
		tar -C "$mods" -xf - || return 1
	for dir in "${PRUNE[@]}"; do
		rm -rf "${mods:?}/$dir"
	done
	install -D -m 0644 "$MODULE" "$mods/updates/dm-envcrypt.ko" || return 1
	depmod -b "$stage" "$KVER"
}

build_image() {
	local stage=$DIR/$KVER.stage size_mib
	rm -rf --one-file-system "$stage"
	fill_tree "$stage" || return 1
	# The files plus half as much again and 512 MiB free for the tests.
	size_mib=$(du -sm "$stage" | cut -f1)
	size_mib=$((size_mib * 3 / 2 + 512))
	rm -f "$IMAGE.tmp"
	mkfs.ext4 -q -F -L debian-root -d "$stage" "$IMAGE.tmp" "${size_mib}M" || return 1
	mv -f "$IMAGE.tmp" "$IMAGE" && echo "$image_stamp" >"$DIR/$KVER.stamp" &&
		rm -rf --one-file-system "$stage"
}

if [ -n "$TREE" ]; then
	fill_tree "$TREE" >"$DIR/$KVER.tree.log" 2>&1 || {
		tail -n 20 "$DIR/$KVER.tree.log" | sed 's/^/debian-image:   /' >&2
		fail "making the tree $TREE failed (log: $DIR/$KVER.tree.log)"
	}
	say "tree $TREE made"
	echo "$TREE"
	exit 0
fi

if [ -f "$IMAGE" ] && [ "$(cat "$DIR/$KVER.stamp" 2>/dev/null)" = "$image_stamp" ]; then
	say "$IMAGE is up to date"
else
	rm -f "$DIR/$KVER.stamp"
	t=$SECONDS
	build_image >"$DIR/$KVER.log" 2>&1 || {
		tail -n 20 "$DIR/$KVER.log" | sed 's/^/debian-image:   /' >&2
		fail "making $IMAGE failed (log: $DIR/$KVER.log)"
	}
	say "$IMAGE built in $((SECONDS - t)) s"
fi
echo "$IMAGE"
