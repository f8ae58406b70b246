#include "index/retrieval_index.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

#include "absl/strings/str_cat.h"
#include "codec/bytes.h"
#include "common/hash.h"
#include "common/parallel.h"
#include "common/status.h"

namespace kvrecall {

absl::Status CheckFinite(const float* x, int64_t n, int dim, const char* what) {
  if (n < 0 || dim <= 0) return absl::InvalidArgumentError(absl::StrCat(what, ": bad shape"));
  if (n > 0 && x == nullptr) return absl::InvalidArgumentError(absl::StrCat(what, ": no data"));
  for (int64_t i = 0; i < n * dim; ++i) {
    if (!std::isfinite(x[i])) return absl::InvalidArgumentError(absl::StrCat(what, "[", i, "] is not finite"));
  }
  return absl::OkStatus();
}

namespace {

// Order-preserving map of a float to uint32 (larger float, larger key).
inline uint32_t SortKey(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// The k-th largest of x[0..n) (1 <= k <= n), by partial selection, not a
// sort: a 2048-bucket histogram of the top 11 key bits finds the bucket
// holding it in one pass; nth_element then runs on that bucket only.
float KthLargest(const float* x, int64_t n, int64_t k, std::vector<float>* scratch) {
  constexpr int kBuckets = 2048;
  int64_t hist[kBuckets] = {0};
  for (int64_t i = 0; i < n; ++i) ++hist[SortKey(x[i]) >> 21];
  int bucket = kBuckets - 1;
  int64_t above = 0;  // elements in buckets above `bucket`
  while (above + hist[bucket] < k) above += hist[bucket--];
  scratch->clear();
  for (int64_t i = 0; i < n; ++i) {
    if (static_cast<int>(SortKey(x[i]) >> 21) == bucket) scratch->push_back(x[i]);
  }
  const int64_t r = k - above - 1;  // rank within the bucket, 0 = largest
  std::nth_element(scratch->begin(), scratch->begin() + r, scratch->end(), std::greater<float>());
  return (*scratch)[r];
}

// Per-head thresholds over a histogram of codes: for each code, the heads
// that take all of its tokens (all[c], bit g) and those for which it sits at
// the threshold (tie[c]); quota[g] is how many threshold tokens head g takes
// (the earliest ones); ties[g] counts the codes, with tokens, at its threshold.
// With position bands a "code" is a (band, code) pair, band * num_codes + code.
struct CodeThresholds {
  std::vector<uint32_t> all, tie;
  std::vector<int64_t> quota;
  std::vector<int> ties;
};

absl::Status ComputeThresholds(const RetrievalIndex& index, const float* q_pre, const float* q_post, int group,
                               int64_t pos, int64_t end, const std::vector<int64_t>& hist, int64_t k,
                               CodeThresholds* t) {
  const int nc = static_cast<int>(hist.size());  // bands x codes
  t->all.assign(nc, 0), t->tie.assign(nc, 0), t->quota.assign(group, 0), t->ties.assign(group, 0);
  std::vector<float> tables(size_t(group) * nc);
  RETURN_IF_ERROR(index.BandCodeScores(q_pre, q_post, group, pos, end, absl::MakeSpan(tables)));
  std::vector<int> cand;
  for (int g = 0; g < group; ++g) {
    const float* table = tables.data() + size_t(g) * nc;
    // The k-th largest token score, each code's score counted as many times
    // as it has tokens: a histogram of the scores' top 11 key bits, weighted
    // by tokens, finds the bucket holding it in one pass over the codes; only
    // that bucket's codes are sorted. (With position bands there are tens of
    // thousands of (band, code) pairs.)
    constexpr int kBuckets = 2048;
    int64_t weight[kBuckets] = {0};
    for (int c = 0; c < nc; ++c) weight[SortKey(table[c]) >> 21] += hist[c];
    int bucket = kBuckets - 1;
    int64_t seen = 0;  // tokens in buckets above `bucket`
    while (bucket > 0 && seen + weight[bucket] < k) seen += weight[bucket--];
    cand.clear();
    for (int c = 0; c < nc; ++c) {
      if (hist[c] != 0 && static_cast<int>(SortKey(table[c]) >> 21) == bucket) cand.push_back(c);
    }
    std::sort(cand.begin(), cand.end(), [&](int a, int b) { return table[a] > table[b]; });
    float threshold = cand.empty() ? -std::numeric_limits<float>::infinity() : table[cand.back()];
    for (int c : cand) {
      seen += hist[c];
      if (seen >= k) {
        threshold = table[c];
        break;
      }
    }
    int64_t above = 0;
    for (int c = 0; c < nc; ++c) {
      if (hist[c] == 0) continue;
      if (table[c] > threshold) t->all[c] |= 1u << g, above += hist[c];
      else if (table[c] == threshold) t->tie[c] |= 1u << g, ++t->ties[g];
    }
    t->quota[g] = k - above;
  }
  return absl::OkStatus();
}

// Whether token of code c is picked, consuming the quotas of the heads for
// which c is at the threshold.
inline bool PickToken(const CodeThresholds& t, size_t c, std::vector<int64_t>* quota) {
  bool pick = t.all[c] != 0;
  for (uint32_t m = t.tie[c]; m != 0; m &= m - 1) {
    const int g = __builtin_ctz(m);
    if ((*quota)[g] > 0) --(*quota)[g], pick = true;
  }
  return pick;
}

// Selection for an index with per-token codes: appends to `out`, in order,
// the tokens of [begin, end) picked by any query head. Each head's threshold
// is the k-th largest score over the histogram of codes; its ties at the
// threshold go to the first tokens in position order, as in the per-token path.
absl::Status SelectByCode(const RetrievalIndex& index, const float* q_pre, const float* q_post, int group,
                          int64_t pos, int64_t begin, int64_t end, int64_t k, std::vector<int64_t>* out) {
  const uint16_t* codes = index.codes();
  const int nc = index.num_codes();
  const int64_t band = index.band_tokens();  // token i's key: its band's offset plus its code
  RETURN_IF_ERROR(CheckBandTables(index, end));
  std::vector<int64_t> hist(size_t(NumBands(index, end)) * nc, 0);
  ForEachBand(band, begin, end, [&](int64_t lo, int64_t hi, int64_t j) {
    int64_t* h = hist.data() + size_t(j) * nc;
    for (int64_t i = lo; i < hi; ++i) ++h[codes[i]];
  });
  CodeThresholds t;
  RETURN_IF_ERROR(ComputeThresholds(index, q_pre, q_post, group, pos, end, hist, k, &t));
  std::vector<int64_t> quota = t.quota;
  ForEachBand(band, begin, end, [&](int64_t lo, int64_t hi, int64_t j) {
    for (int64_t i = lo; i < hi; ++i) {
      if (PickToken(t, size_t(j) * nc + codes[i], &quota)) out->push_back(i);
    }
  });
  return absl::OkStatus();
}

// Selection by scoring every token: chosen[i] |= picked by any query head,
// for tokens [begin, end). Each head keeps the tokens above its k-th largest
// score and the first of those equal to it.
absl::Status SelectByScore(const RetrievalIndex& index, const float* q_pre, const float* q_post, int group,
                           int64_t pos, int64_t sink_end, int64_t window_begin, int64_t k, int threads, char* chosen) {
  const int64_t middle = window_begin - sink_end;
  const int d = index.dim();
  // Each query head scores and thresholds on its own; with threads, the
  // group's heads run in parallel first (one thread start per call), and
  // what is left of the threads splits each head's scoring.
  const int workers = std::min(group, MaxWorkers(threads));
  const int inner = std::max(1, MaxWorkers(threads) / workers);
  std::vector<std::vector<char>> picks(group);
  std::vector<absl::Status> errors(group);
  ParallelFor(group, workers, 1, [&](int64_t g0, int64_t g1, int) {
    std::vector<float> scores(index.size()), middle_scores;
    middle_scores.reserve(middle);
    for (int64_t g = g0; g < g1; ++g) {
      absl::Status s = index.Score(q_pre ? q_pre + size_t(g) * d : nullptr, q_post ? q_post + size_t(g) * d : nullptr,
                                   pos, absl::MakeSpan(scores), inner);
      if (!s.ok()) {
        errors[g] = s;
        continue;
      }
      const float threshold = KthLargest(scores.data() + sink_end, middle, k, &middle_scores);
      std::vector<char>& pick = picks[g];
      pick.assign(middle, 0);
      int64_t taken = 0;
      for (int64_t i = sink_end; i < window_begin; ++i) {
        if (scores[i] > threshold) pick[i - sink_end] = 1, ++taken;
      }
      for (int64_t i = sink_end; i < window_begin && taken < k; ++i) {
        if (scores[i] == threshold) pick[i - sink_end] = 1, ++taken;
      }
    }
  });
  for (int g = 0; g < group; ++g) {
    if (!errors[g].ok()) return errors[g];
    for (int64_t i = 0; i < middle; ++i) chosen[sink_end + i] |= picks[g][i];
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RetrievalIndex::CodeScores(const float*, const float*, int, absl::Span<float>) const {
  return absl::UnimplementedError(absl::StrCat(name(), " has no per-token codes"));
}

absl::Status RetrievalIndex::BandCodeScores(const float* q_pre, const float* q_post, int group, int64_t,
                                            int64_t, absl::Span<float> table) const {
  if (band_tokens() > 0) return absl::UnimplementedError(absl::StrCat(name(), " has bands but no band tables"));
  return CodeScores(q_pre, q_post, group, table);
}

int64_t NumBands(const RetrievalIndex& index, int64_t end) {
  const int64_t band = index.band_tokens();
  return band > 0 && end > band ? (end + band - 1) / band : 1;
}

absl::Status CheckBandTables(const RetrievalIndex& index, int64_t end) {
  const int64_t entries = NumBands(index, end) * std::max(1, index.num_codes());
  if (entries > kMaxBandTableEntries) {
    return absl::InvalidArgumentError(absl::StrCat(index.name(), ": ", NumBands(index, end), " bands x ",
                                                   index.num_codes(), " codes is more than ", kMaxBandTableEntries,
                                                   " table entries per query; use wider bands"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> SelectTokens(const RetrievalIndex& index, const float* q_pre,
                                                  const float* q_post, int group, int64_t pos,
                                                  const SelectionConfig& cfg) {
  if (group < 1) return absl::InvalidArgumentError("group must be >= 1");
  if (cfg.sinks < 0 || cfg.window < 0) return absl::InvalidArgumentError("sinks and window must be >= 0");
  if (cfg.topk < 0 || !(cfg.topk_fraction >= 0 && cfg.topk_fraction <= 1)) {
    return absl::InvalidArgumentError("topk must be >= 0 and topk_fraction in [0, 1]");
  }
  const int64_t n = std::min<int64_t>(index.size(), pos + 1);
  if (n <= 0) return std::vector<int64_t>{};
  const int64_t sink_end = std::min<int64_t>(cfg.sinks, n);
  const int64_t window_begin = std::max<int64_t>(sink_end, n - cfg.window);
  const int64_t middle = window_begin - sink_end;
  int64_t k = cfg.topk > 0 ? cfg.topk : static_cast<int64_t>(std::ceil(cfg.topk_fraction * n));
  k = std::min(k, middle);
  if (k > 0 && !index.trained()) {
    return absl::FailedPreconditionError(absl::StrCat(index.name(), " index is not trained"));
  }
  std::vector<int64_t> out;
  if (k > 0 && cfg.by_code && index.num_codes() > 0 && index.codes() != nullptr && group <= 32) {
    // Sinks, the picks in order, the window: sorted without a pass over all n.
    out.reserve(size_t(sink_end + (n - window_begin) + std::min<int64_t>(middle, group * k)));
    for (int64_t i = 0; i < sink_end; ++i) out.push_back(i);
    RETURN_IF_ERROR(SelectByCode(index, q_pre, q_post, group, pos, sink_end, window_begin, k, &out));
    for (int64_t i = window_begin; i < n; ++i) out.push_back(i);
    return out;
  }
  std::vector<char> chosen(n, 0);
  for (int64_t i = 0; i < sink_end; ++i) chosen[i] = 1;
  for (int64_t i = window_begin; i < n; ++i) chosen[i] = 1;
  if (k > 0) {
    RETURN_IF_ERROR(SelectByScore(index, q_pre, q_post, group, pos, sink_end, window_begin, k, cfg.threads,
                                  chosen.data()));
  }
  for (int64_t i = 0; i < n; ++i) {
    if (chosen[i]) out.push_back(i);
  }
  return out;
}

absl::Status CodeSortedLayout::Init(std::vector<int> order, int64_t segment_tokens) {
  if (segment_tokens <= 0 || segment_tokens > int64_t{UINT32_MAX}) {
    return absl::InvalidArgumentError(absl::StrCat("segment of ", segment_tokens, " tokens; must be in [1, 2^32)"));
  }
  const int nc = static_cast<int>(order.size());
  if (nc == 0 || nc > 65536) return absl::InvalidArgumentError("code order: need 1..65536 codes");
  rank_.assign(nc, -1);
  for (int r = 0; r < nc; ++r) {
    if (order[r] < 0 || order[r] >= nc || rank_[order[r]] >= 0) {
      return absl::InvalidArgumentError("code order is not a permutation of the codes");
    }
    rank_[order[r]] = r;
  }
  nc_ = nc, seg_ = segment_tokens, order_ = std::move(order);
  starts16_.clear(), starts32_.clear();
  hist_.assign(nc, 0), band_ = 0;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint32_t>> CodeSortedLayout::Seal(const RetrievalIndex& index) {
  if (nc_ == 0) return absl::FailedPreconditionError("code-sorted layout not initialized");
  if (index.num_codes() != nc_ || index.codes() == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(index.name(), " index does not have the layout's ", nc_, " codes"));
  }
  const int64_t begin = sealed();
  if (index.size() < begin + seg_) {
    return absl::FailedPreconditionError(absl::StrCat("sealing tokens ", begin, "..", begin + seg_, " of an index of ",
                                                      index.size()));
  }
  const int64_t band = index.band_tokens();
  if (band > 0 && (band % seg_ != 0 || (begin > 0 && band_ != band))) {
    return absl::InvalidArgumentError(
        absl::StrCat("segments of ", seg_, " tokens straddle the index's bands of ", band));
  }
  band_ = band;
  const int64_t b = band > 0 ? begin / band : 0;
  if (hist_.size() < size_t(b + 1) * nc_) hist_.resize(size_t(b + 1) * nc_, 0);
  const uint16_t* codes = index.codes() + begin;
  std::vector<uint32_t> starts(nc_ + 1, 0);
  for (int64_t t = 0; t < seg_; ++t) ++starts[rank_[codes[t]] + 1];
  for (int r = 0; r < nc_; ++r) {
    hist_[size_t(b) * nc_ + order_[r]] += starts[r + 1];
    starts[r + 1] += starts[r];
  }
  if (wide()) {
    starts32_.push_back(std::move(starts));
  } else {
    starts16_.emplace_back(starts.begin(), starts.end());  // every value <= seg_ <= 65535
  }
  return Permutation(index, segments() - 1);
}

std::vector<uint32_t> CodeSortedLayout::Permutation(const RetrievalIndex& index, int64_t segment) const {
  const uint16_t* codes = index.codes() + segment * seg_;
  std::vector<uint32_t> cursor(nc_), perm(seg_);
  for (int r = 0; r < nc_; ++r) cursor[r] = static_cast<uint32_t>(Start(segment, r));
  for (int64_t t = 0; t < seg_; ++t) perm[cursor[rank_[codes[t]]]++] = static_cast<uint32_t>(t);
  return perm;
}

absl::Status CodeSortedLayout::Select(const RetrievalIndex& index, const float* q_pre, const float* q_post, int group,
                                      int64_t end, int64_t k, Picks* out, int64_t pos) const {
  out->rows.clear(), out->pending.clear();
  const int64_t sealed_end = sealed();
  if (group < 1 || group > 32) return absl::InvalidArgumentError("group must be in [1, 32]");
  if (end < sealed_end || end > index.size()) {
    return absl::InvalidArgumentError(absl::StrCat("selecting over ", end, " tokens with ", sealed_end,
                                                   " sealed and ", index.size(), " indexed"));
  }
  if (index.num_codes() != nc_ || index.codes() == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(index.name(), " index does not have the layout's ", nc_, " codes"));
  }
  const int64_t band = index.band_tokens();
  if (sealed_end > 0 && band != band_) {
    return absl::InvalidArgumentError(
        absl::StrCat("index bands of ", band, " tokens; the layout was sealed with ", band_));
  }
  if (pos < 0) pos = end - 1;
  k = std::min(k, end);
  if (k <= 0) return absl::OkStatus();
  if (!index.trained()) return absl::FailedPreconditionError(absl::StrCat(index.name(), " index is not trained"));
  const uint16_t* codes = index.codes();
  // Keys are (band, code) pairs, band-major; without bands, codes.
  auto band_of = [&](int64_t i) { return band > 0 ? i / band : 0; };
  RETURN_IF_ERROR(CheckBandTables(index, end));
  std::vector<int64_t> hist = hist_;
  hist.resize(size_t(NumBands(index, end)) * nc_, 0);
  ForEachBand(band, sealed_end, end, [&](int64_t lo, int64_t hi, int64_t j) {
    for (int64_t i = lo; i < hi; ++i) ++hist[size_t(j) * nc_ + codes[i]];
  });
  CodeThresholds t;
  RETURN_IF_ERROR(ComputeThresholds(index, q_pre, q_post, group, pos, end, hist, k, &t));
  std::vector<int64_t> quota = t.quota;
  // Per band, the picked codes in storage order (ranks); each is one run of
  // rows per segment of the band.
  const int64_t bands_sealed = sealed_end > 0 ? band_of(sealed_end - 1) + 1 : 0;
  std::vector<std::vector<int>> picked(bands_sealed);
  for (int64_t b = 0; b < bands_sealed; ++b) {
    for (int r = 0; r < nc_; ++r) {
      const size_t key = size_t(b) * nc_ + order_[r];
      if (t.all[key] != 0 || t.tie[key] != 0) picked[b].push_back(r);
    }
  }
  // How many of a tie code's tokens a segment gives: with at most one code
  // at each head's threshold, its quota takes whole prefixes of that code's
  // tokens segment by segment (earliest first), and the union over heads is
  // the longest prefix. Otherwise a head's quota spreads over several codes
  // in position order: count it token by token.
  const bool one_tie = std::all_of(t.ties.begin(), t.ties.end(), [](int n) { return n <= 1; });
  std::vector<std::vector<uint32_t>> taken;  // per segment, per picked rank of its band: tie tokens taken
  if (!one_tie && sealed_end > 0) {
    std::vector<int> slot(hist.size(), -1);
    for (int64_t b = 0; b < bands_sealed; ++b) {
      for (size_t i = 0; i < picked[b].size(); ++i) slot[size_t(b) * nc_ + order_[picked[b][i]]] = static_cast<int>(i);
    }
    taken.resize(segments());
    for (int64_t s = 0; s < segments(); ++s) taken[s].assign(picked[band_of(s * seg_)].size(), 0);
    for (int64_t i = 0; i < sealed_end; ++i) {
      const size_t key = size_t(band_of(i)) * nc_ + codes[i];
      if (t.tie[key] == 0) continue;  // (a code all of whose tokens one head takes still uses the others' quotas)
      if (PickToken(t, key, &quota) && t.all[key] == 0) ++taken[i / seg_][slot[key]];
    }
  }
  for (int64_t s = 0; s < segments(); ++s) {
    const int64_t base = s * seg_, b = band_of(base);
    for (size_t i = 0; i < picked[b].size(); ++i) {
      const int r = picked[b][i];
      const size_t key = size_t(b) * nc_ + order_[r];
      const int64_t begin = Start(s, r), count = Start(s, r + 1) - begin;
      if (count == 0) continue;
      int64_t n = 0;
      if (one_tie) {
        for (uint32_t m = t.tie[key]; m != 0; m &= m - 1) {
          const int g = __builtin_ctz(m);
          const int64_t take = std::min(quota[g], count);
          quota[g] -= take;
          n = std::max(n, take);
        }
      } else if (t.all[key] == 0) {
        n = taken[s][i];
      }
      if (t.all[key] != 0) n = count;
      for (int64_t j = 0; j < n; ++j) out->rows.push_back(base + begin + j);
    }
  }
  ForEachBand(band, sealed_end, end, [&](int64_t lo, int64_t hi, int64_t j) {
    for (int64_t i = lo; i < hi; ++i) {
      if (PickToken(t, size_t(j) * nc_ + codes[i], &quota)) out->pending.push_back(i);
    }
  });
  return absl::OkStatus();
}

namespace {
constexpr uint32_t kIndexMagic = 0x4952564bu;  // "KVRI"
constexpr uint16_t kIndexVersion = 1;
}  // namespace

std::string SerializeRetrievalIndex(const RetrievalIndex& index, const KvLayout& layout) {
  std::string out;
  AppendLE<uint32_t>(&out, kIndexMagic);
  AppendLE<uint16_t>(&out, kIndexVersion);
  AppendLE<uint16_t>(&out, 0);
  const std::string spec = index.spec();
  AppendLE<uint32_t>(&out, static_cast<uint32_t>(spec.size()));
  out += spec;
  uint8_t l[kEncodedLayoutBytes];
  EncodeLayout(layout, l);
  out.append(reinterpret_cast<const char*>(l), sizeof(l));
  std::string state;
  index.SaveState(&state);
  AppendLE<uint64_t>(&out, state.size());
  out += state;
  AppendLE<uint64_t>(&out, Checksum64(out.data(), out.size()));
  return out;
}

absl::StatusOr<std::unique_ptr<RetrievalIndex>> LoadRetrievalIndex(absl::string_view bytes) {
  const uint8_t* p = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t n = bytes.size();
  if (n < 12 + kEncodedLayoutBytes + 16) return absl::DataLossError(absl::StrCat("index truncated: ", n, " bytes"));
  if (LoadLE<uint32_t>(p) != kIndexMagic) return absl::DataLossError("not a kvrecall retrieval index (bad magic)");
  if (LoadLE<uint16_t>(p + 4) != kIndexVersion) {
    return absl::UnimplementedError(absl::StrCat("unknown retrieval index version ", LoadLE<uint16_t>(p + 4)));
  }
  if (LoadLE<uint64_t>(p + n - 8) != Checksum64(p, n - 8)) {
    return absl::DataLossError("retrieval index checksum mismatch (truncated or corrupted)");
  }
  const uint32_t spec_len = LoadLE<uint32_t>(p + 8);
  size_t off = 12;
  if (spec_len > n - off - kEncodedLayoutBytes - 16) return absl::DataLossError("index spec length out of range");
  const std::string spec(bytes.substr(off, spec_len));
  off += spec_len;
  absl::StatusOr<KvLayout> layout = DecodeLayout(p + off);
  if (!layout.ok()) return layout.status();
  off += kEncodedLayoutBytes;
  const uint64_t state_len = LoadLE<uint64_t>(p + off);
  off += 8;
  if (state_len != n - off - 8) return absl::DataLossError("index state length does not match the file");
  absl::StatusOr<std::unique_ptr<RetrievalIndex>> idx = MakeRetrievalIndex(spec, *layout);
  if (!idx.ok()) return absl::DataLossError(absl::StrCat("index spec: ", idx.status().message()));
  if (absl::Status s = (*idx)->LoadState(bytes.substr(off, state_len)); !s.ok()) return s;
  return idx;
}

}  // namespace kvrecall
