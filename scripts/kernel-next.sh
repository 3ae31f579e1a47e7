#!/bin/bash
# kernel-next.sh: the newest kernel of Debian trixie-backports (the ABI of
# the linux-headers-amd64 that scripts/kbuild-next.sh compiles against),
# unpacked for the test guests, never installed on the host.
#
#   scripts/kernel-next.sh
#
# Prints one line on stdout, "<abi> <dir>": boot it with
#   selftests/vm-run.sh --kernel <abi> --kernel-dir <dir> ...
# where <dir>/lib/modules/<abi> holds the modules, with the modules.dep
# files of `depmod -b <dir> <abi>`, and the kernel image (vmlinuz: the 7.x
# packages put it there; older ones in <dir>/boot/vmlinuz-<abi>).
#
# The archive's InRelease is checked with gpgv against the Debian archive
# keyring, Packages.xz against InRelease's SHA256 and size, and each .deb
# (linux-image-<abi> and the linux-*-<abi> packages it depends on: base,
# binary, modules) against Packages' SHA256 and size, as apt does.  They are
# unpacked with dpkg-deb -x into build/kernel-next/<abi>/; <abi>.stamp names
# the version unpacked there, and a later run only checks the archive.
# When the archive cannot be reached, the cached kernel is used (stderr says
# so).  Messages go to stderr, each naming the kernel and the reason.
#
# Environment: KERNEL_NEXT_DIR (cache, default build/kernel-next),
# KBUILD_NEXT_MIRROR (default http://deb.debian.org/debian),
# KERNEL_NEXT_FETCH_TIMEOUT (s per .deb, default 900).
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${KERNEL_NEXT_DIR:-$TOP/build/kernel-next}
MIRROR=${KBUILD_NEXT_MIRROR:-http://deb.debian.org/debian}
FETCH_TIMEOUT=${KERNEL_NEXT_FETCH_TIMEOUT:-900}
# shellcheck source=scripts/lib/backports.sh
. "$TOP/scripts/lib/backports.sh"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

abi=
fail() {
	echo "kernel-next: kernel ${abi:-<newest of $BACKPORTS_SUITE>}: $*" >&2
	exit 1
}

# cached_ok ABI: the unpacked kernel is complete.
cached_ok() {
	{ [ -f "$CACHE/$1/boot/vmlinuz-$1" ] || [ -f "$CACHE/$1/lib/modules/$1/vmlinuz" ]; } &&
		[ -f "$CACHE/$1/lib/modules/$1/modules.dep" ]
}

mkdir -p "$CACHE" || fail "cannot create $CACHE"
exec 9>"$CACHE/lock"
flock -w 1800 9 || fail "another run still holds $CACHE/lock after 1800 s"

if ! backports_packages "$tmp" 2>"$tmp/why" ||
	! newest=$(backports_newest_headers "$tmp/Packages.xz" 2>"$tmp/why"); then
	# Offline: the newest kernel unpacked before, if any.
	for stamp in "$CACHE"/*.stamp; do
		[ -f "$stamp" ] || continue
		read -r c_abi c_version <"$stamp"
		if cached_ok "$c_abi" && { [ -z "$abi" ] || dpkg --compare-versions "$c_version" gt "$version"; }; then
			abi=$c_abi
			version=$c_version
		fi
	done
	[ -n "$abi" ] || fail "the archive cannot be used and nothing is cached: $(head -c 300 "$tmp/why")"
	echo "kernel-next: kernel $abi: archive not usable, so the cached $version is used (not checked against the archive: $(head -c 300 "$tmp/why"))" >&2
	echo "$abi $CACHE/$abi"
	exit 0
fi
read -r abi version <<<"$newest"
dir=$CACHE/$abi
if cached_ok "$abi" && [ "$(cat "$CACHE/$abi.stamp" 2>/dev/null)" = "$abi $version" ]; then
	echo "kernel-next: kernel $abi: cached, $version (newest of $BACKPORTS_SUITE)" >&2
	echo "$abi $dir"
	exit 0
fi

# The packages to unpack: linux-image-<abi> and, transitively, every
# dependency named linux-*-<abi> (exact version from its "(= ...)").
queue=("linux-image-$abi $version")
seen=" "
debs=()
while [ ${#queue[@]} -gt 0 ]; do
	read -r pkg pver <<<"${queue[0]}"
	queue=("${queue[@]:1}")
	case $seen in *" $pkg "*) continue ;; esac
	seen+="$pkg "
	stanza=$(backports_stanza "$tmp/Packages.xz" "$pkg" "$pver")
	[ -n "$stanza" ] || fail "$pkg $pver is not in $BACKPORTS_SUITE's Packages.xz"
	read -r file sum size deps <<<"$stanza"
	[[ $file =~ ^pool/[A-Za-z0-9/._+~-]+\.deb$ && $sum =~ ^[0-9a-f]{64}$ && $size =~ ^[0-9]+$ ]] ||
		fail "malformed index entry for $pkg: '$file $sum $size'"
	debs+=("$file $sum $size")
	# "a (= v), b | c, ..." -> the plain (no alternative) linux-*-<abi> ones.
	while read -r dep; do
		[ -n "$dep" ] || continue
		dname=${dep%% *}
		dver=$(sed -n 's/.*(= \([^)]*\)).*/\1/p' <<<"$dep")
		queue+=("$dname ${dver:-$version}")
	done < <(tr ',' '\n' <<<"$deps" | sed 's/^ *//' | grep -v '|' |
		grep -E "^linux-[a-z-]+-${abi//+/\\+}( |$)")
done

mkdir -p "$CACHE/debs"
rm -rf --one-file-system "$dir.new"
mkdir -p "$dir.new"
for entry in "${debs[@]}"; do
	read -r file sum size <<<"$entry"
	deb=$CACHE/debs/$(basename "$file")
	if ! [ -f "$deb" ] || ! backports_check "$deb" "$sum" "$size" "$deb" 2>/dev/null; then
		echo "kernel-next: kernel $abi: fetching $(basename "$file") ($((size / 1048576)) MiB)" >&2
		backports_fetch "$MIRROR/$file" "$deb.part" "$FETCH_TIMEOUT" 2>"$tmp/why" ||
			fail "$(cat "$tmp/why")"
		backports_check "$deb.part" "$sum" "$size" "$MIRROR/$file" 2>"$tmp/why" || {
			rm -f "$deb.part"
			fail "$(cat "$tmp/why")"
		}
		mv -f "$deb.part" "$deb"
	fi
	dpkg-deb -x "$deb" "$dir.new" 2>"$tmp/why" || fail "dpkg-deb -x $deb failed: $(head -c 300 "$tmp/why")"
done

# Merged /usr: the packages may ship usr/lib/modules; depmod -b, modprobe -d
# and vm-run.sh look under <dir>/lib/modules.
if ! [ -e "$dir.new/lib" ] && [ -d "$dir.new/usr/lib/modules" ]; then
	ln -s usr/lib "$dir.new/lib"
fi
[ -f "$dir.new/boot/vmlinuz-$abi" ] || [ -f "$dir.new/lib/modules/$abi/vmlinuz" ] ||
	fail "the packages hold neither boot/vmlinuz-$abi nor lib/modules/$abi/vmlinuz"
[ -d "$dir.new/lib/modules/$abi/kernel" ] || fail "the packages hold no lib/modules/$abi/kernel"
timeout 600 depmod -b "$dir.new" "$abi" 2>"$tmp/why" ||
	fail "depmod -b $dir.new $abi failed: $(head -c 300 "$tmp/why")"
rm -rf --one-file-system "$dir"
mv "$dir.new" "$dir" || fail "cannot move $dir.new to $dir"
echo "$abi $version" >"$CACHE/$abi.stamp"
# The checked .debs are not needed once unpacked.
for entry in "${debs[@]}"; do
	read -r file _ <<<"$entry"
	rm -f "$CACHE/debs/$(basename "$file")"
done
echo "kernel-next: kernel $abi: unpacked $version (newest of $BACKPORTS_SUITE, ${#debs[@]} packages) into $dir" >&2
echo "$abi $dir"
