#!/bin/bash
# Runs every libFuzzer target of helper/fuzz/ for a fixed time and reports
# each as a TAP 13 test.  Usage: fuzz.sh [--seconds N] [--jobs J]
#
# Targets are built by `make asan` in build/asan/fuzz/.  Each run reads the
# committed seeds (helper/fuzz/corpus/<target>/, never written) and keeps
# what it learns in build/fuzz/corpus/<target>/, so the next run starts
# where this one stopped.  A finding (crash, sanitizer report, leak, timeout,
# broken property) is saved in build/fuzz/findings/<target>/ and fails the
# test; its log ends up in the TAP output.
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
BIN_DIR=$TOP/build/asan/fuzz
WORK=$TOP/build/fuzz
seconds=600
jobs=1
while [ $# -gt 0 ]; do
	case $1 in
	--seconds) seconds=$2; shift 2 ;;
	--jobs) jobs=$2; shift 2 ;;
	*) echo "usage: $0 [--seconds N] [--jobs J]" >&2; exit 2 ;;
	esac
done

# Any sanitizer finding is fatal and names its source line.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

mapfile -t targets < <(cd "$TOP/helper/fuzz" && ls fuzz_*.cc | sed 's/^fuzz_\(.*\)\.cc$/\1/')

# run_target <target>: one libFuzzer run; writes <target>.result (one TAP
# description line) and <target>.log under $WORK/logs.
run_target() {
	local t=$1 bin=$BIN_DIR/fuzz-$1 log=$WORK/logs/$1.log result=$WORK/logs/$1.result
	if [ ! -x "$bin" ]; then
		echo "not ok - fuzz-$t: $bin missing (make asan)" >"$result"
		return
	fi
	mkdir -p "$WORK/corpus/$t" "$WORK/findings/$t"
	"$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$WORK/findings/$t/" "$WORK/corpus/$t" "$TOP/helper/fuzz/corpus/$t" \
		>"$log" 2>&1
	local rc=$? execs corpus
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
	corpus=$(ls "$WORK/corpus/$t" | wc -l)
	if [ "$rc" = 0 ]; then
		echo "ok - fuzz-$t: ${execs:-?} executions in $seconds s, no finding ($corpus inputs learnt)" >"$result"
	else
		echo "not ok - fuzz-$t: finding (exit $rc) after ${execs:-?} executions: $(ls -t "$WORK/findings/$t" | head -n1)" >"$result"
	fi
}

rm -rf "$WORK/logs"
mkdir -p "$WORK/logs"
running=0
for t in "${targets[@]}"; do
	if [ "$running" -ge "$jobs" ]; then
		wait -n
		running=$((running - 1))
	fi
	run_target "$t" &
	running=$((running + 1))
done
wait

echo "TAP version 13"
echo "1..${#targets[@]}"
n=0
failed=0
for t in "${targets[@]}"; do
	n=$((n + 1))
	line=$(cat "$WORK/logs/$t.result" 2>/dev/null || echo "not ok - fuzz-$t: no result")
	echo "${line/ - / $n - }"
	if [ "${line#not ok}" != "$line" ]; then
		failed=$((failed + 1))
		[ -f "$WORK/logs/$t.log" ] && grep -v '^#[0-9]' "$WORK/logs/$t.log" | tail -n 40 | sed 's/^/# /'
	fi
done
[ "$failed" = 0 ]
