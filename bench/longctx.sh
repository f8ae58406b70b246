#!/usr/bin/env bash
# Regenerates bench/results/longctx.{md,csv}: a 1M-token sequence through a
# RetrievalSession (attend and gather modes; --modes, --server) against exact
# CPU attention.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
out=bench/results
bazel run -c opt --ui_event_filters=-info --noshow_progress //bench:longctx -- --out_dir "$out" "$@" \
  2> >(grep -v '^WARNING clustering' >&2)
{
  echo "# Long context: a RetrievalSession over a million tokens"
  echo
  echo "- date: $(date -u +%Y-%m-%d)"
  echo "- machine: $(nproc)-core $(uname -m) $(. /etc/os-release; echo "$PRETTY_NAME"), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "- command: \`bash bench/longctx.sh $*\` (= \`bazel run -c opt //bench:longctx -- --out_dir bench/results\`)"
  echo "- data: the synthetic generator (codec/synthetic_kv.h, seed 1), Llama-3.1-like RoPE scaling; decode queries"
  echo "  just past the context. Recall and output error against exact attention over all tokens (f32), per query head."
  echo "- attend: the store computes each query head's attention over the selected rows (output + LSE), merged with the"
  echo "  local part; gather: the store returns the selected K/V rows and attention runs in the session. Bytes moved ="
  echo "  payload the store returns; full attention reads every token's K and V (f16)."
  echo "- store: the embedded one, or with --server a kvrecall-server child process over UCX on loopback (its"
  echo "  attention on worker threads, one per core)."
  echo "- reference: exact CPU attention over all tokens held in RAM as f32, on every core (KV heads split over"
  echo "  threads; --ref_threads), each KV head's query heads in one pass over its K and V (codec/attention.h"
  echo "  AttendGroup), timed right after each session step; the ratio is the median per-step ratio."
  echo
  cat "$out/longctx.md.part"
} > "$out/longctx.md"
rm -f "$out/longctx.md.part"
echo "wrote $out/longctx.md"
/usr/bin/python3 bench/plot_longctx.py "$out/longctx.csv" "$out/longctx.png"
