#!/usr/bin/python3
"""bench/results/cluster_bench.md -> cluster_bench.png: LookupPrefix latency and Save/Load GB/s by cluster size."""
import re
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

src = sys.argv[1] if len(sys.argv) > 1 else "bench/results/cluster_bench.md"
dst = sys.argv[2] if len(sys.argv) > 2 else "bench/results/cluster_bench.png"
rows = []
for line in open(src):
    m = re.match(r"\| (\d+) server\(s\) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", line)
    if m:
        rows.append([float(x) for x in m.groups()])
ttft = {}
for line in open(src):
    m = re.match(r"\s+(no kvrecall|kvrecall, cold store|kvrecall, warm store)\s.*TTFT\s+([\d.]+) ms", line)
    if m:
        ttft[m.group(1)] = float(m.group(2))
fig, ax = plt.subplots(1, 3, figsize=(13, 3.8))
labels = [f"{int(r[0])} server(s)" for r in rows]
ax[0].bar(labels, [r[2] for r in rows], label="p50")
ax[0].bar(labels, [r[3] - r[2] for r in rows], bottom=[r[2] for r in rows], alpha=0.5, label="p99")
ax[0].set_ylabel("µs")
ax[0].set_title("LookupPrefix, 64-block chain")
ax[0].legend()
x = range(len(rows))
ax[1].bar([i - 0.2 for i in x], [r[4] for r in rows], width=0.4, label="Save")
ax[1].bar([i + 0.2 for i in x], [r[5] for r in rows], width=0.4, label="Load")
ax[1].set_xticks(list(x))
ax[1].set_xticklabels(labels)
ax[1].set_ylabel("GB/s")
ax[1].set_title("batches of 16 x 64 KiB, 4 threads")
ax[1].legend()
if ttft:
    ax[2].bar(list(ttft.keys()), list(ttft.values()), color=["gray", "tab:orange", "tab:green"][: len(ttft)])
    ax[2].set_ylabel("ms")
    ax[2].set_title("time to first token, 3-server cluster")
    ax[2].tick_params(axis="x", labelsize=7)
fig.tight_layout()
fig.savefig(dst, dpi=110)
print("wrote", dst)
