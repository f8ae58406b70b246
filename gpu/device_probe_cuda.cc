#include <cuda_runtime_api.h>

#include "absl/strings/str_cat.h"
#include "gpu/cuda_status.h"
#include "gpu/device_probe.h"
#include "gpu/probe_kernel.h"

namespace kvrecall {

absl::StatusOr<GpuInfo> ProbeGpu() {
  GpuInfo info;
  cudaError_t err = cudaGetDeviceCount(&info.device_count);
  if (err != cudaSuccess || info.device_count == 0) {
    return absl::UnavailableError(absl::StrCat(
        "no CUDA device: ", err == cudaSuccess ? "device count is 0" : cudaGetErrorString(err)));
  }
  cudaDeviceProp prop;
  KVR_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, 0));
  info.name = prop.name;
  info.cc_major = prop.major;
  info.cc_minor = prop.minor;
  info.multiprocessors = prop.multiProcessorCount;
  KVR_CUDA_RETURN_IF_ERROR(cudaSetDevice(0));
  size_t free_bytes = 0, total_bytes = 0;
  KVR_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes));
  info.free_memory_bytes = free_bytes;
  info.total_memory_bytes = total_bytes;
  cudaRuntimeGetVersion(&info.runtime_version);
  cudaDriverGetVersion(&info.driver_version);
  // A device that cannot run our sm_90 code is not usable.
  err = static_cast<cudaError_t>(LaunchProbeKernel());
  if (err != cudaSuccess) {
    return absl::UnavailableError(absl::StrCat("CUDA device ", info.name, " (sm_", prop.major,
                                               prop.minor, ") cannot run kvrecall kernels: ",
                                               cudaGetErrorString(err)));
  }
  return info;
}

bool BuiltWithCuda() { return true; }

}  // namespace kvrecall
