#include "engine/codec_cache.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "codec/attention.h"
#include "codec/half.h"
#include "codec/rope.h"
#include "common/status.h"

namespace kvrecall {
namespace {

class CodecKvCache final : public KvCache {
 public:
  CodecKvCache(std::vector<std::unique_ptr<KvCodec>> codecs, std::string name, std::string model_id)
      : codecs_(std::move(codecs)), name_(std::move(name)), model_id_(std::move(model_id)) {}

  std::string name() const override { return name_; }

  absl::Status Begin(const KvLayout& layout) override {
    RETURN_IF_ERROR(layout.Validate());
    if (static_cast<int>(codecs_.size()) != layout.num_layers) {
      return absl::InvalidArgumentError(absl::StrCat("cache has ", codecs_.size(), " layer codecs, layout has ",
                                                     layout.num_layers, " layers"));
    }
    layout_ = layout;
    row_ = size_t(layout.num_kv_heads) * layout.head_dim;
    layers_.clear();
    layers_.resize(layout.num_layers);
    for (int l = 0; l < layout.num_layers; ++l) {
      Layer& L = layers_[l];
      L.sp = StreamingParamsOf(*codecs_[l]);
      if (L.sp.chunk < 1) L.sp.chunk = 32;
      KvLayout bl = layout;
      bl.keys_pre_rope = L.sp.pre_rope;
      L.fingerprint = ModelFingerprint(model_id_, bl, static_cast<uint16_t>(codecs_[l]->id()), codecs_[l]->params(), 0);
      L.squat = codecs_[l]->id() == CodecId::kSquat;
    }
    return absl::OkStatus();
  }

  absl::Status Append(int layer, const KvTokenView& t) override {
    if (layer < 0 || layer >= layout_.num_layers) return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " out of range"));
    Layer& L = layers_[layer];
    if (t.position != L.tokens()) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": position ", t.position, " out of order (have ",
                                                     L.tokens(), ")"));
    }
    // The window holds f16 values (the methods keep it in fp16): post-RoPE
    // keys for attention and, for pre-RoPE codecs, the pre-RoPE keys they
    // compress.
    for (size_t i = 0; i < row_; ++i) {
      L.win_k.push_back(HalfToFloat(FloatToHalf(t.k[i])));
      L.win_v.push_back(HalfToFloat(FloatToHalf(t.v[i])));
      if (L.sp.pre_rope) L.win_k_pre.push_back(HalfToFloat(FloatToHalf(t.k_pre_rope[i])));
    }
    L.win_pos.push_back(t.position);
    if (static_cast<int>(L.win_pos.size()) >= L.sp.residual + L.sp.chunk) return Compress(layer);
    return absl::OkStatus();
  }

  absl::Status Attend(int layer, int pos, const float* q, const float* q_pre, float* out) override {
    if (layer < 0 || layer >= layout_.num_layers) return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " out of range"));
    Layer& L = layers_[layer];
    if (pos + 1 != L.tokens()) {
      return absl::InvalidArgumentError(absl::StrCat("attend at position ", pos, " but layer ", layer, " holds ",
                                                     L.tokens(), " tokens"));
    }
    if (L.squat && !L.state) {
      // Queries for the subspace: [q_heads][n][d], appended per position.
      const float* src = L.sp.query_pre_rope ? q_pre : q;
      L.queries.push_back(std::vector<float>(src, src + size_t(layout_.num_q_heads) * layout_.head_dim));
    }
    const int d = layout_.head_dim, g = layout_.group_size();
    const int64_t nw = static_cast<int64_t>(L.win_pos.size()), nc = L.comp_tokens;
    const float* wk = L.win_k.data();
    scratch_.resize(std::max<int64_t>(std::max(nw, nc), 1));
    std::vector<float> part(d);
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    for (int h = 0; h < layout_.num_q_heads; ++h) {
      const int kvh = h / g;
      float* o = out + size_t(h) * d;
      float lse = AttendRows(q + size_t(h) * d, L.comp_k.data() + kvh * d, L.comp_v.data() + kvh * d, nc, d,
                             static_cast<int64_t>(row_), scale, o, scratch_.data());
      const float lw = AttendRows(q + size_t(h) * d, wk + kvh * d, L.win_v.data() + kvh * d, nw, d,
                                  static_cast<int64_t>(row_), scale, part.data(), scratch_.data());
      MergeAttention(o, &lse, part.data(), lw, d);
    }
    return absl::OkStatus();
  }

  double BytesPerToken() const override {
    double total = 0;
    for (const Layer& L : layers_) {
      const int64_t n = L.tokens();
      if (n == 0) continue;
      total += (L.block_bytes + double(L.win_pos.size()) * row_ * 2 * 2) / n;
    }
    return total;
  }

 private:
  struct Layer {
    StreamingParams sp;
    Hash128 fingerprint;
    bool squat = false;
    std::vector<float> win_k, win_v, win_k_pre;  // [window][kv_heads][d]; win_k post-RoPE
    std::vector<int> win_pos;
    std::vector<float> comp_k, comp_v;  // decoded, post-RoPE, [n][kv_heads][d]
    int64_t block_bytes = 0;
    std::unique_ptr<CodecState> state;
    std::vector<std::vector<float>> queries;  // per position [q_heads][d]
    int64_t comp_tokens = 0;
    int tokens() const { return static_cast<int>(comp_tokens + win_pos.size()); }
  };

  absl::Status Compress(int layer) {
    Layer& L = layers_[layer];
    const int n = L.sp.chunk, H = layout_.num_kv_heads, d = layout_.head_dim;
    std::vector<float> k(size_t(H) * n * d), v(k.size());
    const std::vector<float>& win_keys = L.sp.pre_rope ? L.win_k_pre : L.win_k;
    for (int t = 0; t < n; ++t)
      for (int h = 0; h < H; ++h)
        for (int c = 0; c < d; ++c) {
          k[(size_t(h) * n + t) * d + c] = win_keys[t * row_ + h * d + c];
          v[(size_t(h) * n + t) * d + c] = L.win_v[t * row_ + h * d + c];
        }
    KvChunkRef chunk;
    chunk.layout = layout_;
    chunk.layout.keys_pre_rope = L.sp.pre_rope;
    chunk.layer_begin = layer;
    chunk.layer_count = 1;
    chunk.first_token = L.win_pos[0];
    chunk.tokens = n;
    chunk.k = k.data();
    chunk.v = v.data();
    EncodeOptions opts;
    opts.fingerprint = L.fingerprint;
    opts.prefill = false;
    opts.state = &L.state;
    std::vector<float> queries;
    if (L.squat && !L.state) {
      const int nq = static_cast<int>(L.queries.size()), Hq = layout_.num_q_heads;
      queries.resize(size_t(Hq) * nq * d);
      for (int i = 0; i < nq; ++i)
        for (int h = 0; h < Hq; ++h)
          std::copy_n(L.queries[i].data() + size_t(h) * d, d, queries.data() + (size_t(h) * nq + i) * d);
      opts.queries = queries.data();
      opts.num_queries = nq;
    }
    ASSIGN_OR_RETURN(std::string block, codecs_[layer]->Encode(chunk, &opts));
    L.queries.clear();
    ASSIGN_OR_RETURN(BlockView view, ParseBlock(AsBytes(block)));
    RETURN_IF_ERROR(codecs_[layer]->Decode(view, k.data(), v.data()));
    L.block_bytes += static_cast<int64_t>(block.size());
    for (int t = 0; t < n; ++t) {
      const size_t at = L.comp_k.size();
      L.comp_k.resize(at + row_);
      L.comp_v.resize(at + row_);
      for (int h = 0; h < H; ++h) {
        for (int c = 0; c < d; ++c) {
          L.comp_k[at + h * d + c] = k[(size_t(h) * n + t) * d + c];
          L.comp_v[at + h * d + c] = v[(size_t(h) * n + t) * d + c];
        }
        if (L.sp.pre_rope) ApplyRope(L.comp_k.data() + at + h * d, layout_, L.win_pos[t]);
      }
    }
    L.comp_tokens += n;
    L.win_k.erase(L.win_k.begin(), L.win_k.begin() + size_t(n) * row_);
    if (L.sp.pre_rope) L.win_k_pre.erase(L.win_k_pre.begin(), L.win_k_pre.begin() + size_t(n) * row_);
    L.win_v.erase(L.win_v.begin(), L.win_v.begin() + size_t(n) * row_);
    L.win_pos.erase(L.win_pos.begin(), L.win_pos.begin() + n);
    return absl::OkStatus();
  }

  std::vector<std::unique_ptr<KvCodec>> codecs_;
  std::string name_, model_id_;
  KvLayout layout_;
  size_t row_ = 0;
  std::vector<Layer> layers_;
  std::vector<float> scratch_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<KvCache>> NewCodecKvCache(std::vector<std::unique_ptr<KvCodec>> per_layer,
                                                         std::string name, std::string model_id) {
  if (per_layer.empty()) return absl::InvalidArgumentError("no codecs");
  return std::unique_ptr<KvCache>(new CodecKvCache(std::move(per_layer), std::move(name), std::move(model_id)));
}

}  // namespace kvrecall
