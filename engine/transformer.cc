#include "engine/transformer.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "codec/rope.h"
#include "codec/simd.h"

namespace kvrecall {
namespace {

void RmsNorm(float* out, const float* x, const float* w, int n) {
  float ss = 0;
  for (int i = 0; i < n; ++i) ss += x[i] * x[i];
  ss = 1.0f / std::sqrt(ss / n + 1e-5f);
  for (int i = 0; i < n; ++i) out[i] = w[i] * (ss * x[i]);
}

// y[rows] = W[rows][cols] · x[cols]
void MatVec(float* y, const float* w, const float* x, int rows, int cols) {
  for (int i = 0; i < rows; ++i) {
    y[i] = Dot(w + size_t(i) * cols, x, cols);
  }
}

}  // namespace

Transformer::Transformer(const Model* model) : model_(model) {
  const ModelConfig& c = model->config();
  x_.resize(c.dim);
  xb_.resize(c.dim);
  xb2_.resize(c.dim);
  q_.resize(c.dim);
  q_pre_.resize(c.dim);
  k_.resize(c.kv_dim());
  k_pre_.resize(c.kv_dim());
  v_.resize(c.kv_dim());
  att_out_.resize(c.dim);
  hb_.resize(c.hidden_dim);
  hb2_.resize(c.hidden_dim);
  logits_.resize(c.vocab_size);
  const KvLayout layout = model->kv_layout();
  inv_freq_ = RopeInvFreq(layout.head_dim, layout.rope_theta);
}

absl::StatusOr<absl::Span<const float>> Transformer::Forward(int token, int pos, KvCache* cache) {
  const ModelConfig& c = model_->config();
  if (token < 0 || token >= c.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("token ", token, " outside the vocabulary [0, ", c.vocab_size, ")"));
  }
  if (pos < 0 || pos >= c.seq_len) {
    return absl::OutOfRangeError(absl::StrCat("position ", pos, " outside the model's context [0, ", c.seq_len, ")"));
  }
  const int d = c.dim, hs = c.head_size(), kv_dim = c.kv_dim();
  const KvLayout layout = model_->kv_layout();
  angles_.Compute(inv_freq_, pos, layout.rope_scaling);
  std::copy_n(model_->token_embedding() + size_t(token) * d, d, x_.data());
  for (int l = 0; l < c.n_layers; ++l) {
    RmsNorm(xb_.data(), x_.data(), model_->rms_att(l), d);
    MatVec(q_pre_.data(), model_->wq(l), xb_.data(), d, d);
    MatVec(k_pre_.data(), model_->wk(l), xb_.data(), kv_dim, d);
    MatVec(v_.data(), model_->wv(l), xb_.data(), kv_dim, d);
    q_ = q_pre_;
    k_ = k_pre_;
    for (int h = 0; h < c.n_heads; ++h) ApplyRope(q_.data() + size_t(h) * hs, hs, layout.rope_style, angles_);
    for (int h = 0; h < c.n_kv_heads; ++h) ApplyRope(k_.data() + size_t(h) * hs, hs, layout.rope_style, angles_);
    if (hook_) {
      hook_(LayerActivations{l, pos, q_.data(), q_pre_.data(), k_pre_.data(), k_.data(), v_.data()});
    }
    if (absl::Status s = cache->Append(l, KvTokenView{pos, k_pre_.data(), k_.data(), v_.data()}); !s.ok()) {
      return s;
    }
    if (absl::Status s = cache->Attend(l, pos, q_.data(), q_pre_.data(), att_out_.data()); !s.ok()) {
      return s;
    }
    MatVec(xb2_.data(), model_->wo(l), att_out_.data(), d, d);
    for (int i = 0; i < d; ++i) x_[i] += xb2_[i];
    RmsNorm(xb_.data(), x_.data(), model_->rms_ffn(l), d);
    MatVec(hb_.data(), model_->w1(l), xb_.data(), c.hidden_dim, d);
    MatVec(hb2_.data(), model_->w3(l), xb_.data(), c.hidden_dim, d);
    for (int i = 0; i < c.hidden_dim; ++i) {
      const float g = hb_[i];
      hb_[i] = g / (1.0f + std::exp(-g)) * hb2_[i];
    }
    MatVec(xb2_.data(), model_->w2(l), hb_.data(), d, c.hidden_dim);
    for (int i = 0; i < d; ++i) x_[i] += xb2_[i];
  }
  RmsNorm(xb_.data(), x_.data(), model_->rms_final(), d);
  MatVec(logits_.data(), model_->classifier(), xb_.data(), c.vocab_size, d);
  return absl::Span<const float>(logits_);
}

int ArgMax(absl::Span<const float> logits) {
  return static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

int SampleToken(absl::Span<const float> logits, float temperature, std::mt19937_64* rng) {
  if (temperature <= 0) return ArgMax(logits);
  const float mx = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double sum = 0;
  for (size_t i = 0; i < logits.size(); ++i) sum += p[i] = std::exp((logits[i] - mx) / temperature);
  double r = std::uniform_real_distribution<double>(0, sum)(*rng);
  for (size_t i = 0; i < p.size(); ++i) {
    r -= p[i];
    if (r <= 0) return static_cast<int>(i);
  }
  return static_cast<int>(p.size()) - 1;
}

double NegLogLikelihood(absl::Span<const float> logits, int target) {
  const float mx = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float l : logits) sum += std::exp(double{l} - mx);
  return std::log(sum) + mx - logits[target];
}

}  // namespace kvrecall
