#!/usr/bin/python3
"""Turns the benchmark's raw results into build/bench/results.csv,
results.md and results.png.

Usage: report.py BENCH_DIR KVER...
Reads BENCH_DIR/<kver>/fio/<device>-<config>-<job>-<run>.json and
BENCH_DIR/<kver>/xtsbench.txt and BENCH_DIR/<kver>/helper-timings.txt
(envcryptctl attach and attach-all of 32 disks).  Every value is the median of the runs; the
Markdown also shows the spread ((max - min) / median) and the ratios of
envcrypt to both dm-crypt configurations, and checks the performance
targets (targets(), Documentation/performance.rst).
"""
import csv
import glob
import json
import os
import re
import statistics
import subprocess
import sys

CONFIGS = ["raw", "dmcrypt", "dmcrypt-nowq", "envcrypt"]
JOBS = ["seqwrite", "seqread", "randread-qd1", "randread-qd32", "randwrite-qd32", "mixed-qd32"]
FIELDS = ["kernel", "device", "config", "job", "mb_per_s", "iops", "lat_p50_us", "lat_p99_us", "runs"]
NAME = re.compile(r"^(brd|virtio)-(raw|dmcrypt-nowq|dmcrypt|envcrypt)-(.+)-(\d+)\.json$")


def fio_sample(path):
    """(MB/s, IOPS, p50 us, p99 us) of one fio run; latency of reads when
    the job reads at all, else of writes."""
    with open(path) as f:
        job = json.load(f)["jobs"][0]
    mbps = (job["read"]["bw_bytes"] + job["write"]["bw_bytes"]) / 1e6
    iops = job["read"]["iops"] + job["write"]["iops"]
    side = job["read"] if job["read"]["io_bytes"] else job["write"]
    pct = side["lat_ns"].get("percentile", {})
    p50 = pct.get("50.000000", 0) / 1000.0
    p99 = pct.get("99.000000", 0) / 1000.0
    return mbps, iops, p50, p99


def load_kernel(bench_dir, kver):
    samples = {}
    for path in glob.glob(f"{bench_dir}/{kver}/fio/*.json"):
        m = NAME.match(os.path.basename(path))
        if not m:
            continue
        device, config, job, _ = m.groups()
        samples.setdefault((device, config, job), []).append(fio_sample(path))
    crypto = {}
    with open(f"{bench_dir}/{kver}/xtsbench.txt") as f:
        for line in f:
            # The all-CPU line's fields are kept apart: all_cpus_<key>.
            prefix = "all_cpus_" if "all_cpus=" in line else ""
            for token in line.split():
                if "=" in token:
                    k, v = token.split("=", 1)
                    crypto[k if k == "all_cpus" else prefix + k] = v
    return samples, crypto


def median_row(values):
    cols = list(zip(*values))
    return [statistics.median(c) for c in cols]


def spread(values, index):
    col = [v[index] for v in values]
    med = statistics.median(col)
    return (max(col) - min(col)) / med if med else 0.0


def build_rows(kver, samples, crypto):
    rows = []
    devices = sorted({d for d, _, _ in samples})
    per_core = float(crypto["mb_per_s"])
    cpus = int(crypto["nr_cpus"])
    unit_us = int(crypto["ns_per_unit"]) / 1000.0
    for device in devices:
        for config in CONFIGS:
            for job in JOBS:
                values = samples.get((device, config, job))
                if not values:
                    continue
                mbps, iops, p50, p99 = median_row(values)
                rows.append(dict(kernel=kver, device=device, config=config, job=job,
                                 mb_per_s=round(mbps, 1), iops=round(iops),
                                 lat_p50_us=round(p50, 1), lat_p99_us=round(p99, 1),
                                 runs=len(values)))
        limit = round(per_core * cpus, 1)
        for job in ("seqwrite", "seqread"):
            rows.append(dict(kernel=kver, device=device, config="crypto-limit", job=job,
                             mb_per_s=limit, iops=round(limit * 1e6 / 2**20), lat_p50_us="",
                             lat_p99_us="", runs=1))
        raw = samples.get((device, "raw", "randread-qd1"))
        if raw:
            floor = median_row(raw)[2] + unit_us
            rows.append(dict(kernel=kver, device=device, config="crypto-limit",
                             job="randread-qd1", mb_per_s="", iops="",
                             lat_p50_us=round(floor, 1), lat_p99_us="", runs=len(raw)))
    return rows


def find(rows, device, config, job):
    for r in rows:
        if r["device"] == device and r["config"] == config and r["job"] == job:
            return r
    return None


def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "-"


def markdown(kver, rows, samples, crypto):
    out = [f"## Linux {kver}", "",
           f"Crypto: `{crypto['driver']}`, one 4 KiB unit {int(crypto['ns_per_unit']) / 1000:.1f} us, "
           f"{crypto['mb_per_s']} MB/s per core x {crypto['nr_cpus']} vCPUs." +
           (f" Measured on all {crypto['all_cpus']} vCPUs at once: {crypto['all_cpus_mb_per_s']} MB/s."
            if "all_cpus_mb_per_s" in crypto else ""), ""]
    for device in sorted({r["device"] for r in rows}):
        out += [f"### {device}", "",
                "| job | metric | raw | dm-crypt | dm-crypt nowq | envcrypt | envcrypt/dm-crypt "
                "| envcrypt/nowq | limit | spread (envcrypt) |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for job in JOBS:
            metric = "lat_p50_us" if job == "randread-qd1" else "mb_per_s"
            cells = []
            for config in CONFIGS:
                r = find(rows, device, config, job)
                cells.append(r[metric] if r else "-")
            limit = find(rows, device, "crypto-limit", job)
            env = samples.get((device, "envcrypt", job))
            sp = f"{spread(env, 2 if metric == 'lat_p50_us' else 0):.0%}" if env else "-"
            out.append(f"| {job} | {'p50 us' if metric == 'lat_p50_us' else 'MB/s'} | "
                       + " | ".join(str(c) for c in cells)
                       + f" | {ratio(cells[3], cells[1]) if cells[3] != '-' else '-'}"
                       + f" | {ratio(cells[3], cells[2]) if cells[3] != '-' else '-'}"
                       + f" | {limit[metric] if limit else '-'} | {sp} |")
        out += [""] + targets(rows, device) + [""]
    return out


def helper_timings(bench_dir, kver):
    """Markdown lines for the helper's timings, median and range of the runs;
    none when the file is missing (an older or --quick run)."""
    path = f"{bench_dir}/{kver}/helper-timings.txt"
    if not os.path.exists(path):
        return []
    runs = {}
    with open(path) as f:
        for line in f:
            what, ms = line.split()
            runs.setdefault(what, []).append(int(ms))
    out = ["### envcryptctl (local KMS, warm)", "",
           "| operation | median ms | min ms | max ms | runs |", "|---|---|---|---|---|"]
    for what, values in runs.items():
        out.append(f"| {what} | {statistics.median(values):.0f} | {min(values)} | {max(values)} "
                   f"| {len(values)} |")
    return out + [""]


def targets(rows, device):
    """The performance targets, each with its verdict."""
    lines = []

    def check(text, ok):
        lines.append(f"- {'met' if ok else 'MISSED'}: {text}")

    for job in JOBS:
        if job == "randread-qd1":
            continue
        e, d = find(rows, device, "envcrypt", job), find(rows, device, "dmcrypt", job)
        if e and d:
            check(f"{job}: envcrypt {e['mb_per_s']} MB/s >= dm-crypt {d['mb_per_s']} MB/s",
                  e["mb_per_s"] >= d["mb_per_s"])
    e = find(rows, device, "envcrypt", "randread-qd1")
    n = find(rows, device, "dmcrypt-nowq", "randread-qd1")
    f = find(rows, device, "crypto-limit", "randread-qd1")
    if e and n:
        check(f"QD1 p50 {e['lat_p50_us']} us <= dm-crypt nowq {n['lat_p50_us']} us",
              e["lat_p50_us"] <= n["lat_p50_us"])
    if e and f:
        check(f"QD1 p50 {e['lat_p50_us']} us within 10% of the floor {f['lat_p50_us']} us",
              e["lat_p50_us"] <= 1.1 * f["lat_p50_us"])
    for job in ("seqwrite", "seqread"):
        e, lim = find(rows, device, "envcrypt", job), find(rows, device, "crypto-limit", job)
        if e and lim:
            check(f"{job}: {e['mb_per_s']} MB/s within 10% of the crypto limit {lim['mb_per_s']} MB/s",
                  e["mb_per_s"] >= 0.9 * lim["mb_per_s"])
    return lines


def chart(bench_dir, rows):
    """results.png: MB/s of the throughput jobs and QD1 p50 latency, per
    configuration, for every kernel and device."""
    data = os.path.join(bench_dir, "chart.dat")
    groups = sorted({(r["kernel"], r["device"]) for r in rows})
    with open(data, "w") as f:
        for kernel, device in groups:
            for job in JOBS:
                vals = []
                for config in CONFIGS:
                    r = find([x for x in rows if x["kernel"] == kernel], device, config, job)
                    metric = "lat_p50_us" if job == "randread-qd1" else "mb_per_s"
                    vals.append(str(r[metric]) if r else "0")
                f.write(f'"{kernel.split("-")[0]} {device} {job}" {" ".join(vals)}\n')
    script = f"""
set terminal pngcairo size 1600,900 font ",9"
set output "{bench_dir}/results.png"
set multiplot layout 2,1
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set xtics rotate by -30 scale 0
set key outside right top
# Log scale: raw devices run 10 to 40 times faster than any encrypted
# configuration, which would flatten the bars that matter.
set logscale y
set yrange [1:*]
set ylabel "MB/s (log scale)"
set title "Throughput (median)"
plot "< grep -v randread-qd1 {data}" using 2:xtic(1) title "raw", '' using 3 title "dm-crypt", '' using 4 title "dm-crypt nowq", '' using 5 title "envcrypt"
unset logscale y
set yrange [0:*]
set ylabel "p50 latency (us)"
set title "4k random read QD1 latency (median p50)"
plot "< grep randread-qd1 {data}" using 2:xtic(1) title "raw", '' using 3 title "dm-crypt", '' using 4 title "dm-crypt nowq", '' using 5 title "envcrypt"
unset multiplot
"""
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as err:
        print(f"report: no chart ({err})", file=sys.stderr)


def main():
    bench_dir, kernels = sys.argv[1], sys.argv[2:]
    rows, md = [], ["# envcrypt benchmark", ""]
    for kver in kernels:
        samples, crypto = load_kernel(bench_dir, kver)
        krows = build_rows(kver, samples, crypto)
        rows += krows
        md += markdown(kver, krows, samples, crypto)
        md += helper_timings(bench_dir, kver)
    with open(f"{bench_dir}/results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    with open(f"{bench_dir}/results.md", "w") as f:
        f.write("\n".join(md) + "\n")
    chart(bench_dir, rows)
    print("\n".join(md))


if __name__ == "__main__":
    main()
