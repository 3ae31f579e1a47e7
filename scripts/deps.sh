#!/bin/sh
# Install, idempotently, every Debian package the build, tests, demo and
# benchmarks need.  Adds bookworm-backports for the Linux 6.12 kernel.
# The kernel matrix is one 6.1 (Debian 12) and one 6.12 (backports) kernel;
# their exact ABI names are resolved from the metapackages so a point
# release does not break the build.  mmdebstrap and curl make the trixie
# root of make kmod-next (scripts/kbuild-next.sh).
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

PACKAGES="build-essential make gcc bc flex bison libelf-dev dwarves
 cmake g++ pkg-config clang-format clang-tidy clang-14 libclang-rt-14-dev
 libssl-dev libkeyutils-dev libdevmapper-dev libblkid-dev
 libtomlplusplus-dev nlohmann-json3-dev libcli11-dev libgtest-dev
 qemu-system-x86 busybox-static cpio kmod keyutils dmsetup cryptsetup-bin
 fio e2fsprogs python3-cryptography python3-pykmip openssl udev
 linux-source-6.1 xz-utils gnuplot-nox dkms mmdebstrap curl"

need_root
add_backports
missing=""
apt_updated=0
img61=$(flavour_of 'bookworm-security|bookworm/main') || true
img612=$(flavour_of 'bookworm-backports') || true
if [ -z "$img61" ] || [ -z "$img612" ]; then
	apt-get update -qq
	apt_updated=1
	img61=$(flavour_of 'bookworm-security|bookworm/main')
	img612=$(flavour_of 'bookworm-backports')
fi
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
[ "$apt_updated" = 1 ] || apt-get update -qq
echo "deps: installing$missing"
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
