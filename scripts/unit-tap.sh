#!/bin/bash
# Runs the helper's GoogleTest unit tests and reports each test as TAP 13.
# Usage: unit-tap.sh [BINARY]  (default build/helper/envcrypt_unit_tests;
# make check also runs build/asan's, built with the sanitizers).
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$TOP/build/helper/envcrypt_unit_tests}
[ "${BIN#/}" != "$BIN" ] || BIN=$PWD/$BIN # it runs in its own directory
if [ ! -x "$BIN" ]; then
	echo "TAP version 13"
	echo "1..1"
	echo "not ok 1 - helper unit tests built ($BIN missing: make helper)"
	exit 1
fi
json=$(mktemp)
trap 'rm -f "$json"' EXIT
(cd "$(dirname "$BIN")" && "$BIN" --gtest_output="json:$json" >"$json.log" 2>&1)
rc=$?
/usr/bin/python3 - "$json" "$json.log" "$rc" <<'PY'
import json
import sys

path, log, rc = sys.argv[1], sys.argv[2], int(sys.argv[3])
print("TAP version 13")
try:
    with open(path) as f:
        report = json.load(f)
except (OSError, ValueError) as err:
    print("1..1")
    print(f"not ok 1 - unit test binary produced no report ({err}, exit {rc})")
    print("".join("# " + l for l in open(log, errors="replace").readlines()[-40:]))
    sys.exit(1)
tests = [(s["name"], t) for s in report["testsuites"] for t in s["testsuite"]]

# GoogleTest's JSON has no skip message; its text log has it on the line
# after "<file>:<line>: Skipped", between the test's RUN and SKIPPED lines.
skip_reasons = {}
current = None
lines = open(log, errors="replace").read().splitlines()
for i, line in enumerate(lines):
    if line.startswith("[ RUN      ] "):
        current = line[13:].strip()
    elif current and line.endswith(": Skipped") and i + 1 < len(lines):
        skip_reasons[current] = lines[i + 1].strip()
# Every test passed yet the binary failed: a report after the last test,
# such as LeakSanitizer's at exit.  That is one more failure, shown.
after_tests = rc != 0 and not any(t.get("failures") for _, t in tests)
print(f"1..{len(tests) + (1 if after_tests else 0)}")
failed = 0
for n, (suite, t) in enumerate(tests, 1):
    name = f"{suite}.{t['name']}"
    if t.get("result") == "SKIPPED" or t.get("status") == "NOTRUN":
        why = skip_reasons.get(name, "the test gave no reason")
        print(f"ok {n} - {name} # SKIP {why}")
    elif t.get("failures"):
        failed += 1
        print(f"not ok {n} - {name}")
        for f in t["failures"]:
            for line in f["failure"].splitlines()[:20]:
                print(f"# {line}")
    else:
        print(f"ok {n} - {name}")
if after_tests:
    failed += 1
    print(f"not ok {len(tests) + 1} - the test binary exited {rc} after its tests")
    print("\n".join("# " + l for l in lines[-40:]))
sys.exit(1 if failed or rc else 0)
PY
