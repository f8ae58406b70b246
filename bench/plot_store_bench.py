#!/usr/bin/python3
"""bench/results/store_bench.csv -> store_bench.png: GB/s by block size for kvrecall, ucx_perftest and Redis."""
import csv
import sys
from collections import defaultdict

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

src = sys.argv[1] if len(sys.argv) > 1 else "bench/results/store_bench.csv"
dst = sys.argv[2] if len(sys.argv) > 2 else "bench/results/store_bench.png"
rows = list(csv.DictReader(open(src)))
panels = sorted({(r["transport"], r["op"]) for r in rows})
fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.2), squeeze=False)
order = {"64KiB": 0, "1MiB": 1, "8MiB": 2}
for ax, (tr, op) in zip(axes[0], panels):
    sizes = sorted({r["block"] for r in rows if r["transport"] == tr and r["op"] == op}, key=lambda s: order.get(s, 9))
    ours = defaultdict(dict)
    perf, redis = {}, defaultdict(dict)
    for r in rows:
        if r["transport"] != tr or r["op"] != op:
            continue
        ours[r["requesters"]][r["block"]] = float(r["gbps"])
        redis[r["requesters"]][r["block"]] = float(r["redis_gbps"])
        perf[r["block"]] = float(r["perftest_gbps"])
    x = range(len(sizes))
    ax.plot(x, [perf.get(s, 0) for s in sizes], "k--", marker="s", label="ucx_perftest (ceiling)")
    for n, d in sorted(ours.items(), key=lambda kv: int(kv[0])):
        ax.plot(x, [d.get(s, 0) for s in sizes], marker="o", label=f"kvrecall x{n}")
    for n, d in sorted(redis.items(), key=lambda kv: int(kv[0])):
        ax.plot(x, [d.get(s, 0) for s in sizes], marker="^", linestyle=":", label=f"redis x{n}")
    ax.set_xticks(list(x))
    ax.set_xticklabels(sizes)
    ax.set_ylabel("GB/s")
    ax.set_title(f"{op} over UCX {tr}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(dst, dpi=110)
print("wrote", dst)
