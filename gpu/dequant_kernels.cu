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

// m + delta * code of element (head h, token r, channel c).
__device__ __forceinline__ float DequantElem(const DequantRowsArgs& a, int h, int r, int c) {
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
  return __half2float(s[0]) + __half2float(s[1]) * static_cast<float>(code);
}

// One thread per output element (head, selected row, channel).
__global__ void DequantRowsKernel(DequantRowsArgs a) {
  const int64_t total = static_cast<int64_t>(a.heads) * a.num_rows * a.dim;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int c = static_cast<int>(e % a.dim);
    const int i = static_cast<int>((e / a.dim) % a.num_rows);
    const int h = static_cast<int>(e / (static_cast<int64_t>(a.dim) * a.num_rows));
    reinterpret_cast<__half*>(a.out)[e] = __float2half_rn(DequantElem(a, h, a.rows[i], c));
  }
}

__device__ __forceinline__ uint32_t LoadU32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
__device__ __forceinline__ float LoadHalf(const uint8_t* p) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(p[0] | p[1] << 8)));
}

// One thread block per (head, selected row); threads over channels. The row
// is assembled in shared memory (f32), outliers written over it, then
// rounded to f16 once.
__global__ void GearRowsKernel(GearRowsArgs g) {
  extern __shared__ float row[];  // [dim]
  __shared__ float u[kGearMaxRank];
  __shared__ uint32_t range[2];
  const DequantRowsArgs& a = g.base;
  const int i = blockIdx.x, h = blockIdx.y;
  const int t = a.rows[i], d = a.dim, r = g.rank;
  const uint8_t* uh = g.lowrank + static_cast<int64_t>(h) * r * (a.tokens + d) * 2;
  const uint8_t* vh = uh + static_cast<int64_t>(a.tokens) * r * 2;
  for (int j = threadIdx.x; j < r; j += blockDim.x) u[j] = LoadHalf(uh + 2 * (static_cast<int64_t>(t) * r + j));
  const uint8_t* ol = g.outliers + g.outlier_heads[h];
  const uint32_t count = LoadU32(ol);
  const uint8_t* idx = ol + 4;
  const uint8_t* val = idx + 4 * static_cast<int64_t>(count);
  if (threadIdx.x < 2) {  // thread 0: first cell >= t*d; thread 1: first cell >= (t+1)*d
    const uint32_t bound = static_cast<uint32_t>(t + threadIdx.x) * static_cast<uint32_t>(d);
    uint32_t lo = 0, hi = count;
    while (lo < hi) {
      const uint32_t mid = (lo + hi) / 2;
      if (LoadU32(idx + 4 * static_cast<int64_t>(mid)) < bound) lo = mid + 1; else hi = mid;
    }
    range[threadIdx.x] = lo;
  }
  __syncthreads();
  for (int c = threadIdx.x; c < d; c += blockDim.x) {
    float s = 0;
    for (int j = 0; j < r; ++j) s += u[j] * LoadHalf(vh + 2 * (static_cast<int64_t>(c) * r + j));
    row[c] = DequantElem(a, h, t, c) + s;
  }
  __syncthreads();
  for (uint32_t k = range[0] + threadIdx.x; k < range[1]; k += blockDim.x) {
    row[LoadU32(idx + 4 * static_cast<int64_t>(k)) % static_cast<uint32_t>(d)] = LoadHalf(val + 2 * static_cast<int64_t>(k));
  }
  __syncthreads();
  __half* out = reinterpret_cast<__half*>(a.out) + (static_cast<int64_t>(h) * a.num_rows + i) * d;
  for (int c = threadIdx.x; c < d; c += blockDim.x) out[c] = __float2half_rn(row[c]);
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

int LaunchGearDequantizeRows(const GearRowsArgs& g, void* stream) {
  const DequantRowsArgs& a = g.base;
  if (a.heads == 0 || a.num_rows == 0) return cudaSuccess;
  if (g.rank < 0 || g.rank > kGearMaxRank || a.dim < 1 || a.dim > kGearMaxDim ||
      a.heads > 65535) {
    return cudaErrorInvalidValue;
  }
  const int threads = a.dim >= 128 ? 128 : 64;
  GearRowsKernel<<<dim3(a.num_rows, a.heads), threads, a.dim * sizeof(float), static_cast<cudaStream_t>(stream)>>>(g);
  return cudaGetLastError();
}

bool GearOutlierHeadOffsets(const uint8_t* s, uint64_t size, int heads, uint64_t cells, uint64_t* offsets) {
  uint64_t off = 0;
  for (int h = 0; h < heads; ++h) {
    if (size - off < 4) return false;
    const uint32_t cnt = uint32_t(s[off]) | uint32_t(s[off + 1]) << 8 | uint32_t(s[off + 2]) << 16 |
                         uint32_t(s[off + 3]) << 24;
    if (cnt > cells || (size - off - 4) / 6 < cnt) return false;
    offsets[h] = off;
    off += 4 + 6 * uint64_t(cnt);
  }
  return off == size;
}

}  // namespace kvrecall
