#!/bin/bash
# envcrypt-dkms with the real DKMS in a real Debian 12 root, as TAP 13
# (Documentation/admin-guide/packaging.rst, "What is tested").  The root is
# made by mmdebstrap from Debian's packages: dkms (with gcc and make) and
# the first kernel of the matrix, image and headers, installed; the second
# kernel's packages downloaded beside it, not installed.  Every step below
# is dpkg in that root (chroot), with Debian's own maintainer scripts and
# kernel hooks, the way an administrator's apt would run them:
#
#  1. the second kernel's image is installed without its headers;
#  2. envcrypt-dkms (build/deb/, from make deb) is installed: DKMS builds and
#     installs dm-envcrypt for the first kernel, its postinst names the
#     kernel without headers, and nothing is built for it;
#  3. the second kernel's headers are installed (what a kernel upgrade
#     does): DKMS's header hook builds the module for that kernel;
#  4. an upgrade to a newer version (the same package repacked as
#     VERSION.1): the old version is removed from DKMS and the new one built
#     for both kernels;
#  5. purge: no module, no source and no DKMS tree are left.
#
# Each built module is checked: modprobe's index finds it
# (updates/dkms/dm-envcrypt.ko), its vermagic names its kernel, its version
# is the package's, and its srcversion (a digest of the source) is that of
# build/kmod/KVER/dm-envcrypt.ko, the module every guest test loads.  After
# step 3 each kernel boots in a small vm-run.sh guest that loads the file
# DKMS installed for it (tests/host/lib/dkms-guest.sh): the running module
# has that file's GNU build ID (which differs from build/kmod's: it covers
# the build directory named in the debug information) and version, and
# 1 MiB written through it reads back through dm-crypt with the same key
# (two boots, about 40 s).
#
# Kernel installations run with INITRD=No: no initramfs is made in the root
# (update-initramfs is not what this test is about and takes a minute).
#
# The root is cached as a tarball in ENVCRYPT_DKMS_ROOT_CACHE (default
# /var/cache/envcrypt/dkms-root, like the clang-tidy cache: it outlives the
# clone, so CI's clean clones reuse it), named by a digest of its recipe
# (packages, kernels, mirrors); a changed recipe builds a new one (about
# 4 minutes; about 1 GiB) and removes the old.  ENVCRYPT_DKMS_ROOT_CACHE=0
# builds the root in the test's work directory and keeps nothing.
# DEBIAN_IMAGE_MIRROR and DEBIAN_IMAGE_SECURITY_MIRROR choose the mirrors.
set -u
TOP=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/host/lib/tap.sh disable=SC1091
. "$TOP/tests/host/lib/tap.sh"
# Under build/: the guests see the host's files there (their /tmp is their
# own), and they load the modules from the root in WORK.
mkdir -p "$TOP/build"
WORK=$(mktemp -d "$TOP/build/dkms-test.XXXXXX")
ROOT=$WORK/root
cleanup() {
	umount "$ROOT/proc" 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT
MIRROR=${DEBIAN_IMAGE_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_IMAGE_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
CACHE=${ENVCRYPT_DKMS_ROOT_CACHE:-/var/cache/envcrypt/dkms-root}
MMDEBSTRAP_TIMEOUT=1800
NAME=dm-envcrypt
VERSION=$(cat "$TOP/VERSION")
NEXT=$VERSION.1
DEB=$TOP/build/deb/envcrypt-dkms_${VERSION}_all.deb
read -r -a kernels <<<"$("$TOP/scripts/kernels.sh" | tr '\n' ' ')"

# check_eq WHAT EXPECTED SEEN
check_eq() {
	if [ "$2" = "$3" ]; then
		ok "$1"
	else
		not_ok "$1"
		{
			echo "expected: $2"
			echo "seen:     ${3//$'\n'/$'\n'          }"
		} | diag
	fi
}

# in_root COMMAND...: COMMAND in the root, with a clean environment.
in_root() {
	chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
		LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive INITRD=No "$@"
}

# dpkg_step WHAT DPKG-ARGS...: dpkg in the root; ok when it exits 0.  Its
# output is kept in $WORK/dpkg.out for the checks that follow.
dpkg_step() {
	local what=$1
	shift
	local started=$SECONDS
	if in_root dpkg "$@" >"$WORK/dpkg.out" 2>&1; then
		ok "$what ($((SECONDS - started)) s)"
	else
		not_ok "$what (dpkg $*)"
		tail -n 25 "$WORK/dpkg.out" | diag
	fi
}

# dkms_status: dkms status in the root, sorted, one module per line.  Its
# stderr (readelf's warnings about 6.12's compressed modules) is shown
# apart.
dkms_status() {
	in_root dkms status 2>"$WORK/dkms.err" | sort
	grep -v "^readelf: Warning: Section '.comment' was not dumped" "$WORK/dkms.err" | diag
}

# expected_status VERSION KVER...: what dkms status says when VERSION is
# installed for each KVER.
expected_status() {
	local version=$1 kver
	shift
	for kver in "$@"; do
		echo "$NAME/$version, $kver, x86_64: installed"
	done | sort
}

# check_module KVER VERSION: the module DKMS installed for KVER.
check_module() {
	local kver=$1 version=$2 file ours suffix=
	# DKMS compresses the module as the kernel's own are (6.12: xz).
	if grep -qx 'CONFIG_MODULE_COMPRESS_XZ=y' "$ROOT/boot/config-$kver"; then
		suffix=.xz
	fi
	file=$(in_root modinfo -k "$kver" -F filename "$NAME" 2>&1)
	check_eq "$kver: modprobe's index finds $NAME in updates/dkms" \
		"/lib/modules/$kver/updates/dkms/$NAME.ko$suffix" "$file"
	check_eq "$kver: vermagic, version of $NAME $version" "$kver $version" \
		"$(in_root modinfo -k "$kver" -F vermagic "$NAME" 2>&1 | cut -d' ' -f1) $(in_root modinfo -k "$kver" -F version "$NAME" 2>&1)"
	ours=$TOP/build/kmod/$kver/$NAME.ko
	# The repacked source differs in its version line: no srcversion check.
	[ "$version" = "$VERSION" ] || return 0
	check_eq "$kver: srcversion equals build/kmod/$kver/$NAME.ko's (same source)" \
		"$(modinfo -F srcversion "$ours" 2>&1)" \
		"$(in_root modinfo -k "$kver" -F srcversion "$NAME" 2>&1)"
}

# build_id FILE: the GNU build ID of a module file (.ko or .ko.xz).
build_id() {
	case $1 in
	*.xz) xz -dc "$1" >"$WORK/build-id.ko" ;;
	*) cp "$1" "$WORK/build-id.ko" ;;
	esac && readelf -n "$WORK/build-id.ko" | awk '/Build ID:/ { print $3 }'
}

# guest_check KVER: the module DKMS installed for KVER, loaded in a guest
# booted on KVER (tests/host/lib/dkms-guest.sh: it is that file, and
# dm-crypt reads back what it wrote).
guest_check() {
	local kver=$1 module id ours out=$WORK/guest-$1
	module=$ROOT$(in_root modinfo -k "$kver" -F filename "$NAME")
	id=$(build_id "$module")
	ours=$(build_id "$TOP/build/kmod/$kver/$NAME.ko")
	# The ID covers the debug information, which names the build directory:
	# DKMS's build differs from ours, so the check below tells them apart.
	if [ -z "$id" ] || [ "$id" = "$ours" ]; then
		not_ok "$kver: the DKMS build's GNU build ID ('$id') differs from build/kmod's ('$ours')"
		return
	fi
	if "$TOP/selftests/vm-run.sh" --kernel "$kver" --out "$out" --cpus 1 --mem 512 --timeout 300 -- \
		"$TOP/tests/host/lib/dkms-guest.sh" "$module" "$id" "$VERSION" \
		>"$out.tap" 2>"$out.err"; then
		ok "$kver: loaded in a guest booted on $kver, the DKMS-built module is the one running and dm-crypt reads back what it wrote ($(grep -c '^ok' "$out.tap") guest checks)"
	else
		not_ok "$kver: the DKMS-built module, loaded in a guest booted on $kver"
		diag <"$out.tap"
		diag <"$out.err"
	fi
}

# build_root TARBALL: mmdebstrap's Debian 12 with dkms and the first
# kernel, the second kernel's packages in /root/kernel-upgrade/.
build_root() {
	local tarball=$1 k1=${kernels[0]} k2=${kernels[1]}
	# shellcheck disable=SC2016 # $1 is the hook's argument, the root.
	# --format=tar: mmdebstrap guesses the format from the name's ending,
	# and a name ending in .tar.new made a directory.
	timeout "$MMDEBSTRAP_TIMEOUT" mmdebstrap --mode=root --variant=minbase --format=tar \
		--aptopt='APT::Install-Recommends "false"' \
		--include="dkms,openssl,kmod,linux-image-$k1,linux-headers-$k1" \
		--customize-hook='mkdir -p "$1/root/kernel-upgrade"' \
		--customize-hook="chroot \"\$1\" apt-get install --download-only -y -o Dir::Cache::archives=/root/kernel-upgrade/ linux-image-$k2 linux-headers-$k2" \
		--customize-hook='rm -rf "$1/root/kernel-upgrade/partial" "$1/root/kernel-upgrade/lock"' \
		bookworm "$tarball" \
		"deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
		"deb $SECURITY_MIRROR bookworm-security main" "deb $MIRROR bookworm-backports main"
}

# root_tarball: the cached root's path (built when missing), on stdout.
root_tarball() {
	local recipe key tarball
	recipe="dkms root 1: bookworm minbase; dkms openssl kmod; installed ${kernels[0]}; later ${kernels[1]}; $MIRROR $SECURITY_MIRROR"
	key=$(sha256sum <<<"$recipe" | cut -c1-16)
	if [ "$CACHE" = 0 ]; then
		build_root "$WORK/root.tar" >"$WORK/mmdebstrap.log" 2>&1 || return 1
		echo "$WORK/root.tar"
		return 0
	fi
	tarball=$CACHE/root-$key.tar
	if [ ! -f "$tarball" ]; then
		mkdir -p "$CACHE" || return 1
		# Whatever else is there (a directory left by the old guess of
		# the format) is not a root: made again.
		rm -rf "$tarball" "$tarball.new"
		build_root "$tarball.new" >"$WORK/mmdebstrap.log" 2>&1 || {
			rm -rf "$tarball.new"
			return 1
		}
		find "$CACHE" -maxdepth 1 -name 'root-*.tar' -exec rm -rf {} +
		mv "$tarball.new" "$tarball" || return 1
	fi
	echo "$tarball"
}

# repack_next DIR: the package of make deb as version NEXT, in DIR.
repack_next() {
	local dir=$1/pkg old_re=${VERSION//./\\.}
	dpkg-deb -R "$DEB" "$dir" || return 1
	mv "$dir/usr/src/$NAME-$VERSION" "$dir/usr/src/$NAME-$NEXT" || return 1
	sed -i "s/^PACKAGE_VERSION=.*/PACKAGE_VERSION=\"$NEXT\"/" "$dir/usr/src/$NAME-$NEXT/dkms.conf"
	sed -i "s/MODULE_VERSION(\"$old_re\")/MODULE_VERSION(\"$NEXT\")/" "$dir/usr/src/$NAME-$NEXT/$NAME.c"
	sed -i "s/^Version: $old_re\$/Version: $NEXT/" "$dir/DEBIAN/control"
	sed -i "s/\\b$old_re\\b/$NEXT/g" "$dir/DEBIAN/postinst" "$dir/DEBIAN/prerm"
	(cd "$dir" && find usr -type f -exec md5sum {} + >DEBIAN/md5sums) || return 1
	dpkg-deb --root-owner-group -b "$dir" "$1/envcrypt-dkms_${NEXT}_all.deb" >/dev/null
}

echo "TAP version 13"
[ "${#kernels[@]}" -ge 2 ] ||
	skip_all "the kernel matrix has ${#kernels[@]} kernel(s), this test needs two (make deps)"
for tool in mmdebstrap dpkg-deb chroot modinfo; do
	command -v "$tool" >/dev/null || bail "$tool is installed (make deps)"
done
K1=${kernels[0]}
K2=${kernels[1]}
if [ ! -f "$DEB" ]; then
	make -C "$TOP" deb >"$WORK/make.log" 2>&1 || {
		tail -n 20 "$WORK/make.log" | diag
		bail "make deb (for $DEB)"
	}
fi

started=$SECONDS
if tarball=$(root_tarball) && mkdir "$ROOT" && tar -C "$ROOT" -xf "$tarball"; then
	ok "a Debian 12 root with dkms and $K1 ($tarball, ready in $((SECONDS - started)) s)"
else
	tail -n 25 "$WORK/mmdebstrap.log" 2>/dev/null | diag
	bail "a Debian 12 root with dkms and $K1 (mmdebstrap from $MIRROR)"
fi
mount -t proc proc "$ROOT/proc" || bail "/proc mounted in the root"
mkdir -p "$ROOT/root/envcrypt"
cp "$DEB" "$ROOT/root/envcrypt/" || bail "$DEB copied into the root"
if ! repack_next "$WORK" 2>"$WORK/repack.err" ||
	! cp "$WORK/envcrypt-dkms_${NEXT}_all.deb" "$ROOT/root/envcrypt/"; then
	bail "envcrypt-dkms repacked as $NEXT: $(head -n 3 "$WORK/repack.err")"
fi

# 1. A second kernel, its headers not installed yet.
image_debs=()
header_debs=()
for deb in "$ROOT"/root/kernel-upgrade/*.deb; do
	# The headers' own dependencies (pahole, its libraries) go with them.
	case $(basename "$deb") in
	linux-image-*) image_debs+=("/root/kernel-upgrade/$(basename "$deb")") ;;
	*) header_debs+=("/root/kernel-upgrade/$(basename "$deb")") ;;
	esac
done
dpkg_step "$K2 installed without its headers" -i "${image_debs[@]}"
check_eq "no DKMS module before envcrypt-dkms" "" "$(dkms_status)"

# 2. envcrypt-dkms: built for the kernel with headers, the other named.
dpkg_step "dpkg -i envcrypt-dkms_${VERSION}_all.deb" -i "/root/envcrypt/envcrypt-dkms_${VERSION}_all.deb"
check_eq "the postinst names the kernel without headers" \
	"envcrypt-dkms: kernel $K2 has no headers: $NAME is built for it when linux-headers-$K2 is installed" \
	"$(grep '^envcrypt-dkms: ' "$WORK/dpkg.out")"
check_eq "dkms status: $VERSION installed for $K1 only" "$(expected_status "$VERSION" "$K1")" "$(dkms_status)"
check_module "$K1" "$VERSION"

# 3. The kernel upgrade's headers: DKMS's hook builds the module.
dpkg_step "linux-headers-$K2 installed (${#header_debs[@]} packages)" -i "${header_debs[@]}"
check_eq "dkms status: $VERSION installed for both kernels" \
	"$(expected_status "$VERSION" "$K1" "$K2")" "$(dkms_status)"
check_module "$K2" "$VERSION"
guest_check "$K1"
guest_check "$K2"

# 4. An upgrade to a newer version.  (The same version over itself, dpkg's
# other upgrade path, is test_deb.sh's, with a stub dkms.)
dpkg_step "upgrade to envcrypt-dkms $NEXT" -i "/root/envcrypt/envcrypt-dkms_${NEXT}_all.deb"
check_eq "dkms status: $NEXT for both kernels, $VERSION gone" \
	"$(expected_status "$NEXT" "$K1" "$K2")" "$(dkms_status)"
check_eq "the old source is gone, the new one is there" "$NAME-$NEXT" \
	"$(cd "$ROOT/usr/src" && printf '%s\n' "$NAME"-*)"
check_module "$K1" "$NEXT"
check_module "$K2" "$NEXT"

# 5. Purge.
dpkg_step "dpkg --purge envcrypt-dkms" --purge envcrypt-dkms
check_eq "dkms status is empty" "" "$(dkms_status)"
check_eq "no $NAME module, source or DKMS tree is left" "" \
	"$(cd "$ROOT" && find lib/modules usr/src var/lib/dkms -name "$NAME*" 2>/dev/null)"
# shellcheck disable=SC2016 # dpkg-query's format, not the shell's.
check_eq "dpkg knows no envcrypt-dkms" "not-installed" \
	"$(in_root dpkg-query -W -f '${db:Status-Status}' envcrypt-dkms 2>/dev/null || echo not-installed)"
echo "# test_dkms.sh took $((SECONDS - started)) s"
tap_finish
