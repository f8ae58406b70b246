// A llama2.c-format ("legacy", version 0) checkpoint: config + fp32 weights,
// loaded and validated. Immutable after loading; thread-safe to share.
//
// File layout (all little-endian, doc/formats.md has the table):
//   7 × int32 config | token_embedding | rms_att | wq | wk | wv | wo | rms_ffn |
//   w1 | w2 | w3 | rms_final | freq_cis_real | freq_cis_imag | [wcls]
// A negative vocab_size in the header means an untied classifier follows.
#ifndef KVRECALL_ENGINE_MODEL_H_
#define KVRECALL_ENGINE_MODEL_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codec/kv_layout.h"
#include "common/env.h"

namespace kvrecall {

struct ModelConfig {
  int dim = 0;
  int hidden_dim = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int vocab_size = 0;
  int seq_len = 0;
  bool shared_classifier = true;

  int head_size() const { return dim / n_heads; }
  int kv_dim() const { return n_kv_heads * head_size(); }
  // INVALID_ARGUMENT naming the first inconsistent field.
  absl::Status Validate() const;
  // Bytes the checkpoint file must have.
  uint64_t ExpectedFileBytes() const;
};

class Model {
 public:
  // Reads and validates `path`: header sanity, exact file size (a truncated
  // or overlong file is DATA_LOSS with both sizes), finite weights.
  static absl::StatusOr<std::unique_ptr<Model>> Load(Env* env, const std::string& path,
                                                      std::string model_id = "");
  static absl::StatusOr<std::unique_ptr<Model>> FromBytes(const std::string& bytes,
                                                          std::string model_id);

  const ModelConfig& config() const { return config_; }
  const std::string& id() const { return id_; }
  // The model's KV layout (f32, interleaved RoPE, theta 10000, post-RoPE keys).
  KvLayout kv_layout() const;
  // Frobenius norms of W_K and W_V per layer (Quantize-What-Counts sensitivities).
  std::vector<double> wk_norms() const;
  std::vector<double> wv_norms() const;

  // Weights, row-major [out][in]; pointers into owned storage.
  const float* token_embedding() const { return emb_; }  // [vocab][dim]
  const float* rms_att(int l) const { return rms_att_ + size_t{l} * config_.dim; }
  const float* wq(int l) const { return wq_ + size_t{l} * config_.dim * config_.dim; }
  const float* wk(int l) const { return wk_ + size_t{l} * config_.kv_dim() * config_.dim; }
  const float* wv(int l) const { return wv_ + size_t{l} * config_.kv_dim() * config_.dim; }
  const float* wo(int l) const { return wo_ + size_t{l} * config_.dim * config_.dim; }
  const float* rms_ffn(int l) const { return rms_ffn_ + size_t{l} * config_.dim; }
  const float* w1(int l) const { return w1_ + size_t{l} * config_.hidden_dim * config_.dim; }
  const float* w2(int l) const { return w2_ + size_t{l} * config_.dim * config_.hidden_dim; }
  const float* w3(int l) const { return w3_ + size_t{l} * config_.hidden_dim * config_.dim; }
  const float* rms_final() const { return rms_final_; }
  const float* classifier() const { return wcls_; }  // [vocab][dim]

 private:
  Model() = default;
  ModelConfig config_;
  std::string id_;
  std::vector<float> weights_;  // everything after the header, aligned
  const float *emb_ = nullptr, *rms_att_ = nullptr, *wq_ = nullptr, *wk_ = nullptr,
              *wv_ = nullptr, *wo_ = nullptr, *rms_ffn_ = nullptr, *w1_ = nullptr,
              *w2_ = nullptr, *w3_ = nullptr, *rms_final_ = nullptr, *wcls_ = nullptr;
};

}  // namespace kvrecall

#endif  // KVRECALL_ENGINE_MODEL_H_
