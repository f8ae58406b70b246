#include <cuda_runtime.h>

#include "gpu/gather_commvq_kernels.h"

namespace kvrecall {
namespace {

__global__ void GatherKernel(const uint16_t* src, const int32_t* rows, int n, int row_elems, uint16_t* dst) {
  const int64_t total = static_cast<int64_t>(n) * row_elems;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e / row_elems, c = e % row_elems;
    dst[e] = src[static_cast<int64_t>(rows[i]) * row_elems + c];
  }
}

// One warp per token; lane l covers pairs l, l + 32, ...
__global__ void CommVqScoreKernel(CommVqScoreArgs a) {
  const int64_t warp = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= a.n) return;
  const int E = 1 << a.digit_bits, P = a.pairs;
  const uint16_t* codes = a.codes + warp * a.stages;
  float sum = 0;
  for (int p = lane; p < P; p += 32) {
    float re = 0, im = 0;
    for (int r = 0; r < a.stages; ++r) {
      const int code = codes[r];
      const float* ta = a.table + ((static_cast<int64_t>(r) * E + (code >> a.digit_bits)) * 4) * P;
      const float* tb = a.table + ((static_cast<int64_t>(r) * E + (code & (E - 1))) * 4) * P;
      re += ta[p] + tb[2 * P + p];       // X_A + (−Y_B)
      im += ta[P + p] + tb[3 * P + p];   // Y_A + X_B
    }
    float c = 1.0f, s = 0.0f;
    if (a.rotate) sincosf(static_cast<float>(warp) / a.rope_scaling * a.inv_freq[p], &s, &c);
    sum += re * c - im * s;
  }
  for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
  if (lane == 0) a.scores[warp] = sum * a.norms[warp] * a.inv_sqrt_d;
}

}  // namespace

int LaunchGatherRows(const uint16_t* src_mapped, const int32_t* rows, int n, int row_elems, uint16_t* dst,
                     void* stream) {
  const int64_t total = static_cast<int64_t>(n) * row_elems;
  if (total == 0) return cudaSuccess;
  const int threads = 256;
  const int blocks = static_cast<int>((total + threads - 1) / threads < 65535 ? (total + threads - 1) / threads : 65535);
  GatherKernel<<<blocks, threads, 0, static_cast<cudaStream_t>(stream)>>>(src_mapped, rows, n, row_elems, dst);
  return cudaGetLastError();
}

int LaunchCommVqScore(const CommVqScoreArgs& a, void* stream) {
  if (a.n == 0) return cudaSuccess;
  const int threads = 256;  // 8 tokens per block
  const int64_t blocks = (a.n * 32 + threads - 1) / threads;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  CommVqScoreKernel<<<static_cast<unsigned>(blocks), threads, 0, static_cast<cudaStream_t>(stream)>>>(a);
  return cudaGetLastError();
}

}  // namespace kvrecall
