#include "gpu/device_probe.h"

namespace kvrecall {

absl::StatusOr<GpuInfo> ProbeGpu() {
  return absl::UnavailableError(
      "no GPU: kvrecall was built without CUDA (build with --config=cuda)");
}

bool BuiltWithCuda() { return false; }

}  // namespace kvrecall
