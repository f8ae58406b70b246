// Prints what ProbeGpu() sees: `bazel run --config=cuda //gpu:gpu_info`.
#include <cstdio>

#include "gpu/device_probe.h"

int main() {
  absl::StatusOr<kvrecall::GpuInfo> info = kvrecall::ProbeGpu();
  if (!info.ok()) {
    std::printf("%s\n", info.status().ToString().c_str());
    return 1;
  }
  std::printf("devices %d; device 0: %s sm_%d%d, %d SMs, %.1f GiB (%.1f free), runtime %d driver %d\n",
              info->device_count, info->name.c_str(), info->cc_major, info->cc_minor,
              info->multiprocessors, info->total_memory_bytes / 1073741824.0,
              info->free_memory_bytes / 1073741824.0, info->runtime_version, info->driver_version);
  return 0;
}
