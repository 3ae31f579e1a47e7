#!/bin/bash
# make kmod-next: a compile check (nothing is loaded or booted) of kmod/,
# kmod-test/ and bench/xtsbench/ against the newest linux-headers-*-amd64
# of Debian trixie-backports, with W=1 and -Werror.  Those headers need
# trixie's gcc-14 and linux-kbuild, which do not run on bookworm's libc, so
# the build runs in a minimal trixie root made by mmdebstrap and cached in
# /var/cache/envcrypt/kbuild-next/root (root-stamp names the headers it
# holds), outside build/ so that every clone on the host shares it (CI
# starts from a clean clone; making the root took 117 s of its run).
#
# The archive is asked once per run, for the newest version of the
# linux-headers-amd64 metapackage of trixie-backports; the root is rebuilt
# only when it is missing or older than that.  When the archive cannot be
# reached, a cached root is used (and the output says so); with no cached
# root that is a failure.  Output is TAP 13: one line for the root, one per
# module, the compiler's messages as comments under a failing module.
# The modules land in build/kbuild-next/out/<abi>/ and where the guests load
# them: build/kmod/<abi>/, build/kmod-test/<abi>/, build/bench/mod/<abi>/
# (scripts/check-next.sh boots that kernel with them).
#
# Environment: KBUILD_NEXT_DIR (the modules and logs, default
# build/kbuild-next), KBUILD_NEXT_ROOT_CACHE (the root, its stamp and lock,
# default /var/cache/envcrypt/kbuild-next),
# KBUILD_NEXT_MIRROR (default http://deb.debian.org/debian),
# KBUILD_NEXT_ROOT_TIMEOUT (s, making the root, default 1800),
# KBUILD_NEXT_MAKE_TIMEOUT (s, per module, default 600).  Runs as root.
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${KBUILD_NEXT_DIR:-$TOP/build/kbuild-next}
MIRROR=${KBUILD_NEXT_MIRROR:-http://deb.debian.org/debian}
ROOT_TIMEOUT=${KBUILD_NEXT_ROOT_TIMEOUT:-1800}
MAKE_TIMEOUT=${KBUILD_NEXT_MAKE_TIMEOUT:-600}
ROOT_CACHE=${KBUILD_NEXT_ROOT_CACHE:-/var/cache/envcrypt/kbuild-next}
ROOT=$ROOT_CACHE/root
STAMP=$ROOT_CACHE/root-stamp
SUITE=trixie
MODULES="kmod kmod-test bench/xtsbench"
# What the root holds besides the headers (whose Depends bring gcc-14 and
# linux-kbuild; binutils has the plain "as" that gcc runs); a change here
# rebuilds it.
EXTRA_PACKAGES="make,libc6-dev,binutils"
# Where the sources are copied inside the root; stripped from messages so
# that they name repository paths.
SRC=/envcrypt-src
# shellcheck source=scripts/lib/backports.sh
. "$TOP/scripts/lib/backports.sh"

n=0
failed=0
mounts=()
tmp=$(mktemp -d)

cleanup() {
	local i
	for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
		umount "${mounts[$i]}" 2>/dev/null || umount -l "${mounts[$i]}"
	done
	mounts=()
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

result() { # result ok|fail|skip <description> [<evidence-file>]
	n=$((n + 1))
	case $1 in
	ok) echo "ok $n - $2" ;;
	skip) echo "ok $n - $2 # SKIP ${3:-}" ;;
	*)
		failed=$((failed + 1))
		echo "not ok $n - $2"
		if [ -n "${3:-}" ] && [ -s "$3" ]; then
			sed "s|$SRC/||g; s/^/# /" "$3" | head -n 80
		fi
		;;
	esac
}

skip_modules() { # after a failing root: the modules are not compiled
	local dir
	for dir in $MODULES; do
		result skip "$dir: not compiled against the $SUITE-backports headers" "no kbuild root"
	done
}

# newest_headers: prints "<abi> <version>" of the newest linux-headers-amd64
# of trixie-backports (InRelease verified with gpgv, Packages.xz against
# it: scripts/lib/backports.sh, shared with scripts/kernel-next.sh so that
# the guests boot the kernel of these headers), or a reason on stderr.
newest_headers() {
	backports_packages "$tmp" && backports_newest_headers "$tmp/Packages.xz"
}

# mounts_under DIR: the mount points at or below DIR, deepest first.
mounts_under() {
	findmnt -rn -o TARGET | awk -v d="$1" 'index($0, d) == 1' | sort -r
}

# make_root ABI VERSION: a fresh trixie root with those headers in $ROOT.
make_root() {
	local abi=$1 version=$2 new=$ROOT.new m
	if ! command -v mmdebstrap >/dev/null; then
		echo "# installing mmdebstrap"
		DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q \
			--no-install-recommends mmdebstrap >"$tmp/root.log" 2>&1 || return 1
	fi
	# Never delete through a mount point left by a killed run.
	for m in $(mounts_under "$new") $(mounts_under "$ROOT"); do
		umount "$m" || umount -l "$m"
	done
	rm -rf --one-file-system "$new"
	timeout -k 30 "$ROOT_TIMEOUT" nice -n 10 mmdebstrap --mode=root --variant=apt \
		--dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-exclude=/usr/share/man/*' \
		--dpkgopt='path-exclude=/usr/share/locale/*' \
		--include="linux-headers-$abi,$EXTRA_PACKAGES" \
		"$SUITE" "$new" \
		"deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-backports main" \
		>"$tmp/root.log" 2>&1
	local rc=$?
	if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
		echo "mmdebstrap timed out after $ROOT_TIMEOUT s" >>"$tmp/root.log"
	fi
	if [ "$rc" != 0 ] || [ ! -f "$new/usr/src/linux-headers-$abi/Makefile" ]; then
		rm -rf --one-file-system "$new"
		return 1
	fi
	rm -rf --one-file-system "$ROOT"
	mv "$new" "$ROOT" &&
		printf '%s %s %s\n' "$abi" "$version" "$EXTRA_PACKAGES" >"$STAMP"
}

# build_module DIR ABI: compiles DIR (kmod, ...) in the root; the log
# goes to $tmp/build.log and $CACHE/out/ABI/DIR.log, the module to
# $CACHE/out/ABI/ and to where the guests load it from (place_module), the
# reason of a failure to $why.
build_module() {
	local dir=$1 abi=$2 rc
	why=""
	rm -rf --one-file-system "${ROOT:?}$SRC/$dir"
	mkdir -p "$ROOT$SRC/$dir"
	(cd "$TOP/$dir" && find . -maxdepth 1 -type f \
		\( -name '*.[ch]' -o -name Kbuild -o -name Makefile \) ! -name '*.mod.c' \
		-exec cp {} "$ROOT$SRC/$dir/" \;)
	timeout -k 10 "$MAKE_TIMEOUT" nice -n 10 chroot "$ROOT" /usr/bin/env -i \
		PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
		make -C "/usr/src/linux-headers-$abi" M="$SRC/$dir" W=1 KCFLAGS=-Werror \
		modules >"$tmp/build.log" 2>&1
	rc=$?
	if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
		why="timed out after $MAKE_TIMEOUT s"
	elif [ "$rc" != 0 ]; then
		why="make exited $rc, $(grep -cE ': error:' "$tmp/build.log") error(s), $(grep -cE ': warning:' "$tmp/build.log") warning(s)"
	fi
	mkdir -p "$CACHE/out/$abi"
	cp "$tmp/build.log" "$CACHE/out/$abi/${dir//\//-}.log"
	if [ "$rc" = 0 ]; then
		cp "$ROOT$SRC/$dir"/*.ko "$CACHE/out/$abi/" || {
			rc=1
			why="no .ko to copy"
		}
	fi
	if [ "$rc" = 0 ]; then
		place_module "$dir" "$abi" || {
			rc=1
			why="cannot copy the module to $(guest_module_dir "$dir" "$abi")"
		}
	fi
	return "$rc"
}

# guest_module_dir DIR ABI: where the guests look for DIR's modules, as
# make kmod-matrix and bench/run.sh place them for the installed kernels
# (selftests/run.sh and bench/run.sh --kernel-dir boot ABI with them).
guest_module_dir() {
	case $1 in
	kmod) echo "$TOP/build/kmod/$2" ;;
	kmod-test) echo "$TOP/build/kmod-test/$2" ;;
	bench/xtsbench) echo "$TOP/build/bench/mod/$2" ;;
	esac
}

place_module() {
	local target
	target=$(guest_module_dir "$1" "$2")
	[ -n "$target" ] || return 0
	mkdir -p "$target" && cp "$ROOT$SRC/$1"/*.ko "$target/"
}

echo "TAP version 13"
echo "1..$((1 + $(echo "$MODULES" | wc -w)))"
started=$SECONDS

if [ "$(id -u)" != 0 ]; then
	result fail "kbuild root for the newest $SUITE-backports headers: must run as root (mmdebstrap, chroot)"
	skip_modules
	exit 1
fi
mkdir -p "$CACHE" "$ROOT_CACHE"
exec 9>"$ROOT_CACHE/lock"
if ! flock -w 1800 9; then
	result fail "kbuild root for the newest $SUITE-backports headers: another run still holds $ROOT_CACHE/lock after 1800 s"
	skip_modules
	exit 1
fi

# cached: "<abi> <version> <packages>" of a complete root, or empty.
cached=""
if [ -f "$STAMP" ] && read -r c_abi c_ver c_pkgs <"$STAMP" &&
	[ -f "$ROOT/usr/src/linux-headers-$c_abi/Makefile" ]; then
	cached="$c_abi $c_ver $c_pkgs"
fi

abi=""
if newest=$(newest_headers 2>"$tmp/why"); then
	read -r abi version <<<"$newest"
	if [ "$cached" = "$abi $version $EXTRA_PACKAGES" ]; then
		result ok "kbuild root: cached, linux-headers-$abi $version (newest of $SUITE-backports)"
	else
		echo "# making the $SUITE root for linux-headers-$abi $version${cached:+ (cached: ${cached% *})}"
		t0=$SECONDS
		if make_root "$abi" "$version"; then
			result ok "kbuild root: made in $((SECONDS - t0)) s, linux-headers-$abi $version (newest of $SUITE-backports)"
		else
			tail -n 40 "$tmp/root.log" >"$tmp/why"
			result fail "kbuild root: cannot make a $SUITE root with linux-headers-$abi $version (mmdebstrap failed)" "$tmp/why"
			abi=""
		fi
	fi
elif [ -n "$cached" ]; then
	read -r abi version _ <<<"$cached"
	result ok "kbuild root: archive unreachable, so the cached root is used, linux-headers-$abi $version (not checked against the archive: $(head -c 300 "$tmp/why"))"
else
	result fail "kbuild root: the archive is unreachable and no root is cached, so the newest $SUITE-backports headers (version unknown) cannot be had: $(head -c 300 "$tmp/why")"
fi

if [ -z "$abi" ]; then
	skip_modules
	exit 1
fi

# kbuild needs /dev/null and /proc; mounted for the builds only, and
# unmounted by cleanup() on every exit.
for fs in proc dev; do
	if mountpoint -q "$ROOT/$fs"; then
		continue
	fi
	mkdir -p "$ROOT/$fs"
	if [ "$fs" = proc ]; then
		mount -t proc proc "$ROOT/proc" 2>"$tmp/why"
	else
		mount --bind /dev "$ROOT/dev" 2>"$tmp/why"
	fi || {
		for dir in $MODULES; do
			result fail "$dir: not compiled against $abi: cannot mount $ROOT/$fs" "$tmp/why"
		done
		exit 1
	}
	mounts+=("$ROOT/$fs")
done

for dir in $MODULES; do
	t0=$SECONDS
	if build_module "$dir" "$abi"; then
		result ok "$dir: compiles against $abi (W=1 -Werror, $((SECONDS - t0)) s)"
	else
		result fail "$dir: does not compile against $abi (W=1 -Werror): $why" "$tmp/build.log"
	fi
done
echo "# kbuild-next: $((SECONDS - started)) s in all"
[ "$failed" = 0 ]
