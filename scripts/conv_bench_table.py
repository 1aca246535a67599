#!/usr/bin/env python3
"""Turns the output of `cargo bench --bench conv` (stdout) into the README's markdown table:
median time of one apply + one adjoint, direct vs FFT, and FFT on blocks of 8 per vector.

Usage: cargo bench --bench conv | tee conv.log; python3 scripts/conv_bench_table.py conv.log
"""
import re
import sys

UNITS = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}
rows = {}
name = None
for line in open(sys.argv[1], encoding="utf-8"):
    m = re.match(r"conv_apply_adjoint/(direct|fft|fft_block8)/(\S+)", line.strip())
    if m:
        name = m.groups()
        continue
    m = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", line)
    if m and name:
        ms = float(m.group(1)) * UNITS[m.group(2)]
        kind, shape = name
        if kind == "fft_block8":
            ms /= 8
        rows.setdefault(shape, {})[kind] = ms
        name = None

def fmt(v):
    return "—" if v is None else (f"{v:.3g} ms" if v >= 0.1 else f"{v * 1e3:.3g} µs")

print("| layer | direct | FFT | FFT, block of 8 (per vector) | FFT ÷ direct | block ÷ direct |")
print("|---|---:|---:|---:|---:|---:|")
for shape, r in rows.items():
    d, f, b = r.get("direct"), r.get("fft"), r.get("fft_block8")
    ratio = lambda x: "—" if (x is None or d is None) else f"{d / x:.2f}×"
    print(f"| {shape} | {fmt(d)} | {fmt(f)} | {fmt(b)} | {ratio(f)} | {ratio(b)} |")
