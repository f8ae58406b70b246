#!/usr/bin/env bash
# Regenerates bench/results/store_bench.{md,csv,png}: one command.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
out=bench/results
bazel run -c opt --ui_event_filters=-info --noshow_progress //bench:store_bench -- --out_dir "$out" "$@"
{
  echo "# Store: put/get over UCX on loopback, against ucx_perftest and Redis (same run)"
  echo
  echo "- date: $(date -u +%Y-%m-%d)"
  echo "- machine: $(nproc)-core $(uname -m) $(. /etc/os-release; echo "$PRETTY_NAME"), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "- command: \`bash bench/store_bench.sh $*\` (= \`bazel run -c opt //bench:store_bench -- --out_dir bench/results\`)"
  echo "- path: StoreStub -> UCX active messages (UCX_TLS=tcp or shm,self; loopback) -> StoreService -> BlockStore host"
  echo "  tier (1 GiB arena, LRU); blocks are f16 block containers of the given size, verified by the server on put and"
  echo "  on every get and by the client on receipt (XXH3-64 over each block, twice per get). The server runs in the"
  echo "  benchmark process with its default two progress threads (UCP workers; lanes are spread over them) and"
  echo "  arena backed at start; requesters are threads sharing one client transport, each driving a lane of its own"
  echo "  (UCP worker + endpoint). 1.5 s per configuration; GB/s = block bytes moved / wall time."
  echo "- UCX settings: kvrecall's defaults (common/ucx_transport.h UcxTuning: with tcp alone, rendezvous from 256 KiB),"
  echo "  applied to ucx_perftest too."
  echo "- ceiling: ucx_perftest ucp_am_bw (bandwidth) and ucp_am_lat (one-way latency, us) at the same size and UCX_TLS."
  echo "- peer: redis-server 7 on loopback (no persistence), SET/GET of the same bytes, one TCP connection per requester,"
  echo "  RESP over plain sockets (no client library copies beyond recv)."
  echo "- all processes share the same 2 cores: client threads, the server's progress threads, perftest or Redis."
  echo
  cat "$out/store_bench.md.part"
} > "$out/store_bench.md"
rm -f "$out/store_bench.md.part"
/usr/bin/python3 bench/plot_store_bench.py "$out/store_bench.csv" "$out/store_bench.png"
echo "wrote $out/store_bench.md"
