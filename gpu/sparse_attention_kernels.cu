#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math_constants.h>

#include "gpu/sparse_attention_kernels.h"

namespace kvrecall {
namespace {

constexpr int kThreads = 128;

__device__ float BlockMax(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) red[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float m = red[0];
    for (int w = 1; w < kThreads / 32; ++w) m = fmaxf(m, red[w]);
    red[0] = m;
  }
  __syncthreads();
  const float r = red[0];
  __syncthreads();
  return r;
}

__device__ float BlockSum(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) red[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0;
    for (int w = 0; w < kThreads / 32; ++w) s += red[w];
    red[0] = s;
  }
  __syncthreads();
  const float r = red[0];
  __syncthreads();
  return r;
}

// One block per (query, split): scores of its rows, their softmax, and the
// weighted sum of V; writes the split's normalized output and log-sum-exp.
__global__ void SplitKernel(SparseAttentionArgs a) {
  const int qi = blockIdx.x, s = blockIdx.y;
  const int d = a.head_dim;
  __shared__ float q[kMaxHeadDim];
  __shared__ float p[kMaxRowsPerSplit];
  __shared__ int row_ids[kMaxRowsPerSplit];
  __shared__ float red[kThreads / 32];
  for (int j = threadIdx.x; j < d; j += kThreads) q[j] = a.q[qi * d + j];
  const int count = min(a.counts[qi], a.max_rows);
  const int begin = s * a.rows_per_split, end = min(count, begin + a.rows_per_split);
  const int n = max(0, end - begin);
  __syncthreads();
  float local_max = -CUDART_INF_F;
  for (int r = threadIdx.x; r < n; r += kThreads) {
    const int row = a.rows[qi * a.max_rows + begin + r];
    row_ids[r] = row;
    const __half* k = reinterpret_cast<const __half*>(a.k) + static_cast<int64_t>(row) * d;
    float dot = 0;
    for (int j = 0; j < d; ++j) dot += q[j] * __half2float(k[j]);
    p[r] = dot * a.scale;
    local_max = fmaxf(local_max, p[r]);
  }
  const float m = BlockMax(local_max, red);
  float local_sum = 0;
  for (int r = threadIdx.x; r < n; r += kThreads) {
    p[r] = __expf(p[r] - m);
    local_sum += p[r];
  }
  const float l = BlockSum(local_sum, red);  // (synchronizes p[] too)
  float* out = a.partial_out + (static_cast<int64_t>(qi) * a.splits + s) * d;
  for (int j = threadIdx.x; j < d; j += kThreads) {
    float acc = 0;
    for (int r = 0; r < n; ++r) {
      const __half* v = reinterpret_cast<const __half*>(a.v) + static_cast<int64_t>(row_ids[r]) * d;
      acc += p[r] * __half2float(v[j]);
    }
    out[j] = n > 0 ? acc / l : 0.0f;
  }
  if (threadIdx.x == 0) a.partial_lse[qi * a.splits + s] = n > 0 ? m + logf(l) : -CUDART_INF_F;
}

// One block per query: log-sum-exp merge of its splits.
__global__ void CombineKernel(SparseAttentionArgs a) {
  const int qi = blockIdx.x, d = a.head_dim;
  const float* lse = a.partial_lse + static_cast<int64_t>(qi) * a.splits;
  float m = -CUDART_INF_F;
  for (int s = 0; s < a.splits; ++s) m = fmaxf(m, lse[s]);
  float total = 0;
  for (int s = 0; s < a.splits; ++s) total += lse[s] == -CUDART_INF_F ? 0.0f : __expf(lse[s] - m);
  for (int j = threadIdx.x; j < d; j += blockDim.x) {
    float acc = 0;
    for (int s = 0; s < a.splits; ++s) {
      if (lse[s] == -CUDART_INF_F) continue;
      acc += __expf(lse[s] - m) * a.partial_out[(static_cast<int64_t>(qi) * a.splits + s) * d + j];
    }
    a.out[static_cast<int64_t>(qi) * d + j] = total > 0 ? acc / total : 0.0f;
  }
  if (threadIdx.x == 0) a.lse[qi] = total > 0 ? m + logf(total) : -CUDART_INF_F;
}

__global__ void MergeKernel(float* out_a, float* lse_a, const float* out_b, const float* lse_b, int d) {
  const int qi = blockIdx.x;
  const float la = lse_a[qi], lb = lse_b[qi];
  const float m = fmaxf(la, lb);
  if (m == -CUDART_INF_F) return;  // both empty
  const float wa = la == -CUDART_INF_F ? 0.0f : __expf(la - m);
  const float wb = lb == -CUDART_INF_F ? 0.0f : __expf(lb - m);
  const float t = wa + wb;
  for (int j = threadIdx.x; j < d; j += blockDim.x) {
    const int64_t i = static_cast<int64_t>(qi) * d + j;
    out_a[i] = (wa * out_a[i] + wb * out_b[i]) / t;
  }
  __syncthreads();
  if (threadIdx.x == 0) lse_a[qi] = m + logf(t);
}

}  // namespace

int LaunchSparseAttention(const SparseAttentionArgs& a, void* stream) {
  if (a.num_queries == 0) return cudaSuccess;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  SplitKernel<<<dim3(a.num_queries, a.splits), kThreads, 0, st>>>(a);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  CombineKernel<<<a.num_queries, kThreads, 0, st>>>(a);
  return cudaGetLastError();
}

int LaunchMergeAttention(float* out_a, float* lse_a, const float* out_b, const float* lse_b, int n, int d,
                         void* stream) {
  if (n == 0) return cudaSuccess;
  MergeKernel<<<n, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(out_a, lse_a, out_b, lse_b, d);
  return cudaGetLastError();
}

}  // namespace kvrecall
