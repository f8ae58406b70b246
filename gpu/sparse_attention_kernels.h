// Sparse decode attention kernels (host launchers; plain C++ types so that
// host code compiled without nvcc can call them). See gpu/sparse_attention.h
// for the checked entry points. Launchers return a cudaError_t as int.
#ifndef KVRECALL_GPU_SPARSE_ATTENTION_KERNELS_H_
#define KVRECALL_GPU_SPARSE_ATTENTION_KERNELS_H_

#include <cstdint>

namespace kvrecall {

struct SparseAttentionArgs {
  int num_queries = 0;    // query vectors (query heads x batch)
  int head_dim = 0;       // <= 256
  int max_rows = 0;       // row slots per query
  int splits = 1;         // KV-length splits per query (plan)
  int rows_per_split = 0; // ceil(max_rows / splits), <= kMaxRowsPerSplit
  float scale = 1.0f;
  const float* q = nullptr;          // [num_queries][head_dim]
  const uint16_t* k = nullptr;       // f16 bits, [total_rows][head_dim]
  const uint16_t* v = nullptr;       // f16 bits, [total_rows][head_dim]
  const int32_t* rows = nullptr;     // [num_queries][max_rows]: indices into k/v
  const int32_t* counts = nullptr;   // [num_queries]: valid slots (<= max_rows)
  float* partial_out = nullptr;      // workspace [num_queries][splits][head_dim]
  float* partial_lse = nullptr;      // workspace [num_queries][splits]
  float* out = nullptr;              // [num_queries][head_dim]
  float* lse = nullptr;              // [num_queries]
};

inline constexpr int kMaxRowsPerSplit = 512;
inline constexpr int kMaxHeadDim = 256;

// Split-KV attention then the log-sum-exp merge of the splits.
int LaunchSparseAttention(const SparseAttentionArgs& args, void* stream);

// out_a/lse_a <- attention over the union of the two row sets, per query:
// out_a, out_b [n][d]; lse_a, lse_b [n].
int LaunchMergeAttention(float* out_a, float* lse_a, const float* out_b, const float* lse_b, int n, int d,
                         void* stream);

}  // namespace kvrecall

#endif  // KVRECALL_GPU_SPARSE_ATTENTION_KERNELS_H_
