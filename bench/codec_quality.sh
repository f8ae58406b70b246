#!/usr/bin/env bash
# Regenerates bench/results/codec_quality.{md,csv,png}: one command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
out=bench/results
bazel run -c opt --ui_event_filters=-info --noshow_progress //bench:codec_quality -- --out_dir "$out" "$@"
{
  echo "# Codec quality"
  echo
  echo "- date: $(date -u +%Y-%m-%d)"
  echo "- machine: $(nproc)-core $(uname -m) $(. /etc/os-release; echo "$PRETTY_NAME"), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "- command: \`bash bench/codec_quality.sh $*\` (= \`bazel run -c opt //bench:codec_quality -- --out_dir bench/results\`)"
  echo "- data: stories260K traces (8 stories, 5 layers x 4 KV heads, head_dim 8), the squat_qk sample (1 head, 32 tokens,"
  echo "  128-d, keys only), the synthetic generator (3 seeds x peaky/flat KV head, 4096 tokens, 128-d, 4 query heads);"
  echo "  Δppl on the first 100 TinyStories with the codec streaming in every layer (engine/codec_cache.h)."
  echo "- metrics (codec/metrics.h): relative Frobenius error of K and V; attention-output relative error and attention"
  echo "  L1 per query of exact causal attention with decoded K/V vs exact K/V, averaged over query heads."
  echo "- bits: everything counted (codes, scales, low-rank factors, outliers with indices, SQuat's per-head subspace,"
  echo "  block header). 128-d bits are the chunk-level numbers; stories blocks have head_dim 8, where per-token"
  echo "  value groups cover only 8 channels and cost more metadata. KV B/token includes the f16 residual window."
  echo "- CommVQ rows train their codebooks per dataset on other data of the same source (stories 980-999; the synthetic"
  echo "  head's next 8,192 tokens) and count codes + per-layer f16 prescales (codebooks are fixed per-model state, not"
  echo "  in the bits). Values use greedy residual VQ, not the paper's learned value encoder. squat_qk (32 keys) can"
  echo "  not calibrate a codebook: –."
  echo
  cat "$out/codec_quality.md.part"
} > "$out/codec_quality.md"
rm -f "$out/codec_quality.md.part"
/usr/bin/python3 bench/plot_codec_quality.py "$out/codec_quality.csv" "$out/codec_quality.png"
echo "wrote $out/codec_quality.md"
