// Is there a usable GPU? Used by GPU tests (to GTEST_SKIP) and benchmarks.
// The CUDA build (--config=cuda) asks the runtime; the CPU build always
// answers UNAVAILABLE. Thread-safe.
#ifndef KVRECALL_GPU_DEVICE_PROBE_H_
#define KVRECALL_GPU_DEVICE_PROBE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace kvrecall {

struct GpuInfo {
  int device_count = 0;
  // Device 0:
  std::string name;
  int cc_major = 0;
  int cc_minor = 0;
  uint64_t total_memory_bytes = 0;
  uint64_t free_memory_bytes = 0;
  int multiprocessors = 0;
  int runtime_version = 0;
  int driver_version = 0;
};

// UNAVAILABLE with the reason ("built without CUDA", "no CUDA device: ...",
// "CUDA driver version is insufficient ...") when no GPU can be used.
absl::StatusOr<GpuInfo> ProbeGpu();

// True if this binary was built with CUDA support.
bool BuiltWithCuda();

}  // namespace kvrecall

#endif  // KVRECALL_GPU_DEVICE_PROBE_H_
