#include "client/retrieval_session.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <future>
#include <limits>
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
  int64_t tail_start = 0;  // first position not in the store (after the sinks)
  int64_t indexed = 0;     // tokens in the index: positions sinks .. sinks + indexed - 1
  std::vector<float> sink_k, sink_v;                // [H][sinks][d]
  std::vector<float> tail_k, tail_v;                // [tail tokens][H][d], from tail_start
  std::vector<float> tail_kpre;                     // [..][H][d], from sinks + indexed (not yet indexed)
  std::vector<std::unique_ptr<RetrievalIndex>> index;  // per KV head, over the indexed tokens
  std::vector<CodeSortedLayout> sorted;             // per KV head (segment_blocks > 0)
  // Per KV head, the last step's picks: storage rows, and positions still
  // waiting here for their segment; the positions of all it attended over
  // are derived from them when asked for.
  std::vector<std::vector<int64_t>> last_rows, last_pending;
  mutable std::vector<std::vector<int64_t>> last;
  mutable bool last_stale = false;
  // Gather mode with prefetch: per KV head, rows (offloaded indices, sorted)
  // fetched ahead of this layer's next step, and their K then V.
  struct Prefetched {
    std::vector<int64_t> rows;
    std::future<absl::StatusOr<std::vector<float>>> kv;
  };
  std::vector<Prefetched> prefetch;
};

class SessionImpl final : public RetrievalSession {
 public:
  SessionImpl(KvClient* c, RetrievalSessionOptions o, std::unique_ptr<KvCodec> codec)
      : client_(c), o_(std::move(o)), codec_(std::move(codec)) {}

  absl::Status Init(const std::vector<TrainingData>& cal) {
    const KvLayout& l = o_.layout;
    RETURN_IF_ERROR(l.Validate());
    if (o_.block_tokens < 1 || o_.sinks < 0 || o_.window < 0 || o_.segment_blocks < 0) {
      return absl::InvalidArgumentError("bad session sizes");
    }
    if (o_.segment_blocks > 0 && int64_t{o_.segment_blocks} * o_.block_tokens > int64_t{UINT32_MAX}) {
      return absl::InvalidArgumentError(absl::StrCat("a segment of ", o_.segment_blocks, " x ", o_.block_tokens,
                                                     " tokens; at most 2^32 - 1"));
    }
    if (o_.chunk_shift != 0 && (o_.chunk_shift < kMinChunkShift || o_.chunk_shift > kMaxChunkShift)) {
      return absl::InvalidArgumentError(absl::StrCat("chunk_shift ", o_.chunk_shift, " outside [", kMinChunkShift,
                                                     ", ", kMaxChunkShift, "] (0: none)"));
    }
    if (!cal.empty() && cal.size() != size_t(l.num_layers) * l.num_kv_heads) {
      return absl::InvalidArgumentError("calibration: one sample per (layer, KV head)");
    }
    KvLayout bl = l;
    bl.dtype = DType::kF32;
    bl.keys_pre_rope = false;
    head_layout_ = bl;  // one KV head (and its query group) per block
    head_layout_.num_kv_heads = 1;
    head_layout_.num_q_heads = l.group_size();
    fingerprint_ = ModelFingerprint(o_.model_id, bl, static_cast<uint16_t>(codec_->id()), codec_->params(), 0);
    layers_.resize(l.num_layers);
    for (int layer = 0; layer < l.num_layers; ++layer) {
      LayerState& s = layers_[layer];
      s.tail_start = o_.sinks;
      s.sink_k.assign(size_t(l.num_kv_heads) * o_.sinks * l.head_dim, 0.0f);
      s.sink_v = s.sink_k;
      s.last.resize(l.num_kv_heads);
      s.last_rows.resize(l.num_kv_heads);
      s.last_pending.resize(l.num_kv_heads);
      s.prefetch.resize(l.num_kv_heads);
      if (o_.segment_blocks > 0) s.sorted.resize(l.num_kv_heads);
      for (int h = 0; h < l.num_kv_heads; ++h) {
        ASSIGN_OR_RETURN(std::unique_ptr<RetrievalIndex> idx, MakeRetrievalIndex(o_.index, l));
        TrainingData t;
        t.dim = l.head_dim;
        if (!cal.empty()) t = cal[size_t(layer) * l.num_kv_heads + h];
        RETURN_IF_ERROR(Annotate(idx->Train(t), absl::StrCat("index of layer ", layer, " head ", h)));
        if (o_.segment_blocks > 0) RETURN_IF_ERROR(InitSorted(*idx, t, &s.sorted[h]));
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
    // Index whole blocks of what has left the window; store them at once
    // (time order) or a segment at a time (code-sorted).
    const int64_t B = o_.block_tokens, segment = int64_t{o_.segment_blocks} * B;
    while (s.n - o_.sinks - s.indexed - o_.window >= B) {
      RETURN_IF_ERROR(IndexBlock(layer));
      if (o_.segment_blocks == 0) {
        RETURN_IF_ERROR(Store(layer, B, {}));
      } else if (s.indexed - (s.tail_start - o_.sinks) >= segment) {
        std::vector<std::vector<uint32_t>> perms(H);
        for (int h = 0; h < H; ++h) {
          const int64_t before = s.sorted[h].StateBytes();
          ASSIGN_OR_RETURN(perms[h], s.sorted[h].Seal(*s.index[h]));
          stats_.layout_bytes += s.sorted[h].StateBytes() - before;
        }
        RETURN_IF_ERROR(Store(layer, segment, perms));
      }
    }
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
    const int64_t m = s.indexed, stored = s.tail_start - o_.sinks;  // indexed tokens, those in the store
    using Clock = std::chrono::steady_clock;
    auto us = [](Clock::time_point a) { return std::chrono::duration<double, std::micro>(Clock::now() - a).count(); };
    auto t0 = Clock::now();
    // Per KV head: the union over its query heads of each head's top-K
    // offloaded tokens (sorted).
    std::vector<std::vector<int64_t>> rows(H), pend(H);  // storage rows; positions waiting here (- sinks)
    const int64_t k = o_.topk > 0 ? o_.topk : static_cast<int64_t>(std::ceil(o_.topk_fraction * m));
    const int64_t qpos = s.n - 1 - std::min<int64_t>(s.n, o_.sinks);  // the query's position among the indexed tokens'
    SelectionConfig cfg;  // time order: over the indexed tokens, no sinks or window of their own
    cfg.sinks = 0, cfg.window = 0, cfg.topk = k;
    // Each head's request is sent as soon as its rows are selected, before
    // the next head is selected and before any reply is awaited: the store
    // works on one head while the next is selected, and the heads' fetches
    // run concurrently (on different nodes where blocks are).
    const float scale = 1.0f / std::sqrt(float(d));
    std::vector<std::future<absl::StatusOr<std::vector<float>>>> gathers(H);
    std::vector<std::future<absl::StatusOr<KvClient::AttendResult>>> attends(H);
    std::vector<std::vector<int64_t>> missing(H);      // gather: rows not prefetched, asked now
    std::vector<std::map<int64_t, size_t>> have(H);    // gather: prefetched row -> its index
    std::vector<std::vector<float>> pre(H);            // gather: the prefetched K then V
    double select_us = 0;
    for (int h = 0; h < H; ++h) {
      const Clock::time_point ts = Clock::now();
      if (k > 0 && o_.segment_blocks > 0) {
        CodeSortedLayout::Picks picks;
        RETURN_IF_ERROR(s.sorted[h].Select(*s.index[h], q_pre + size_t(h) * G * d, q_post + size_t(h) * G * d, G, m,
                                           k, &picks, qpos));
        rows[h] = std::move(picks.rows), pend[h] = std::move(picks.pending);
      } else if (k > 0) {
        ASSIGN_OR_RETURN(rows[h], SelectTokens(*s.index[h], q_pre + size_t(h) * G * d, q_post + size_t(h) * G * d,
                                               G, qpos, cfg));
      }
      stats_.fetched_rows += static_cast<int64_t>(rows[h].size());
      stats_.pending_rows += static_cast<int64_t>(pend[h].size());
      select_us += us(ts);
      LayerState::Prefetched& p = s.prefetch[h];
      if (p.kv.valid()) {  // consumed (or dropped) by this step either way
        absl::StatusOr<std::vector<float>> kv = p.kv.get();
        if (kv.ok() && !rows[h].empty()) {
          pre[h] = std::move(*kv);
          stats_.bytes_moved += static_cast<int64_t>(pre[h].size() * sizeof(float));
          stats_.prefetched_rows += static_cast<int64_t>(p.rows.size());
          for (size_t i = 0; i < p.rows.size(); ++i) have[h][p.rows[i]] = i;
        }
        p.rows.clear();
      }
      if (rows[h].empty()) continue;
      if (o_.fetch == RetrievalSessionOptions::Fetch::kGather) {
        for (int64_t j : rows[h]) {
          if (have[h].count(j) == 0) missing[h].push_back(j);
        }
        stats_.prefetch_hits += static_cast<int64_t>(rows[h].size() - missing[h].size());
        if (!missing[h].empty()) gathers[h] = client_->GatherSequence(HeadRef(layer, h), missing[h]);
      } else {
        std::vector<KvClient::GatherItem> items;
        for (size_t i = 0; i < rows[h].size();) {  // rows are sorted: one item per block
          const int64_t b = rows[h][i] / o_.block_tokens;
          KvClient::GatherItem item{HeadBlockKey(layer, h, b), {}};
          for (; i < rows[h].size() && rows[h][i] / o_.block_tokens == b; ++i) {
            item.rows.push_back(static_cast<uint32_t>(rows[h][i] % o_.block_tokens));
          }
          items.push_back(std::move(item));
        }
        std::vector<float> q(q_post + size_t(h) * G * d, q_post + size_t(h + 1) * G * d);  // [1][1][G][d]
        attends[h] = client_->Attend(std::move(items), G, scale, std::move(q), d);
      }
    }
    stats_.select_us += select_us;
    std::vector<std::vector<float>> fetched(H);            // gather: [rows][d] K then V
    std::vector<KvClient::AttendResult> remote(H);         // attend: [G][d] + [G]
    absl::Status failed;
    for (int h = 0; h < H; ++h) {
      if (o_.fetch == RetrievalSessionOptions::Fetch::kGather && !rows[h].empty()) {
        std::vector<float> got;
        if (gathers[h].valid()) {
          auto kv = gathers[h].get();
          if (!kv.ok()) { failed.Update(kv.status()); continue; }
          got = std::move(*kv);
          stats_.bytes_moved += static_cast<int64_t>(got.size() * sizeof(float));
        }
        // K then V of rows[h], in order, from the prefetch or this fetch.
        const size_t nr = rows[h].size(), np = have[h].size(), nm = missing[h].size();
        fetched[h].resize(2 * nr * d);
        size_t mi = 0;
        for (size_t i = 0; i < nr; ++i) {
          const auto it = have[h].find(rows[h][i]);
          const float* k = it != have[h].end() ? pre[h].data() + it->second * d : got.data() + mi * d;
          const float* v = it != have[h].end() ? pre[h].data() + (np + it->second) * d : got.data() + (nm + mi) * d;
          if (it == have[h].end()) ++mi;
          std::copy_n(k, d, fetched[h].data() + i * d);
          std::copy_n(v, d, fetched[h].data() + (nr + i) * d);
        }
      } else if (attends[h].valid()) {
        auto r = attends[h].get();
        if (!r.ok()) { failed.Update(r.status()); continue; }
        remote[h] = std::move(*r);
        stats_.bytes_moved += static_cast<int64_t>((remote[h].out.size() + remote[h].lse.size()) * sizeof(float));
      }
    }
    RETURN_IF_ERROR(failed);
    stats_.fetch_us += us(t0) - select_us;  // sends and waits (selection overlaps the store's work)
    t0 = Clock::now();
    // Per KV head, one pass over each local part for all its query heads
    // (AttendGroup), read where it lies: the sinks, the picked tokens still
    // waiting here (copied together), the window (the tail past the indexed
    // tokens, rows H * d apart), then the fetched rows and the store's part,
    // merged by log-sum-exp.
    const int64_t ns = std::min<int64_t>(s.n, o_.sinks);
    const int64_t window_off = m - stored;  // tail offset of the first window token
    const int64_t nw = std::max<int64_t>(0, s.n - s.tail_start - window_off);
    std::vector<float> kp, vp, part(size_t(G) * d), part_lse(G), lse(G);
    for (int h = 0; h < H; ++h) {
      const float* qh = q_post + size_t(h) * G * d;
      float* oh = out + size_t(h) * G * d;
      std::fill(oh, oh + size_t(G) * d, 0.0f);
      std::fill(lse.begin(), lse.end(), -std::numeric_limits<float>::infinity());
      auto merge = [&](const float* o, const float* l) {  // a partial result [G][d] + [G]
        for (int g = 0; g < G; ++g) MergeAttention(oh + size_t(g) * d, &lse[g], o + size_t(g) * d, l[g], d);
      };
      auto add = [&](const float* k, const float* v, int64_t n, int64_t stride) {
        if (n <= 0) return;
        AttendGroup(qh, G, k, v, n, d, stride, scale, part.data(), part_lse.data());
        merge(part.data(), part_lse.data());
      };
      add(s.sink_k.data() + size_t(h) * o_.sinks * d, s.sink_v.data() + size_t(h) * o_.sinks * d, ns, d);
      const int64_t np = static_cast<int64_t>(pend[h].size());
      if (np > 0) {
        kp.resize(size_t(np) * d), vp.resize(kp.size());
        for (int64_t i = 0; i < np; ++i) {
          const int64_t t = pend[h][i] - stored;  // tail offset
          std::copy_n(s.tail_k.data() + (size_t(t) * H + h) * d, d, kp.data() + size_t(i) * d);
          std::copy_n(s.tail_v.data() + (size_t(t) * H + h) * d, d, vp.data() + size_t(i) * d);
        }
        add(kp.data(), vp.data(), np, d);
      }
      if (nw > 0) {
        const size_t w0 = (size_t(window_off) * H + h) * d;
        add(s.tail_k.data() + w0, s.tail_v.data() + w0, nw, int64_t(H) * d);
      }
      if (!fetched[h].empty()) {
        const int64_t nf = static_cast<int64_t>(rows[h].size());
        add(fetched[h].data(), fetched[h].data() + size_t(nf) * d, nf, d);
      }
      if (!remote[h].out.empty()) merge(remote[h].out.data(), remote[h].lse.data());
    }
    stats_.attend_us += us(t0);
    s.last_rows = std::move(rows), s.last_pending = std::move(pend);
    s.last_stale = true;
    if (o_.prefetch && o_.fetch == RetrievalSessionOptions::Fetch::kGather) PrefetchNext(layer);
    if (o_.recall_every > 0 && stats_.steps % o_.recall_every == 0) RETURN_IF_ERROR(SampleRecall(layer, q_post, out));
    return absl::OkStatus();
  }

  // Exact attention over every token of the layer (offloaded rows as stored)
  // against what the step selected and computed.
  absl::Status SampleRecall(int layer, const float* q_post, const float* out) {
    const KvLayout& l = o_.layout;
    const int H = l.num_kv_heads, G = l.group_size(), d = l.head_dim;
    LayerState& s = layers_[layer];
    BuildLast(s);
    const int64_t m = s.tail_start - o_.sinks, ns = std::min<int64_t>(s.n, o_.sinks);
    std::vector<std::vector<float>> off(H);  // per head: [m][d] K then V, in storage order
    if (m > 0) {
      std::vector<int64_t> all(m);
      for (int64_t j = 0; j < m; ++j) all[j] = j;
      for (int h = 0; h < H; ++h) {
        ASSIGN_OR_RETURN(off[h], client_->GatherSequence(HeadRef(layer, h), all).get());
      }
    }
    const float scale = 1.0f / std::sqrt(float(d));
    std::vector<float> k(size_t(s.n) * d), v(k.size()), exact(size_t(G) * d), lse(G);
    std::vector<KvClient::RecallSample> report;
    for (int h = 0; h < H; ++h) {
      const std::vector<int64_t> row_of = StorageRows(s, h);
      for (int64_t p = 0; p < s.n; ++p) {  // every position in order
        const float *kr, *vr;
        if (p < ns) {
          kr = s.sink_k.data() + (size_t(h) * o_.sinks + p) * d, vr = s.sink_v.data() + (size_t(h) * o_.sinks + p) * d;
        } else if (p < s.tail_start) {
          const int64_t r = row_of[p - o_.sinks];
          kr = off[h].data() + size_t(r) * d, vr = off[h].data() + size_t(m + r) * d;
        } else {
          kr = s.tail_k.data() + (size_t(p - s.tail_start) * H + h) * d;
          vr = s.tail_v.data() + (size_t(p - s.tail_start) * H + h) * d;
        }
        std::copy_n(kr, d, k.data() + size_t(p) * d);
        std::copy_n(vr, d, v.data() + size_t(p) * d);
      }
      const std::vector<int> ids(s.last[h].begin(), s.last[h].end());
      const float* qh = q_post + size_t(h) * G * d;
      const std::vector<SelectionRecall> recalls = GroupSelectionRecall(qh, G, k.data(), s.n, d, d, scale, ids);
      AttendGroup(qh, G, k.data(), v.data(), s.n, d, d, scale, exact.data(), lse.data());
      for (int g = 0; g < G; ++g) {
        const size_t qi = size_t(h) * G + g;
        const SelectionRecall& r = recalls[g];
        const double n = static_cast<double>(++stats_.recall_samples);
        stats_.topk_recall += (r.topk_recall - stats_.topk_recall) / n;
        stats_.mass_recall += (r.mass_recall - stats_.mass_recall) / n;
        const double err = RelativeError(exact.data() + size_t(g) * d, out + qi * d, d);
        stats_.output_error += (err - stats_.output_error) / n;
        report.push_back({static_cast<float>(std::clamp(r.topk_recall, 0.0, 1.0)),
                          static_cast<float>(std::clamp(r.mass_recall, 0.0, 1.0)),
                          static_cast<float>(std::min(err, 1e6))});
      }
    }
    if (o_.report_recall && !report.empty()) {
      ++stats_.recall_reports;
      if (!client_->ReportRecall(HeadBlockKey(layer, 0, 0), std::move(report)).get().ok()) {
        ++stats_.recall_report_failures;
      }
    }
    return absl::OkStatus();
  }

  const std::vector<std::vector<int64_t>>& last_selection(int layer) const override {
    const LayerState& s = layers_.at(layer);
    BuildLast(s);
    return s.last;
  }
  int64_t size(int layer) const override { return layers_.at(layer).n; }
  RetrievalSessionStats stats() const override { return stats_; }

 private:
  // Fetches, for the layer stepped next ((layer + 1) mod layers: decode order),
  // the offloaded rows its previous step used, betting on the selection
  // changing little between steps; that step fetches only what is new.
  void PrefetchNext(int layer) {
    const int next = (layer + 1) % static_cast<int>(layers_.size());
    LayerState& s = layers_[next];
    for (int h = 0; h < o_.layout.num_kv_heads; ++h) {
      LayerState::Prefetched& p = s.prefetch[h];
      if (p.kv.valid()) continue;  // one in flight already
      p.rows = s.last_rows[h];
      if (!p.rows.empty()) p.kv = client_->GatherSequence(HeadRef(next, h), p.rows);
    }
  }

  // The storage order of codes: by score under the calibration's mean
  // query (codes queries pick together sit together); code order without one.
  absl::Status InitSorted(const RetrievalIndex& idx, const TrainingData& t, CodeSortedLayout* layout) {
    const int nc = idx.num_codes(), d = o_.layout.head_dim;
    if (nc <= 0) return absl::InvalidArgumentError(absl::StrCat("segment_blocks needs an index with per-token codes; ",
                                                                idx.name(), " has none"));
    const int64_t segment = int64_t{o_.segment_blocks} * o_.block_tokens;
    if (idx.band_tokens() > 0 && idx.band_tokens() % segment != 0) {
      return absl::InvalidArgumentError(absl::StrCat("the index's position bands of ", idx.band_tokens(),
                                                     " tokens are not whole segments of ", segment, " tokens"));
    }
    std::vector<int> order(nc);
    for (int c = 0; c < nc; ++c) order[c] = c;
    if (t.num_queries > 0 && t.q_post != nullptr) {
      std::vector<float> mean_pre(d, 0.0f), mean_post(d, 0.0f), table(nc);
      for (int64_t i = 0; i < t.num_queries; ++i) {
        for (int j = 0; j < d; ++j) {
          mean_post[j] += t.q_post[size_t(i) * d + j] / float(t.num_queries);
          if (t.q_pre) mean_pre[j] += t.q_pre[size_t(i) * d + j] / float(t.num_queries);
        }
      }
      RETURN_IF_ERROR(idx.CodeScores(mean_pre.data(), mean_post.data(), 1, absl::MakeSpan(table)));
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return table[a] > table[b]; });
    }
    return layout->Init(std::move(order), int64_t{o_.segment_blocks} * o_.block_tokens);
  }

  // Adds the next block's worth of tokens past the indexed ones (they have
  // left the window) to each KV head's index.
  absl::Status IndexBlock(int layer) {
    LayerState& s = layers_[layer];
    const int H = o_.layout.num_kv_heads, d = o_.layout.head_dim, B = o_.block_tokens;
    const int64_t off = s.indexed - (s.tail_start - o_.sinks);  // tail offset of the block's first token
    std::vector<float> k(size_t(B) * d), kpre(k.size());
    for (int h = 0; h < H; ++h) {
      for (int t = 0; t < B; ++t) {
        std::copy_n(s.tail_k.data() + (size_t(off + t) * H + h) * d, d, k.data() + size_t(t) * d);
        std::copy_n(s.tail_kpre.data() + (size_t(t) * H + h) * d, d, kpre.data() + size_t(t) * d);
      }
      RETURN_IF_ERROR(s.index[h]->Add(kpre.data(), k.data(), B));
    }
    s.tail_kpre.erase(s.tail_kpre.begin(), s.tail_kpre.begin() + size_t(B) * H * d);
    s.indexed += B;
    return absl::OkStatus();
  }

  // Stores the first `tokens` tail tokens as blocks, per KV head in the
  // order perms[h] gives (storage row -> tail offset), or in time order.
  // Blocks are per KV head (a sequence per head), so a head's selected rows
  // cost only that head's bytes to fetch and decode.
  absl::Status Store(int layer, int64_t tokens, const std::vector<std::vector<uint32_t>>& perms) {
    LayerState& s = layers_[layer];
    const int H = o_.layout.num_kv_heads, d = o_.layout.head_dim, B = o_.block_tokens;
    const int64_t first_block = (s.tail_start - o_.sinks) / B, nb = tokens / B;
    std::vector<std::string> blocks;
    std::vector<BlockKey> keys;
    // Saved in batches of about kSaveBatchBytes, so a large segment is never
    // held encoded all at once.
    constexpr size_t kSaveBatchBytes = size_t{64} << 20;
    size_t batch_bytes = 0;
    auto save = [&]() -> absl::Status {
      std::vector<absl::Span<const uint8_t>> spans;
      for (const std::string& b : blocks) spans.push_back(AsBytesOf(b));
      std::vector<absl::Status> saved = client_->Save(keys, spans).get();
      for (size_t i = 0; i < blocks.size(); ++i) {
        if (!saved[i].ok()) return Annotate(saved[i], "offloading a block");
        ++stats_.saved_blocks, stats_.saved_bytes += static_cast<int64_t>(blocks[i].size());
      }
      blocks.clear(), keys.clear(), batch_bytes = 0;
      return absl::OkStatus();
    };
    std::vector<float> k(size_t(B) * d), v(k.size());
    // Saved coldest block first, every head's block b before any head's
    // b - 1: a code-sorted segment's first blocks hold the codes that rank
    // highest under the mean query, the ones steps pick most, and saved last
    // they are what an LRU host tier keeps when the segment outgrows it.
    // (Time order stores one block at a time.)
    for (int64_t i = 0; i < nb * H; ++i) {
      const int64_t b = nb - 1 - i / H;
      const int h = static_cast<int>(i % H);
      for (int t = 0; t < B; ++t) {  // [B][d] of head h from the tail's [tokens][H][d]
        const int64_t row = b * B + t, src = perms.empty() ? row : int64_t{perms[h][row]};
        std::copy_n(s.tail_k.data() + (size_t(src) * H + h) * d, d, k.data() + size_t(t) * d);
        std::copy_n(s.tail_v.data() + (size_t(src) * H + h) * d, d, v.data() + size_t(t) * d);
      }
      KvChunkRef c;
      c.layout = head_layout_;
      c.layer_begin = layer;
      c.layer_count = 1;
      c.first_token = static_cast<uint64_t>(s.tail_start + b * B);  // code-sorted: counts storage rows
      c.tokens = B;
      c.k = k.data(), c.v = v.data();
      EncodeOptions eo;
      eo.fingerprint = fingerprint_;
      eo.chunk_shift = o_.chunk_shift;
      ASSIGN_OR_RETURN(std::string block, codec_->Encode(c, &eo));
      batch_bytes += block.size();
      blocks.push_back(std::move(block));
      keys.push_back(HeadBlockKey(layer, h, first_block + b));
      if (batch_bytes >= kSaveBatchBytes) RETURN_IF_ERROR(save());
    }
    if (!blocks.empty()) RETURN_IF_ERROR(save());
    const size_t drop = size_t(tokens) * H * d;
    s.tail_k.erase(s.tail_k.begin(), s.tail_k.begin() + drop);
    s.tail_v.erase(s.tail_v.begin(), s.tail_v.begin() + drop);
    s.tail_start += tokens;
    stats_.offloaded_tokens += tokens;
    return absl::OkStatus();
  }

  // Storage row of each stored token of KV head h (position - sinks).
  std::vector<int64_t> StorageRows(const LayerState& s, int h) const {
    const int64_t stored = s.tail_start - o_.sinks;
    std::vector<int64_t> row_of(stored);
    for (int64_t j = 0; j < stored; ++j) row_of[j] = j;
    if (o_.segment_blocks == 0) return row_of;
    const CodeSortedLayout& l = s.sorted[h];
    for (int64_t seg = 0; seg < l.segments(); ++seg) {
      const std::vector<uint32_t> perm = l.Permutation(*s.index[h], seg);
      const int64_t base = seg * l.segment_tokens();
      for (size_t r = 0; r < perm.size(); ++r) row_of[base + perm[r]] = base + int64_t(r);
    }
    return row_of;
  }

  // The positions the last step attended over, per KV head (sorted): sinks,
  // picked stored tokens, picked waiting tokens, the window.
  void BuildLast(const LayerState& s) const {
    if (!s.last_stale) return;
    const int64_t ns = std::min<int64_t>(s.n, o_.sinks);
    for (size_t h = 0; h < s.last.size(); ++h) {
      std::vector<int64_t>& last = s.last[h];
      last.clear();
      for (int64_t i = 0; i < ns; ++i) last.push_back(i);
      const size_t first = last.size();
      if (o_.segment_blocks == 0) {
        for (int64_t r : s.last_rows[h]) last.push_back(o_.sinks + r);
      } else {
        const CodeSortedLayout& l = s.sorted[h];
        int64_t seg = -1;
        std::vector<uint32_t> perm;
        for (int64_t r : s.last_rows[h]) {
          if (r / l.segment_tokens() != seg) seg = r / l.segment_tokens(), perm = l.Permutation(*s.index[h], seg);
          last.push_back(o_.sinks + seg * l.segment_tokens() + perm[r % l.segment_tokens()]);
        }
        std::sort(last.begin() + first, last.end());
      }
      for (int64_t j : s.last_pending[h]) last.push_back(o_.sinks + j);
      for (int64_t p = o_.sinks + s.indexed; p < s.n; ++p) last.push_back(p);
    }
    s.last_stale = false;
  }

  std::string HeadSequence(int h) const { return absl::StrCat(o_.sequence_id, "/kvh", h); }
  KvClient::SequenceRef HeadRef(int layer, int h) const {
    return KvClient::SequenceRef{fingerprint_, HeadSequence(h), layer, 1, o_.block_tokens, 1, o_.layout.head_dim};
  }
  BlockKey HeadBlockKey(int layer, int h, int64_t block) const {
    return SequenceBlockKey(fingerprint_, client_->namespace_salt(), HeadSequence(h), layer, 1, block);
  }

  static absl::Span<const uint8_t> AsBytesOf(const std::string& s) {
    return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
  }

  KvClient* client_;
  RetrievalSessionOptions o_;
  std::unique_ptr<KvCodec> codec_;
  KvLayout head_layout_;
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
