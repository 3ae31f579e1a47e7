# shellcheck shell=bash
# Sourced by scripts/kbuild-next.sh and scripts/kernel-next.sh: the index of
# Debian trixie-backports, fetched and verified the way apt does it, and the
# kernel ABI both scripts use (the one the linux-headers-amd64 metapackage
# points at), so that the headers the modules are compiled against and the
# kernel the guests boot are always the same.
#
# Needs MIRROR (e.g. http://deb.debian.org/debian).  Functions print a reason
# on stderr and return 1 on failure.

BACKPORTS_SUITE=trixie-backports
BACKPORTS_KEYRING=${BACKPORTS_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}

# backports_fetch URL FILE SECONDS: one bounded download.
backports_fetch() {
	local url=$1 file=$2 seconds=$3 err
	if ! err=$(curl -fsS --connect-timeout 20 --max-time "$seconds" -o "$file" "$url" 2>&1); then
		echo "cannot fetch $url: $(echo "$err" | tr -s '\n' ' ' | sed 's/ $//')" >&2
		return 1
	fi
}

# backports_packages DIR: downloads InRelease (its signature checked with
# gpgv against the Debian archive keyring) and main/binary-amd64/Packages.xz
# (its size and SHA256 checked against InRelease) into DIR.
backports_packages() {
	local dir=$1 base=$MIRROR/dists/$BACKPORTS_SUITE line sum size
	backports_fetch "$base/InRelease" "$dir/InRelease" 120 || return 1
	if ! gpgv --keyring "$BACKPORTS_KEYRING" --output "$dir/Release" \
		"$dir/InRelease" >"$dir/gpgv.log" 2>&1; then
		echo "$base/InRelease: bad or unknown signature ($(grep -m1 -E 'BAD|NO_PUBKEY|Can.t check|not found' "$dir/gpgv.log" | head -c 200))" >&2
		return 1
	fi
	# The SHA256 section lists "<sum> <size> <path>" lines.
	line=$(awk '/^SHA256:/ { s = 1; next } /^[^ ]/ { s = 0 }
		s && $3 == "main/binary-amd64/Packages.xz" { print $1, $2; exit }' "$dir/Release")
	read -r sum size <<<"$line"
	if ! [[ ${sum:-} =~ ^[0-9a-f]{64}$ ]]; then
		echo "$base/InRelease lists no SHA256 for main/binary-amd64/Packages.xz" >&2
		return 1
	fi
	backports_fetch "$base/main/binary-amd64/Packages.xz" "$dir/Packages.xz" 120 || return 1
	backports_check "$dir/Packages.xz" "$sum" "$size" "$base/main/binary-amd64/Packages.xz" || return 1
}

# backports_check FILE SHA256 SIZE WHAT: FILE has that size and checksum.
backports_check() {
	local file=$1 sum=$2 size=$3 what=$4 seen
	seen=$(stat -c %s "$file")
	if [ "$seen" != "$size" ]; then
		echo "$what: $seen bytes, the signed index says $size" >&2
		return 1
	fi
	seen=$(sha256sum "$file" | cut -d' ' -f1)
	if [ "$seen" != "$sum" ]; then
		echo "$what: SHA256 $seen, the signed index says $sum" >&2
		return 1
	fi
}

# backports_newest_headers PACKAGES_XZ: prints "<abi> <version>" of the
# newest linux-headers-amd64 (the ABI its Depends names).
backports_newest_headers() {
	local best="" ver abi
	while read -r ver abi; do
		if [ -z "$best" ] || dpkg --compare-versions "$ver" gt "${best#* }"; then
			best="$abi $ver"
		fi
	done < <(xz -dc "$1" | awk '
		/^Package: / { pkg = $2; ver = ""; abi = "" }
		pkg == "linux-headers-amd64" && /^Version: / { ver = $2 }
		pkg == "linux-headers-amd64" && /^Depends: / {
			if (match($0, /linux-headers-[0-9][^ ,]*-amd64/))
				abi = substr($0, RSTART + 14, RLENGTH - 14)
		}
		/^$/ && ver != "" && abi != "" { print ver, abi; ver = "" }
		END { if (ver != "" && abi != "") print ver, abi }')
	abi=${best%% *}
	# The name goes on to apt and into paths: accept only what a kernel ABI
	# name looks like.
	if ! [[ $abi =~ ^[0-9]+\.[0-9]+[0-9a-z.+~-]*-amd64$ ]]; then
		echo "no linux-headers-amd64 in $MIRROR/dists/$BACKPORTS_SUITE/main/binary-amd64/Packages.xz" >&2
		return 1
	fi
	echo "$best"
}

# backports_stanza PACKAGES_XZ PACKAGE VERSION: prints "Filename SHA256 Size
# Depends..." of that package at that version (Depends last, may hold
# spaces), or nothing.
backports_stanza() {
	xz -dc "$1" | awk -v p="$2" -v v="$3" '
		/^Package: / { pkg = $2; ver = ""; file = ""; sum = ""; size = ""; deps = "" }
		/^Version: / { ver = $2 }
		/^Filename: / { file = $2 }
		/^SHA256: / { sum = $2 }
		/^Size: / { size = $2 }
		/^Depends: / { deps = substr($0, 10) }
		/^$/ { if (pkg == p && ver == v && file != "") { print file, sum, size, deps; done = 1; exit } pkg = "" }
		END { if (!done && pkg == p && ver == v && file != "") print file, sum, size, deps }'
}
