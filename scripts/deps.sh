#!/bin/sh
# Install, idempotently, every Debian package the build, tests, demo and
# benchmarks need.  Adds bookworm-backports for the Linux 6.12 kernel.
# The kernel matrix is one 6.1 (Debian 12) and one 6.12 (backports) kernel;
# their exact ABI names are resolved from the metapackages so a point
# release does not break the build; when either cannot be resolved, deps
# stops with a message naming the kernel and why.
# debhelper, dh-dkms and lintian are for make deb (debian/); mmdebstrap and
# curl make the trixie root of make kmod-next (scripts/kbuild-next.sh);
# ccache keeps the helper's compiled objects from one clone to the next
# (Makefile, "Compiler cache").
set -eu

SOURCES=/etc/apt/sources.list.d/envcrypt-backports.sources

need_root() {
	if [ "$(id -u)" != 0 ]; then
		echo "deps: must run as root (apt-get install)" >&2
		exit 1
	fi
}

add_backports() {
	if grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
		return 0
	fi
	cat >"$SOURCES" <<'EOS'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOS
}

# flavour_of SUITE_REGEX: the linux-image-<abi>-amd64 package the newest
# linux-image-amd64 metapackage of that suite depends on.
flavour_of() {
	apt-cache madison linux-image-amd64 | awk -F'|' -v s="$1" '$3 ~ s { gsub(/ /, "", $2); print $2; exit }' |
		while read -r ver; do
			apt-cache show "linux-image-amd64=$ver" | sed -n 's/^Depends: \(linux-image-[^ ,]*\).*/\1/p' | head -n1
		done
}

apt_update() {
	if ! apt-get update -qq; then
		echo "deps: apt-get update failed: the package lists (and the kernels of the matrix) cannot be resolved; see the messages above" >&2
		exit 1
	fi
	apt_updated=1
}

# The 6.1 and 6.12 images the metapackages resolved to are of those series.
matrix_ok() {
	case $img61 in linux-image-6.1.*) ;; *) return 1 ;; esac
	case $img612 in linux-image-6.12.*) ;; *) return 1 ;; esac
}

# resolve_or_die SERIES IMAGE WHERE: stop, loudly, when the kernel of the
# matrix of that series was not found (or is of another series).
resolve_or_die() {
	case $2 in
	linux-image-"$1".*) return 0 ;;
	"")
		echo "deps: ERROR: cannot resolve the Linux $1 kernel of the test matrix: apt knows no" \
			"linux-image-amd64 from $3, so there is no linux-image-$1.*-amd64 to install." \
			"Check that suite in the apt sources and that apt-get update reaches it." >&2
		;;
	*)
		echo "deps: ERROR: cannot resolve the Linux $1 kernel of the test matrix: linux-image-amd64" \
			"from $3 now depends on $2, not on a $1 kernel; the matrix (scripts/kernels.sh," \
			"scripts/deps.sh) must be updated to the kernel that suite now ships." >&2
		;;
	esac
	exit 1
}

PACKAGES="build-essential make gcc bc flex bison libelf-dev dwarves
 cmake g++ pkg-config clang-format clang-tidy clang-14 libclang-rt-14-dev
 libssl-dev libkeyutils-dev libdevmapper-dev libblkid-dev
 libtomlplusplus-dev nlohmann-json3-dev libcli11-dev libgtest-dev
 qemu-system-x86 busybox-static cpio kmod keyutils dmsetup cryptsetup-bin
 fio e2fsprogs python3-cryptography python3-pykmip openssl udev
 linux-source-6.1 xz-utils gnuplot-nox dkms mmdebstrap curl qemu-utils
 debhelper dh-dkms lintian libtss2-dev swtpm swtpm-tools tpm2-tools ccache fdisk iproute2
 gdb"

need_root
add_backports
missing=""
apt_updated=0
img61=""
img612=""
img61=$(flavour_of 'bookworm-security|bookworm/main') || true
img612=$(flavour_of 'bookworm-backports') || true
if ! matrix_ok; then
	apt_update
	img61=$(flavour_of 'bookworm-security|bookworm/main') || true
	img612=$(flavour_of 'bookworm-backports') || true
fi
resolve_or_die 6.1 "$img61" "bookworm or bookworm-security (/etc/apt/sources.list or sources.list.d)"
resolve_or_die 6.12 "$img612" "bookworm-backports (the apt source $SOURCES, or one of yours)"
KERNELS="$img61 $img612"
for img in $img61 $img612; do
	KERNELS="$KERNELS linux-headers-${img#linux-image-}"
done
for p in $PACKAGES $KERNELS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -z "$missing" ]; then
	echo "deps: all packages present"
	exit 0
fi
[ "$apt_updated" = 1 ] || apt_update
echo "deps: installing$missing"
# $missing is a list of names: split on purpose.
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
