// Quality metrics for compressed and retrieved KV (algorithms.md §9.1), the
// yardstick of every codec and index benchmark. All take one head's rows:
// queries q [nq][d] with positions q_pos (query i attends keys 0..q_pos[i]:
// causal masking), keys/values [n][d] exact and approximate. Computed in
// double precision.
#ifndef KVRECALL_CODEC_METRICS_H_
#define KVRECALL_CODEC_METRICS_H_

#include <cstdint>
#include <vector>

namespace kvrecall {

// ‖x − x̂‖_F / ‖x‖_F (0 when both are zero).
double RelativeError(const float* x, const float* x_hat, int64_t n);
// mean (x − x̂)²
double MeanSquaredError(const float* x, const float* x_hat, int64_t n);

// Logit error q·(k̂ − k), unscaled, over ALL (query, key) pairs (the squat_qk
// fixture's definition) or, with q_pos, only over causal pairs.
struct LogitError {
  double rms = 0;
  double mae = 0;
  int64_t pairs = 0;
};
LogitError ComputeLogitError(const float* q, int nq, const int* q_pos, const float* k,
                             const float* k_hat, int n, int d);

// Exact attention p = softmax(scale·q·k) vs p̂ with (k̂, v̂), causal.
struct AttentionError {
  double prob_l1_sum = 0;   // Σ_i Σ_j |p − p̂|  (the fixture's "L1": 5.1405)
  double prob_l1_mean = 0;  // per query
  double kl_mean = 0;       // mean_i KL(p_i ‖ p̂_i), nats
  double output_rel = 0;    // ‖O − Ô‖_F / ‖O‖_F, O = pV, Ô = p̂V̂
  int queries = 0;
};
// `v`/`v_hat` may be null (then output_rel is 0).
AttentionError CompareAttention(const float* q, int nq, const int* q_pos, const float* k,
                                const float* k_hat, const float* v, const float* v_hat, int n,
                                int d, double scale);

// Causal attention probabilities of query i over keys 0..q_pos (length n,
// zeros past q_pos).
std::vector<double> AttentionProbs(const float* q, int q_pos, const float* k, int n, int d,
                                   double scale);

// How well a selected token set S covers exact attention p (over n tokens):
// top-K recall |S ∩ TopK(p)| / K with K = |S|, and attention-mass recall Σ_{i∈S} p_i.
struct SelectionRecall {
  double topk_recall = 0;
  double mass_recall = 0;
};
SelectionRecall ComputeSelectionRecall(const std::vector<double>& p,
                                       const std::vector<int>& selected);

// The same for the G query heads of a group over the n rows of K (row stride
// `stride` floats; every row visible to every query), computed for a whole
// long sequence at once: logits in float by the attention kernel
// (GroupScores), normalized in double; the exact top-K by a k-th-largest
// threshold (ties to the earlier token), not a sort. O(n) per head, against
// ComputeSelectionRecall(AttentionProbs(...))'s double dot products and
// partial sort: what recall sampling over a million tokens needs.
std::vector<SelectionRecall> GroupSelectionRecall(const float* q, int G, const float* k, int64_t n, int d,
                                                  int64_t stride, float scale, const std::vector<int>& selected);

// Query-weighted key distortion: mean over keys of eᵀHe, e = k̂ − k, with
// H = (1/nq) Σ q qᵀ over the given queries (the A²ATS objective, SQuat's
// penalty). Equals the mean squared unscaled logit error over all pairs.
double QueryWeightedDistortion(const float* q, int nq, const float* k, const float* k_hat, int n,
                               int d);

}  // namespace kvrecall

#endif  // KVRECALL_CODEC_METRICS_H_
