// Test helpers for the CUDA kernel tests: skip without a usable GPU, and
// copy vectors to and from device memory (failures are test failures).
#ifndef KVRECALL_GPU_CUDA_TEST_UTIL_H_
#define KVRECALL_GPU_CUDA_TEST_UTIL_H_

#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include <gtest/gtest.h>

#include "gpu/device_probe.h"

#define KVR_REQUIRE_GPU()                                                         \
  do {                                                                            \
    auto info = ::kvrecall::ProbeGpu();                                           \
    if (!info.ok()) GTEST_SKIP() << "no usable GPU: " << info.status().message(); \
  } while (0)

namespace kvrecall {

template <typename T>
T* Upload(const T* h, size_t n) {
  T* d = nullptr;
  EXPECT_EQ(cudaMalloc(&d, std::max<size_t>(1, n) * sizeof(T)), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(d, h, n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return d;
}

template <typename T>
T* Upload(const std::vector<T>& h) {
  return Upload(h.data(), h.size());
}

template <typename T>
std::vector<T> Download(const T* d, size_t n) {
  std::vector<T> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

}  // namespace kvrecall

#endif  // KVRECALL_GPU_CUDA_TEST_UTIL_H_
