#include <cuda_runtime.h>

#include "gpu/probe_kernel.h"

namespace kvrecall {
namespace {
__global__ void ProbeKernel(int* out) { *out = 0x6b76; }
}  // namespace

int LaunchProbeKernel() {
  int* d = nullptr;
  cudaError_t err = cudaMalloc(&d, sizeof(int));
  if (err != cudaSuccess) return err;
  ProbeKernel<<<1, 1>>>(d);
  err = cudaGetLastError();
  int h = 0;
  if (err == cudaSuccess) err = cudaMemcpy(&h, d, sizeof(int), cudaMemcpyDeviceToHost);
  cudaFree(d);
  if (err == cudaSuccess && h != 0x6b76) err = cudaErrorUnknown;
  return err;
}

}  // namespace kvrecall
