#!/usr/bin/python3
"""bench/results/longctx.csv -> longctx.png: per-step latency broken down and bytes moved per step, by mode."""
import csv
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

src = sys.argv[1] if len(sys.argv) > 1 else "bench/results/longctx.csv"
dst = sys.argv[2] if len(sys.argv) > 2 else "bench/results/longctx.png"
rows = list(csv.DictReader(open(src)))
names = {"attend": "attend\n(store computes)", "attend f16": "attend, f16 blocks\n(store computes)", "attend 4-bit": "attend, 4-bit KIVI\n(store computes)", "gather": "gather\n(rows returned)", "full": "full attention\n(CPU, exact)"}
labels = [names.get(r["mode"], r["mode"]) for r in rows]
sel = [float(r["select_ms"]) for r in rows]
fetch = [float(r["fetch_ms"]) for r in rows]
att = [float(r["attend_ms"]) for r in rows]
fig, ax = plt.subplots(1, 2, figsize=(11, 4))
ax[0].bar(labels, sel, label="select (score + top-K)")
ax[0].bar(labels, fetch, bottom=sel, label="fetch (store side)")
ax[0].bar(labels, att, bottom=[a + b for a, b in zip(sel, fetch)], label="attend + merge (local)")
ax[0].set_ylabel("ms per decode step")
ax[0].set_title("per-step latency")
ax[0].legend(fontsize=8)
for i, r in enumerate(rows):
    ax[0].text(i, float(r["step_ms"]), f'{float(r["step_ms"]):.0f} ms', ha="center", va="bottom", fontsize=8)
ax[1].bar(labels, [max(float(r["bytes"]), 1) for r in rows], color=["tab:green", "tab:orange", "gray"][: len(rows)])
ax[1].set_yscale("log")
ax[1].set_ylabel("bytes per decode step")
ax[1].set_title("bytes moved (attend: output + LSE; full: every K/V row)")
for i, r in enumerate(rows):
    if r["mode"] != "full":
        ax[1].text(i, float(r["bytes"]), f'mass recall {float(r["mass_recall"]):.2f}', ha="center", va="bottom", fontsize=8)
fig.tight_layout()
fig.savefig(dst, dpi=110)
print("wrote", dst)
