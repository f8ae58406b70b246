#!/usr/bin/env bash
# A million tokens through a kvrecall-server at several host-tier sizes, in
# time order and as one code-sorted segment (the whole prefill sorted by
# code, --segment_blocks 1023 = every full block of 1024 tokens), f16 and
# 4-bit blocks: how much of an attend step's time the layout and the SSD
# tier's share of the sequence cost. Writes bench/results/longctx_sweep.{md,csv,png}.
#   bash bench/longctx_sweep.sh [--compose DIR]   (DIR: runs already made)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${TMPDIR:-/tmp}/longctx_sweep
if [[ "${1:-}" == "--compose" ]]; then
  runs=$2
else
  bash tools/setup.sh
  bazel build -c opt --ui_event_filters=-info --noshow_progress //bench:longctx //store:kvrecall-server
  bin=$(mktemp -d)  # copies: a later bazel build must not swap binaries under a long run
  cp bazel-bin/bench/longctx "$bin/"
  mkdir -p "$bin/store" && cp bazel-bin/store/kvrecall-server "$bin/store/"
  shared=$(cd ..; pwd)/shared
  # name | flags
  configs=("f16-256|--host_mib 256" "f16-256-sorted|--host_mib 256 --segment_blocks 1023"
           "f16-1536|--host_mib 1536" "f16-1536-sorted|--host_mib 1536 --segment_blocks 1023"
           "f16-2560-sorted|--host_mib 2560 --segment_blocks 1023"
           "f16-2560-sorted-3pct|--host_mib 2560 --segment_blocks 1023 --topk 0.03"
           "kivi4-256-sorted|--host_mib 256 --codec kivi:bits=4 --segment_blocks 1023")
  rm -rf "$runs"
  for c in "${configs[@]}"; do
    name=${c%%|*}; flags=${c#*|}
    mkdir -p "$runs/$name"
    echo "[longctx_sweep] $name: $flags" >&2
    # shellcheck disable=SC2086
    (cd "$bin" && KVRECALL_SHARED=${KVRECALL_SHARED:-$shared} ./longctx --steps 6 --block 1024 --server \
       --modes attend --out_dir "$runs/$name" $flags > "$runs/$name/stdout" 2> "$runs/$name/stderr")
    echo "$flags" > "$runs/$name/flags"
  done
fi
/usr/bin/python3 bench/compose_longctx_sweep.py "$runs" bench/results
