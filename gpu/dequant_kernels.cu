#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "gpu/dequant_kernels.h"

namespace kvrecall {
namespace {

__device__ __forceinline__ uint32_t Code(const uint8_t* p, int64_t bit, int bits) {
  const int64_t byte = bit >> 3;
  const int shift = static_cast<int>(bit & 7);
  uint32_t w = p[byte];
  if (shift + bits > 8) w |= static_cast<uint32_t>(p[byte + 1]) << 8;  // the code spans two bytes
  return (w >> shift) & ((1u << bits) - 1u);
}

// One thread per output element (head, selected row, channel).
__global__ void DequantRowsKernel(DequantRowsArgs a) {
  const int64_t total = static_cast<int64_t>(a.heads) * a.num_rows * a.dim;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int c = static_cast<int>(e % a.dim);
    const int i = static_cast<int>((e / a.dim) % a.num_rows);
    const int h = static_cast<int>(e / (static_cast<int64_t>(a.dim) * a.num_rows));
    const int r = a.rows[i];
    const int64_t elem = (static_cast<int64_t>(h) * a.tokens + r) * a.dim + c;
    const uint32_t code = Code(a.codes, elem * a.bits, a.bits);
    int64_t pair;
    if (a.per_channel) {
      const int groups = (a.tokens + a.group - 1) / a.group;
      pair = (static_cast<int64_t>(h) * groups + r / a.group) * a.dim + c;
    } else {
      const int g = a.group < a.dim ? a.group : a.dim;  // a group wider than the head covers the head
      const int groups = (a.dim + g - 1) / g;
      pair = (static_cast<int64_t>(h) * a.tokens + r) * groups + c / g;
    }
    const __half* s = reinterpret_cast<const __half*>(a.scales) + 2 * pair;
    const float x = __half2float(s[0]) + __half2float(s[1]) * static_cast<float>(code);
    reinterpret_cast<__half*>(a.out)[e] = __float2half_rn(x);
  }
}

}  // namespace

int LaunchDequantizeRows(const DequantRowsArgs& a, void* stream) {
  const int64_t total = static_cast<int64_t>(a.heads) * a.num_rows * a.dim;
  if (total == 0) return cudaSuccess;
  const int threads = 256;
  const int blocks = static_cast<int>((total + threads - 1) / threads < 65535 ? (total + threads - 1) / threads : 65535);
  DequantRowsKernel<<<blocks, threads, 0, static_cast<cudaStream_t>(stream)>>>(a);
  return cudaGetLastError();
}

}  // namespace kvrecall
