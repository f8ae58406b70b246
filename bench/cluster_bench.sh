#!/usr/bin/env bash
# Regenerates bench/results/cluster_bench.md: the client against 1 and 3 servers
# (deploy/local/cluster.sh), and the demo's shared-prefix workload (TTFT cold vs
# warm) against 3 servers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
out=bench/results/cluster_bench.md
bazel build -c opt --ui_event_filters=-info --noshow_progress //bench:cluster_bench //engine:demo
bin=$(bazel info -c opt bazel-bin 2>/dev/null)
trap 'bash deploy/local/cluster.sh stop >/dev/null' EXIT
rows=""
for n in 1 3; do
  bash deploy/local/cluster.sh start "$n" >/dev/null
  rows+=$("$bin/bench/cluster_bench" --label "$n server(s)")$'\n'
  if [ "$n" = 3 ]; then demo=$("$bin/engine/demo" --etcd 127.0.0.1:23790 2>&1 | sed -n '/\[prefix sharing\]/,$p'); fi
  bash deploy/local/cluster.sh stop >/dev/null
done
{
  echo "# Cluster: the client against kvrecall-server nodes registered in etcd"
  echo
  echo "- date: $(date -u +%Y-%m-%d)"
  echo "- machine: $(nproc)-core $(uname -m) $(. /etc/os-release; echo "$PRETTY_NAME"), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "- command: \`bash bench/cluster_bench.sh\` (deploy/local/cluster.sh: etcd + N servers on loopback, UCX default"
  echo "  transports, 256 MiB host tier + SSD tier each; the client finds them through etcd)"
  echo "- LookupPrefix: one 64-block chain (keys spread over the servers by rendezvous hashing), 300 calls;"
  echo "  Save/Load: 4 threads, batches of 16 ~64 KiB f16 blocks over a 64 MiB working set (fits the host tiers), 2 s"
  echo "  each; everything on the same 2 cores."
  echo
  echo "| run | servers | LookupPrefix p50 µs | p99 µs | Save GB/s | Load GB/s |"
  echo "|---|---|---|---|---|---|"
  printf "%s" "$rows"
  echo
  echo "Time to first token on the demo's shared-prefix workload against the 3-server cluster"
  echo "(\`bazel run -c opt //engine:demo -- --etcd 127.0.0.1:23790\`):"
  echo
  echo '```'
  echo "$demo"
  echo '```'
} > "$out"
/usr/bin/python3 bench/plot_cluster_bench.py "$out" bench/results/cluster_bench.png
cat "$out"
