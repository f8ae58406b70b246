#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>

#include "gpu/vq_topk_kernels.h"

namespace kvrecall {
namespace {

constexpr int kSelectThreads = 1024;

__device__ __forceinline__ uint32_t Code12(const uint8_t* p, int64_t i) {
  const int64_t bit = 12 * i;
  const int64_t byte = bit >> 3;
  const uint32_t w = p[byte] | (static_cast<uint32_t>(p[byte + 1]) << 8);
  return (w >> (bit & 7)) & 0xFFFu;
}

// Order-preserving map of a float onto uint32 (larger float, larger key).
__device__ __forceinline__ uint32_t Key(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__global__ void TableKernel(const float* y, const float* cent, int C, int d, float scale, float* table) {
  const int g = blockIdx.y;
  for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < C; c += gridDim.x * blockDim.x) {
    float s = 0;
    for (int j = 0; j < d; ++j) s += y[g * d + j] * cent[static_cast<int64_t>(c) * d + j];
    table[static_cast<int64_t>(g) * C + c] = s * scale;
  }
}

// Grid-stride over tokens; each thread scores its token for every query
// head of the group (the code is read once).
__global__ void ScoreKernel(const float* table, int group, int C, const uint8_t* codes, int64_t n, float* scores) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint32_t c = Code12(codes, i);
    for (int g = 0; g < group; ++g) scores[g * n + i] = __ldg(table + static_cast<int64_t>(g) * C + c);
  }
}

// Exclusive block scan of one flag per thread; returns this thread's
// prefix and writes the tile total to *total.
__device__ int BlockExclusiveScan(int flag, int* buf, int* total) {
  const int t = threadIdx.x;
  buf[t] = flag;
  __syncthreads();
  for (int off = 1; off < kSelectThreads; off <<= 1) {
    const int v = t >= off ? buf[t - off] : 0;
    __syncthreads();
    buf[t] += v;
    __syncthreads();
  }
  const int inclusive = buf[t];
  *total = buf[kSelectThreads - 1];
  __syncthreads();
  return inclusive - flag;
}

// One block per query head: exact K-th largest score among the middle
// tokens by 4 rounds of 8-bit radix selection, then marks every token above
// it and the first ties in index order (the CPU reference's rule).
__global__ void SelectKernel(VqSelectArgs a, int64_t begin, int64_t end, int64_t k) {
  const int g = blockIdx.x;
  const float* table = a.table + static_cast<int64_t>(g) * a.num_centroids;
  __shared__ int hist[256];
  __shared__ uint32_t prefix_s, mask_s;
  __shared__ int64_t remaining_s;
  __shared__ int scan_buf[kSelectThreads];
  if (threadIdx.x == 0) prefix_s = 0, mask_s = 0, remaining_s = k;
  __syncthreads();
  for (int pass = 0; pass < 4; ++pass) {
    const int shift = 24 - 8 * pass;
    for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0;
    __syncthreads();
    const uint32_t prefix = prefix_s, mask = mask_s;
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
      const uint32_t key = Key(table[Code12(a.codes, i)]);
      if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      int64_t cum = 0;
      for (int b = 255; b >= 0; --b) {
        if (cum + hist[b] >= remaining_s) {
          remaining_s -= cum;
          prefix_s |= static_cast<uint32_t>(b) << shift;
          mask_s |= 255u << shift;
          break;
        }
        cum += hist[b];
      }
    }
    __syncthreads();
  }
  const uint32_t kth = prefix_s;
  const int64_t take_ties = remaining_s;  // ties (key == kth) to take, in index order
  int64_t ties_seen = 0;
  for (int64_t base = begin; base < end; base += kSelectThreads) {
    const int64_t i = base + threadIdx.x;
    uint32_t key = 0;
    if (i < end) key = Key(table[Code12(a.codes, i)]);
    const int tie = i < end && key == kth;
    int tile_ties;
    const int before = BlockExclusiveScan(tie, scan_buf, &tile_ties);
    if (i < end && (key > kth || (tie && ties_seen + before < take_ties))) a.mask[i] = 1;
    ties_seen += tile_ties;
  }
}

// Sinks and window, then compaction of the mask into sorted ids (one block).
__global__ void CompactKernel(VqSelectArgs a, int64_t sink_end, int64_t window_begin) {
  __shared__ int scan_buf[kSelectThreads];
  int64_t written = 0;
  for (int64_t base = 0; base < a.n; base += kSelectThreads) {
    const int64_t i = base + threadIdx.x;
    const int on = i < a.n && (i < sink_end || i >= window_begin || a.mask[i]);
    int tile;
    const int before = BlockExclusiveScan(on, scan_buf, &tile);
    if (on) a.selected[written + before] = static_cast<int32_t>(i);
    written += tile;
  }
  if (threadIdx.x == 0) *a.num_selected = static_cast<int32_t>(written);
}

// One block per key: whitening in shared memory, then an argmin over the
// centroids (strided over threads, then a block reduction).
__global__ void EncodeKernel(const float* keys, int dim, const float* L, const float* cent, int C, uint16_t* out) {
  const int64_t r = blockIdx.x;
  extern __shared__ float w[];  // [dim]
  __shared__ float best_d[128];
  __shared__ int best_c[128];
  const float* k = keys + r * dim;
  for (int j = threadIdx.x; j < dim; j += blockDim.x) {
    float s = 0;
    for (int i = j; i < dim; ++i) s += k[i] * L[static_cast<int64_t>(i) * dim + j];
    w[j] = s;
  }
  __syncthreads();
  float bd = INFINITY;
  int bc = 0;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    float dist = 0;
    const float* cc = cent + static_cast<int64_t>(c) * dim;
    for (int j = 0; j < dim; ++j) {
      const float t = w[j] - cc[j];
      dist += t * t;
    }
    if (dist < bd) bd = dist, bc = c;  // strided order: lowest index wins ties within a thread
  }
  best_d[threadIdx.x] = bd, best_c[threadIdx.x] = bc;
  __syncthreads();
  for (int off = blockDim.x / 2; off > 0; off >>= 1) {
    if (threadIdx.x < off) {
      const float od = best_d[threadIdx.x + off];
      const int oc = best_c[threadIdx.x + off];
      if (od < best_d[threadIdx.x] || (od == best_d[threadIdx.x] && oc < best_c[threadIdx.x])) {
        best_d[threadIdx.x] = od, best_c[threadIdx.x] = oc;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) out[r] = static_cast<uint16_t>(best_c[0]);
}

// One thread per output byte of the packed range: new bits from the codes
// being written, old bits kept where the byte is shared with other codes.
__global__ void PackKernel(const uint16_t* codes, int64_t start, int64_t m, uint8_t* packed) {
  const int64_t first = (12 * start) >> 3, last = (12 * (start + m) - 1) >> 3;
  for (int64_t b = first + blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b <= last;
       b += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint32_t byte = packed[b];
    for (int bit = 0; bit < 8; ++bit) {
      const int64_t gbit = 8 * b + bit;
      const int64_t ci = gbit / 12;
      if (ci < start || ci >= start + m) continue;
      const uint32_t v = (codes[ci - start] >> (gbit % 12)) & 1u;
      byte = (byte & ~(1u << bit)) | (v << bit);
    }
    packed[b] = static_cast<uint8_t>(byte);
  }
}

}  // namespace

int LaunchVqEncode(const float* keys, int64_t m, int dim, const float* L, const float* centroids, int num_centroids,
                   int64_t start, uint16_t* codes_scratch, uint8_t* packed, void* stream) {
  if (m == 0) return cudaSuccess;
  if (num_centroids > 4096 || num_centroids < 1) return cudaErrorInvalidValue;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  EncodeKernel<<<static_cast<unsigned>(m), 128, dim * sizeof(float), st>>>(keys, dim, L, centroids, num_centroids,
                                                                           codes_scratch);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  const int64_t bytes = ((12 * (start + m) - 1) >> 3) - ((12 * start) >> 3) + 1;
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((bytes + threads - 1) / threads, 65535));
  PackKernel<<<blocks, threads, 0, st>>>(codes_scratch, start, m, packed);
  return cudaGetLastError();
}

int LaunchVqTable(const float* y, const float* centroids, int group, int num_centroids, int dim, float scale,
                  float* table, void* stream) {
  if (group == 0 || num_centroids == 0) return cudaSuccess;
  const int threads = 128;
  const int blocks = (num_centroids + threads - 1) / threads;
  TableKernel<<<dim3(blocks, group), threads, 0, static_cast<cudaStream_t>(stream)>>>(y, centroids, num_centroids, dim,
                                                                                      scale, table);
  return cudaGetLastError();
}

int LaunchVqScore(const float* table, int group, int num_centroids, const uint8_t* codes, int64_t n, float* scores,
                  void* stream) {
  if (n <= 0 || group <= 0) return cudaSuccess;
  const int threads = 256;
  int device = 0, sms = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  const int64_t want = (n + threads - 1) / threads;
  const int blocks = static_cast<int>(std::min<int64_t>(want, std::max(1, sms) * 8));
  ScoreKernel<<<blocks, threads, 0, static_cast<cudaStream_t>(stream)>>>(table, group, num_centroids, codes, n, scores);
  return cudaGetLastError();
}

int LaunchVqSelect(const VqSelectArgs& a, void* stream) {
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  if (a.n <= 0) return cudaMemsetAsync(a.num_selected, 0, sizeof(int32_t), st);
  const int64_t sink_end = a.sinks < a.n ? a.sinks : a.n;
  int64_t window_begin = a.n - a.window;
  if (window_begin < sink_end) window_begin = sink_end;
  const int64_t middle = window_begin - sink_end;
  const int64_t k = a.k < middle ? a.k : middle;
  cudaError_t e = cudaMemsetAsync(a.mask, 0, static_cast<size_t>(a.n), st);
  if (e != cudaSuccess) return e;
  if (k > 0) {
    SelectKernel<<<a.group, kSelectThreads, 0, st>>>(a, sink_end, window_begin, k);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
  }
  CompactKernel<<<1, kSelectThreads, 0, st>>>(a, sink_end, window_begin);
  return cudaGetLastError();
}

void PackCodes12(const uint16_t* codes, int64_t n, uint8_t* out) {
  std::memset(out, 0, static_cast<size_t>(PackedCodeBytes(n)));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t bit = 12 * i;
    const uint32_t v = static_cast<uint32_t>(codes[i] & 0xFFF) << (bit & 7);
    out[bit >> 3] |= static_cast<uint8_t>(v);
    out[(bit >> 3) + 1] |= static_cast<uint8_t>(v >> 8);
    if ((bit & 7) + 12 > 16) out[(bit >> 3) + 2] |= static_cast<uint8_t>(v >> 16);
  }
}

}  // namespace kvrecall
