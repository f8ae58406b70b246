#!/usr/bin/env bash
# A kvrecall cluster on loopback: etcd + N kvrecall-server processes, each
# with its own data directory, registered in etcd.
#
#   deploy/local/cluster.sh start [N=3]   # prints the addresses, returns when all are ready
#   deploy/local/cluster.sh status
#   deploy/local/cluster.sh stop          # SIGTERM: servers drain and deregister; then etcd
#
# State (pids, logs, data) in $KVRECALL_CLUSTER_DIR (default /tmp/kvrecall-cluster).
# Ports: etcd $KVRECALL_ETCD_PORT (default 23790) and +1; server i: 7400+10i (UCX),
# +1 (gRPC), +2 (metrics). Namespace "demo" with token $KVRECALL_TOKEN (default
# demo-token-123456), admin token $KVRECALL_ADMIN_TOKEN (default admin-token-123456).
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${KVRECALL_CLUSTER_DIR:-/tmp/kvrecall-cluster}
etcd_port=${KVRECALL_ETCD_PORT:-23790}
token=${KVRECALL_TOKEN:-demo-token-123456}
admin=${KVRECALL_ADMIN_TOKEN:-admin-token-123456}
cmd=${1:-}

stop() {
  [ -d "$dir" ] || return 0
  for f in "$dir"/server-*.pid; do
    [ -f "$f" ] || continue
    kill -TERM "$(cat "$f")" 2>/dev/null || true
  done
  for f in "$dir"/server-*.pid; do
    [ -f "$f" ] || continue
    for _ in $(seq 50); do kill -0 "$(cat "$f")" 2>/dev/null || break; sleep 0.1; done
    rm -f "$f"
  done
  if [ -f "$dir/etcd.pid" ]; then
    kill -TERM "$(cat "$dir/etcd.pid")" 2>/dev/null || true
    rm -f "$dir/etcd.pid"
  fi
  echo "cluster stopped"
}

case "$cmd" in
  start)
    n=${2:-3}
    stop >/dev/null
    mkdir -p "$dir"
    bazel build -c opt --ui_event_filters=-info --noshow_progress //store:kvrecall-server
    bin=$(bazel info -c opt bazel-bin 2>/dev/null)/store/kvrecall-server
    rm -rf "$dir/etcd-data"
    etcd --name default --data-dir "$dir/etcd-data" \
      --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
      --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
      --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
      --initial-cluster "default=http://127.0.0.1:$((etcd_port + 1))" >"$dir/etcd.log" 2>&1 &
    echo $! >"$dir/etcd.pid"
    for _ in $(seq 100); do
      ETCDCTL_API=3 etcdctl --endpoints="127.0.0.1:$etcd_port" endpoint health >/dev/null 2>&1 && break
      sleep 0.1
    done
    echo "etcd        127.0.0.1:$etcd_port"
    for i in $(seq 0 $((n - 1))); do
      port=$((7400 + 10 * i))
      mkdir -p "$dir/server-$i"
      "$bin" --port=$port --grpc_port=$((port + 1)) --metrics_port=$((port + 2)) \
        --host_bytes=268435456 --ssd_path="$dir/server-$i/ssd" --ssd_bytes=1073741824 \
        --admin_token="$admin" --namespace_spec="demo:$token:268435456:demo-salt" \
        --etcd="127.0.0.1:$etcd_port" >"$dir/server-$i.log" 2>&1 &
      echo $! >"$dir/server-$i.pid"
    done
    for i in $(seq 0 $((n - 1))); do
      for _ in $(seq 100); do grep -q "ready" "$dir/server-$i.log" 2>/dev/null && break; sleep 0.1; done
      grep "ready" "$dir/server-$i.log" >/dev/null || { echo "server $i did not start:"; cat "$dir/server-$i.log"; stop; exit 1; }
      sed -n 's/^kvrecall-server ready \(data=[^ ]*\) \(grpc=[^ ]*\) \(metrics=[^ ]*\).*/server-'"$i"'    \1 \2 \3/p' "$dir/server-$i.log"
    done
    echo "members:    $(ETCDCTL_API=3 etcdctl --endpoints="127.0.0.1:$etcd_port" get --prefix --keys-only /kvrecall/members/ | grep -c . || true)"
    echo "namespace:  demo (token $token, salt demo-salt); state in $dir"
    ;;
  status)
    for f in "$dir"/*.pid; do
      [ -f "$f" ] || continue
      if kill -0 "$(cat "$f")" 2>/dev/null; then echo "$(basename "$f" .pid): running"; else echo "$(basename "$f" .pid): dead"; fi
    done
    ETCDCTL_API=3 etcdctl --endpoints="127.0.0.1:$etcd_port" get --prefix --keys-only /kvrecall/members/ 2>/dev/null | grep . || true
    ;;
  stop) stop ;;
  *) echo "usage: $0 start [N] | status | stop" >&2; exit 2 ;;
esac
