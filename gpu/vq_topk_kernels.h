// Retrieval on the GPU (index/retrieval_index.h semantics): VQ-code scoring
// with a per-query lookup table and exact top-K selection per query head,
// unioned over the KV head's query group, sinks and window always in and
// never scored. Codes are 12-bit, packed (two per three bytes). Launchers
// take device pointers and a cudaStream_t (as void*) and return a
// cudaError_t as int.
#ifndef KVRECALL_GPU_VQ_TOPK_KERNELS_H_
#define KVRECALL_GPU_VQ_TOPK_KERNELS_H_

#include <cstdint>

namespace kvrecall {

// table[g][c] = scale * y[g] · centroids[c]: y [group][dim] (the whitened,
// windowed-RoPE query), centroids [num_centroids][dim] f32.
int LaunchVqTable(const float* y, const float* centroids, int group, int num_centroids, int dim, float scale,
                  float* table, void* stream);

// scores[g][i] = table[g][code_i] for every token i < n (no selection): the
// memory-bound half of retrieval, spread over the whole device.
int LaunchVqScore(const float* table, int group, int num_centroids, const uint8_t* codes, int64_t n, float* scores,
                  void* stream);

struct VqSelectArgs {
  const float* table = nullptr;        // [group][num_centroids]
  int group = 1, num_centroids = 0;
  const uint8_t* codes = nullptr;      // packed 12-bit codes of n tokens (+1 padding byte)
  int64_t n = 0;                       // tokens in the context
  int sinks = 4, window = 64;
  int64_t k = 0;                       // top-K per query head among the middle tokens
  uint8_t* mask = nullptr;             // workspace [n]
  int32_t* selected = nullptr;         // out: sorted token ids
  int32_t* num_selected = nullptr;     // out: count (device)
};

int LaunchVqSelect(const VqSelectArgs& args, void* stream);

// A²ATS encode of new keys: w = Lᵀ k (L [dim][dim] lower Cholesky factor of
// H, f32), nearest of the whitened centroids [num_centroids][dim] by L2,
// written as 12-bit codes at token positions [start, start + m) of the
// packed code buffer (bytes shared with neighbouring codes are preserved).
// codes_scratch: [m] uint16 workspace. REQUIRES: num_centroids <= 4096.
int LaunchVqEncode(const float* keys, int64_t m, int dim, const float* L, const float* centroids, int num_centroids,
                   int64_t start, uint16_t* codes_scratch, uint8_t* packed, void* stream);

// Host helpers: 12-bit packing (code i at bits [12i, 12i + 12) of the byte
// stream, LSB-first) into (3n + 1) / 2 + 1 bytes.
inline int64_t PackedCodeBytes(int64_t n) { return (3 * n + 1) / 2 + 1; }
void PackCodes12(const uint16_t* codes, int64_t n, uint8_t* out);

}  // namespace kvrecall

#endif  // KVRECALL_GPU_VQ_TOPK_KERNELS_H_
