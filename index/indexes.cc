// The retrieval methods behind MakeRetrievalIndex: exact oracle, A²ATS
// (windowed RoPE + query-aware VQ), Quest (page min/max bounds) and PQ
// (PQCache-style product quantization of post-RoPE keys, FAISS's
// ProductQuantizer). FAISS exceptions are caught here, at the one boundary.
#include <faiss/Clustering.h>
#include <faiss/IndexFlat.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/ProductQuantizer.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "codec/attention.h"
#include "codec/bytes.h"
#include "codec/commvq.h"
#include "codec/half.h"
#include "codec/linalg.h"
#include "codec/rope.h"
#include "codec/simd.h"
#include "common/parallel.h"
#include "common/status.h"
#include "index/retrieval_index.h"

namespace kvrecall {
namespace {

// Bounds-checked reading of a state blob.
class StateReader {
 public:
  explicit StateReader(absl::string_view s) : p_(reinterpret_cast<const uint8_t*>(s.data())), n_(s.size()) {}
  bool U64(uint64_t* v) {
    if (n_ - off_ < 8) return false;
    *v = LoadLE<uint64_t>(p_ + off_);
    off_ += 8;
    return true;
  }
  template <typename T>
  bool Array(std::vector<T>* v, uint64_t count) {
    if (count > (n_ - off_) / sizeof(T)) return false;
    v->resize(count);
    for (uint64_t i = 0; i < count; ++i) (*v)[i] = LoadLE<T>(p_ + off_ + i * sizeof(T));
    off_ += count * sizeof(T);
    return true;
  }
  bool done() const { return off_ == n_; }

 private:
  const uint8_t* p_;
  size_t n_, off_ = 0;
};

template <typename T>
void AppendArray(std::string* out, const std::vector<T>& v) {
  for (const T& x : v) AppendLE<T>(out, x);
}

// Log-spaced buckets (8 per octave) of outlier slots' distance histogram.
constexpr int kFarBuckets = 128;
// Tokens the bands' codebook and the slots' admission plan for by default.
constexpr int64_t kDefaultHorizon = int64_t{1} << 20;

// Below this many tokens per thread, starting a thread costs more than it saves.
constexpr int64_t kMinTokensPerThread = 16384;

// out[g][c] = scale · Σ_ch q[g][ch] · t[c / 8][ch][c % 8] for c < n, g < G:
// a small matrix product over codes stored in blocks of 8 ([ceil(n/8)][dim][8],
// zero-padded), four queries by 32 codes at a time so that the 16 partial
// sums stay in registers while the channels stream past (per code and
// query one dot product, no horizontal sums: the band tables' kernel).
typedef float V8 __attribute__((vector_size(32)));
inline V8 LoadV8(const float* p) {
  V8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
__attribute__((always_inline)) inline void BlockedScoresBody(const float* q, int G, const float* t, int64_t n,
                                                             int dim, float scale, float* out) {
  const int64_t nb = (n + 7) / 8;
  std::vector<float> qp(size_t(4) * dim);
  for (int g0 = 0; g0 < G; g0 += 4) {
    const int gn = std::min(4, G - g0);
    std::fill(qp.begin(), qp.end(), 0.0f);
    std::copy_n(q + size_t(g0) * dim, size_t(gn) * dim, qp.begin());
    for (int64_t b0 = 0; b0 < nb; b0 += 4) {
      const int bn = static_cast<int>(std::min<int64_t>(4, nb - b0));
      const float* tb = t + b0 * dim * 8;
      V8 acc[4][4] = {};
      if (bn == 4) {
        for (int ch = 0; ch < dim; ++ch) {
          const V8 v0 = LoadV8(tb + ch * 8), v1 = LoadV8(tb + (dim + ch) * 8), v2 = LoadV8(tb + (2 * dim + ch) * 8),
                   v3 = LoadV8(tb + (3 * dim + ch) * 8);
          for (int g = 0; g < 4; ++g) {
            const float x = qp[size_t(g) * dim + ch];
            acc[g][0] += x * v0, acc[g][1] += x * v1, acc[g][2] += x * v2, acc[g][3] += x * v3;
          }
        }
      } else {
        for (int i = 0; i < bn; ++i) {
          for (int ch = 0; ch < dim; ++ch) {
            const V8 v = LoadV8(tb + (i * dim + ch) * 8);
            for (int g = 0; g < 4; ++g) acc[g][i] += qp[size_t(g) * dim + ch] * v;
          }
        }
      }
      for (int g = 0; g < gn; ++g) {
        for (int i = 0; i < bn; ++i) {
          float r[8];
          const V8 sv = acc[g][i] * scale;
          std::memcpy(r, &sv, sizeof(r));
          const int64_t c0 = (b0 + i) * 8;
          std::copy_n(r, std::min<int64_t>(8, n - c0), out + size_t(g0 + g) * n + c0);
        }
      }
    }
  }
}
#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) void BlockedScoresAvx2(const float* q, int G, const float* t, int64_t n, int dim,
                                                           float scale, float* out) {
  BlockedScoresBody(q, G, t, n, dim, scale, out);
}
#endif
void BlockedScores(const float* q, int G, const float* t, int64_t n, int dim, float scale, float* out) {
#if defined(__x86_64__)
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2) return BlockedScoresAvx2(q, G, t, n, dim, scale, out);
#endif
  BlockedScoresBody(q, G, t, n, dim, scale, out);
}

absl::Status BadState(const char* what) { return absl::DataLossError(absl::StrCat(what, " index state is inconsistent")); }

absl::Status FromFaiss(const faiss::FaissException& e, const char* what) {
  return absl::InternalError(absl::StrCat(what, ": FAISS: ", e.what()));
}

absl::Status CheckQuery(const RetrievalIndex& idx, const float* q, absl::Span<float> scores) {
  if (q == nullptr) return absl::InvalidArgumentError(absl::StrCat(idx.name(), ": query missing"));
  RETURN_IF_ERROR(CheckFinite(q, 1, idx.dim(), "query"));
  if (static_cast<int64_t>(scores.size()) < idx.size()) {
    return absl::InvalidArgumentError("scores buffer smaller than the index");
  }
  return absl::OkStatus();
}

// Exact logits q·k/√d over post-RoPE keys: the reference every method is
// judged against.
class OracleIndex final : public RetrievalIndex {
 public:
  explicit OracleIndex(int d) : d_(d) {}
  std::string name() const override { return "oracle"; }
  int dim() const override { return d_; }
  absl::Status Train(const TrainingData&) override { return absl::OkStatus(); }
  bool trained() const override { return true; }
  absl::Status Add(const float*, const float* k_post, int64_t n) override {
    RETURN_IF_ERROR(CheckFinite(k_post, n, d_, "keys"));
    keys_.insert(keys_.end(), k_post, k_post + n * d_);
    return absl::OkStatus();
  }
  using RetrievalIndex::Score;
  absl::Status Score(const float*, const float* q_post, int64_t, absl::Span<float> scores, int threads) const override {
    RETURN_IF_ERROR(CheckQuery(*this, q_post, scores));
    const float scale = 1.0f / std::sqrt(float(d_));
    ParallelFor(size(), threads, kMinTokensPerThread, [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i) scores[i] = Dot(q_post, keys_.data() + i * d_, d_) * scale;
    });
    return absl::OkStatus();
  }
  int64_t size() const override { return static_cast<int64_t>(keys_.size()) / d_; }
  void Reset() override { keys_.clear(); }
  double BitsPerToken() const override { return 16.0 * d_; }
  int64_t FixedBytes() const override { return 0; }
  std::string spec() const override { return "oracle"; }
  void SaveState(std::string* out) const override {
    AppendLE<uint64_t>(out, static_cast<uint64_t>(size()));
    AppendArray(out, keys_);
  }
  absl::Status LoadState(absl::string_view state) override {
    StateReader r(state);
    uint64_t n;
    std::vector<float> keys;
    if (!r.U64(&n) || n > (uint64_t{1} << 40) / d_ || !r.Array(&keys, n * d_) || !r.done()) return BadState("oracle");
    RETURN_IF_ERROR(CheckFinite(keys.data(), static_cast<int64_t>(n), d_, "stored keys"));
    keys_ = std::move(keys);
    return absl::OkStatus();
  }

 private:
  int d_;
  std::vector<float> keys_;
};

// A²ATS: pre-RoPE keys, queries rotated by a fixed relative position b
// (windowed RoPE), k-means in the space whitened by H = E[q̃q̃ᵀ] = L Lᵀ, one
// code per token, scores from a per-query table over the centroids.
//
// Outlier slots (`outliers=R`, default 0): codes k .. k+R−1, after the k
// trained centroids, are slots of the sequence. A key whose whitened distance
// to its nearest centroid is beyond every calibration key's (a far key) may
// take the next free slot, which then holds that key itself, whitened and
// post-RoPE: a query given post-RoPE scores it exactly, q_post·k_post/√d,
// its true logit (a query without one scores it under the windowed RoPE,
// which can put a far key well below its logit). Planted needles and other
// keys no centroid stands for are such keys. A far key takes a slot if it
// is likely among the R farthest of the `horizon` tokens (default 2^20): the
// far keys so far at least as far (a histogram of distances, 8 buckets per
// octave) times horizon / tokens so far is at most R. (First come, first
// served instead filled every slot of a 1M-token head with ordinary far keys
// before its needles came; bench/results/retrieval_analysis.md.) Other keys
// get their centroid's code as before. Codes are then (k+R)-ary (13 bits for
// 4096 + 256); tables, code histograms and code-sorted storage work
// unchanged. Reset empties the slots.
//
// Position bands (`band=T`, default 0 = off; not in the paper): the fixed
// distance b is the method's main loss on peaky heads at long context (the
// true rotation of a pair is (pos − t)·θ_p, not b·θ_p). With bands, the
// tokens of band j, [jT, (j+1)T), are scored with the query rotated by
// pos − mid_j instead, mid_j the middle of the band up to pos: one table per
// band, the same codes. Only the slow RoPE pairs are placed so, those that
// turn at most `slow` radians (default 8) over `horizon` tokens (default
// 2^20: the context the tables will see); the others, which turn many times
// within a band, keep the fixed b. (At 1M tokens over 4 heads, 3%: S = π
// 0.704, 8 0.727, none 0.717; 16 is worse on the peaky head;
// bench/results/retrieval_analysis.md.) The fast channels' table is computed
// once, the slow channels' (about 40%) per band. The codebook is trained for
// those rotations: H = E[q̃q̃ᵀ] with the slow pairs of each calibration query
// rotated by its own distance, spread evenly over [0, horizon). (Trained for
// b alone, the codebook's error lies where rotated queries look: 1M tokens,
// 3%, peaky 0.807 -> 0.746; with all pairs banded, H spreads over twice the
// directions and 4096 centroids cover it too thinly: peaky 0.705.)
class A2atsIndex final : public RetrievalIndex {
 public:
  A2atsIndex(const KvLayout& l, int centroids, double b, int iters, uint64_t seed, int outliers, int64_t band,
             int64_t horizon, double slow)
      : layout_(l), d_(l.head_dim), k_(centroids), b_(b), iters_(iters), seed_(seed), slots_(outliers),
        nc_(centroids + outliers), band_(band), horizon_(horizon), slow_(slow) {
    inv_freq_ = RopeInvFreq(d_, l.rope_theta);
    for (double& f : inv_freq_) f /= l.rope_scaling;
    for (int j = 0; j < d_ / 2 && band_ > 0; ++j) {
      int a, c;
      RopePair(l.rope_style, d_, j, &a, &c);
      slow_pair_.push_back(l.rope_style != RopeStyle::kNone && inv_freq_[j] * double(horizon_) <= slow_);
      for (int ch : {a, c}) (slow_pair_.back() ? slow_ch_ : fast_ch_).push_back(ch);
    }
  }
  std::string name() const override { return "a2ats"; }
  int dim() const override { return d_; }
  bool trained() const override { return !centroids_.empty(); }

  absl::Status Train(const TrainingData& t) override {
    if (t.dim != d_) return absl::InvalidArgumentError(absl::StrCat("a2ats: training dim ", t.dim, " != ", d_));
    if (t.num_keys < k_) {
      return absl::InvalidArgumentError(absl::StrCat("a2ats: ", t.num_keys, " training keys for ", k_, " centroids"));
    }
    if (t.num_queries < 1) return absl::InvalidArgumentError("a2ats: calibration needs queries");
    RETURN_IF_ERROR(CheckFinite(t.k_pre, t.num_keys, d_, "training keys"));
    RETURN_IF_ERROR(CheckFinite(t.q_pre, t.num_queries, d_, "training queries"));
    // H = Σ q̃ q̃ᵀ with q̃ = R_b q, scaled to unit RMS entry, + 1e-6 I.
    std::vector<float> qt(t.q_pre, t.q_pre + t.num_queries * d_);
    for (int64_t i = 0; i < t.num_queries; ++i) {
      // With bands, distances spread over [0, horizon) (golden-ratio steps).
      const double u = band_ > 0 ? std::fmod(0.6180339887498949 * double(i), 1.0) : 0;
      Rotate(qt.data() + i * d_, u * double(horizon_));
    }
    std::vector<double> h = Gram(qt.data(), t.num_queries, d_);
    double ms = 0;
    for (double x : h) ms += x * x;
    ms = std::sqrt(ms / h.size());
    for (int i = 0; i < d_; ++i)
      for (int j = 0; j < d_; ++j) h[size_t(i) * d_ + j] = h[size_t(i) * d_ + j] / ms + (i == j ? 1e-6 : 0.0);
    ASSIGN_OR_RETURN(l_, Cholesky(h, d_));
    std::vector<float> w(t.num_keys * d_);
    Whiten(t.k_pre, t.num_keys, w.data());
    try {
      faiss::ClusteringParameters cp;
      cp.niter = iters_;
      cp.seed = static_cast<int>(seed_);
      cp.max_points_per_centroid = 256;
      cp.verbose = false;
      faiss::Clustering km(d_, k_, cp);
      faiss::IndexFlatL2 assign(d_);
      km.train(t.num_keys, w.data(), assign);
      centroids_ = km.centroids;
      centroids_.resize(size_t(nc_) * d_, 0.0f);  // empty slots
      slot_keys_.assign(size_t(slots_) * d_, 0.0f);
      quantizer_ = std::make_unique<faiss::IndexFlatL2>(d_);
      quantizer_->add(k_, centroids_.data());
      outlier_dist_ = 0, slots_used_ = 0;
      far_hist_.assign(slots_ > 0 ? kFarBuckets : 0, 0);
      SplitCentroids();
      if (slots_ > 0) {  // the farthest any calibration key lies from its centroid
        std::vector<float> dist(t.num_keys);
        std::vector<faiss::Index::idx_t> ids(t.num_keys);
        quantizer_->search(t.num_keys, w.data(), 1, dist.data(), ids.data());
        outlier_dist_ = *std::max_element(dist.begin(), dist.end());
      }
    } catch (const faiss::FaissException& e) {
      return FromFaiss(e, "a2ats k-means");
    }
    return absl::OkStatus();
  }

  absl::Status Add(const float* k_pre, const float* k_post, int64_t n) override {
    if (!trained()) return absl::FailedPreconditionError("a2ats index is not trained");
    RETURN_IF_ERROR(CheckFinite(k_pre, n, d_, "keys"));
    if (slots_ > 0) {  // a slot keeps its key post-RoPE
      if (k_post == nullptr) return absl::InvalidArgumentError("a2ats with outlier slots needs post-RoPE keys");
      RETURN_IF_ERROR(CheckFinite(k_post, n, d_, "post-RoPE keys"));
    }
    std::vector<float> w(n * d_), dist(n);
    std::vector<faiss::Index::idx_t> ids(n);
    Whiten(k_pre, n, w.data());
    try {
      quantizer_->search(n, w.data(), 1, dist.data(), ids.data());
    } catch (const faiss::FaissException& e) {
      return FromFaiss(e, "a2ats encode");
    }
    for (int64_t i = 0; i < n; ++i) {
      bool take = false;
      if (slots_ > 0 && dist[i] > outlier_dist_) {
        // Its rank among the horizon's far keys, estimated from those so far.
        const double r = dist[i] / std::max(outlier_dist_, 1e-30f);
        const int b = std::min(kFarBuckets - 1, static_cast<int>(8 * std::log2(r)));
        ++far_hist_[b];
        int64_t farther = 0;
        for (int j = b; j < kFarBuckets; ++j) farther += far_hist_[j];
        take = slots_used_ < slots_ &&
               double(farther) * double(horizon_) / double(codes_.size() + 1) <= double(slots_);
      }
      if (take) {  // the key itself becomes a code
        std::copy_n(k_post + i * d_, d_, slot_keys_.data() + size_t(slots_used_) * d_);
        const int c = k_ + slots_used_++;
        std::copy_n(w.data() + i * d_, d_, centroids_.data() + size_t(c) * d_);
        SplitCentroid(c, k_pre + i * d_);
        codes_.push_back(static_cast<uint16_t>(c));
      } else {
        codes_.push_back(static_cast<uint16_t>(ids[i]));
      }
    }
    return absl::OkStatus();
  }

  using RetrievalIndex::Score;
  absl::Status Score(const float* q_pre, const float* q_post, int64_t pos, absl::Span<float> scores,
                     int threads) const override {
    if (!trained()) return absl::FailedPreconditionError("a2ats index is not trained");
    RETURN_IF_ERROR(CheckQuery(*this, q_pre, scores));
    if (q_post != nullptr && slots_used_ > 0) RETURN_IF_ERROR(CheckFinite(q_post, 1, d_, "query"));
    RETURN_IF_ERROR(CheckBandTables(*this, size()));
    const int64_t bands = NumBands(*this, size());
    std::vector<float> table(size_t(bands) * nc_);
    BandTables(q_pre, q_post, 1, pos, size(), table.data());
    const float* t = table.data();
    const uint16_t* c = codes_.data();
    ParallelFor(size(), threads, kMinTokensPerThread, [&](int64_t b, int64_t e, int) {
      ForEachBand(band_, b, e, [&](int64_t lo, int64_t hi, int64_t j) {
        const float* tj = t + j * nc_;
        for (int64_t i = lo; i < hi; ++i) scores[i] = tj[c[i]];
      });
    });
    return absl::OkStatus();
  }

  int num_codes() const override { return trained() ? nc_ : 0; }
  const uint16_t* codes() const override { return codes_.data(); }
  absl::Status CodeScores(const float* q_pre, const float* q_post, int group,
                          absl::Span<float> table) const override {
    if (!trained()) return absl::FailedPreconditionError("a2ats index is not trained");
    if (group < 1 || table.size() != size_t(group) * nc_) {
      return absl::InvalidArgumentError("a2ats: table size != queries x centroids");
    }
    RETURN_IF_ERROR(CheckFinite(q_pre, group, d_, "query"));
    if (q_post != nullptr && slots_used_ > 0) RETURN_IF_ERROR(CheckFinite(q_post, group, d_, "query"));
    Tables(q_pre, q_post, group, table.data());
    return absl::OkStatus();
  }
  int64_t band_tokens() const override { return band_; }
  absl::Status BandCodeScores(const float* q_pre, const float* q_post, int group, int64_t pos, int64_t end,
                              absl::Span<float> table) const override {
    if (!trained()) return absl::FailedPreconditionError("a2ats index is not trained");
    RETURN_IF_ERROR(CheckBandTables(*this, end));
    if (group < 1 || end < 0 || table.size() != size_t(group) * NumBands(*this, end) * nc_) {
      return absl::InvalidArgumentError("a2ats: table size != queries x bands x centroids");
    }
    RETURN_IF_ERROR(CheckFinite(q_pre, group, d_, "query"));
    if (q_post != nullptr && slots_used_ > 0) RETURN_IF_ERROR(CheckFinite(q_post, group, d_, "query"));
    BandTables(q_pre, q_post, group, pos, end, table.data());
    return absl::OkStatus();
  }

  int64_t size() const override { return static_cast<int64_t>(codes_.size()); }
  void Reset() override {
    codes_.clear();
    if (trained()) {
      std::fill(centroids_.begin() + size_t(k_) * d_, centroids_.end(), 0.0f);
      const std::vector<float> zero(d_, 0.0f);
      for (int c = k_; c < nc_; ++c) SplitCentroid(c, zero.data());
    }
    std::fill(slot_keys_.begin(), slot_keys_.end(), 0.0f);
    slots_used_ = 0;
    std::fill(far_hist_.begin(), far_hist_.end(), 0);
  }
  double BitsPerToken() const override { return std::ceil(std::log2(double(nc_))); }
  // fp16 centroids and slots (whitened), fp16 post-RoPE slot keys, f32 L;
  // with bands, the centroids once more, unwhitened.
  int64_t FixedBytes() const override {
    return (int64_t(nc_) * (band_ > 0 ? 2 : 1) + slots_) * d_ * 2 + int64_t(d_) * d_ * 4;
  }
  std::string spec() const override {
    return absl::StrCat("a2ats:b=", b_, ",centroids=", k_, ",iters=", iters_, ",seed=", seed_,
                        slots_ > 0 ? absl::StrCat(",outliers=", slots_) : "",
                        band_ > 0 ? absl::StrCat(",band=", band_) : "",
                        band_ > 0 || (slots_ > 0 && horizon_ != kDefaultHorizon) ? absl::StrCat(",horizon=", horizon_)
                                                                                 : "",
                        band_ > 0 ? absl::StrCat(",slow=", slow_) : "");
  }
  void SaveState(std::string* out) const override {
    AppendLE<uint64_t>(out, trained() ? 1 : 0);
    if (!trained()) return;
    AppendArray(out, l_);
    AppendArray(out, centroids_);
    AppendLE<uint64_t>(out, codes_.size());
    AppendArray(out, codes_);
    if (slots_ > 0) {  // only with outlier slots: v1 states of plain A²ATS are unchanged
      AppendLE<float>(out, outlier_dist_);
      AppendLE<uint64_t>(out, static_cast<uint64_t>(slots_used_));
      for (size_t i = 0; i < size_t(slots_used_) * d_; ++i) AppendLE<float>(out, slot_keys_[i]);
      AppendArray(out, far_hist_);
    }
  }
  absl::Status LoadState(absl::string_view state) override {
    StateReader r(state);
    uint64_t t, n;
    std::vector<double> l;
    std::vector<float> c;
    std::vector<uint16_t> codes;
    if (!r.U64(&t) || t > 1) return BadState("a2ats");
    if (t == 0) {
      if (!r.done()) return BadState("a2ats");
      l_.clear(), centroids_.clear(), codes_.clear(), quantizer_.reset();
      return absl::OkStatus();
    }
    std::vector<float> outlier_dist(1, 0.0f), slot_keys;
    std::vector<int64_t> far_hist;
    uint64_t used = 0;
    if (!r.Array(&l, uint64_t(d_) * d_) || !r.Array(&c, uint64_t(nc_) * d_) || !r.U64(&n) || !r.Array(&codes, n) ||
        (slots_ > 0 && (!r.Array(&outlier_dist, 1) || !r.U64(&used) || used > uint64_t(slots_) ||
                        !r.Array(&slot_keys, used * d_) || !r.Array(&far_hist, kFarBuckets))) ||
        !r.done()) {
      return BadState("a2ats");
    }
    if (!(outlier_dist[0] >= 0) || !std::isfinite(outlier_dist[0])) return BadState("a2ats");
    int64_t far = 0;
    for (int64_t x : far_hist) {
      if (x < 0 || x > int64_t(n)) return BadState("a2ats");
      far += x;
    }
    if (far > int64_t(n) || uint64_t(far) < used) return BadState("a2ats");
    RETURN_IF_ERROR(CheckFinite(slot_keys.data(), static_cast<int64_t>(used), d_, "stored slot keys"));
    for (uint16_t code : codes) {  // a slot's code only once it is filled
      if (code >= k_ + used) return BadState("a2ats");
    }
    for (int i = 0; i < d_; ++i) {
      if (!(l[size_t(i) * d_ + i] > 0) || !std::isfinite(l[size_t(i) * d_ + i])) return BadState("a2ats");
      for (int j = 0; j < d_; ++j) {
        if (!std::isfinite(l[size_t(i) * d_ + j])) return BadState("a2ats");
      }
    }
    RETURN_IF_ERROR(CheckFinite(c.data(), nc_, d_, "stored centroids"));
    l_ = std::move(l), centroids_ = std::move(c), codes_ = std::move(codes);
    outlier_dist_ = outlier_dist[0], slots_used_ = static_cast<int>(used), far_hist_ = std::move(far_hist);
    slot_keys_ = std::move(slot_keys);
    slot_keys_.resize(size_t(slots_) * d_, 0.0f);
    SplitCentroids();
    try {
      quantizer_ = std::make_unique<faiss::IndexFlatL2>(d_);
      quantizer_->add(k_, centroids_.data());
    } catch (const faiss::FaissException& e) {
      return FromFaiss(e, "a2ats load");
    }
    return absl::OkStatus();
  }

 private:
  // The tables of `group` queries [group][d] into table [group][k + R]: the
  // score per centroid is y = L⁻¹ (R_b q), then q̃·c = y·c_w for whitened
  // centroids c_w, scaled by 1/√d: each query windowed-RoPE'd and whitened,
  // then one pass over the centroids for all of them (GroupScores: per query
  // exactly Dot's sums, so one query's table is the same alone or in a
  // group). With q_post, the filled slots score q_post·k_post/√d instead.
  void Tables(const float* q_pre, const float* q_post, int group, float* table) const {
    std::vector<float> y(size_t(group) * d_), q(d_);
    for (int g = 0; g < group; ++g) {
      std::copy_n(q_pre + size_t(g) * d_, d_, q.begin());
      ApplyRope(q.data(), layout_, b_);
      float* yg = y.data() + size_t(g) * d_;
      for (int i = 0; i < d_; ++i) {
        double s = q[i];
        for (int j = 0; j < i; ++j) s -= l_[size_t(i) * d_ + j] * yg[j];
        yg[i] = static_cast<float>(s / l_[size_t(i) * d_ + i]);
      }
    }
    GroupScores(y.data(), group, centroids_.data(), nc_, d_, d_, 1.0f / std::sqrt(float(d_)), table);
    ExactSlots(q_post, group, 1, table);
  }
  // With q_post: the filled slots' entries of the tables [group][tables][k + R]
  // become q_post·k_post/√d.
  void ExactSlots(const float* q_post, int group, int64_t tables, float* table) const {
    if (q_post == nullptr || slots_used_ == 0) return;
    std::vector<float> exact(size_t(group) * slots_used_);
    GroupScores(q_post, group, slot_keys_.data(), slots_used_, d_, d_, 1.0f / std::sqrt(float(d_)), exact.data());
    for (int g = 0; g < group; ++g) {
      for (int64_t j = 0; j < tables; ++j) {
        std::copy_n(exact.data() + size_t(g) * slots_used_, slots_used_, table + (size_t(g) * tables + j) * nc_ + k_);
      }
    }
  }
  // All bands' tables for the tokens [0, end), query at pos: [group][bands][nc].
  // Band j's tokens are placed at the middle of [jT, min((j+1)T, pos + 1))
  // (not of what `end` takes of it, so that a band's table does not depend
  // on where a selection stops).
  void BandTables(const float* q_pre, const float* q_post, int group, int64_t pos, int64_t end, float* table) const {
    const int64_t bands = NumBands(*this, end);
    if (band_ == 0) return Tables(q_pre, q_post, group, table);
    // Unwhitened: (R q)·c = (R_b q)_fast·c_fast + (R_rel q)_slow·c_slow, the
    // fast part once, the slow channels (about a third) per band.
    const int nf = static_cast<int>(fast_ch_.size()), ns = static_cast<int>(slow_ch_.size());
    const float scale = 1.0f / std::sqrt(float(d_));
    std::vector<float> q(d_), qf(size_t(group) * nf), qs(size_t(group) * ns), base(size_t(group) * nc_, 0.0f),
        part(size_t(group) * nc_);
    for (int g = 0; g < group; ++g) {
      std::copy_n(q_pre + size_t(g) * d_, d_, q.begin());
      ApplyRope(q.data(), layout_, b_);
      for (int i = 0; i < nf; ++i) qf[size_t(g) * nf + i] = q[fast_ch_[i]];
    }
    if (nf > 0) BlockedScores(qf.data(), group, cent_fast_.data(), nc_, nf, scale, base.data());
    for (int64_t j = 0; j < bands; ++j) {
      const int64_t lo = j * band_, hi = std::max(lo + 1, std::min(lo + band_, pos + 1));
      const double rel = double(pos) - 0.5 * double(lo + hi - 1);
      for (int g = 0; g < group; ++g) {
        std::copy_n(q_pre + size_t(g) * d_, d_, q.begin());
        ApplyRope(q.data(), layout_, rel);  // (only its slow channels are used)
        for (int i = 0; i < ns; ++i) qs[size_t(g) * ns + i] = q[slow_ch_[i]];
      }
      if (ns > 0) BlockedScores(qs.data(), group, cent_slow_.data(), nc_, ns, scale, part.data());
      for (int g = 0; g < group; ++g) {
        float* out = table + (size_t(g) * bands + j) * nc_;
        const float* b = base.data() + size_t(g) * nc_;
        const float* p = part.data() + size_t(g) * nc_;
        for (int c = 0; c < nc_; ++c) out[c] = b[c] + p[c];  // (part stays 0 without slow channels)
      }
    }
    ExactSlots(q_post, group, bands, table);
  }
  // With bands: every code's centroid unwhitened (c = L⁻ᵀ c_w), split into its
  // fast and slow channels.
  void SplitCentroids() {
    if (band_ == 0) return;
    const size_t padded = (size_t(nc_) + 7) / 8 * 8;  // blocks of 8 codes, BlockedScores's layout
    cent_fast_.assign(padded * fast_ch_.size(), 0.0f), cent_slow_.assign(padded * slow_ch_.size(), 0.0f);
    std::vector<double> x(d_);
    std::vector<float> k(d_);
    for (int c = 0; c < nc_; ++c) {
      const float* w = centroids_.data() + size_t(c) * d_;
      for (int j = d_ - 1; j >= 0; --j) {  // Lᵀ x = w, Lᵀ upper triangular
        double s = w[j];
        for (int i = j + 1; i < d_; ++i) s -= l_[size_t(i) * d_ + j] * x[i];
        x[j] = s / l_[size_t(j) * d_ + j];
      }
      for (int j = 0; j < d_; ++j) k[j] = static_cast<float>(x[j]);
      SplitCentroid(c, k.data());
    }
  }
  void SplitCentroid(int c, const float* k_pre) {
    if (band_ == 0) return;
    const size_t nf = fast_ch_.size(), ns = slow_ch_.size();
    const size_t block = size_t(c) / 8, lane = size_t(c) % 8;
    for (size_t i = 0; i < nf; ++i) cent_fast_[(block * nf + i) * 8 + lane] = k_pre[fast_ch_[i]];
    for (size_t i = 0; i < ns; ++i) cent_slow_[(block * ns + i) * 8 + lane] = k_pre[slow_ch_[i]];
  }
  // The query's rotation: by b; with bands, the slow pairs by rel instead.
  void Rotate(float* q, double rel) const {
    if (band_ == 0) return ApplyRope(q, layout_, b_);
    RopeAngles a;
    a.cos.resize(inv_freq_.size()), a.sin.resize(inv_freq_.size());
    for (size_t j = 0; j < inv_freq_.size(); ++j) {
      const double angle = (slow_pair_[j] ? rel : b_) * inv_freq_[j];
      a.cos[j] = static_cast<float>(std::cos(angle)), a.sin[j] = static_cast<float>(std::sin(angle));
    }
    ApplyRope(q, d_, layout_.rope_style, a);
  }
  // w = Lᵀ k (row vector k·L): the space where (k−c)ᵀH(k−c) is Euclidean.
  void Whiten(const float* k, int64_t n, float* w) const {
    for (int64_t r = 0; r < n; ++r) {
      const float* kr = k + r * d_;
      for (int j = 0; j < d_; ++j) {
        double s = 0;
        for (int i = j; i < d_; ++i) s += double{kr[i]} * l_[size_t(i) * d_ + j];
        w[r * d_ + j] = static_cast<float>(s);
      }
    }
  }

  KvLayout layout_;
  int d_, k_;
  double b_;
  int iters_;
  uint64_t seed_;
  std::vector<double> l_;        // [d][d] lower Cholesky factor of H
  std::vector<float> centroids_; // [k + slots][d] whitened: the trained k, then the outlier slots
  std::vector<float> slot_keys_;  // [slots][d] the slots' keys post-RoPE
  std::unique_ptr<faiss::IndexFlatL2> quantizer_;  // the trained k
  std::vector<uint16_t> codes_;
  int slots_ = 0, nc_ = 0, slots_used_ = 0;
  int64_t band_ = 0;        // tokens per position band (0: none)
  int64_t horizon_ = 0;     // with bands: the distances the codebook is trained for, [0, horizon)
  // With slots: keys past the threshold so far, by 8 x log2(distance / threshold), [kFarBuckets].
  std::vector<int64_t> far_hist_;
  double slow_ = 0;         // with bands: pairs turning at most this (radians) over the horizon are banded
  std::vector<double> inv_freq_;  // per RoPE pair, over the layout's position scaling
  std::vector<bool> slow_pair_;                  // with bands: per RoPE pair, whether it is banded
  std::vector<int> fast_ch_, slow_ch_;           // with bands: channels of the fast and the slow pairs
  std::vector<float> cent_fast_, cent_slow_;     // with bands: unwhitened, those channels, [codes / 8][channels][8]
  float outlier_dist_ = 0;  // squared whitened distance past which a key is an outlier
};

// Quest: per page of `page` tokens, the channel-wise min and max of post-RoPE
// keys; a token's score is its page's upper bound Σ_c max(q_c·m_c, q_c·M_c).
class QuestIndex final : public RetrievalIndex {
 public:
  QuestIndex(int d, int page) : d_(d), page_(page) {}
  std::string name() const override { return "quest"; }
  int dim() const override { return d_; }
  absl::Status Train(const TrainingData&) override { return absl::OkStatus(); }
  bool trained() const override { return true; }
  absl::Status Add(const float*, const float* k_post, int64_t n) override {
    RETURN_IF_ERROR(CheckFinite(k_post, n, d_, "keys"));
    for (int64_t r = 0; r < n; ++r, ++n_) {
      const float* k = k_post + r * d_;
      if (n_ % page_ == 0) {
        mins_.insert(mins_.end(), k, k + d_);
        maxs_.insert(maxs_.end(), k, k + d_);
        continue;
      }
      float* mn = mins_.data() + mins_.size() - d_;
      float* mx = maxs_.data() + maxs_.size() - d_;
      for (int c = 0; c < d_; ++c) mn[c] = std::min(mn[c], k[c]), mx[c] = std::max(mx[c], k[c]);
    }
    return absl::OkStatus();
  }
  using RetrievalIndex::Score;
  absl::Status Score(const float*, const float* q_post, int64_t, absl::Span<float> scores, int threads) const override {
    RETURN_IF_ERROR(CheckQuery(*this, q_post, scores));
    const int64_t pages = static_cast<int64_t>(mins_.size()) / d_;
    ParallelFor(pages, threads, kMinTokensPerThread / page_ + 1, [&](int64_t b, int64_t e, int) {
      for (int64_t p = b; p < e; ++p) {
        float s = 0;
        const float* mn = mins_.data() + p * d_;
        const float* mx = maxs_.data() + p * d_;
        for (int c = 0; c < d_; ++c) s += std::max(q_post[c] * mn[c], q_post[c] * mx[c]);
        for (int64_t i = p * page_; i < std::min<int64_t>(n_, (p + 1) * page_); ++i) scores[i] = s;
      }
    });
    return absl::OkStatus();
  }
  int64_t size() const override { return n_; }
  void Reset() override { mins_.clear(), maxs_.clear(), n_ = 0; }
  double BitsPerToken() const override { return 2.0 * 16 * d_ / page_; }
  int64_t FixedBytes() const override { return 0; }
  std::string spec() const override { return absl::StrCat("quest:page=", page_); }
  void SaveState(std::string* out) const override {
    AppendLE<uint64_t>(out, static_cast<uint64_t>(n_));
    AppendArray(out, mins_);
    AppendArray(out, maxs_);
  }
  absl::Status LoadState(absl::string_view state) override {
    StateReader r(state);
    uint64_t n;
    std::vector<float> mn, mx;
    if (!r.U64(&n) || n > (uint64_t{1} << 40)) return BadState("quest");
    const uint64_t pages = (n + page_ - 1) / page_;
    if (!r.Array(&mn, pages * d_) || !r.Array(&mx, pages * d_) || !r.done()) return BadState("quest");
    RETURN_IF_ERROR(CheckFinite(mn.data(), static_cast<int64_t>(pages), d_, "page minima"));
    RETURN_IF_ERROR(CheckFinite(mx.data(), static_cast<int64_t>(pages), d_, "page maxima"));
    n_ = static_cast<int64_t>(n), mins_ = std::move(mn), maxs_ = std::move(mx);
    return absl::OkStatus();
  }

 private:
  int d_, page_;
  int64_t n_ = 0;
  std::vector<float> mins_, maxs_;
};

// PQCache-style product quantization of post-RoPE keys (FAISS
// ProductQuantizer, trained on the calibration keys); scores are the
// inner-product lookup Σ_m table[m][code_m].
class PqIndex final : public RetrievalIndex {
 public:
  PqIndex(int d, int m, int nbits) : d_(d), pq_(d, m, nbits) {}
  std::string name() const override { return "pq"; }
  int dim() const override { return d_; }
  bool trained() const override { return trained_; }
  absl::Status Train(const TrainingData& t) override {
    if (t.dim != d_) return absl::InvalidArgumentError("pq: training dim mismatch");
    if (t.num_keys < int64_t(pq_.ksub)) return absl::InvalidArgumentError("pq: too few training keys");
    RETURN_IF_ERROR(CheckFinite(t.k_post, t.num_keys, d_, "training keys"));
    try {
      pq_.cp.seed = 1234;
      pq_.train(t.num_keys, t.k_post);
    } catch (const faiss::FaissException& e) {
      return FromFaiss(e, "pq train");
    }
    trained_ = true;
    return absl::OkStatus();
  }
  absl::Status Add(const float*, const float* k_post, int64_t n) override {
    if (!trained_) return absl::FailedPreconditionError("pq index is not trained");
    RETURN_IF_ERROR(CheckFinite(k_post, n, d_, "keys"));
    const size_t at = codes_.size();
    codes_.resize(at + n * pq_.code_size);
    try {
      pq_.compute_codes(k_post, codes_.data() + at, n);
    } catch (const faiss::FaissException& e) {
      return FromFaiss(e, "pq encode");
    }
    return absl::OkStatus();
  }
  using RetrievalIndex::Score;
  absl::Status Score(const float*, const float* q_post, int64_t, absl::Span<float> scores, int threads) const override {
    if (!trained_) return absl::FailedPreconditionError("pq index is not trained");
    RETURN_IF_ERROR(CheckQuery(*this, q_post, scores));
    std::vector<float> table(pq_.M * pq_.ksub);
    pq_.compute_inner_prod_table(q_post, table.data());
    ParallelFor(size(), threads, kMinTokensPerThread, [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i) {
        faiss::PQDecoderGeneric dec(codes_.data() + i * pq_.code_size, static_cast<int>(pq_.nbits));
        float s = 0;
        for (size_t m = 0; m < pq_.M; ++m) s += table[m * pq_.ksub + dec.decode()];
        scores[i] = s;
      }
    });
    return absl::OkStatus();
  }
  int64_t size() const override { return pq_.code_size ? static_cast<int64_t>(codes_.size() / pq_.code_size) : 0; }
  void Reset() override { codes_.clear(); }
  double BitsPerToken() const override { return double(pq_.M) * pq_.nbits; }
  int64_t FixedBytes() const override { return static_cast<int64_t>(pq_.centroids.size()) * 4; }
  std::string spec() const override { return absl::StrCat("pq:m=", pq_.M, ",nbits=", pq_.nbits); }
  void SaveState(std::string* out) const override {
    AppendLE<uint64_t>(out, trained_ ? 1 : 0);
    if (!trained_) return;
    AppendArray(out, pq_.centroids);
    AppendLE<uint64_t>(out, codes_.size());
    AppendArray(out, codes_);
  }
  absl::Status LoadState(absl::string_view state) override {
    StateReader r(state);
    uint64_t t, n;
    std::vector<float> c;
    std::vector<uint8_t> codes;
    if (!r.U64(&t) || t > 1) return BadState("pq");
    if (t == 0) {
      if (!r.done()) return BadState("pq");
      trained_ = false, codes_.clear();
      return absl::OkStatus();
    }
    if (!r.Array(&c, uint64_t(d_) * pq_.ksub) || !r.U64(&n) || n % pq_.code_size != 0 || !r.Array(&codes, n) ||
        !r.done()) {
      return BadState("pq");
    }
    RETURN_IF_ERROR(CheckFinite(c.data(), static_cast<int64_t>(pq_.ksub), d_, "PQ centroids"));
    pq_.centroids = std::move(c);
    codes_ = std::move(codes);
    trained_ = true;
    return absl::OkStatus();
  }

 private:
  int d_;
  faiss::ProductQuantizer pq_;
  bool trained_ = false;
  std::vector<uint8_t> codes_;
};

// CommVQ as a scorer: each token's pre-RoPE key divided by its norm is coded
// by the RoPE-commutative residual codebook; a query's score is read from a
// table over the codebook, summed over stages, then rotated once per RoPE
// pair by the token's position and scaled by its (f16) norm — keys are never
// reconstructed. Summary per token: stages × 2·digit bits + 16 (the norm).
class CommVqIndex final : public RetrievalIndex {
 public:
  CommVqIndex(const KvLayout& l, int stages, int digit, int iters, int train, uint64_t seed)
      : layout_(l), d_(l.head_dim), stages_(stages), digit_(digit), iters_(iters), train_(train), seed_(seed),
        inv_freq_(RopeInvFreq(l.head_dim, l.rope_theta)) {}
  std::string name() const override { return "commvq"; }
  int dim() const override { return d_; }
  bool trained() const override { return cb_ != nullptr; }

  absl::Status Train(const TrainingData& t) override {
    if (t.dim != d_) return absl::InvalidArgumentError(absl::StrCat("commvq: training dim ", t.dim, " != ", d_));
    RETURN_IF_ERROR(CheckFinite(t.k_pre, t.num_keys, d_, "training keys"));
    std::vector<float> x;
    x.reserve(size_t(t.num_keys) * d_);
    for (int64_t i = 0; i < t.num_keys; ++i) {
      const float* k = t.k_pre + i * d_;
      const float norm = std::sqrt(Dot(k, k, d_));
      if (norm <= 0) continue;
      for (int c = 0; c < d_; ++c) x.push_back(k[c] / norm);
    }
    CommVqTrainOptions o;
    o.stages = stages_, o.digit_bits = digit_, o.iters = iters_, o.max_train = train_, o.seed = seed_;
    ASSIGN_OR_RETURN(CommVqKeyCodebook cb,
                     CommVqKeyCodebook::Train(d_, layout_.rope_style, x.data(), int64_t(x.size()) / d_, o));
    cb_ = std::make_unique<CommVqKeyCodebook>(std::move(cb));
    return absl::OkStatus();
  }

  absl::Status Add(const float* k_pre, const float*, int64_t n) override {
    if (!trained()) return absl::FailedPreconditionError("commvq index is not trained");
    RETURN_IF_ERROR(CheckFinite(k_pre, n, d_, "keys"));
    const size_t at = scale_.size();
    scale_.resize(at + n);
    codes_.resize((at + n) * stages_);
    ParallelFor(n, 0, 512, [&](int64_t b, int64_t e, int) {
      std::vector<float> x(d_);
      std::vector<uint32_t> codes(stages_);
      for (int64_t i = b; i < e; ++i) {
        const float* k = k_pre + i * d_;
        const float norm = HalfToFloat(FloatToHalf(std::sqrt(Dot(k, k, d_))));
        for (int c = 0; c < d_; ++c) x[c] = norm > 0 ? k[c] / norm : 0.0f;
        cb_->Encode(x.data(), codes.data());
        scale_[at + i] = norm;
        for (int r = 0; r < stages_; ++r) codes_[(at + i) * stages_ + r] = static_cast<uint16_t>(codes[r]);
      }
    });
    return absl::OkStatus();
  }

  using RetrievalIndex::Score;
  absl::Status Score(const float*, const float* q_post, int64_t, absl::Span<float> scores, int threads) const override {
    if (!trained()) return absl::FailedPreconditionError("commvq index is not trained");
    RETURN_IF_ERROR(CheckQuery(*this, q_post, scores));
    std::vector<float> table(cb_->table_size());
    cb_->QueryTable(q_post, table.data());
    const float inv_sqrt_d = 1.0f / std::sqrt(float(d_));
    const bool rotate = layout_.rope_style != RopeStyle::kNone;
    const int P = d_ / 2;
    ParallelFor(size(), threads, kMinTokensPerThread / 8, [&](int64_t b, int64_t e, int) {
      // Rotations by recurrence e^{iθ(t+1)} = e^{iθt}·e^{iθ}, re-anchored
      // exactly every 256 tokens so float error cannot accumulate.
      std::vector<double> c(P, 1.0), s(P, 0.0), step_c(P), step_s(P);
      std::vector<float> cf(P, 1.0f), sf(P, 0.0f);
      for (int p = 0; p < P; ++p) {
        const double a = inv_freq_[p] / layout_.rope_scaling;
        step_c[p] = std::cos(a), step_s[p] = std::sin(a);
      }
      uint32_t codes[256];
      for (int64_t t = b; t < e; ++t) {
        if (rotate) {
          if ((t - b) % 256 == 0) {
            for (int p = 0; p < P; ++p) {
              const double a = double(t) / layout_.rope_scaling * inv_freq_[p];
              c[p] = std::cos(a), s[p] = std::sin(a);
            }
          } else {
            for (int p = 0; p < P; ++p) {
              const double nc = c[p] * step_c[p] - s[p] * step_s[p];
              s[p] = s[p] * step_c[p] + c[p] * step_s[p];
              c[p] = nc;
            }
          }
          for (int p = 0; p < P; ++p) cf[p] = float(c[p]), sf[p] = float(s[p]);
        }
        for (int r = 0; r < stages_; ++r) codes[r] = codes_[size_t(t) * stages_ + r];
        scores[t] = scale_[t] * inv_sqrt_d * cb_->Score(table.data(), codes, cf.data(), sf.data());
      }
    });
    return absl::OkStatus();
  }

  int64_t size() const override { return static_cast<int64_t>(scale_.size()); }
  void Reset() override { scale_.clear(), codes_.clear(); }
  double BitsPerToken() const override { return double(stages_) * 2 * digit_ + 16; }
  int64_t FixedBytes() const override { return int64_t(stages_) * (int64_t{1} << digit_) * d_ * 2; }
  std::string spec() const override {
    return absl::StrCat("commvq:digit=", digit_, ",iters=", iters_, ",seed=", seed_, ",stages=", stages_, ",train=", train_);
  }
  void SaveState(std::string* out) const override {
    AppendLE<uint64_t>(out, trained() ? 1 : 0);
    if (!trained()) return;
    cb_->Serialize(out);
    AppendLE<uint64_t>(out, scale_.size());
    for (float x : scale_) AppendLE<uint16_t>(out, FloatToHalf(x));
    AppendArray(out, codes_);
  }
  absl::Status LoadState(absl::string_view state) override {
    StateReader r(state);
    uint64_t t;
    if (!r.U64(&t) || t > 1) return BadState("commvq");
    if (t == 0) {
      if (!r.done()) return BadState("commvq");
      cb_.reset(), scale_.clear(), codes_.clear();
      return absl::OkStatus();
    }
    size_t off = 8;
    absl::StatusOr<CommVqKeyCodebook> cb = CommVqKeyCodebook::Parse(state, &off);
    if (!cb.ok()) return cb.status();
    if (cb->dim() != d_ || cb->stages() != stages_ || cb->digit_bits() != digit_ || cb->style() != layout_.rope_style) {
      return BadState("commvq");
    }
    StateReader rest(state.substr(off));
    uint64_t n;
    std::vector<uint16_t> scales, codes;
    if (!rest.U64(&n) || n > (uint64_t{1} << 40) || !rest.Array(&scales, n) || !rest.Array(&codes, n * stages_) ||
        !rest.done()) {
      return BadState("commvq");
    }
    const uint32_t limit = 1u << (2 * digit_);
    for (uint16_t c : codes) {
      if (c >= limit) return BadState("commvq");
    }
    std::vector<float> sc(n);
    for (uint64_t i = 0; i < n; ++i) {
      sc[i] = HalfToFloat(scales[i]);
      if (!std::isfinite(sc[i]) || sc[i] < 0) return BadState("commvq");
    }
    cb_ = std::make_unique<CommVqKeyCodebook>(std::move(*cb));
    scale_ = std::move(sc), codes_ = std::move(codes);
    return absl::OkStatus();
  }

 private:
  KvLayout layout_;
  int d_, stages_, digit_, iters_, train_;
  uint64_t seed_;
  std::vector<double> inv_freq_;
  std::unique_ptr<CommVqKeyCodebook> cb_;
  std::vector<float> scale_;      // per token, f16-rounded
  std::vector<uint16_t> codes_;   // [tokens][stages]
};

}  // namespace

absl::StatusOr<std::unique_ptr<RetrievalIndex>> MakeRetrievalIndex(const std::string& spec, const KvLayout& layout) {
  RETURN_IF_ERROR(layout.Validate());
  const size_t colon = spec.find(':');
  const std::string name = spec.substr(0, colon);
  std::map<std::string, double> p;
  if (colon != std::string::npos) {
    for (absl::string_view kv : absl::StrSplit(spec.substr(colon + 1), ',', absl::SkipEmpty())) {
      std::vector<std::string> parts = absl::StrSplit(kv, '=');
      double v;
      if (parts.size() != 2 || !absl::SimpleAtod(parts[1], &v)) {
        return absl::InvalidArgumentError(absl::StrCat("bad index parameter '", kv, "'"));
      }
      p[parts[0]] = v;
    }
  }
  auto get = [&](const char* key, double def) {
    auto it = p.find(key);
    if (it == p.end()) return def;
    const double v = it->second;
    p.erase(it);
    return v;
  };
  std::unique_ptr<RetrievalIndex> idx;
  const int d = layout.head_dim;
  if (name == "oracle") {
    idx = std::make_unique<OracleIndex>(d);
  } else if (name == "a2ats") {
    const int k = static_cast<int>(get("centroids", 4096));
    if (k < 2 || k > 65536) return absl::InvalidArgumentError("a2ats: centroids must be in [2, 65536]");
    const double outliers = get("outliers", 0);
    if (!(outliers >= 0 && outliers <= k && k + outliers <= 65536) || outliers != std::floor(outliers)) {
      return absl::InvalidArgumentError(
          "a2ats: outliers must be a whole number in [0, centroids], centroids + outliers <= 65536");
    }
    const double band = get("band", 0);
    if (!(band >= 0 && band <= double(int64_t{1} << 40)) || band != std::floor(band)) {
      return absl::InvalidArgumentError("a2ats: band must be a whole number of tokens in [0, 2^40]");
    }
    const double horizon = get("horizon", double(kDefaultHorizon));
    if (!(horizon >= 1 && horizon <= double(int64_t{1} << 40)) || horizon != std::floor(horizon)) {
      return absl::InvalidArgumentError("a2ats: horizon must be a whole number of tokens in [1, 2^40]");
    }
    const double slow = get("slow", 8);
    if (!(slow >= 0 && slow <= 1e12)) return absl::InvalidArgumentError("a2ats: slow must be in [0, 1e12] radians");
    idx = std::make_unique<A2atsIndex>(layout, k, get("b", 2048), static_cast<int>(get("iters", 20)),
                                       static_cast<uint64_t>(get("seed", 1)), static_cast<int>(outliers),
                                       static_cast<int64_t>(band), static_cast<int64_t>(horizon), slow);
  } else if (name == "quest") {
    const int page = static_cast<int>(get("page", 16));
    if (page < 1 || page > 4096) return absl::InvalidArgumentError("quest: page must be in [1, 4096]");
    idx = std::make_unique<QuestIndex>(d, page);
  } else if (name == "pq") {
    const int m = static_cast<int>(get("m", 2)), nbits = static_cast<int>(get("nbits", 6));
    if (m < 1 || d % m != 0 || nbits < 1 || nbits > 8) {
      return absl::InvalidArgumentError("pq: m must divide head_dim and nbits be in [1, 8]");
    }
    idx = std::make_unique<PqIndex>(d, m, nbits);
  } else if (name == "commvq") {
    const int stages = static_cast<int>(get("stages", 2)), digit = static_cast<int>(get("digit", 6));
    const int iters = static_cast<int>(get("iters", 12)), train = static_cast<int>(get("train", 8192));
    if (stages < 1 || stages > 256 || digit < 1 || digit > 8 || iters < 1 || iters > 1000 || train < 2 ||
        d % 2 != 0) {
      return absl::InvalidArgumentError("commvq: stages in [1, 256], digit in [1, 8], iters in [1, 1000], even head_dim");
    }
    idx = std::make_unique<CommVqIndex>(layout, stages, digit, iters, train, static_cast<uint64_t>(get("seed", 1)));
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown retrieval index '", name, "'; known: oracle, a2ats, quest, pq, commvq"));
  }
  if (!p.empty()) return absl::InvalidArgumentError(absl::StrCat("unknown parameter '", p.begin()->first, "' for ", name));
  return idx;
}

}  // namespace kvrecall
