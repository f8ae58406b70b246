#include "index/retrieval_index.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>

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

// Selection for an index with per-token codes: appends to `out`, in order,
// the tokens of [begin, end) picked by any query head. Each head's threshold is the k-th
// largest score over the histogram of codes; its ties at the threshold go to
// the first tokens in position order, as in the per-token path.
absl::Status SelectByCode(const RetrievalIndex& index, const float* q_pre, const float* q_post, int group,
                          int64_t begin, int64_t end, int64_t k, std::vector<int64_t>* out) {
  const int nc = index.num_codes(), d = index.dim();
  const uint16_t* codes = index.codes();
  std::vector<int64_t> hist(nc, 0);
  for (int64_t i = begin; i < end; ++i) ++hist[codes[i]];
  // Per code: the heads that take all of its tokens, and the heads for which
  // it sits at the threshold (taking up to quota[g] of its tokens).
  std::vector<uint32_t> all(nc, 0), tie(nc, 0);
  std::vector<int64_t> quota(group, 0);
  std::vector<float> table(nc);
  std::vector<int> order(nc);
  for (int g = 0; g < group; ++g) {
    RETURN_IF_ERROR(index.CodeScores(q_pre ? q_pre + size_t(g) * d : nullptr, q_post ? q_post + size_t(g) * d : nullptr,
                                     absl::MakeSpan(table)));
    for (int c = 0; c < nc; ++c) order[c] = c;
    std::sort(order.begin(), order.end(), [&](int a, int b) { return table[a] > table[b]; });
    int64_t seen = 0;
    float threshold = table[order[0]];
    for (int c : order) {
      if (hist[c] == 0) continue;
      seen += hist[c];
      if (seen >= k) {
        threshold = table[c];
        break;
      }
    }
    int64_t above = 0;
    for (int c = 0; c < nc; ++c) {
      if (hist[c] == 0) continue;
      if (table[c] > threshold) all[c] |= 1u << g, above += hist[c];
      else if (table[c] == threshold) tie[c] |= 1u << g;
    }
    quota[g] = k - above;
  }
  for (int64_t i = begin; i < end; ++i) {
    const uint16_t c = codes[i];
    char pick = all[c] != 0;
    for (uint32_t t = tie[c]; t != 0; t &= t - 1) {
      const int g = __builtin_ctz(t);
      if (quota[g] > 0) --quota[g], pick = 1;
    }
    if (pick) out->push_back(i);
  }
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

absl::Status RetrievalIndex::CodeScores(const float*, const float*, absl::Span<float>) const {
  return absl::UnimplementedError(absl::StrCat(name(), " has no per-token codes"));
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
    RETURN_IF_ERROR(SelectByCode(index, q_pre, q_post, group, sink_end, window_begin, k, &out));
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
