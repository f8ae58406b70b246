#!/usr/bin/python3
"""bench/results/retrieval.csv -> retrieval.png: mass recall vs K and latency vs context."""
import csv
import sys
from collections import defaultdict

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

src = sys.argv[1] if len(sys.argv) > 1 else "bench/results/retrieval.csv"
dst = sys.argv[2] if len(sys.argv) > 2 else "bench/results/retrieval.png"
rows = list(csv.DictReader(open(src)))
ntok = max(int(r["tokens"]) for r in rows)
fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
for ax, kind in zip(axes[:2], ["peaky", "flat"]):
    series = defaultdict(list)
    for r in rows:
        if r["head"] == kind and int(r["tokens"]) == ntok:
            series[r["method"]].append((float(r["frac"]) * 100, float(r["mass_recall"])))
    for m, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
    ax.set_xscale("log")
    ax.set_xlabel("K (% of context)")
    ax.set_ylabel("attention-mass recall")
    ax.set_title(f"{kind} heads, {ntok} tokens")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
lat = defaultdict(list)
for r in rows:
    if abs(float(r["frac"]) - 0.03) < 1e-9:
        lat[r["method"]].append((int(r["tokens"]), float(r["search_us"])))
ax = axes[2]
for m, pts in sorted(lat.items()):
    agg = defaultdict(list)
    for n, us in pts:
        agg[n].append(us)
    xs = sorted(agg)
    ax.plot(xs, [sum(agg[x]) / len(agg[x]) for x in xs], marker="o", label=m)
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("context tokens")
ax.set_ylabel("µs per query head, 1 thread (K = 3%)")
ax.set_title("search latency")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(dst, dpi=110)
print("wrote", dst)
