#!/usr/bin/env python3
"""Turns the output of `cargo bench --bench conv_norm 2>&1` into the README's table: per case
the interval's width, certificate, stop reason, matvecs, and time (criterion median when the
case was timed, else the single run's seconds).

Usage: cargo bench --bench conv_norm 2>&1 | tee cn.log; python3 scripts/conv_norm_table.py cn.log
"""
import re
import sys

UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
cases, medians, name = {}, {}, None
for line in open(sys.argv[1], encoding="utf-8"):
    m = re.match(r"conv_norm (\S+): \[(\S+), (\S+)\] width (\S+) (\S+) stop (\S+) iterations (\d+) matvecs (\d+) (\S+)s", line)
    if m:
        cases[m.group(1)] = m.groups()[1:]
        continue
    m = re.match(r"conv_norm/(\S+)\s*$", line.strip())
    if m:
        name = m.group(1)
        continue
    m = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", line)
    if m and name:
        medians[name] = float(m.group(1)) * UNITS[m.group(2)]
        name = None

print("| case | interval | width | certificate | stop | matvecs | time |")
print("|---|---|---:|---|---|---:|---:|")
for case, (lo, up, width, cert, stop, its, mv, secs) in cases.items():
    t = medians.get(case)
    time = f"{t:.3g} s (median)" if t is not None else f"{float(secs):.3g} s (one run)"
    print(f"| {case} | [{lo}, {up}] | {width} | {cert} | {stop} | {mv} | {time} |")
