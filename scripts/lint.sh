#!/bin/bash
# Style gates, as TAP 13: checkpatch.pl --strict on kmod/ (the checker is
# extracted from Debian's linux-source-6.1 at lint time, never committed),
# clang-format on helper/, clang-tidy on helper/ (needs build/helper's
# compile_commands.json) and on the fuzz targets of helper/fuzz/, which only
# the clang build has (build/asan's compile_commands.json: make asan).
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$TOP/build
CP_DIR=$BUILD/checkpatch
n=0
failed=0

result() { # result <rc> <name> <evidence-file>
	n=$((n + 1))
	if [ "$1" = 0 ]; then
		echo "ok $n - $2"
	elif [ "$1" = 4 ]; then
		echo "ok $n - $2 # SKIP $(head -n1 "$3")"
	else
		failed=$((failed + 1))
		echo "not ok $n - $2"
		sed 's/^/# /' "$3" | head -n 60
	fi
}

# tidy_result RC NAME LOG: result, and clang-tidy-cached.py's count of
# files checked and skipped as a comment.
tidy_result() {
	result "$@"
	[ "$1" != 0 ] || sed -n 's/^clang-tidy-cached: /# /p' "$3"
}

extract_checkpatch() {
	[ -x "$CP_DIR/scripts/checkpatch.pl" ] && return 0
	local tarball
	tarball=$(ls /usr/src/linux-source-6.1.tar.* 2>/dev/null | head -n1)
	[ -n "$tarball" ] || return 1
	mkdir -p "$CP_DIR"
	local top
	top=$(basename "$tarball" | sed 's/\.tar\..*//')
	tar -xf "$tarball" -C "$CP_DIR" --strip-components=1 \
		"$top/scripts/checkpatch.pl" "$top/scripts/spelling.txt" \
		"$top/scripts/const_structs.checkpatch" 2>/dev/null
	[ -x "$CP_DIR/scripts/checkpatch.pl" ]
}

log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "TAP version 13"
echo "1..4"

if extract_checkpatch; then
	"$CP_DIR/scripts/checkpatch.pl" --strict --no-tree --terse --show-types \
		-f $(find "$TOP/kmod" -maxdepth 1 -name "*.[ch]" ! -name "*.mod.c" | sort) >"$log" 2>&1
	rc=$?
	# --terse prints one line per error, warning or check, and nothing else.
	[ -s "$log" ] && rc=1
else
	echo "linux-source-6.1 is not installed (run make deps)" >"$log"
	rc=1
fi
result "$rc" "checkpatch --strict kmod/" "$log"

mapfile -t cxx < <(cd "$TOP" && git ls-files 'helper/*.cc' 'helper/*.h' 2>/dev/null)
if [ "${#cxx[@]}" -eq 0 ]; then
	echo "no C++ sources" >"$log"
	result 4 "clang-format helper/" "$log"
else
	(cd "$TOP" && clang-format --dry-run -Werror "${cxx[@]}") >"$log" 2>&1
	result $? "clang-format helper/" "$log"
fi

if [ ! -f "$BUILD/helper/compile_commands.json" ]; then
	echo "build/helper/compile_commands.json missing (make helper first)" >"$log"
	result 1 "clang-tidy helper/" "$log"
else
	mapfile -t srcs < <(cd "$TOP" && git ls-files 'helper/src/*.cc' | grep -v '_test\.cc$')
	# One clang-tidy per file, as many at once as there are CPUs; files
	# found clean before, byte for byte as the compiler sees them, are
	# skipped (scripts/clang-tidy-cached.py says how).
	(cd "$TOP" && "$TOP/scripts/clang-tidy-cached.py" -p "$BUILD/helper" "${srcs[@]}" -- \
		--extra-arg=-Wno-unknown-warning-option --warnings-as-errors='*') >"$log" 2>&1
	tidy_result $? "clang-tidy helper/" "$log"
fi

if [ ! -f "$BUILD/asan/compile_commands.json" ]; then
	echo "build/asan/compile_commands.json missing (make asan first)" >"$log"
	result 1 "clang-tidy helper/fuzz/" "$log"
else
	# The fuzz targets the clang build compiled (ENVCRYPT_FUZZ=ON).
	mapfile -t fuzz_srcs < <(cd "$TOP" && git ls-files 'helper/fuzz/*.cc' |
		while read -r f; do grep -qF "$TOP/$f\"" "$BUILD/asan/compile_commands.json" && echo "$f"; done)
	(cd "$TOP" && "$TOP/scripts/clang-tidy-cached.py" -p "$BUILD/asan" "${fuzz_srcs[@]}" -- \
		--header-filter='helper/(src|fuzz)/.*' --warnings-as-errors='*') >"$log" 2>&1
	tidy_result $? "clang-tidy helper/fuzz/" "$log"
fi

[ "$failed" = 0 ]
