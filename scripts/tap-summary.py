#!/usr/bin/python3
"""Counts the results of every suite's TAP 13 output.

Usage: tap-summary.py RESULTS_DIR SUITE...  (reads SUITE.tap, SUITE.rc and
SUITE.seconds, and lanes.txt when it exists)
Only top-level test lines count (indented subtests are the suite's own
detail).  A suite whose exit status is non-zero without a failing test line,
or whose plan does not match its test lines, counts as one more failure.
Prints a table (with each suite's wall-clock seconds), lanes.txt's lines
(when the suites ran in lanes, each lane's time: what CI's time limit
is about), then "N skipped", then the closing "N passed, N failed".
Exit status: 0 when nothing failed.
"""
import re
import sys

TEST = re.compile(r"^(not ok|ok)\b(.*)$")
PLAN = re.compile(r"^1\.\.(\d+)")
SKIP = re.compile(r"#\s*SKIP", re.IGNORECASE)


def count(results_dir, suite):
    passed = failed = skipped = 0
    plan = None
    with open(f"{results_dir}/{suite}.tap", errors="replace") as tap:
        for line in tap:
            if plan is None and (m := PLAN.match(line)):
                plan = int(m.group(1))
            m = TEST.match(line)
            if not m:
                continue
            if m.group(1) == "not ok":
                failed += 1
            elif SKIP.search(m.group(2)):
                skipped += 1
            else:
                passed += 1
    with open(f"{results_dir}/{suite}.rc") as rc_file:
        rc = int(rc_file.read().strip() or 1)
    notes = []
    if rc != 0 and failed == 0:
        failed += 1
        notes.append(f"exited {rc} without a failing test line")
    ran = passed + failed + skipped
    if plan is not None and plan != ran and not notes:
        failed += 1
        notes.append(f"plan 1..{plan} but {ran} results")
    if plan is None and not notes:
        failed += 1
        notes.append("no TAP plan")
    return passed, failed, skipped, notes


def read_or(path, default):
    try:
        with open(path, errors="replace") as f:
            return f.read().strip() or default
    except OSError:
        return default


def main():
    results_dir, suites = sys.argv[1], sys.argv[2:]
    totals = [0, 0, 0]
    width = max([40] + [len(suite) for suite in suites])
    print(f"{'suite':{width}} {'passed':>7} {'failed':>7} {'skipped':>8} {'seconds':>8}")
    for suite in suites:
        passed, failed, skipped, notes = count(results_dir, suite)
        totals = [totals[0] + passed, totals[1] + failed, totals[2] + skipped]
        extra = f"  ({'; '.join(notes)})" if notes else ""
        seconds = read_or(f"{results_dir}/{suite}.seconds", "?")
        print(f"{suite:{width}} {passed:7} {failed:7} {skipped:8} {seconds:>8}{extra}")
    lanes = read_or(f"{results_dir}/lanes.txt", "")
    if lanes:
        print(lanes)
    print(f"{totals[2]} skipped")
    print(f"{totals[0]} passed, {totals[1]} failed")
    return 1 if totals[1] else 0


if __name__ == "__main__":
    sys.exit(main())
