#!/usr/bin/env python3
"""Runs `herd engine bench --concurrency C` (the continuous-batching scheduler on the bench16 config)
for several concurrencies, interleaved round by round so that a noisy spell on the machine hits all of
them alike, and prints a Markdown table of medians (min–max) plus the ratio of steady decode
throughput at the highest concurrency to the single-sequence figure, per round.

Usage: python3 engine/benches/serving.py [--rounds 5] [--concurrency 1,4,8,16] [--herd target/release/herd]
"""
import argparse, json, os, statistics, subprocess

ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=5)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--herd", default="target/release/herd")
ap.add_argument("--config", default="engine/benches/bench16/config.json")
ap.add_argument("--concurrency", default="1,4,8,16")
ap.add_argument("--prompt", type=int, default=128)
ap.add_argument("--new", type=int, default=64)
a = ap.parse_args()

env = dict(os.environ, HERD_THREADS=str(a.threads))
levels = [int(c) for c in a.concurrency.split(",")]
runs = {c: [] for c in levels}
for _ in range(a.rounds):
    for c in levels:
        out = subprocess.run([a.herd, "engine", "bench", "--config", a.config, "--concurrency", str(c),
                              "--requests", str(2 * c), "--prompt", str(a.prompt), "--new", str(a.new)],
                             env=env, check=True, capture_output=True, text=True).stdout
        runs[c].append(json.loads(out))

def cell(c, key, fmt="{:.0f}"):
    v = [r[key] for r in runs[c]]
    return f"{fmt.format(statistics.median(v))} ({fmt.format(min(v))}–{fmt.format(max(v))})"

print("| concurrency | output tok/s (whole run) | decode tok/s | TTFT p50 ms | inter-token p50 / p99 ms | KV blocks peak | peak RSS MiB |")
print("|---|---|---|---|---|---|---|")
for c in levels:
    r0 = runs[c][0]
    itl50 = statistics.median(r["itl_ms_p50"] for r in runs[c])
    itl99 = statistics.median(r["itl_ms_p99"] for r in runs[c])
    rss = max(r["peak_rss_bytes"] or 0 for r in runs[c]) / 2**20
    print(f"| {c} | {cell(c, 'output_tokens_per_s')} | {cell(c, 'decode_tokens_per_s')} | {cell(c, 'ttft_ms_p50')} "
          f"| {itl50:.1f} / {itl99:.1f} | {r0['kv_blocks_peak']} | {rss:,.0f} |")
lo, hi = levels[0], levels[-1]
ratios = [h["decode_tokens_per_s"] / l["decode_tokens_per_s"] for l, h in zip(runs[lo], runs[hi])]
print()
print(f"decode at {hi} / decode at {lo}, per round: " + ", ".join(f"{r:.2f}" for r in ratios)
      + f"; median {statistics.median(ratios):.2f}; ratio of medians "
      + f"{statistics.median(r['decode_tokens_per_s'] for r in runs[hi]) / statistics.median(r['decode_tokens_per_s'] for r in runs[lo]):.2f}")
