#!/bin/bash
# The helper's layer check (scripts/check-layers.sh), as TAP 13: the tree
# as committed has no violation, and each kind of violation planted in a
# copy of it is reported with its exact line: a source including a folder
# its README does not allow, a source outside every folder, a folder
# without a README, a .cc the build does not name.
set -u
TOP=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/host/lib/tap.sh
. "$TOP/tests/host/lib/tap.sh"

echo "TAP version 13"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

check_layers() { # check_layers EXPECTED_OUTPUT EXPECTED_STATUS DESCRIPTION
	local output status
	output=$("$TOP/scripts/check-layers.sh" "$WORK/src" "$WORK/CMakeLists.txt")
	status=$?
	if [ "$output" = "$1" ] && [ "$status" = "$2" ]; then
		ok "$3"
	else
		not_ok "$3"
		printf 'expected (exit %s): %s\nseen (exit %s):     %s\n' "$2" "$1" "$status" "$output" | diag
	fi
}

fresh_copy() {
	rm -rf "$WORK/src"
	cp -a "$TOP/helper/src" "$WORK/src"
	cp "$TOP/helper/CMakeLists.txt" "$WORK/CMakeLists.txt"
}

fresh_copy
check_layers "" 0 "the committed tree: no violation"

# util/ may include nothing outside itself.
echo '#include "volume/volume.h"' >>"$WORK/src/util/printable.cc"
check_layers "helper/src/util/printable.cc includes volume/volume.h: util/ may include only itself" 1 \
	"util/ including volume/ is refused"

fresh_copy
echo '#include "cli/cli.h"' >>"$WORK/src/volume/volume.h"
check_layers "helper/src/volume/volume.h includes cli/cli.h: volume/ may include only util, tpm, device, config, kms, audit, header" 1 \
	"volume/ including cli/ is refused, naming what it may include"

fresh_copy
echo '#include "cli/cli.h"' >>"$WORK/src/volume/outage_cache_test.cc"
check_layers "" 0 "a unit test may include any layer"

fresh_copy
echo '// stray' >"$WORK/src/stray.h"
check_layers "helper/src/stray.h: not in a layer folder" 1 "a source outside every folder is refused"

fresh_copy
rm "$WORK/src/tpm/README.md"
check_layers 'helper/src/tpm/README.md: missing, or not exactly one "May include:" line' 1 \
	"a folder without its README is refused"

fresh_copy
echo '// not built' >"$WORK/src/device/orphan.cc"
check_layers "helper/src/device/orphan.cc: not named in helper/CMakeLists.txt" 1 \
	"a .cc the build does not name is refused"

tap_finish
