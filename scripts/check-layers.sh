#!/bin/bash
# The helper's folders are its layers (Documentation/design.rst, "Layers of the helper").
# Each folder of helper/src has a README.md whose "May include:" line names
# the folders its sources may include; this checks, for every source that
# is not a test, each #include "..." against that line, and that every
# source sits in such a folder and every .cc is named in helper/CMakeLists.txt
# (the build lists its sources; a file it does not name is not built).
# Prints one line per violation; exit 0 when there are none, 1 otherwise.
# Usage: check-layers.sh [SRC_DIR [CMAKELISTS]] (defaults: this repository's).
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
SRC=${1:-$TOP/helper/src}
CMAKELISTS=${2:-$TOP/helper/CMakeLists.txt}
violations=0

violation() {
	echo "$1"
	violations=$((violations + 1))
}

# allowed_of DIR: the folders DIR's README.md lets its sources include.
allowed_of() {
	local readme=$SRC/$1/README.md lines
	lines=$(grep -c '^May include: ' "$readme" 2>/dev/null)
	if [ "${lines:-0}" != 1 ]; then
		return 1
	fi
	sed -n 's/^May include: //p' "$readme" | tr ',' '\n' | sed 's/^ *//; s/ *$//' |
		grep -v '^(nothing'
	return 0
}

declare -A allowed
while IFS= read -r file; do
	dir=$(dirname "$file")
	if [ "$dir" = . ]; then
		violation "helper/src/$file: not in a layer folder"
		continue
	fi
	if [ -z "${allowed[$dir]+set}" ]; then
		if list=$(allowed_of "$dir"); then
			allowed[$dir]=" $(echo $list) "
		else
			violation "helper/src/$dir/README.md: missing, or not exactly one \"May include:\" line"
			allowed[$dir]=unknown # reported once, its includes not checked
		fi
	fi
	case $file in
	*.cc)
		grep -qF "src/$file" "$CMAKELISTS" ||
			violation "helper/src/$file: not named in helper/CMakeLists.txt"
		;;
	esac
	case $file in
	*_test.cc | *test_support.h) continue ;; # tests may use any layer
	esac
	[ "${allowed[$dir]}" = unknown ] && continue
	may=$(echo ${allowed[$dir]} | sed 's/ /, /g')
	while IFS= read -r included; do
		inc_dir=$(dirname "$included")
		[ "$inc_dir" = "$dir" ] && continue
		if [[ ${allowed[$dir]} != *" $inc_dir "* ]]; then
			violation "helper/src/$file includes $included: $dir/ may include only ${may:-itself}"
		fi
	done < <(sed -n 's/^#include "\([^"]*\)".*/\1/p' "$SRC/$file")
done < <(cd "$SRC" && find . -name '*.cc' -o -name '*.h' | sed 's|^\./||' | sort)

[ "$violations" = 0 ]
