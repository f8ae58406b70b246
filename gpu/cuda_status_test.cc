#include "gpu/cuda_status.h"

#include <gtest/gtest.h>

namespace kvrecall {
namespace {

// Needs the CUDA runtime library (linked statically), not a GPU.
TEST(CudaStatus, MapsByMeaning) {
  EXPECT_TRUE(FromCudaError(cudaSuccess, "x").ok());
  EXPECT_EQ(FromCudaError(cudaErrorMemoryAllocation, "x").code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(FromCudaError(cudaErrorNoDevice, "x").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(FromCudaError(cudaErrorInsufficientDriver, "x").code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(FromCudaError(cudaErrorInvalidValue, "x").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FromCudaError(cudaErrorECCUncorrectable, "x").code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(FromCudaError(cudaErrorLaunchFailure, "x").code(), absl::StatusCode::kInternal);
  const absl::Status s = FromCudaError(cudaErrorMemoryAllocation, "cudaMalloc 1 GiB");
  EXPECT_EQ(s.message().substr(0, 45), "cudaMalloc 1 GiB: cudaErrorMemoryAllocation: ");
}

}  // namespace
}  // namespace kvrecall
