// The one conversion from cudaError_t to absl::Status. Host code only; built
// with --config=cuda.
#ifndef KVRECALL_GPU_CUDA_STATUS_H_
#define KVRECALL_GPU_CUDA_STATUS_H_

#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace kvrecall {

// cudaSuccess -> ok. Out of memory -> RESOURCE_EXHAUSTED; no device or
// driver -> UNAVAILABLE; bad arguments -> INVALID_ARGUMENT; unsupported ->
// UNIMPLEMENTED; launch timeout -> DEADLINE_EXCEEDED; uncorrectable ECC ->
// DATA_LOSS; else INTERNAL. Message: "<context>: <cudaErrorName>: <text>".
absl::Status FromCudaError(cudaError_t error, absl::string_view context);

}  // namespace kvrecall

// Evaluates a CUDA runtime call; returns its error as a Status.
#define KVR_CUDA_RETURN_IF_ERROR(call)                                          \
  do {                                                                          \
    cudaError_t kvr_cuda_err_ = (call);                                         \
    if (kvr_cuda_err_ != cudaSuccess) return ::kvrecall::FromCudaError(kvr_cuda_err_, #call); \
  } while (0)

#endif  // KVRECALL_GPU_CUDA_STATUS_H_
