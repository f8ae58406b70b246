#!/usr/bin/python3
"""Plots bench/results/codec_quality.csv -> codec_quality.png (Debian's matplotlib)."""
import csv
import math
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

src = sys.argv[1] if len(sys.argv) > 1 else "bench/results/codec_quality.csv"
dst = sys.argv[2] if len(sys.argv) > 2 else "bench/results/codec_quality.png"
rows = list(csv.DictReader(open(src)))

def family(spec):
    name = spec.split(":")[0]
    if name == "qwc" and "budget" in spec:
        return "qwc (allocator)"
    return name

colors = {"kivi": "tab:blue", "qwc": "tab:orange", "qwc (allocator)": "tab:brown", "gear": "tab:green",
          "gear_l": "tab:olive", "squat": "tab:red", "f16": "black"}
fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
panels = [("k_bits", "synth_out_rel", "synthetic 128-d heads (3 seeds x peaky/flat)\nattention-output relative error", True),
          ("stories_bits", "stories_out_rel", "stories260K traces (d=8)\nattention-output relative error", True),
          ("stream_bits", "dppl", "stories260K, streaming in every layer (100 stories)\nΔ perplexity vs exact", False)]
for ax, (xk, yk, title, logy) in zip(axes, panels):
    for r in rows:
        try:
            if xk == "k_bits":
                x = (float(r["k_bits"]) + float(r["v_bits"])) / 2
            elif xk == "stream_bits":
                # Streaming cache bytes per token over the 320 K+V elements per token, f16 window included.
                x = float(r["kv_bytes"]) * 8 / 320
            else:
                x = float(r[xk])
            y = float(r[yk])
        except ValueError:
            continue
        if math.isnan(x) or math.isnan(y) or (logy and y <= 0) or r["spec"] == "f16":
            continue
        f = family(r["spec"])
        ax.scatter(x, y, color=colors.get(f, "gray"), s=28)
        label = r["spec"].split(":", 1)[1] if ":" in r["spec"] else r["spec"]
        ax.annotate(f.split(" ")[0][:5] + " " + label[:22], (x, y), fontsize=6, alpha=0.75,
                    xytext=(3, 2), textcoords="offset points")
    ax.set_xlabel("bits per element (K+V mean, metadata included)" if xk != "stream_bits"
                  else "bits per element in the streaming cache (f16 window included)")
    ax.set_title(title, fontsize=10)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=f) for f, c in colors.items() if f != "f16"]
axes[0].legend(handles=handles, fontsize=8)
fig.suptitle("kvrecall codecs: quality against bits per element", fontsize=12)
fig.tight_layout()
fig.savefig(dst, dpi=110)
print("wrote", dst)
