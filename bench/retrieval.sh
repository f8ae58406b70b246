#!/usr/bin/env bash
# Regenerates bench/results/retrieval.{md,csv,png}: one command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
out=bench/results
bazel run -c opt --ui_event_filters=-info --noshow_progress //bench:retrieval -- --out_dir "$out" "$@" 2> >(grep -v '^WARNING clustering' >&2)
{
  echo "# Retrieval: selected-set recall against exact attention, and search latency"
  echo
  echo "- date: $(date -u +%Y-%m-%d)"
  echo "- machine: $(nproc)-core $(uname -m) $(. /etc/os-release; echo "$PRETTY_NAME"), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "- command: \`bash bench/retrieval.sh $*\` (= \`bazel run -c opt //bench:retrieval -- --out_dir bench/results\`)"
  echo "- data: synthetic 128-d heads (codec/synthetic_kv.h), seeds 1..3, one peaky and one flat KV head with 4 query heads"
  echo "  each; 8 decode queries per head just past the context. Calibration (A²ATS k-means and H, PQ codebooks, IVF)"
  echo "  on the first 65,536 tokens' keys and queries. Selection = 4 sinks + 64-token window + union over the 4 query"
  echo "  heads of each head's top-K (K = fraction of the context)."
  echo "- metrics: top-K recall |S ∩ TopK(p)| / |S| and attention-mass recall Σ_{i∈S} p_i per query head (p = exact"
  echo "  attention), and the relative error of exact attention over S vs over all tokens; latency per query head"
  echo "  (scoring + top-K for ours, \`search\` for FAISS), one thread; FAISS also with all threads."
  echo "- needles found: (needle, decode query) pairs whose planted key (8 per KV head, each aimed at one query head)"
  echo "  is in the selection; the run's log lists them per needle by distance."
  echo "- peers: FAISS IndexPQ (M=2 x 6 bits = 12-bit codes, inner product) and IndexIVFPQ (1024 lists, nprobe 64, same"
  echo "  codes) over the same post-RoPE keys; \`pq\` is the PQCache-style scorer on FAISS's ProductQuantizer; \`commvq\` is"
  echo "  the CommVQ key codebook (2 RoPE-commutative stages of 12 bits + a 16-bit norm) scored from codes with each token's"
  echo "  RoPE rotation (codec/commvq.h), trained on the same calibration keys."
  echo "- threads: \"all threads\" is SelectTokens with scoring split over all cores (ours; top-K selection stays on one"
  echo "  thread) and FAISS search with OpenMP on all cores."
  echo
  cat "$out/retrieval.md.part"
} > "$out/retrieval.md"
rm -f "$out/retrieval.md.part"
/usr/bin/python3 bench/plot_retrieval.py "$out/retrieval.csv" "$out/retrieval.png"
echo "wrote $out/retrieval.md"
