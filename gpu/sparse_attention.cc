#include "gpu/sparse_attention.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "gpu/cuda_status.h"
#include "gpu/sparse_attention_kernels.h"

namespace kvrecall {

absl::StatusOr<SparseAttentionPlan> PlanSparseAttention(int num_queries, int head_dim, int max_rows,
                                                        int target_blocks) {
  if (num_queries < 0 || max_rows < 0 || head_dim < 1 || head_dim > kMaxHeadDim) {
    return absl::InvalidArgumentError(absl::StrCat("sparse attention: head_dim must be in [1, ", kMaxHeadDim,
                                                   "], counts >= 0"));
  }
  SparseAttentionPlan p;
  p.num_queries = num_queries, p.head_dim = head_dim, p.max_rows = max_rows;
  const int want_splits = std::max(1, target_blocks / std::max(1, num_queries));
  int per = (max_rows + want_splits - 1) / std::max(1, want_splits);
  per = std::clamp(per, 32, kMaxRowsPerSplit);
  p.rows_per_split = per;
  p.splits = std::max(1, (max_rows + per - 1) / per);
  p.workspace_bytes = size_t(num_queries) * p.splits * (size_t(head_dim) + 1) * sizeof(float);
  return p;
}

absl::Status RunSparseAttention(const SparseAttentionPlan& plan, const float* q, const uint16_t* k,
                                const uint16_t* v, const int32_t* rows, const int32_t* counts, float scale,
                                float* out, float* lse, void* workspace, cudaStream_t stream) {
  SparseAttentionArgs a;
  a.num_queries = plan.num_queries, a.head_dim = plan.head_dim, a.max_rows = plan.max_rows;
  a.splits = plan.splits, a.rows_per_split = plan.rows_per_split, a.scale = scale;
  a.q = q, a.k = k, a.v = v, a.rows = rows, a.counts = counts, a.out = out, a.lse = lse;
  a.partial_out = static_cast<float*>(workspace);
  a.partial_lse = a.partial_out + size_t(plan.num_queries) * plan.splits * plan.head_dim;
  KVR_CUDA_RETURN_IF_ERROR(static_cast<cudaError_t>(LaunchSparseAttention(a, stream)));
  return absl::OkStatus();
}

absl::Status MergeAttentionPartials(float* out_a, float* lse_a, const float* out_b, const float* lse_b, int n, int d,
                                    cudaStream_t stream) {
  if (n < 0 || d < 1) return absl::InvalidArgumentError("merge: bad sizes");
  KVR_CUDA_RETURN_IF_ERROR(static_cast<cudaError_t>(LaunchMergeAttention(out_a, lse_a, out_b, lse_b, n, d, stream)));
  return absl::OkStatus();
}

}  // namespace kvrecall
