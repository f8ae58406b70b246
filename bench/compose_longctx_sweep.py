#!/usr/bin/python3
"""Runs of bench/longctx_sweep.sh -> longctx_sweep.{md,csv,png}: attend-step latency against exact CPU attention
over a million tokens, by block codec and host-tier size."""
import csv
import os
import re
import subprocess
import sys
import datetime

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

runs, out = sys.argv[1], sys.argv[2]
rows = []
for name in sorted(os.listdir(runs)):
    d = os.path.join(runs, name)
    md = os.path.join(d, "longctx.md.part")
    if not os.path.exists(md):
        md = os.path.join(d, "stdout")
    text = open(md).read()
    m = re.search(r"step: ([0-9.]+)x the time.*?steps of the step's wall time, ([0-9.]+) ms median, divided by exact "
                  r"attention for the same step timed right after it, ([0-9.]+) ms median", text, re.S)
    seq = re.search(r"Sequence: (\d+) tokens.*?\(codec ([^)]+)\).*?: (\d+) MiB host tier", text, re.S)
    heads = re.search(r"(\d+) KV heads x (\d+) query heads, head_dim (\d+)", text)
    per_tok = re.search(r"offloaded blocks (\d+) B", text)
    hits = re.search(r"the store per step: (\d+) host-tier hits, (\d+) SSD-tier hits, ([0-9.]+) promotions", text)
    table = [l for l in text.splitlines() if l.startswith("| attend")]
    if not (m and seq and per_tok and table and heads):
        print(f"compose: {name}: no result", file=sys.stderr)
        continue
    cells = [c.strip() for c in table[0].strip("|").split("|")]
    tokens, codec, host_mib = int(seq.group(1)), seq.group(2), int(seq.group(3))
    seg = re.search(r"code-sorted segments of (\d+) blocks", text)
    topk = re.search(r"top-K = ([0-9.]+)% of the offloaded tokens", text)
    layout = f"code-sorted, {seg.group(1)}-block segments" if seg else "time order"
    kv_bytes = tokens * int(per_tok.group(1))
    # Blocks read from the SSD tier per step, as the store counted them (the host
    # tier holds fewer blocks than its size over theirs: size classes round up).
    ssd_share = int(hits.group(2)) / (int(hits.group(1)) + int(hits.group(2))) if hits else \
        max(0.0, 1 - host_mib * 2**20 / kv_bytes)
    rows.append(dict(codec=codec, layout=layout, host_mib=host_mib, kv_mib=kv_bytes / 2**20,
                     ssd_share=ssd_share, promotions=float(hits.group(3)) if hits else -1,
                     step_ms=float(m.group(2)), ref_ms=float(m.group(3)), ratio=float(m.group(1)),
                     select_ms=float(cells[2]), fetch_ms=float(cells[3]), attend_ms=float(cells[4]),
                     mass_recall=float(cells[9]), out_err=float(cells[11]), tokens=tokens,
                     topk_pct=float(topk.group(1)) if topk else 1.0, rows_per_step=float(cells[5]),
                     # f32 K and V of every token and KV head, read once per reference step
                     ref_gbps=tokens * int(heads.group(1)) * int(heads.group(3)) * 2 * 4 / (float(m.group(3)) * 1e6)))
rows.sort(key=lambda r: (r["topk_pct"], r["codec"] != "f16", r["host_mib"], r["layout"] != "time order"))
with open(os.path.join(out, "longctx_sweep.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
    w.writeheader()
    w.writerows(rows)
cpu = subprocess.run("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2", shell=True, capture_output=True,
                     text=True).stdout.strip()
lines = [
    "# Long context: attend steps over a million tokens, by block layout and host-tier size",
    "",
    f"- date: {datetime.date.today().isoformat()}",
    f"- machine: {os.cpu_count()}-core x86_64 Debian 12, {cpu}",
    "- command: `bash bench/longctx_sweep.sh` (each run: `longctx --steps 6 --block 1024 --server --modes attend "
    "--host_mib N [--codec kivi:bits=4] [--segment_blocks 1023] [--topk 0.03]`; the per-run tables are below)",
    "- store: a `kvrecall-server` child process on loopback, host tier of the given size, SSD tier (RocksDB, page "
    "cache) for the rest. Blocks carry 256-byte chunk checksums: a step verifies the chunks of the rows it reads.",
    "- reference: exact CPU attention over all tokens in RAM as f32 on both cores (codec/attention.h AttendGroup, "
    "vectorized, all query heads of a KV head per pass over its K and V), timed right after each step; ratio = median of "
    "the per-step ratios. Its GB/s: the f32 K and V it reads per step over its median time.",
    "",
    "| top-K | blocks | layout | host tier | KV | blocks read from SSD | rows read / step | step (median) | "
    "exact attention (median) | reference GB/s | ratio | select ms | fetch ms | "
    "attend+merge ms | mass recall | output rel err |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
]
for r in rows:
    lines.append(f"| {r['topk_pct']:g}% | {r['codec']} | {r['layout']} | {r['host_mib']} MiB | {r['kv_mib']:.0f} MiB | {100 * r['ssd_share']:.0f}% | "
                 f"{r['rows_per_step']:,.0f} | {r['step_ms']:.1f} ms | {r['ref_ms']:.1f} ms | {r['ref_gbps']:.1f} | **{r['ratio']:.2f}x** | {r['select_ms']:.1f} | "
                 f"{r['fetch_ms']:.1f} | {r['attend_ms']:.1f} | {r['mass_recall']:.3f} | {r['out_err']:.3f} |")
lines += ["", "select/fetch/attend are means over the steps (the first step maps the SSD tier's files); step and "
          "reference are medians. Blocks read from SSD: the store's SSD-tier hits over all hits per step (no "
          "promotions: a step's Attend is a scan); the host tier holds fewer blocks than its size suggests because "
          "its size classes round a block up (a 520 KiB f16 block takes 576 KiB).", "", "![attend step vs exact attention by host tier](longctx_sweep.png)", ""]
for name in sorted(os.listdir(runs)):
    part = os.path.join(runs, name, "longctx.md.part")
    if os.path.exists(part):
        lines += [f"## Run `{name}`", "", open(part).read().strip(), ""]
open(os.path.join(out, "longctx_sweep.md"), "w").write("\n".join(lines) + "\n")

fig, ax = plt.subplots(figsize=(8, 4))
labels = [f"{r['codec']}{' sorted' if r['layout'] != 'time order' else ''}\n{r['host_mib']} MiB host\n({100 * r['ssd_share']:.0f}% on SSD)"
          + (f"\ntop-K {r['topk_pct']:g}%" if r['topk_pct'] != 1.0 else "") for r in rows]
x = range(len(rows))
ax.bar([i - 0.2 for i in x], [r["step_ms"] for r in rows], 0.4, label="attend step (kvrecall-server)")
ax.bar([i + 0.2 for i in x], [r["ref_ms"] for r in rows], 0.4, color="gray", label="exact CPU attention, 2 threads")
for i, r in enumerate(rows):
    ax.text(i - 0.2, r["step_ms"], f"{r['ratio']:.2f}x", ha="center", va="bottom", fontsize=8)
ax.set_xticks(list(x))
ax.set_xticklabels(labels, fontsize=8)
ax.set_ylabel("ms per decode step (median)")
ax.set_title(f"{rows[0]['tokens']:,} tokens: attend step vs exact attention")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(os.path.join(out, "longctx_sweep.png"), dpi=110)
print(f"wrote {out}/longctx_sweep.md")
