// The fp32 forward pass of a llama2.c model (RMSNorm, RoPE on adjacent
// pairs, GQA attention, SwiGLU FFN), one token at a time. All K/V storage and
// attention go through a KvCache. Per-layer hooks see Q, K (pre- and
// post-RoPE) and V of every token.
//
// Thread safety: a Transformer (its scratch buffers) serves one thread; the
// Model it points to may be shared.
#ifndef KVRECALL_ENGINE_TRANSFORMER_H_
#define KVRECALL_ENGINE_TRANSFORMER_H_

#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "codec/rope.h"
#include "engine/kv_cache.h"
#include "engine/model.h"

namespace kvrecall {

struct LayerActivations {
  int layer = 0;
  int position = 0;
  const float* q = nullptr;           // post-RoPE [n_heads][head_dim]
  const float* q_pre_rope = nullptr;  // [n_heads][head_dim]
  const float* k_pre_rope = nullptr;  // [n_kv_heads][head_dim]
  const float* k = nullptr;           // post-RoPE [n_kv_heads][head_dim]
  const float* v = nullptr;           // [n_kv_heads][head_dim]
};
using LayerHook = std::function<void(const LayerActivations&)>;

class Transformer {
 public:
  // `model` must outlive the Transformer.
  explicit Transformer(const Model* model);

  void set_hook(LayerHook hook) { hook_ = std::move(hook); }

  // Runs `token` at position `pos`, appending its K/V to `cache` (which must
  // have been Begin()-ed with model.kv_layout() and hold positions 0..pos-1).
  // Returns the logits [vocab], valid until the next call.
  // INVALID_ARGUMENT for a token outside the vocabulary; OUT_OF_RANGE for a
  // position at or past the model's seq_len.
  absl::StatusOr<absl::Span<const float>> Forward(int token, int pos, KvCache* cache);

 private:
  const Model* model_;
  LayerHook hook_;
  std::vector<float> x_, xb_, xb2_, q_, q_pre_, k_, k_pre_, v_, att_out_, hb_, hb2_, logits_;
  std::vector<double> inv_freq_;
  RopeAngles angles_;
};

// Index of the largest logit (first on ties).
int ArgMax(absl::Span<const float> logits);
// Samples from softmax(logits / temperature); temperature 0 means ArgMax.
int SampleToken(absl::Span<const float> logits, float temperature, std::mt19937_64* rng);
// -log softmax(logits)[target], computed stably.
double NegLogLikelihood(absl::Span<const float> logits, int target);

}  // namespace kvrecall

#endif  // KVRECALL_ENGINE_TRANSFORMER_H_
