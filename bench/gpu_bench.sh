#!/usr/bin/env bash
# Regenerates bench/results/gpu_bench.{md,csv} on a machine with an NVIDIA GPU:
# one command. Without a GPU it says so and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
out=bench/results
bazel run -c opt --config=cuda --ui_event_filters=-info --noshow_progress //bench:gpu_bench -- --out "$out" "$@"
{
  echo "# GPU kernels: achieved bandwidth against the device's copy bandwidth"
  echo
  echo "- date: $(date -u +%Y-%m-%d)"
  echo "- machine: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1), host $(nproc)-core $(uname -m)"
  echo "- command: \`bash bench/gpu_bench.sh $*\` (= \`bazel run -c opt --config=cuda //bench:gpu_bench -- --out bench/results\`)"
  echo "- bytes: what each kernel must read + write once (codes, scales, tables' misses not counted; K/V rows of every"
  echo "  query for attention); the ceiling is a 1 GiB device-to-device cudaMemcpy counted the same way (read + write)."
  echo "  Gather is against a pinned cudaMemcpy of the same bytes (contiguous), the gather reads 3% of the rows at random."
  echo "- targets (issue #8): scoring and attention >= 0.60 of the copy at 128K+ tokens; gather >= 0.70 of pinned memcpy."
  echo "  \`a2ats_select\` is latency (its GB/s counts 5 passes over the codes per query head: the radix rounds + marking)."
  echo
  cat "$out/gpu_bench.md.part"
} > "$out/gpu_bench.md"
rm -f "$out/gpu_bench.md.part"
echo "wrote $out/gpu_bench.md"
