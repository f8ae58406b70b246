#include "client/retrieval_session.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "codec/attention.h"
#include "codec/block_key.h"
#include "codec/codec.h"
#include "codec/metrics.h"
#include "common/status.h"

namespace kvrecall {
namespace {

// One layer: sinks and the not-yet-offloaded tail kept here in f32, the
// offloaded blocks in the store, their summaries in one index per KV head.
struct LayerState {
  int64_t n = 0;           // tokens appended
  int64_t tail_start = 0;  // first position not offloaded (after the sinks)
  std::vector<float> sink_k, sink_v;                // [H][sinks][d]
  std::vector<float> tail_kpre, tail_k, tail_v;     // [tail tokens][H][d]
  std::vector<std::unique_ptr<RetrievalIndex>> index;  // per KV head, over offloaded tokens
  std::vector<std::vector<int64_t>> last;           // per KV head: positions of the last step
};

class SessionImpl final : public RetrievalSession {
 public:
  SessionImpl(KvClient* c, RetrievalSessionOptions o, std::unique_ptr<KvCodec> codec)
      : client_(c), o_(std::move(o)), codec_(std::move(codec)) {}

  absl::Status Init(const std::vector<TrainingData>& cal) {
    const KvLayout& l = o_.layout;
    RETURN_IF_ERROR(l.Validate());
    if (o_.block_tokens < 1 || o_.sinks < 0 || o_.window < 0) return absl::InvalidArgumentError("bad session sizes");
    if (!cal.empty() && cal.size() != size_t(l.num_layers) * l.num_kv_heads) {
      return absl::InvalidArgumentError("calibration: one sample per (layer, KV head)");
    }
    KvLayout bl = l;
    bl.dtype = DType::kF32;
    bl.keys_pre_rope = false;
    block_layout_ = bl;
    fingerprint_ = ModelFingerprint(o_.model_id, bl, static_cast<uint16_t>(codec_->id()), codec_->params(), 0);
    layers_.resize(l.num_layers);
    for (int layer = 0; layer < l.num_layers; ++layer) {
      LayerState& s = layers_[layer];
      s.tail_start = o_.sinks;
      s.sink_k.assign(size_t(l.num_kv_heads) * o_.sinks * l.head_dim, 0.0f);
      s.sink_v = s.sink_k;
      s.last.resize(l.num_kv_heads);
      for (int h = 0; h < l.num_kv_heads; ++h) {
        ASSIGN_OR_RETURN(std::unique_ptr<RetrievalIndex> idx, MakeRetrievalIndex(o_.index, l));
        TrainingData t;
        t.dim = l.head_dim;
        if (!cal.empty()) t = cal[size_t(layer) * l.num_kv_heads + h];
        RETURN_IF_ERROR(Annotate(idx->Train(t), absl::StrCat("index of layer ", layer, " head ", h)));
        s.index.push_back(std::move(idx));
      }
    }
    return absl::OkStatus();
  }

  absl::Status Append(int layer, const float* k_pre, const float* k_post, const float* v, int tokens) override {
    if (layer < 0 || layer >= static_cast<int>(layers_.size()) || tokens < 0) {
      return absl::InvalidArgumentError("append: layer or token count out of range");
    }
    const int H = o_.layout.num_kv_heads, d = o_.layout.head_dim;
    RETURN_IF_ERROR(CheckFinite(k_post, int64_t(tokens) * H, d, "keys"));
    RETURN_IF_ERROR(CheckFinite(v, int64_t(tokens) * H, d, "values"));
    LayerState& s = layers_[layer];
    for (int t = 0; t < tokens; ++t, ++s.n) {
      const size_t row = size_t(t) * H * d;
      if (s.n < o_.sinks) {
        for (int h = 0; h < H; ++h) {
          std::copy_n(k_post + row + size_t(h) * d, d, s.sink_k.data() + (size_t(h) * o_.sinks + s.n) * d);
          std::copy_n(v + row + size_t(h) * d, d, s.sink_v.data() + (size_t(h) * o_.sinks + s.n) * d);
        }
        continue;
      }
      s.tail_kpre.insert(s.tail_kpre.end(), k_pre + row, k_pre + row + size_t(H) * d);
      s.tail_k.insert(s.tail_k.end(), k_post + row, k_post + row + size_t(H) * d);
      s.tail_v.insert(s.tail_v.end(), v + row, v + row + size_t(H) * d);
    }
    // Offload whole blocks of what has left the window.
    while (s.n - s.tail_start - o_.window >= o_.block_tokens) RETURN_IF_ERROR(Offload(layer));
    return absl::OkStatus();
  }

  absl::Status Step(int layer, const float* q_pre, const float* q_post, float* out) override {
    if (layer < 0 || layer >= static_cast<int>(layers_.size())) return absl::InvalidArgumentError("step: bad layer");
    const KvLayout& l = o_.layout;
    const int H = l.num_kv_heads, G = l.group_size(), d = l.head_dim;
    RETURN_IF_ERROR(CheckFinite(q_post, int64_t(H) * G, d, "queries"));
    LayerState& s = layers_[layer];
    if (s.n == 0) return absl::FailedPreconditionError("step before any token of this layer");
    ++stats_.steps;
    const int64_t m = s.tail_start - o_.sinks;  // offloaded tokens
    using Clock = std::chrono::steady_clock;
    auto us = [](Clock::time_point a) { return std::chrono::duration<double, std::micro>(Clock::now() - a).count(); };
    auto t0 = Clock::now();
    // The union over all query heads of each head's top-K offloaded tokens.
    std::set<int64_t> chosen;
    if (m > 0) {
      SelectionConfig cfg;
      cfg.sinks = 0, cfg.window = 0;
      cfg.topk = o_.topk;
      cfg.topk_fraction = o_.topk_fraction;
      for (int h = 0; h < H; ++h) {
        ASSIGN_OR_RETURN(std::vector<int64_t> sel,
                         SelectTokens(*s.index[h], q_pre + size_t(h) * G * d, q_post + size_t(h) * G * d, G, m - 1, cfg));
        chosen.insert(sel.begin(), sel.end());
      }
    }
    const std::vector<int64_t> rows(chosen.begin(), chosen.end());
    stats_.fetched_rows += static_cast<int64_t>(rows.size());
    stats_.select_us += us(t0);
    t0 = Clock::now();
    // Local rows per head: sinks, then the tail.
    const int64_t ns = std::min<int64_t>(s.n, o_.sinks), nt = s.n - s.tail_start > 0 ? s.n - s.tail_start : 0;
    const int64_t local = ns + nt;
    const float scale = 1.0f / std::sqrt(float(d));
    std::vector<float> kl(size_t(local) * d), vl(kl.size()), part(d), scratch(local + rows.size() + 1);
    std::vector<float> fk, fv;  // gather mode: fetched rows [H][rows][d]
    KvClient::AttendResult remote;
    if (!rows.empty()) {
      const KvClient::SequenceRef ref{fingerprint_, o_.sequence_id, layer, 1, o_.block_tokens, H, d};
      if (o_.fetch == RetrievalSessionOptions::Fetch::kGather) {
        ASSIGN_OR_RETURN(std::vector<float> kv, client_->GatherSequence(ref, rows).get());
        const size_t per = size_t(H) * rows.size() * d;
        fk.assign(kv.begin(), kv.begin() + per);
        fv.assign(kv.begin() + per, kv.end());
        stats_.bytes_moved += static_cast<int64_t>(kv.size() * sizeof(float));
      } else {
        std::map<int64_t, std::vector<uint32_t>> by_block;
        for (int64_t j : rows) by_block[j / o_.block_tokens].push_back(static_cast<uint32_t>(j % o_.block_tokens));
        std::vector<KvClient::GatherItem> items;
        for (auto& [b, r] : by_block) {
          items.push_back({SequenceBlockKey(fingerprint_, client_->namespace_salt(), o_.sequence_id, layer, 1, b), r});
        }
        std::vector<float> q(q_post, q_post + size_t(H) * G * d);  // [1][H][G][d]
        ASSIGN_OR_RETURN(remote, client_->Attend(std::move(items), G, scale, std::move(q), d).get());
        stats_.bytes_moved += static_cast<int64_t>((remote.out.size() + remote.lse.size()) * sizeof(float));
      }
    }
    stats_.fetch_us += us(t0);
    t0 = Clock::now();
    for (int h = 0; h < H; ++h) {
      for (int64_t i = 0; i < ns; ++i) {
        std::copy_n(s.sink_k.data() + (size_t(h) * o_.sinks + i) * d, d, kl.data() + size_t(i) * d);
        std::copy_n(s.sink_v.data() + (size_t(h) * o_.sinks + i) * d, d, vl.data() + size_t(i) * d);
      }
      for (int64_t i = 0; i < nt; ++i) {
        std::copy_n(s.tail_k.data() + (size_t(i) * H + h) * d, d, kl.data() + size_t(ns + i) * d);
        std::copy_n(s.tail_v.data() + (size_t(i) * H + h) * d, d, vl.data() + size_t(ns + i) * d);
      }
      // Positions attended (for stats and live recall).
      std::vector<int64_t>& last = s.last[h];
      last.clear();
      for (int64_t i = 0; i < ns; ++i) last.push_back(i);
      for (int64_t j : rows) last.push_back(o_.sinks + j);
      for (int64_t i = 0; i < nt; ++i) last.push_back(s.tail_start + i);
      std::vector<float> ka = kl, va = vl;  // local (+ fetched rows in gather mode)
      if (!fk.empty()) {
        ka.insert(ka.end(), fk.begin() + size_t(h) * rows.size() * d, fk.begin() + size_t(h + 1) * rows.size() * d);
        va.insert(va.end(), fv.begin() + size_t(h) * rows.size() * d, fv.begin() + size_t(h + 1) * rows.size() * d);
      }
      const int64_t n_rows = static_cast<int64_t>(ka.size() / d);
      for (int g = 0; g < G; ++g) {
        const size_t qi = size_t(h) * G + g;
        float* o = out + qi * d;
        float lse = AttendRows(q_post + qi * d, ka.data(), va.data(), n_rows, d, d, scale, o, scratch.data());
        if (!remote.out.empty()) MergeAttention(o, &lse, remote.out.data() + qi * d, remote.lse[qi], d);
      }
    }
    stats_.attend_us += us(t0);
    if (o_.recall_every > 0 && stats_.steps % o_.recall_every == 0) RETURN_IF_ERROR(SampleRecall(layer, q_post, out));
    return absl::OkStatus();
  }

  // Exact attention over every token of the layer (offloaded rows as stored)
  // against what the step selected and computed.
  absl::Status SampleRecall(int layer, const float* q_post, const float* out) {
    const KvLayout& l = o_.layout;
    const int H = l.num_kv_heads, G = l.group_size(), d = l.head_dim;
    LayerState& s = layers_[layer];
    const int64_t m = s.tail_start - o_.sinks, ns = std::min<int64_t>(s.n, o_.sinks);
    std::vector<float> off_k, off_v;
    if (m > 0) {
      std::vector<int64_t> all(m);
      for (int64_t j = 0; j < m; ++j) all[j] = j;
      const KvClient::SequenceRef ref{fingerprint_, o_.sequence_id, layer, 1, o_.block_tokens, H, d};
      ASSIGN_OR_RETURN(std::vector<float> kv, client_->GatherSequence(ref, all).get());
      off_k.assign(kv.begin(), kv.begin() + kv.size() / 2);
      off_v.assign(kv.begin() + kv.size() / 2, kv.end());
    }
    const float scale = 1.0f / std::sqrt(float(d));
    std::vector<float> k(size_t(s.n) * d), v(k.size()), exact(d), scratch(s.n);
    for (int h = 0; h < H; ++h) {
      for (int64_t p = 0; p < s.n; ++p) {  // every position in order
        const float *kr, *vr;
        if (p < ns) {
          kr = s.sink_k.data() + (size_t(h) * o_.sinks + p) * d, vr = s.sink_v.data() + (size_t(h) * o_.sinks + p) * d;
        } else if (p < s.tail_start) {
          kr = off_k.data() + (size_t(h) * m + (p - o_.sinks)) * d, vr = off_v.data() + (size_t(h) * m + (p - o_.sinks)) * d;
        } else {
          kr = s.tail_k.data() + (size_t(p - s.tail_start) * H + h) * d;
          vr = s.tail_v.data() + (size_t(p - s.tail_start) * H + h) * d;
        }
        std::copy_n(kr, d, k.data() + size_t(p) * d);
        std::copy_n(vr, d, v.data() + size_t(p) * d);
      }
      const std::vector<int> ids(s.last[h].begin(), s.last[h].end());
      for (int g = 0; g < G; ++g) {
        const size_t qi = size_t(h) * G + g;
        const std::vector<double> probs =
            AttentionProbs(q_post + qi * d, static_cast<int>(s.n - 1), k.data(), static_cast<int>(s.n), d, scale);
        const SelectionRecall r = ComputeSelectionRecall(probs, ids);
        AttendRows(q_post + qi * d, k.data(), v.data(), s.n, d, d, scale, exact.data(), scratch.data());
        const double n = static_cast<double>(++stats_.recall_samples);
        stats_.topk_recall += (r.topk_recall - stats_.topk_recall) / n;
        stats_.mass_recall += (r.mass_recall - stats_.mass_recall) / n;
        stats_.output_error += (RelativeError(exact.data(), out + qi * d, d) - stats_.output_error) / n;
      }
    }
    return absl::OkStatus();
  }

  const std::vector<std::vector<int64_t>>& last_selection(int layer) const override { return layers_.at(layer).last; }
  int64_t size(int layer) const override { return layers_.at(layer).n; }
  RetrievalSessionStats stats() const override { return stats_; }

 private:
  absl::Status Offload(int layer) {
    LayerState& s = layers_[layer];
    const int H = o_.layout.num_kv_heads, d = o_.layout.head_dim, B = o_.block_tokens;
    const int64_t block = (s.tail_start - o_.sinks) / B;
    // Chunk layout [1][H][B][d] from the tail's [B][H][d].
    std::vector<float> k(size_t(H) * B * d), v(k.size()), kpre_h(size_t(B) * d), kpost_h(kpre_h.size());
    for (int t = 0; t < B; ++t)
      for (int h = 0; h < H; ++h) {
        std::copy_n(s.tail_k.data() + (size_t(t) * H + h) * d, d, k.data() + (size_t(h) * B + t) * d);
        std::copy_n(s.tail_v.data() + (size_t(t) * H + h) * d, d, v.data() + (size_t(h) * B + t) * d);
      }
    KvChunkRef c;
    c.layout = block_layout_;
    c.layer_begin = layer;
    c.layer_count = 1;
    c.first_token = static_cast<uint64_t>(s.tail_start);
    c.tokens = B;
    c.k = k.data(), c.v = v.data();
    EncodeOptions eo;
    eo.fingerprint = fingerprint_;
    ASSIGN_OR_RETURN(std::string blk, codec_->Encode(c, &eo));
    const BlockKey key = SequenceBlockKey(fingerprint_, client_->namespace_salt(), o_.sequence_id, layer, 1, block);
    std::vector<absl::Status> saved = client_->Save({key}, {AsBytesOf(blk)}).get();
    if (!saved[0].ok()) return Annotate(saved[0], "offloading a block");
    ++stats_.saved_blocks, stats_.saved_bytes += static_cast<int64_t>(blk.size());
    for (int h = 0; h < H; ++h) {
      for (int t = 0; t < B; ++t) {
        std::copy_n(s.tail_kpre.data() + (size_t(t) * H + h) * d, d, kpre_h.data() + size_t(t) * d);
        std::copy_n(s.tail_k.data() + (size_t(t) * H + h) * d, d, kpost_h.data() + size_t(t) * d);
      }
      RETURN_IF_ERROR(s.index[h]->Add(kpre_h.data(), kpost_h.data(), B));
    }
    const size_t drop = size_t(B) * H * d;
    s.tail_kpre.erase(s.tail_kpre.begin(), s.tail_kpre.begin() + drop);
    s.tail_k.erase(s.tail_k.begin(), s.tail_k.begin() + drop);
    s.tail_v.erase(s.tail_v.begin(), s.tail_v.begin() + drop);
    s.tail_start += B;
    stats_.offloaded_tokens += B;
    return absl::OkStatus();
  }

  static absl::Span<const uint8_t> AsBytesOf(const std::string& s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
  }

  KvClient* client_;
  RetrievalSessionOptions o_;
  std::unique_ptr<KvCodec> codec_;
  KvLayout block_layout_;
  Hash128 fingerprint_;
  std::vector<LayerState> layers_;
  RetrievalSessionStats stats_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<RetrievalSession>> RetrievalSession::Open(KvClient* client,
                                                                         const RetrievalSessionOptions& options,
                                                                         const std::vector<TrainingData>& calibration) {
  if (client == nullptr) return absl::InvalidArgumentError("session needs a client");
  ASSIGN_OR_RETURN(std::unique_ptr<KvCodec> codec, MakeCodec(options.codec));
  if (codec->id() == CodecId::kSquat || codec->id() == CodecId::kCommVq || StreamingParamsOf(*codec).pre_rope) {
    return absl::InvalidArgumentError("session blocks need a stateless post-RoPE codec");
  }
  auto s = std::make_unique<SessionImpl>(client, options, std::move(codec));
  RETURN_IF_ERROR(s->Init(calibration));
  return std::unique_ptr<RetrievalSession>(std::move(s));
}

}  // namespace kvrecall
