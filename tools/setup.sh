#!/usr/bin/env bash
# Installs every Debian package kvrecall needs to build, test, benchmark and
# run its demo. Idempotent and quiet: does nothing when all are present.
set -euo pipefail

PKGS=(
  # build
  bazel-bootstrap bazel-platforms bazel-skylib bazel-rules-proto pkg-config
  # libraries
  libucx-dev ucx-utils librocksdb-dev libabsl-dev libgrpc++-dev libprotobuf-dev
  protobuf-compiler protobuf-compiler-grpc libfaiss-dev libopenblas-dev
  libgtest-dev libgmock-dev libbenchmark-dev libxxhash-dev
  # fuzzing (libFuzzer runtime for clang; xxhsum for the container seed corpus)
  clang libclang-rt-14-dev xxhash
  # servers used by tests and benchmarks
  redis-server etcd-server etcd-client
  # plots and CI scripts
  python3 python3-matplotlib gnuplot-nox
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "setup: installing ${#missing[@]} Debian packages: ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
