// Sparse decode attention on the GPU: exact attention for a batch of decode
// queries, each over its own set of K/V rows (sinks ∪ window ∪ top-K, rows of
// a device f16 buffer), split over the KV length with a log-sum-exp merge; and
// a merge entry point that folds in a partial result (output + LSE) computed
// elsewhere (the store's near-data attention). CPU reference:
// codec/attention.h (AttendRows, MergeAttention).
//
// Plan (sizes, splits, workspace) is separate from run, so a run can be
// captured in a CUDA graph. Buffers are device pointers:
//   q      [num_queries][head_dim] f32
//   k, v   [total_rows][head_dim] f16 (raw bits)
//   rows   [num_queries][max_rows] int32 row indices; counts [num_queries]
//   out    [num_queries][head_dim] f32, lse [num_queries] f32
// Errors: INVALID_ARGUMENT for sizes out of range; CUDA errors converted
// (gpu/cuda_status.h). Thread safety: plans are values; runs are ordered by
// their stream.
#ifndef KVRECALL_GPU_SPARSE_ATTENTION_H_
#define KVRECALL_GPU_SPARSE_ATTENTION_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"

namespace kvrecall {

struct SparseAttentionPlan {
  int num_queries = 0, head_dim = 0, max_rows = 0;
  int splits = 1, rows_per_split = 0;
  size_t workspace_bytes = 0;
};

// target_blocks: how many (query, split) blocks to aim for (2 per SM fills
// an H100's 132 SMs).
absl::StatusOr<SparseAttentionPlan> PlanSparseAttention(int num_queries, int head_dim, int max_rows,
                                                        int target_blocks = 264);

absl::Status RunSparseAttention(const SparseAttentionPlan& plan, const float* q, const uint16_t* k,
                                const uint16_t* v, const int32_t* rows, const int32_t* counts, float scale,
                                float* out, float* lse, void* workspace, cudaStream_t stream);

// out_a/lse_a <- merge with out_b/lse_b, per query ([n][d], [n]).
absl::Status MergeAttentionPartials(float* out_a, float* lse_a, const float* out_b, const float* lse_b, int n, int d,
                                    cudaStream_t stream);

}  // namespace kvrecall

#endif  // KVRECALL_GPU_SPARSE_ATTENTION_H_
