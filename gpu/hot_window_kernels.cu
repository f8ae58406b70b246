#include <cuda_runtime.h>

#include "gpu/hot_window.h"

namespace kvrecall {
namespace {

// Phase 1 copies out what the batch will overwrite; phase 2 writes. (With
// count <= window no slot is written twice by one batch.)
__global__ void EvictKernel(HotWindowShape s, int64_t first_pos, int count, const uint16_t* wk, const uint16_t* wv,
                            uint16_t* ek, uint16_t* ev) {
  const int64_t total = static_cast<int64_t>(s.heads) * count * s.head_dim;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int c = static_cast<int>(e % s.head_dim);
    const int i = static_cast<int>((e / s.head_dim) % count);
    const int h = static_cast<int>(e / (static_cast<int64_t>(s.head_dim) * count));
    const int64_t p = first_pos + i, old = p - s.window;
    if (!(p >= s.sinks && old >= s.sinks)) continue;
    const int64_t src = (static_cast<int64_t>(h) * s.slots() + s.Slot(p)) * s.head_dim + c;
    ek[e] = wk[src];
    ev[e] = wv[src];
  }
}

__global__ void WriteKernel(HotWindowShape s, int64_t first_pos, int count, const uint16_t* k, const uint16_t* v,
                            uint16_t* wk, uint16_t* wv) {
  const int64_t total = static_cast<int64_t>(s.heads) * count * s.head_dim;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int c = static_cast<int>(e % s.head_dim);
    const int i = static_cast<int>((e / s.head_dim) % count);
    const int h = static_cast<int>(e / (static_cast<int64_t>(s.head_dim) * count));
    const int64_t dst = (static_cast<int64_t>(h) * s.slots() + s.Slot(first_pos + i)) * s.head_dim + c;
    wk[dst] = k[e];
    wv[dst] = v[e];
  }
}

}  // namespace

int LaunchHotWindowAppend(const HotWindowShape& s, int64_t first_pos, int count, const uint16_t* k,
                          const uint16_t* v, uint16_t* window_k, uint16_t* window_v, uint16_t* evicted_k,
                          uint16_t* evicted_v, void* stream) {
  if (count <= 0) return cudaSuccess;
  if (count > s.window) return cudaErrorInvalidValue;
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  const int64_t total = static_cast<int64_t>(s.heads) * count * s.head_dim;
  const int threads = 256;
  const int blocks = static_cast<int>((total + threads - 1) / threads < 65535 ? (total + threads - 1) / threads : 65535);
  EvictKernel<<<blocks, threads, 0, st>>>(s, first_pos, count, window_k, window_v, evicted_k, evicted_v);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  WriteKernel<<<blocks, threads, 0, st>>>(s, first_pos, count, k, v, window_k, window_v);
  return cudaGetLastError();
}

}  // namespace kvrecall
