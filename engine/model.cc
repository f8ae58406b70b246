#include "engine/model.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "codec/bytes.h"
#include "common/status.h"

namespace kvrecall {
namespace {
constexpr int kHeaderBytes = 7 * 4;
constexpr int kMaxDim = 1 << 16;
}  // namespace

absl::Status ModelConfig::Validate() const {
  auto in = [](int v, int lo, int hi) { return v >= lo && v <= hi; };
  if (!in(dim, 1, kMaxDim)) return absl::InvalidArgumentError(absl::StrCat("dim ", dim, " out of range"));
  if (!in(hidden_dim, 1, 4 * kMaxDim)) return absl::InvalidArgumentError(absl::StrCat("hidden_dim ", hidden_dim, " out of range"));
  if (!in(n_layers, 1, 1024)) return absl::InvalidArgumentError(absl::StrCat("n_layers ", n_layers, " out of range"));
  if (!in(n_heads, 1, 1024)) return absl::InvalidArgumentError(absl::StrCat("n_heads ", n_heads, " out of range"));
  if (!in(n_kv_heads, 1, n_heads) || n_heads % n_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("n_kv_heads ", n_kv_heads, " must divide n_heads ", n_heads));
  }
  if (dim % n_heads != 0 || head_size() % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("dim ", dim, " / n_heads ", n_heads, " must be an even integer"));
  }
  if (!in(vocab_size, 1, 1 << 22)) return absl::InvalidArgumentError(absl::StrCat("vocab_size ", vocab_size, " out of range"));
  if (!in(seq_len, 1, 1 << 24)) return absl::InvalidArgumentError(absl::StrCat("seq_len ", seq_len, " out of range"));
  return absl::OkStatus();
}

uint64_t ModelConfig::ExpectedFileBytes() const {
  const uint64_t d = dim, h = hidden_dim, L = n_layers, v = vocab_size, kv = kv_dim();
  uint64_t floats = v * d                 // token embedding
                    + L * d               // rms_att
                    + L * d * d           // wq
                    + 2 * L * kv * d      // wk, wv
                    + L * d * d           // wo
                    + L * d               // rms_ffn
                    + 3 * L * h * d       // w1, w2, w3
                    + d                   // rms_final
                    + uint64_t(seq_len) * head_size();  // freq_cis real + imag
  if (!shared_classifier) floats += v * d;
  return kHeaderBytes + 4 * floats;
}

KvLayout Model::kv_layout() const {
  KvLayout l;
  l.num_layers = config_.n_layers;
  l.num_q_heads = config_.n_heads;
  l.num_kv_heads = config_.n_kv_heads;
  l.head_dim = config_.head_size();
  l.dtype = DType::kF32;
  l.rope_style = RopeStyle::kInterleaved;
  l.rope_theta = 10000.0f;
  l.keys_pre_rope = false;
  return l;
}

static std::vector<double> FrobeniusPerLayer(const float* w, int layers, size_t per_layer) {
  std::vector<double> out(layers);
  for (int l = 0; l < layers; ++l) {
    double s = 0;
    for (size_t i = 0; i < per_layer; ++i) s += double{w[l * per_layer + i]} * w[l * per_layer + i];
    out[l] = std::sqrt(s);
  }
  return out;
}

std::vector<double> Model::wk_norms() const {
  return FrobeniusPerLayer(wk_, config_.n_layers, size_t(config_.kv_dim()) * config_.dim);
}
std::vector<double> Model::wv_norms() const {
  return FrobeniusPerLayer(wv_, config_.n_layers, size_t(config_.kv_dim()) * config_.dim);
}

absl::StatusOr<std::unique_ptr<Model>> Model::Load(Env* env, const std::string& path,
                                                   std::string model_id) {
  ASSIGN_OR_RETURN(std::string bytes, ReadFileToString(env, path));
  if (model_id.empty()) model_id = Basename(path);
  absl::StatusOr<std::unique_ptr<Model>> m = FromBytes(bytes, std::move(model_id));
  if (!m.ok()) return Annotate(m.status(), path);
  return m;
}

absl::StatusOr<std::unique_ptr<Model>> Model::FromBytes(const std::string& bytes,
                                                        std::string model_id) {
  if (bytes.size() < kHeaderBytes) {
    return absl::DataLossError(absl::StrCat("checkpoint truncated: ", bytes.size(),
                                            " bytes, the header alone needs ", kHeaderBytes));
  }
  const uint8_t* p = reinterpret_cast<const uint8_t*>(bytes.data());
  ModelConfig c;
  c.dim = LoadLE<int32_t>(p + 0);
  c.hidden_dim = LoadLE<int32_t>(p + 4);
  c.n_layers = LoadLE<int32_t>(p + 8);
  c.n_heads = LoadLE<int32_t>(p + 12);
  c.n_kv_heads = LoadLE<int32_t>(p + 16);
  const int32_t vocab = LoadLE<int32_t>(p + 20);
  c.shared_classifier = vocab > 0;
  c.vocab_size = vocab == INT32_MIN ? 0 : std::abs(vocab);
  c.seq_len = LoadLE<int32_t>(p + 24);
  if (absl::Status s = c.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("not a llama2.c version-0 checkpoint: ", s.message()));
  }
  const uint64_t want = c.ExpectedFileBytes();
  if (bytes.size() < want) {
    return absl::DataLossError(absl::StrCat("checkpoint truncated: the header describes ", want,
                                            " bytes, the file has ", bytes.size()));
  }
  if (bytes.size() > want) {
    return absl::DataLossError(absl::StrCat("checkpoint has ", bytes.size() - want,
                                            " unexpected trailing bytes (header describes ", want, ")"));
  }
  std::unique_ptr<Model> m(new Model());
  m->config_ = c;
  m->id_ = std::move(model_id);
  const size_t floats = (want - kHeaderBytes) / 4;
  m->weights_.resize(floats);
  std::memcpy(m->weights_.data(), bytes.data() + kHeaderBytes, floats * 4);  // aligns the data
  const uint64_t d = c.dim, h = c.hidden_dim, L = c.n_layers, v = c.vocab_size, kv = c.kv_dim();
  const float* w = m->weights_.data();
  struct Tensor { const char* name; const float** ptr; uint64_t n; };
  const float* freq = nullptr;
  const Tensor tensors[] = {
      {"token_embedding", &m->emb_, v * d}, {"rms_att", &m->rms_att_, L * d},
      {"wq", &m->wq_, L * d * d},           {"wk", &m->wk_, L * kv * d},
      {"wv", &m->wv_, L * kv * d},          {"wo", &m->wo_, L * d * d},
      {"rms_ffn", &m->rms_ffn_, L * d},     {"w1", &m->w1_, L * h * d},
      {"w2", &m->w2_, L * d * h},           {"w3", &m->w3_, L * h * d},
      {"rms_final", &m->rms_final_, d},     {"freq_cis", &freq, uint64_t(c.seq_len) * c.head_size()},
      {"wcls", &m->wcls_, c.shared_classifier ? 0 : v * d},
  };
  for (const Tensor& t : tensors) {
    *t.ptr = w;
    for (uint64_t i = 0; i < t.n; ++i) {
      if (!std::isfinite(w[i])) {
        return absl::DataLossError(absl::StrCat("weight ", t.name, "[", i, "] is not finite"));
      }
    }
    w += t.n;
  }
  if (c.shared_classifier) m->wcls_ = m->emb_;
  return m;
}

}  // namespace kvrecall
