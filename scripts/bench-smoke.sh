#!/bin/bash
# The benchmark's CI smoke test, as TAP 13: bench/run.sh --quick on every
# kernel given, into build/bench-smoke/ (make bench's results stay as they
# are).  It checks that every configuration ran every job and that the CSV
# has exactly the documented columns, that the crypto probe measured one vCPU
# and all of them at once, and that the helper timings (attach,
# attach-all/detach-all of 32 disks) ran once each; it asserts no timing.
set -u
TOP=$(cd "$(dirname "$0")/.." && pwd)
OUT=$TOP/build/bench-smoke
EXPECTED_HEADER="kernel,device,config,job,mb_per_s,iops,lat_p50_us,lat_p99_us,runs"
rm -rf "$OUT"
mkdir -p "$OUT"

echo "TAP version 13"
echo "1..$((3 * $# + 1))"
n=0
failed=0
BENCH_OUT=$OUT "$TOP/bench/run.sh" --quick "$@" >"$OUT/log.txt" 2>&1
rc=$?
n=$((n + 1))
header=$(head -n1 "$OUT/results.csv" 2>/dev/null)
if [ "$rc" = 0 ] && [ "$header" = "$EXPECTED_HEADER" ]; then
	echo "ok $n - bench --quick ran and wrote results.csv with the documented columns"
else
	failed=1
	echo "not ok $n - bench --quick ran and wrote results.csv with the documented columns"
	echo "#   expected: exit 0 and header $EXPECTED_HEADER"
	echo "#   seen:     exit $rc, header '${header}'"
	tail -n 20 "$OUT/log.txt" | sed 's/^/#   /'
fi
for k in "$@"; do
	n=$((n + 1))
	# 2 devices x 4 configurations x 6 jobs measured, + 3 crypto-limit rows per device.
	rows=$(grep -c "^$k," "$OUT/results.csv" 2>/dev/null)
	missing=$(awk -F, -v k="$k" '$1 == k && $3 != "crypto-limit" && $9 != 1' "$OUT/results.csv" 2>/dev/null | wc -l)
	if [ "${rows:-0}" = 54 ] && [ "$missing" = 0 ]; then
		echo "ok $n - $k: every configuration and job measured (54 rows)"
	else
		failed=1
		echo "not ok $n - $k: every configuration and job measured (54 rows)"
		echo "#   expected: 54 rows, each with runs=1"
		echo "#   seen:     ${rows:-0} rows, $missing with another run count"
	fi
	n=$((n + 1))
	# One line per measurement: "... driver=X ... mb_per_s=N" for one vCPU,
	# "... all_cpus=<vCPUs> driver=X ... mb_per_s=N" for all at once.
	probe=$(grep -cE ' driver=[^ ]+ unit=4096 .*mb_per_s=[0-9]+$' "$OUT/$k/xtsbench.txt" 2>/dev/null)
	cpus=$(sed -n 's/^nr_cpus=//p' "$OUT/$k/xtsbench.txt" 2>/dev/null)
	if [ "${probe:-0}" = 2 ] && [ -n "$cpus" ] &&
		grep -q " all_cpus=$cpus driver=" "$OUT/$k/xtsbench.txt" &&
		grep -qE "Measured on all $cpus vCPUs at once: [0-9]+ MB/s" "$OUT/results.md"; then
		echo "ok $n - $k: crypto probe measured one vCPU and all $cpus at once"
	else
		failed=1
		echo "not ok $n - $k: crypto probe measured one vCPU and all vCPUs at once"
		echo "#   expected: two xtsbench lines (one vCPU, all_cpus=nr_cpus) and the all-vCPU figure in results.md"
		sed 's/^/#   seen: /' "$OUT/$k/xtsbench.txt" 2>/dev/null
	fi
	n=$((n + 1))
	timings=$(awk '{ print $1 }' "$OUT/$k/helper-timings.txt" 2>/dev/null | tr '\n' ' ')
	if [ "$timings" = "attach attach-all-32 detach-all-32 " ]; then
		echo "ok $n - $k: helper timings: attach, attach-all and detach-all of 32 disks"
	else
		failed=1
		echo "not ok $n - $k: helper timings: attach, attach-all and detach-all of 32 disks"
		echo "#   expected: attach attach-all-32 detach-all-32"
		echo "#   seen:     '$timings'"
	fi
done
[ "$failed" = 0 ]
