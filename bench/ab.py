#!/usr/bin/env python3
"""Same-boot A/B of the target: envcryptold (BENCH_BASELINE) against envcrypt.

    bench/ab.py BENCH_DIR KVER

Reads BENCH_DIR/KVER/fio/<device>-<config>-<job>-<run>.json of the two
configurations (bench/run.sh with BENCH_BASELINE set) and prints one
reStructuredText table: per device and job, the median (MB/s; for the QD1
job p50 latency in us) and spread ((max - min) / median) of each, the
ratio new/old of the medians (for latency above 1 is slower), and a
verdict: "worse" when the new median is worse than the old by more than
the larger of the two spreads, else "same" or "better".
Exit status 1 if a row is "worse" or a run is missing.
"""

import glob
import json
import os
import re
import statistics
import sys

NAME = re.compile(r"^(brd|virtio)-(envcryptold|envcrypt)-(.+)-(\d+)\.json$")


def fio_value(path, job):
    with open(path) as f:
        data = json.load(f)["jobs"][0]
    if job.endswith("qd1"):
        side = data["read"] if data["read"]["io_bytes"] else data["write"]
        return side["lat_ns"]["percentile"]["50.000000"] / 1000.0
    return (data["read"]["bw_bytes"] + data["write"]["bw_bytes"]) / 1e6


def load(bench_dir, kver):
    runs = {}
    for path in glob.glob(f"{bench_dir}/{kver}/fio/*.json"):
        m = NAME.match(os.path.basename(path))
        if m:
            device, config, job, _ = m.groups()
            runs.setdefault((device, job), {}).setdefault(config, []).append(fio_value(path, job))
    return runs


def spread(values):
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med else 0.0


def verdict(job, old, new, allowed):
    lower_is_better = job.endswith("qd1")
    change = (new - old) / old if old else 0.0
    worse = change > allowed if lower_is_better else -change > allowed
    better = -change > allowed if lower_is_better else change > allowed
    return "worse" if worse else "better" if better else "same"


def main():
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    runs = load(sys.argv[1], sys.argv[2])
    if not runs:
        print(f"ab: no envcryptold/envcrypt runs under {sys.argv[1]}/{sys.argv[2]}/fio", file=sys.stderr)
        return 1
    header = ("job", "old", "new", "new/old", "verdict")
    rows = []
    failed = False
    for (device, job), configs in sorted(runs.items()):
        old, new = configs.get("envcryptold", []), configs.get("envcrypt", [])
        if not old or not new or len(old) != len(new):
            rows.append((f"{device} {job}", f"{len(old)} runs", f"{len(new)} runs", "-", "missing"))
            failed = True
            continue
        mo, mn = statistics.median(old), statistics.median(new)
        v = verdict(job, mo, mn, max(spread(old), spread(new)))
        failed |= v == "worse"
        rows.append((f"{device} {job}", f"{mo:.1f} ({spread(old):.0%})", f"{mn:.1f} ({spread(new):.0%})",
                     f"{mn / mo:.2f}" if mo else "-", v))
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    rule = "  ".join("=" * w for w in widths)
    print(rule)
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print(rule)
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    print(rule)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
