// Synthetic KV generator (algorithms.md §9.3): 128-dim heads with the
// structure of real keys, queries and values, for contexts far longer than
// the tiny real model gives, streamed so a 1M-token × 8-head sequence never
// needs to be in memory at once.
//
// Per KV head (and its `group_size` query heads), all seeded and
// deterministic:
//   keys   k_t = μ + B z_t + σ ε_t (pre-RoPE), z_t AR(1) with ρ = ar_rho:
//          log-normal pair scales, `outlier_pairs` low-frequency pairs with
//          5–25× energy and |mean|/std ≈ 1–2; post-RoPE by the layout's RoPE.
//   queries share a rank-`query_rank` subspace over the same pairs, with a
//          mean off the key distribution (out-of-distribution queries);
//          per head a temperature: even KV heads are peaky ("retrieval"),
//          odd ones flat ("aggregation").
//   sinks  the first `sink_tokens` keys align with the mean query through the
//          two lowest-frequency pairs, calibrated for `sink_mass` attention
//          at `total_tokens`; their values are near zero.
//   needles `needles` keys at random positions, pre-rotated so queries at
//          positions ≥ total_tokens (decode steps) find them.
//   values low rank + isotropic noise, no outlier channels, ‖v‖ ≈ 0.4‖k‖,
//          mildly AR-smooth.
// Thread safety: one SyntheticHead per thread.
#ifndef KVRECALL_CODEC_SYNTHETIC_KV_H_
#define KVRECALL_CODEC_SYNTHETIC_KV_H_

#include <cstdint>
#include <random>
#include <vector>

#include "codec/kv_layout.h"
#include "codec/rope.h"

namespace kvrecall {

struct SyntheticConfig {
  int head_dim = 128;
  int group_size = 4;  // query heads per KV head
  RopeStyle rope_style = RopeStyle::kHalfSplit;
  float rope_theta = 500000.0f;
  float rope_scaling = 1.0f;
  int key_rank = 24;
  int query_rank = 14;
  float ar_rho = 0.9f;
  float query_rho = 0.95f;
  int outlier_pairs = 4;
  int sink_tokens = 4;
  float sink_mass = 0.25f;
  int needles = 8;
  float needle_mass = 0.1f;   // attention each needle gets from its query at total_tokens
  int64_t total_tokens = 4096;  // where decode queries begin; sinks and needles are tuned for it
  float peaky_logit_std = 2.5f;  // std of q·k/√d over keys, peaky heads
  float flat_logit_std = 0.7f;   // flat heads
  uint64_t seed = 1;
};

// The one-layer model layout of `kv_heads` generated KV heads (group_size
// query heads each, the config's head_dim and RoPE).
inline KvLayout SyntheticLayout(const SyntheticConfig& c, int kv_heads) {
  KvLayout l;
  l.num_layers = 1, l.num_q_heads = kv_heads * c.group_size, l.num_kv_heads = kv_heads, l.head_dim = c.head_dim;
  l.rope_style = c.rope_style, l.rope_theta = c.rope_theta, l.rope_scaling = c.rope_scaling;
  return l;
}

class SyntheticHead {
 public:
  SyntheticHead(const SyntheticConfig& config, int kv_head);

  // Generates the next `count` tokens (positions position() ...). Each output
  // may be null. Shapes: keys/values [count][d]; queries [count][group][d].
  void Next(int64_t count, float* k_pre, float* k_post, float* v, float* q_pre, float* q_post);

  int64_t position() const { return pos_; }
  bool peaky() const { return peaky_; }
  // Needle positions, ascending, and the query head of the group each targets.
  const std::vector<int64_t>& needle_positions() const { return needle_pos_; }
  const std::vector<int>& needle_heads() const { return needle_head_; }
  const SyntheticConfig& config() const { return cfg_; }

 private:
  void Key(float* k_pre, int64_t pos);
  void Advance();
  float Noise(uint64_t stream, int64_t pos, int index) const;

  SyntheticConfig cfg_;
  int d_;
  bool peaky_;
  std::mt19937_64 rng_;
  std::normal_distribution<float> n01_;
  uint64_t noise_seed_;
  std::vector<float> scale_;       // per channel
  std::vector<float> mu_, b_, mu_q_, u_, head_off_, bv_;  // see .cc
  std::vector<float> z_, zv_, w_;  // AR states
  std::vector<float> sink_dir_;    // unit, pre-RoPE
  float sink_gain_ = 0, q_gain_ = 1, v_noise_ = 0.1f;
  std::vector<int64_t> needle_pos_;
  std::vector<int> needle_head_;
  std::vector<std::vector<float>> needle_keys_;  // pre-RoPE
  std::vector<double> inv_freq_;
  RopeAngles angles_;
  int64_t pos_ = 0;
};

struct SyntheticStats {
  double top_channel_ratio = 0;  // max_c mean|k_c| / median_c mean|k_c|
  double query_top20_energy = 0; // fraction of Σσ² in the top 20 singular values of Q
  double sink_mass = 0;          // mean attention on the sink tokens (rows in the back 3/4)
  double top3pct_mass = 0;       // mean attention mass in each query's top 3% tokens
};

// Statistics of one head's keys [n][d] and queries [nq][d] at positions
// q_pos (causal), with `sinks` sink tokens.
SyntheticStats ComputeKvStats(const float* k, int n, const float* q, int nq, const int* q_pos,
                              int d, int sinks);

}  // namespace kvrecall

#endif  // KVRECALL_CODEC_SYNTHETIC_KV_H_
