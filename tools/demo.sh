#!/usr/bin/env bash
# The main job: installs what is needed, builds, and runs the kvrecall demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bazel run -c opt --color=no --curses=no --ui_event_filters=-info,-stdout,-stderr --noshow_progress \
  //engine:demo -- "$@"
