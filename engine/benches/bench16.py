#!/usr/bin/env python3
"""Runs `herd engine bench` on the bench16 config several times per dtype and prints the median,
min and max of each figure as a Markdown table (for docs/benchmarks.md).

Usage: python3 engine/benches/bench16.py [--runs 5] [--threads 2] [--herd target/release/herd]
"""
import argparse, json, os, statistics, subprocess

ap = argparse.ArgumentParser()
ap.add_argument("--runs", type=int, default=5)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--herd", default="target/release/herd")
ap.add_argument("--config", default="engine/benches/bench16/config.json")
ap.add_argument("--dtypes", default="f32,bf16,f16")
ap.add_argument("--batch", default="1,4,16")
a = ap.parse_args()

env = dict(os.environ, HERD_THREADS=str(a.threads))
print("| dtype | batch | prefill tok/s (median, min–max) | decode tok/s (median, min–max) | peak RSS MiB | weights MiB |")
print("|---|---|---|---|---|---|")
for dt in a.dtypes.split(","):
    runs = []
    for _ in range(a.runs):
        out = subprocess.run([a.herd, "engine", "bench", "--config", a.config, "--dtype", dt, "--batch", a.batch],
                             env=env, check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out))
    for i, b in enumerate(runs[0]["results"]):
        pre = [r["results"][i]["prefill_tokens_per_s"] for r in runs]
        dec = [r["results"][i]["decode_tokens_per_s"] for r in runs]
        rss = max(r["peak_rss_bytes"] for r in runs) / 2**20
        w = runs[0]["weight_bytes"] / 2**20
        f = lambda xs: f"{statistics.median(xs):.0f} ({min(xs):.0f}–{max(xs):.0f})"
        print(f"| {dt} | {b['batch']} | {f(pre)} | {f(dec)} | {rss:.0f} | {w:.0f} |")
