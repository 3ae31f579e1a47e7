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
cmake_text=$(<"$CMAKELISTS")

# check_folder DIR: reads DIR's README once; its allowed list, or "unknown".
check_folder() {
	local list
	if list=$(allowed_of "$1"); then
		allowed[$1]=" $(echo $list) "
	else
		violation "helper/src/$1/README.md: missing, or not exactly one \"May include:\" line"
		allowed[$1]=unknown # reported once, its includes not checked
	fi
}

mapfile -t files < <(cd "$SRC" && find . \( -name '*.cc' -o -name '*.h' \) -printf '%P\n' | sort)
for file in "${files[@]}"; do
	dir=${file%/*}
	if [ "$dir" = "$file" ]; then
		violation "helper/src/$file: not in a layer folder"
		continue
	fi
	[ -n "${allowed[$dir]+set}" ] || check_folder "$dir"
	if [[ $file == *.cc && $cmake_text != *"src/$file"* ]]; then
		violation "helper/src/$file: not named in helper/CMakeLists.txt"
	fi
done

# Every #include "..." of a source that is not a test, in one pass.
while IFS=: read -r file included; do
	case $file in
	*_test.cc | *test_support.h) continue ;; # tests may use any layer
	esac
	dir=${file%/*}
	[ "$dir" = "$file" ] && continue # reported above
	[ "${allowed[$dir]}" = unknown ] && continue
	inc_dir=${included%/*}
	[ "$inc_dir" = "$dir" ] && continue
	if [[ ${allowed[$dir]} != *" $inc_dir "* ]]; then
		may=$(echo ${allowed[$dir]} | sed 's/ /, /g')
		violation "helper/src/$file includes $included: $dir/ may include only ${may:-itself}"
	fi
done < <(cd "$SRC" && printf '%s\0' "${files[@]}" |
	xargs -0 grep -H '^#include "' | sed 's/^\([^:]*\):#include "\([^"]*\)".*/\1:\2/')

[ "$violations" = 0 ]
