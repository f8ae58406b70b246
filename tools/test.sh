#!/usr/bin/env bash
# Installs what is needed, builds everything and runs every test; ends with
# one line "N passed, N failed, N skipped" counting GoogleTest test cases.
# Extra arguments go to `bazel test` (e.g. a target pattern).
set -uo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh || exit 1

# Real data (model, stories, fixtures) lives in ../shared beside the clone;
# tests that need it skip, saying so, where it is absent.
if [ -z "${KVRECALL_SHARED:-}" ] && [ -d ../shared ]; then
  export KVRECALL_SHARED="$(cd ../shared && pwd)"
fi

# Build the CUDA code too where nvcc exists: it compiles without a GPU, and
# kernel tests GTEST_SKIP when no device is present.
CONFIG=()
[ -x /usr/local/cuda/bin/nvcc ] && CONFIG=(--config=cuda)
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(//...)

LOG=$(mktemp)
bazel test "${CONFIG[@]}" --keep_going --color=no --curses=no --test_output=errors \
  "${TARGETS[@]}" </dev/null 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
/usr/bin/python3 .ci/bazel_test_summary.py "$LOG" bazel-testlogs
rm -f "$LOG"
# bazel exit codes: 0 ok, 1 build failed, 3 tests failed, 4 no tests found.
exit "$rc"
