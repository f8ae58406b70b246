#include "index/retrieval_index.h"

#include <algorithm>
#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "codec/metrics.h"
#include "codec/rope.h"
#include "codec/synthetic_kv.h"

namespace kvrecall {
namespace {

struct Sequence {
  KvLayout layout;
  int n = 0, g = 4, d = 128;
  std::vector<float> k_pre, k_post, q_pre, q_post;     // context [n][...]
  std::vector<float> dq_pre, dq_post;                  // decode queries [steps][g][d]
};

Sequence MakeSequence(uint64_t seed, int head, int n, int steps) {
  Sequence s;
  SyntheticConfig c;
  c.seed = seed;
  c.total_tokens = n;
  SyntheticHead gen(c, head);
  s.n = n;
  s.layout.num_layers = 1;
  s.layout.num_q_heads = c.group_size;
  s.layout.num_kv_heads = 1;
  s.layout.head_dim = c.head_dim;
  s.layout.rope_style = c.rope_style;
  s.layout.rope_theta = c.rope_theta;
  s.k_pre.resize(size_t(n) * s.d), s.k_post.resize(s.k_pre.size());
  s.q_pre.resize(size_t(n) * s.g * s.d), s.q_post.resize(s.q_pre.size());
  gen.Next(n, s.k_pre.data(), s.k_post.data(), nullptr, s.q_pre.data(), s.q_post.data());
  s.dq_pre.resize(size_t(steps) * s.g * s.d), s.dq_post.resize(s.dq_pre.size());
  gen.Next(steps, nullptr, nullptr, nullptr, s.dq_pre.data(), s.dq_post.data());
  return s;
}

std::unique_ptr<RetrievalIndex> Build(const std::string& spec, const Sequence& s) {
  auto idx = MakeRetrievalIndex(spec, s.layout);
  EXPECT_TRUE(idx.ok()) << idx.status();
  TrainingData t;
  t.dim = s.d;
  t.k_pre = s.k_pre.data();
  t.k_post = s.k_post.data();
  t.num_keys = s.n / 2;
  t.q_pre = s.q_pre.data();
  t.q_post = s.q_post.data();
  t.num_queries = int64_t(s.n / 2) * s.g;
  EXPECT_TRUE((*idx)->Train(t).ok());
  EXPECT_TRUE((*idx)->Add(s.k_pre.data(), s.k_post.data(), s.n).ok());
  return std::move(*idx);
}

// Mean attention-mass recall over decode steps and query heads.
double MassRecall(const RetrievalIndex& idx, const Sequence& s, int steps, const SelectionConfig& cfg) {
  double total = 0;
  int count = 0;
  for (int step = 0; step < steps; ++step) {
    const float* qp = s.dq_pre.data() + size_t(step) * s.g * s.d;
    const float* qq = s.dq_post.data() + size_t(step) * s.g * s.d;
    auto sel = SelectTokens(idx, qp, qq, s.g, s.n + step, cfg);
    EXPECT_TRUE(sel.ok()) << sel.status();
    std::vector<int> ids(sel->begin(), sel->end());
    for (int h = 0; h < s.g; ++h) {
      std::vector<double> p = AttentionProbs(qq + size_t(h) * s.d, s.n - 1, s.k_post.data(), s.n, s.d,
                                             1 / std::sqrt(double(s.d)));
      total += ComputeSelectionRecall(p, ids).mass_recall;
      ++count;
    }
  }
  return total / count;
}

TEST(Retrieval, EveryMethodFindsTheMassOracleIsPerfect) {
  const Sequence s = MakeSequence(1, 0, 4096, 4);  // a peaky head
  SelectionConfig cfg;
  cfg.topk_fraction = 0.03;
  const double oracle = MassRecall(*Build("oracle", s), s, 4, cfg);
  const double a2ats = MassRecall(*Build("a2ats:centroids=256,iters=10", s), s, 4, cfg);
  const double quest = MassRecall(*Build("quest", s), s, 4, cfg);
  const double pq = MassRecall(*Build("pq:m=2,nbits=6", s), s, 4, cfg);
  const double commvq = MassRecall(*Build("commvq:stages=2,digit=4,iters=6", s), s, 4, cfg);
  SelectionConfig only_fixed = cfg;
  only_fixed.topk_fraction = 0;
  const double floor = MassRecall(*Build("oracle", s), s, 4, only_fixed);  // sinks + window alone
  std::printf("mass recall at 3%%: oracle %.3f a2ats %.3f quest %.3f pq %.3f commvq %.3f (sinks+window %.3f)\n", oracle,
              a2ats, quest, pq, commvq, floor);
  EXPECT_GT(oracle, 0.9);
  EXPECT_GE(oracle + 1e-9, a2ats);
  EXPECT_GT(a2ats, floor + 0.5 * (oracle - floor)) << "A²ATS must recover most of what retrieval can";
  EXPECT_GT(quest, floor);
  EXPECT_GT(pq, floor);
  EXPECT_GT(commvq, floor);  // key-MSE codes, not query-aware: like PQ at this size
}

TEST(Retrieval, ThreadsDoNotChangeScores) {
  const Sequence s = MakeSequence(5, 1, 40000, 1);  // enough tokens to split over threads
  for (const char* spec : {"oracle", "a2ats:centroids=64,iters=4", "quest", "pq:m=2,nbits=6", "commvq:stages=1,digit=3,iters=2"}) {
    auto idx = Build(spec, s);
    std::vector<float> one(idx->size()), many(idx->size());
    ASSERT_TRUE(idx->Score(s.dq_pre.data(), s.dq_post.data(), s.n, absl::MakeSpan(one), 1).ok());
    ASSERT_TRUE(idx->Score(s.dq_pre.data(), s.dq_post.data(), s.n, absl::MakeSpan(many), 4).ok());
    EXPECT_EQ(one, many) << spec;
  }
}

TEST(Retrieval, CommVqScoresTrackExactLogits) {
  // With enough stages the scores from codes approach q·k/√d, at every
  // position (the per-token RoPE rotation is applied from codes).
  const Sequence s = MakeSequence(6, 0, 3000, 1);
  auto coarse = Build("commvq:stages=1,digit=4,iters=6", s);
  auto fine = Build("commvq:stages=6,digit=4,iters=6", s);
  auto exact = Build("oracle", s);
  std::vector<float> a(s.n), b(s.n), e(s.n);
  ASSERT_TRUE(coarse->Score(nullptr, s.dq_post.data(), s.n, absl::MakeSpan(a)).ok());
  ASSERT_TRUE(fine->Score(nullptr, s.dq_post.data(), s.n, absl::MakeSpan(b)).ok());
  ASSERT_TRUE(exact->Score(nullptr, s.dq_post.data(), s.n, absl::MakeSpan(e)).ok());
  const double err_coarse = RelativeError(e.data(), a.data(), s.n), err_fine = RelativeError(e.data(), b.data(), s.n);
  EXPECT_LT(err_fine, 0.6 * err_coarse) << err_fine << " vs " << err_coarse;
  EXPECT_LT(err_fine, 0.3);
  EXPECT_EQ(fine->BitsPerToken(), 6 * 8 + 16);
}

// A²ATS selection from the code histogram picks exactly the tokens that
// scoring and ranking every token picks, ties at the threshold included
// (few centroids: many tokens share each score), for several seeds, budgets,
// positions and group sizes.
TEST(Retrieval, SelectionByCodeEqualsPerTokenRanking) {
  for (uint64_t seed : {3, 4, 5}) {
    const Sequence s = MakeSequence(seed, int(seed % 2), 6000, 2);
    for (const char* spec : {"a2ats:centroids=8,iters=3", "a2ats:centroids=256,iters=4",
                             "a2ats:centroids=64,iters=4,band=1000", "a2ats:centroids=64,iters=4,outliers=8,band=512,horizon=8192"}) {
      auto idx = Build(spec, s);
      ASSERT_GT(idx->num_codes(), 0);
      for (int64_t topk : {int64_t{1}, int64_t{37}, int64_t{600}, int64_t{5000}}) {
        for (int group : {1, 4}) {
          for (int64_t pos : {int64_t{s.n - 1}, int64_t{2500}}) {
            SelectionConfig cfg;
            cfg.topk = topk;
            cfg.sinks = 4;
            cfg.window = 64;
            cfg.by_code = true;
            auto fast = SelectTokens(*idx, s.dq_pre.data(), s.dq_post.data(), group, pos, cfg);
            cfg.by_code = false;
            auto slow = SelectTokens(*idx, s.dq_pre.data(), s.dq_post.data(), group, pos, cfg);
            ASSERT_TRUE(fast.ok() && slow.ok()) << fast.status() << slow.status();
            EXPECT_EQ(*fast, *slow) << spec << " seed " << seed << " topk " << topk << " group " << group << " pos " << pos;
          }
        }
      }
    }
  }
  // Indexes without codes say so.
  auto quest = Build("quest", MakeSequence(3, 0, 600, 1));
  std::vector<float> table(4);
  EXPECT_EQ(quest->num_codes(), 0);
  EXPECT_EQ(quest->CodeScores(nullptr, nullptr, 1, absl::MakeSpan(table)).code(), absl::StatusCode::kUnimplemented);
}

TEST(Retrieval, FullBudgetSelectsEverythingAndSinksWindowAlways) {
  const Sequence s = MakeSequence(2, 1, 512, 1);
  auto idx = Build("a2ats:centroids=64,iters=5", s);
  SelectionConfig cfg;
  cfg.topk_fraction = 1.0;
  auto all = SelectTokens(*idx, s.dq_pre.data(), s.dq_post.data(), s.g, s.n, cfg);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 512u);
  cfg.topk_fraction = 0;
  cfg.topk = 10;
  cfg.sinks = 4;
  cfg.window = 64;
  auto some = SelectTokens(*idx, s.dq_pre.data(), s.dq_post.data(), 1, s.n, cfg);
  ASSERT_TRUE(some.ok());
  EXPECT_EQ(some->size(), 4u + 64u + 10u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ((*some)[i], i);
  EXPECT_EQ(some->back(), 511);
  EXPECT_EQ(idx->BitsPerToken(), 6.0);  // 64 centroids
}

TEST(Retrieval, BadInputsAreClearErrors) {
  const Sequence s = MakeSequence(3, 0, 256, 1);
  auto idx = MakeRetrievalIndex("a2ats:centroids=64", s.layout);
  ASSERT_TRUE(idx.ok());
  EXPECT_EQ((*idx)->Add(s.k_pre.data(), s.k_post.data(), 4).code(), absl::StatusCode::kFailedPrecondition);
  SelectionConfig cfg;
  cfg.topk = 5;
  cfg.window = 0;
  cfg.sinks = 0;
  std::vector<float> scores(1);
  EXPECT_EQ((*idx)->Score(s.dq_pre.data(), s.dq_post.data(), 0, absl::MakeSpan(scores)).code(),
            absl::StatusCode::kFailedPrecondition);
  TrainingData t;
  t.dim = 64;  // wrong
  EXPECT_EQ((*idx)->Train(t).code(), absl::StatusCode::kInvalidArgument);
  auto trained = Build("a2ats:centroids=16,iters=3", s);
  std::vector<float> nan_q(s.g * s.d, NAN);
  EXPECT_EQ(SelectTokens(*trained, nan_q.data(), nan_q.data(), s.g, s.n, cfg).status().code(),
            absl::StatusCode::kInvalidArgument);
  cfg.topk = -1;
  EXPECT_EQ(SelectTokens(*trained, s.dq_pre.data(), s.dq_post.data(), s.g, s.n, cfg).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<float> bad_keys(s.d, INFINITY);
  EXPECT_EQ(trained->Add(bad_keys.data(), bad_keys.data(), 1).code(), absl::StatusCode::kInvalidArgument);
  for (const char* spec : {"nope", "a2ats:centroids=1", "pq:m=3", "quest:page=0", "a2ats:color=1", "a2ats:k",
                           "commvq:stages=0", "commvq:digit=9", "a2ats:centroids=64,outliers=65",
                           "a2ats:centroids=65536,outliers=1",
                           "a2ats:centroids=64,outliers=1.5", "a2ats:centroids=64,outliers=-1"}) {
    EXPECT_EQ(MakeRetrievalIndex(spec, s.layout).status().code(), absl::StatusCode::kInvalidArgument) << spec;
  }
  // K larger than the context is clamped, an empty sequence selects nothing.
  cfg.topk = 1 << 20;
  EXPECT_TRUE(SelectTokens(*trained, s.dq_pre.data(), s.dq_post.data(), s.g, s.n, cfg).ok());
  trained->Reset();
  auto none = SelectTokens(*trained, s.dq_pre.data(), s.dq_post.data(), s.g, 0, cfg);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

}  // namespace
}  // namespace kvrecall

namespace kvrecall {
namespace {

TEST(Retrieval, SerializationRoundTripsAndRejectsDamage) {
  const Sequence s = MakeSequence(4, 0, 1024, 1);
  for (const char* spec : {"oracle", "a2ats:centroids=32,iters=4", "a2ats:centroids=32,iters=4,outliers=4,horizon=512",
                           "a2ats:centroids=32,iters=4,band=256",
                           "quest:page=16", "pq:m=4,nbits=4", "commvq:stages=2,digit=3,iters=2"}) {
    auto idx = Build(spec, s);
    if (std::string(spec).find("outliers") != std::string::npos) {  // fill a slot, so the state carries one
      idx->Reset();  // the calibration half only: none of it takes a slot
      ASSERT_TRUE(idx->Add(s.k_pre.data(), s.k_post.data(), s.n / 2).ok());
      std::vector<float> far(s.k_pre.begin(), s.k_pre.begin() + s.d);
      for (float& x : far) x *= 40;
      ASSERT_TRUE(idx->Add(far.data(), far.data(), 1).ok());
      ASSERT_EQ(idx->codes()[idx->size() - 1], 32);  // the first slot, after the 32 centroids
    }
    const std::string bytes = SerializeRetrievalIndex(*idx, s.layout);
    auto back = LoadRetrievalIndex(bytes);
    ASSERT_TRUE(back.ok()) << spec << ": " << back.status();
    EXPECT_EQ((*back)->spec(), idx->spec());
    EXPECT_EQ((*back)->size(), idx->size());
    std::vector<float> a(idx->size()), b(idx->size());
    ASSERT_TRUE(idx->Score(s.dq_pre.data(), s.dq_post.data(), idx->size(), absl::MakeSpan(a)).ok());
    ASSERT_TRUE((*back)->Score(s.dq_pre.data(), s.dq_post.data(), idx->size(), absl::MakeSpan(b)).ok());
    EXPECT_EQ(a, b) << spec;
    for (size_t len : {size_t{0}, size_t{11}, bytes.size() / 2, bytes.size() - 1}) {
      EXPECT_EQ(LoadRetrievalIndex(bytes.substr(0, len)).status().code(), absl::StatusCode::kDataLoss) << spec << len;
    }
    std::string flipped = bytes;
    flipped[flipped.size() / 2] ^= 0x10;
    EXPECT_EQ(LoadRetrievalIndex(flipped).status().code(), absl::StatusCode::kDataLoss) << spec;
  }
}

}  // namespace
}  // namespace kvrecall

namespace kvrecall {
namespace {

// An index whose codes are given and whose table is the query itself
// (dim == num_codes), so tests can force ties between codes. With bands of
// `band` tokens, band j's table is the query shifted by j: table[c] = q[(c + j) % nc].
class TableIndex final : public RetrievalIndex {
 public:
  explicit TableIndex(std::vector<uint16_t> codes, int nc, int64_t band = 0)
      : codes_(std::move(codes)), nc_(nc), band_(band) {}
  std::string name() const override { return "table"; }
  int dim() const override { return nc_; }
  absl::Status Train(const TrainingData&) override { return absl::OkStatus(); }
  bool trained() const override { return true; }
  absl::Status Add(const float*, const float*, int64_t) override { return absl::UnimplementedError("fixed"); }
  absl::Status Score(const float*, const float* q, int64_t, absl::Span<float> scores, int) const override {
    for (size_t i = 0; i < codes_.size(); ++i) scores[i] = q[(codes_[i] + (band_ > 0 ? i / band_ : 0)) % nc_];
    return absl::OkStatus();
  }
  int64_t band_tokens() const override { return band_; }
  absl::Status BandCodeScores(const float*, const float* q, int group, int64_t, int64_t end,
                              absl::Span<float> table) const override {
    const int64_t bands = NumBands(*this, end);
    if (table.size() != size_t(group * bands * nc_)) return absl::InvalidArgumentError("table size");
    for (int g = 0; g < group; ++g) {
      for (int64_t j = 0; j < bands; ++j) {
        for (int c = 0; c < nc_; ++c) table[(g * bands + j) * nc_ + c] = q[g * nc_ + (c + j) % nc_];
      }
    }
    return absl::OkStatus();
  }
  int64_t size() const override { return static_cast<int64_t>(codes_.size()); }
  void Reset() override {}
  int num_codes() const override { return nc_; }
  const uint16_t* codes() const override { return codes_.data(); }
  absl::Status CodeScores(const float*, const float* q, int group, absl::Span<float> table) const override {
    std::copy_n(q, size_t(group) * nc_, table.begin());
    return absl::OkStatus();
  }
  double BitsPerToken() const override { return 16; }
  int64_t FixedBytes() const override { return 0; }
  std::string spec() const override { return "table"; }
  void SaveState(std::string*) const override {}
  absl::Status LoadState(absl::string_view) override { return absl::UnimplementedError("fixed"); }

 private:
  std::vector<uint16_t> codes_;
  int nc_;
  int64_t band_;
};

// Positions of a code-sorted selection, sorted.
std::vector<int64_t> PositionsOf(const CodeSortedLayout& layout, const RetrievalIndex& index,
                                 const CodeSortedLayout::Picks& picks) {
  std::vector<int64_t> out;
  std::vector<std::vector<uint32_t>> perms;
  for (int64_t s = 0; s < layout.segments(); ++s) perms.push_back(layout.Permutation(index, s));
  for (int64_t row : picks.rows) {
    const int64_t s = row / layout.segment_tokens();
    out.push_back(s * layout.segment_tokens() + perms[s][row % layout.segment_tokens()]);
  }
  EXPECT_TRUE(std::is_sorted(picks.rows.begin(), picks.rows.end()));
  EXPECT_TRUE(std::is_sorted(picks.pending.begin(), picks.pending.end()));
  out.insert(out.end(), picks.pending.begin(), picks.pending.end());
  std::sort(out.begin(), out.end());
  return out;
}

void ExpectSameSelection(const RetrievalIndex& index, const std::vector<int>& order, int64_t segment, int64_t end,
                         const float* q_pre, const float* q_post, int group, int64_t k, const std::string& what) {
  CodeSortedLayout layout;
  ASSERT_TRUE(layout.Init(order, segment).ok());
  std::vector<std::vector<uint32_t>> perms;
  while (layout.sealed() + segment <= end) {
    auto perm = layout.Seal(index);
    ASSERT_TRUE(perm.ok()) << perm.status();
    std::vector<uint32_t> sorted = *perm;  // a permutation of the segment's positions
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < segment; ++i) ASSERT_EQ(sorted[i], uint32_t(i));
    // Storage order: codes by rank, positions ascending within a code.
    const int64_t base = layout.sealed() - segment;
    std::vector<int> rank(order.size());
    for (size_t r = 0; r < order.size(); ++r) rank[order[r]] = int(r);
    for (int64_t i = 1; i < segment; ++i) {
      const int a = rank[index.codes()[base + (*perm)[i - 1]]], b = rank[index.codes()[base + (*perm)[i]]];
      ASSERT_TRUE(a < b || (a == b && (*perm)[i - 1] < (*perm)[i])) << what;
    }
  }
  CodeSortedLayout::Picks picks;
  ASSERT_TRUE(layout.Select(index, q_pre, q_post, group, end, k, &picks).ok());
  SelectionConfig cfg;
  cfg.sinks = 0, cfg.window = 0, cfg.topk = k, cfg.by_code = false;
  auto want = SelectTokens(index, q_pre, q_post, group, end - 1, cfg);
  ASSERT_TRUE(want.ok()) << want.status();
  EXPECT_EQ(PositionsOf(layout, index, picks), *want) << what;
}

// Random trials with few codes and queries with repeated values: several
// codes tie at a head's threshold, and one code can be all-taken by a head
// and at the threshold of another. With bands, a table per band (a code's
// tokens score differently in different bands) and segments inside bands.
void TieTrials(uint64_t seed, bool banded) {
  std::mt19937 rng(seed);
  for (int trial = 0; trial < 200; ++trial) {
    const int nc = 2 + int(rng() % 15), group = 1 + int(rng() % 4);
    const int64_t n = 50 + rng() % 400, segment = 1 + rng() % (banded ? 32 : 64);
    const int64_t band = banded ? segment * (1 + rng() % 4) : 0;
    std::vector<uint16_t> codes(n);
    for (auto& c : codes) c = uint16_t(rng() % nc);
    TableIndex index(codes, nc, band);
    std::vector<float> q(size_t(group) * nc);
    for (auto& x : q) x = float(rng() % 4);  // many equal scores
    std::vector<int> order(nc);
    for (int c = 0; c < nc; ++c) order[c] = c;
    std::shuffle(order.begin(), order.end(), rng);
    const int64_t end = n - int64_t(rng() % std::min<int64_t>(n, 2 * segment));
    const int64_t k = 1 + int64_t(rng() % end);
    ExpectSameSelection(index, order, segment, end, nullptr, q.data(), group, k,
                        "trial " + std::to_string(trial) + " band " + std::to_string(band));
  }
}

TEST(CodeSortedLayout, SelectsWhatTimeOrderSelectsTiesIncluded) { TieTrials(7, false); }

TEST(CodeSortedLayout, SelectsWhatTimeOrderSelectsWithBands) {
  TieTrials(8, true);
  // A segment may not straddle two bands.
  TableIndex index(std::vector<uint16_t>(40, 1), 3, 12);
  CodeSortedLayout layout;
  ASSERT_TRUE(layout.Init({0, 1, 2}, 8).ok());
  EXPECT_EQ(layout.Seal(index).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CodeSortedLayout, ManyCodesAndLargeK) {
  // More codes than the threshold search sorts at first (256), with k
  // needing a few of them or nearly all.
  std::mt19937 rng(9);
  const int nc = 3000, n = 20000, group = 4;
  std::vector<uint16_t> codes(n);
  for (auto& c : codes) c = uint16_t(rng() % nc);
  TableIndex index(codes, nc);
  std::vector<float> q(size_t(group) * nc);
  for (auto& x : q) x = float(rng() % 100000);
  std::vector<int> order(nc);
  for (int c = 0; c < nc; ++c) order[c] = c;
  for (int64_t k : {int64_t{3}, int64_t{900}, int64_t{4000}, int64_t{19000}}) {
    ExpectSameSelection(index, order, 4096, n - 300, nullptr, q.data(), group, k, "k " + std::to_string(k));
  }
}

TEST(RetrievalIndex, GroupCodeTablesEqualOneQueryAtATime) {
  // SelectTokens' threshold search takes a KV head's query heads' tables in
  // one pass over the codebook; each must be exactly the table of its query
  // alone (ties at a threshold depend on the exact floats).
  const Sequence s = MakeSequence(5, 0, 3000, 2);
  auto idx = Build("a2ats:centroids=64,iters=4", s);
  const int nc = idx->num_codes(), G = 4;
  ASSERT_EQ(nc, 64);
  std::vector<float> group(size_t(G) * nc), one(nc);
  ASSERT_TRUE(idx->CodeScores(s.dq_pre.data(), s.dq_post.data(), G, absl::MakeSpan(group)).ok());
  for (int g = 0; g < G; ++g) {
    ASSERT_TRUE(idx->CodeScores(s.dq_pre.data() + size_t(g) * s.d, s.dq_post.data() + size_t(g) * s.d, 1,
                                absl::MakeSpan(one))
                    .ok());
    for (int c = 0; c < nc; ++c) ASSERT_EQ(group[size_t(g) * nc + c], one[c]) << "head " << g << " code " << c;
  }
  EXPECT_EQ(idx->CodeScores(s.dq_pre.data(), s.dq_post.data(), G, absl::MakeSpan(one)).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CodeSortedLayout, SegmentsPastSixteenBitRowOffsets) {
  // Segments of more than 65535 tokens keep 32-bit row offsets: two of
  // 70,000 tokens plus waiting ones select what time order selects, with
  // ties (few codes) and without.
  std::mt19937 rng(11);
  const int64_t segment = 70000, n = 2 * segment + 5000;
  for (int nc : {7, 3000}) {
    std::vector<uint16_t> codes(n);
    for (auto& c : codes) c = uint16_t(rng() % nc);
    TableIndex index(codes, nc);
    std::vector<float> q(size_t(4) * nc);
    for (auto& x : q) x = float(rng() % (nc == 7 ? 3 : 100000));
    std::vector<int> order(nc);
    for (int c = 0; c < nc; ++c) order[c] = c;
    std::shuffle(order.begin(), order.end(), rng);
    for (int64_t k : {int64_t{5}, int64_t{4200}, int64_t{60000}}) {
      ExpectSameSelection(index, order, segment, n, nullptr, q.data(), 4, k,
                          "codes " + std::to_string(nc) + " k " + std::to_string(k));
    }
    CodeSortedLayout layout;
    ASSERT_TRUE(layout.Init(order, segment).ok());
    ASSERT_TRUE(layout.Seal(index).ok());
    EXPECT_EQ(layout.StateBytes(), int64_t{nc + 1} * 4);
  }
}

TEST(CodeSortedLayout, SelectsWhatTimeOrderSelectsOnA2ats) {
  for (uint64_t seed : {3, 4}) {
    const Sequence s = MakeSequence(seed, int(seed % 2), 6000, 2);
    auto idx = Build("a2ats:centroids=64,iters=4", s);
    // Storage order: by score under the mean query (as the session does).
    std::vector<float> mean_pre(s.d, 0.0f), mean_post(s.d, 0.0f), table(idx->num_codes());
    for (size_t i = 0; i < s.q_post.size(); ++i) {
      mean_pre[i % s.d] += s.q_pre[i], mean_post[i % s.d] += s.q_post[i];
    }
    ASSERT_TRUE(idx->CodeScores(mean_pre.data(), mean_post.data(), 1, absl::MakeSpan(table)).ok());
    std::vector<int> order(idx->num_codes());
    for (size_t c = 0; c < order.size(); ++c) order[c] = int(c);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return table[a] > table[b]; });
    for (int64_t k : {int64_t{1}, int64_t{60}, int64_t{900}}) {
      ExpectSameSelection(*idx, order, 1024, s.n, s.dq_pre.data(), s.dq_post.data(), 4, k,
                          "seed " + std::to_string(seed) + " k " + std::to_string(k));
    }
  }
}

TEST(CodeSortedLayout, BadInputsAreClearErrors) {
  CodeSortedLayout layout;
  EXPECT_EQ(layout.Init({0, 1, 1}, 8).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(layout.Init({0, 1, 2}, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(layout.Init({0, 1, 2}, int64_t{1} << 32).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(layout.Init({2, 0, 1}, 8).ok());
  TableIndex index(std::vector<uint16_t>(12, 1), 3);
  ASSERT_TRUE(layout.Seal(index).ok());
  EXPECT_EQ(layout.Seal(index).status().code(), absl::StatusCode::kFailedPrecondition);  // 4 tokens left
  CodeSortedLayout::Picks picks;
  const float q[3] = {1, 2, 3};
  EXPECT_EQ(layout.Select(index, nullptr, q, 1, 4, 2, &picks).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(layout.Select(index, nullptr, q, 1, 13, 2, &picks).code(), absl::StatusCode::kInvalidArgument);
  TableIndex other(std::vector<uint16_t>(12, 1), 5);
  EXPECT_EQ(layout.Select(other, nullptr, q, 1, 12, 2, &picks).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(layout.Select(index, nullptr, q, 1, 12, 3, &picks).ok());
  EXPECT_EQ(picks.rows, (std::vector<int64_t>{0, 1, 2}));
  EXPECT_TRUE(picks.pending.empty());
}

}  // namespace
}  // namespace kvrecall

namespace kvrecall {
namespace {

// A²ATS with outlier slots: a key past every calibration key's distance to
// its centroid gets a code of its own, scored exactly under windowed RoPE.
TEST(Retrieval, A2atsOutlierSlotsScoreFarKeysExactly) {
  const Sequence full = MakeSequence(5, 0, 2048, 1);
  const int k = 64, slots = 8;
  auto plain = Build("a2ats:centroids=64,iters=4", full);
  // A horizon of about the sequence's length: a far key is admitted while at
  // most 8 far keys so far are as far.
  auto slotted = Build("a2ats:centroids=64,iters=4,outliers=8,horizon=1024", full);
  EXPECT_EQ(slotted->spec(), "a2ats:b=2048,centroids=64,iters=4,seed=1,outliers=8,horizon=1024");
  EXPECT_EQ(Build("a2ats:centroids=64,iters=4,outliers=8", full)->spec(),
            "a2ats:b=2048,centroids=64,iters=4,seed=1,outliers=8");  // the default horizon is not spelled out
  EXPECT_EQ(slotted->num_codes(), k + slots);
  EXPECT_EQ(slotted->BitsPerToken(), 7.0);  // 72 codes
  // The calibration keys (the first half) never take a slot; keep only them.
  for (int64_t i = 0; i < full.n / 2; ++i) ASSERT_LT(slotted->codes()[i], k) << i;
  Sequence s = full;
  s.n = full.n / 2;
  plain->Reset(), slotted->Reset();
  ASSERT_TRUE(plain->Add(s.k_pre.data(), s.k_post.data(), s.n).ok());
  ASSERT_TRUE(slotted->Add(s.k_pre.data(), s.k_post.data(), s.n).ok());
  for (int64_t i = 0; i < s.n; ++i) ASSERT_LT(slotted->codes()[i], k) << i;
  // A key far along the first decode query's direction: plainly an outlier.
  std::vector<float> q(s.dq_pre.begin(), s.dq_pre.begin() + s.d), far(s.k_pre.begin(), s.k_pre.begin() + s.d);
  double qn = 0;
  for (float x : q) qn += double{x} * x;
  for (int i = 0; i < s.d; ++i) far[i] += static_cast<float>(30.0 * q[i] / std::sqrt(qn));
  // It sits at position s.n; the query at position s.n + 100.
  std::vector<float> far_post = far, q_post = q;
  ApplyRope(far_post.data(), s.layout, double(s.n));
  ApplyRope(q_post.data(), s.layout, double(s.n + 100));
  ASSERT_TRUE(plain->Add(far.data(), far_post.data(), 1).ok());
  ASSERT_TRUE(slotted->Add(far.data(), far_post.data(), 1).ok());
  EXPECT_EQ(slotted->codes()[s.n], k);  // the first slot
  EXPECT_EQ(slotted->Add(far.data(), nullptr, 1).code(), absl::StatusCode::kInvalidArgument)
      << "slots keep post-RoPE keys";
  // Without a post-RoPE query: exact under the windowed RoPE (R_b q)·k.
  std::vector<float> rq = q;
  ApplyRope(rq.data(), s.layout, 2048);
  double windowed = 0, logit = 0;
  for (int i = 0; i < s.d; ++i) windowed += double{rq[i]} * far[i], logit += double{q_post[i]} * far_post[i];
  windowed /= std::sqrt(double(s.d)), logit /= std::sqrt(double(s.d));
  std::vector<float> a(s.n + 1), b(s.n + 1);
  ASSERT_TRUE(plain->Score(q.data(), nullptr, s.n, absl::MakeSpan(a)).ok());
  ASSERT_TRUE(slotted->Score(q.data(), nullptr, s.n, absl::MakeSpan(b)).ok());
  EXPECT_NEAR(b[s.n], windowed, 1e-3 * std::abs(windowed) + 1e-3);
  EXPECT_GT(std::abs(a[s.n] - windowed), 10 * std::abs(b[s.n] - windowed));
  // With one: the true logit q_post·k_post/√d, in Score and in the tables.
  ASSERT_TRUE(slotted->Score(q.data(), q_post.data(), s.n + 100, absl::MakeSpan(b)).ok());
  EXPECT_NEAR(b[s.n], logit, 1e-4 * std::abs(logit) + 1e-4);
  EXPECT_GT(std::abs(windowed - logit), 0.05 * std::abs(logit)) << "the test needs the two to differ";
  std::vector<float> table(k + slots);
  ASSERT_TRUE(slotted->CodeScores(q.data(), q_post.data(), 1, absl::MakeSpan(table)).ok());
  EXPECT_EQ(table[k], b[s.n]);
  EXPECT_EQ(table[k + 1], 0.0f) << "an empty slot";
  // Each farther than the last, the next far keys take slots until they are
  // full; then far keys get centroids.
  for (int j = 1; j <= slots; ++j) {
    std::vector<float> more = far;
    for (float& x : more) x *= 1.0f + 0.1f * j;
    ASSERT_TRUE(slotted->Add(more.data(), more.data(), 1).ok());
    const int code = slotted->codes()[slotted->size() - 1];
    if (j < slots) {
      EXPECT_EQ(code, k + j);
    } else {
      EXPECT_LT(code, k);
    }
  }
  // Reset empties the slots: the far key takes the first one again.
  slotted->Reset();
  ASSERT_TRUE(slotted->Add(s.k_pre.data(), s.k_post.data(), s.n).ok());
  ASSERT_TRUE(slotted->Add(far.data(), far.data(), 1).ok());
  EXPECT_EQ(slotted->codes()[s.n], k);
  // Planned for 2^20 tokens, one far key in the first 1K is not likely among
  // the 8 farthest of the horizon (it would be about the 1000th): no slot.
  auto planned = Build("a2ats:centroids=64,iters=4,outliers=8", full);
  planned->Reset();
  ASSERT_TRUE(planned->Add(s.k_pre.data(), s.k_post.data(), s.n).ok());
  ASSERT_TRUE(planned->Add(far.data(), far.data(), 1).ok());
  EXPECT_LT(planned->codes()[s.n], k);
  // Many equally far keys: the more of them, the less likely any is among the
  // horizon's 8 farthest, and none takes a slot.
  for (int j = 0; j < 2000; ++j) ASSERT_TRUE(planned->Add(far.data(), far.data(), 1).ok());
  int slotted_far = 0;
  for (int64_t i = s.n; i < planned->size(); ++i) slotted_far += planned->codes()[i] >= k ? 1 : 0;
  EXPECT_EQ(slotted_far, 0) << "identical far keys, 2001 of them in 3K tokens: none is among the horizon's 8 farthest";
}

}  // namespace
}  // namespace kvrecall

namespace kvrecall {
namespace {

TEST(Retrieval, A2atsBandsRotateEachBandToItsMiddle) {
  // As many centroids as calibration keys: k-means keeps the keys themselves,
  // so a calibration key's score is (R q)·k/√d exactly (up to the whitening's
  // rounding), R turning the slow pairs by pos − the middle of the key's band
  // and the others by b (all pairs by b without bands).
  const Sequence s = MakeSequence(6, 0, 126, 1);  // 63 codes: a partial block of 8 too
  const int64_t pos = 5000;
  std::vector<double> inv_freq = RopeInvFreq(s.d, s.layout.rope_theta);
  for (double& f : inv_freq) f /= s.layout.rope_scaling;
  for (const std::string& spec : {std::string("a2ats:centroids=63,iters=1"),
                                  std::string("a2ats:centroids=63,iters=1,band=16"),
                                  std::string("a2ats:centroids=63,iters=1,band=16,slow=1e12")}) {
    auto idx = Build(spec, s);
    const int64_t band = idx->band_tokens();
    const double slow = spec.find("slow") != std::string::npos ? 1e12 : 8.0;
    std::vector<float> got(s.n);
    ASSERT_TRUE(idx->Score(s.dq_pre.data(), s.dq_post.data(), pos, absl::MakeSpan(got)).ok());
    double err = 0, norm = 0;
    int banded_pairs = 0;
    for (int64_t i = 0; i < 63; ++i) {
      const double rel = band > 0 ? double(pos) - 0.5 * double(2 * (i / band * band) + band - 1) : 2048;
      RopeAngles a;
      banded_pairs = 0;
      for (double f : inv_freq) {
        const double angle = (band > 0 && f * double(1 << 20) <= slow ? (++banded_pairs, rel) : 2048.0) * f;
        a.cos.push_back(float(std::cos(angle))), a.sin.push_back(float(std::sin(angle)));
      }
      std::vector<float> q(s.dq_pre.begin(), s.dq_pre.begin() + s.d);
      ApplyRope(q.data(), s.d, s.layout.rope_style, a);
      double want = 0;
      for (int j = 0; j < s.d; ++j) want += double{q[j]} * s.k_pre[i * s.d + j];
      want /= std::sqrt(double(s.d));
      err = std::max(err, std::abs(got[i] - want)), norm = std::max(norm, std::abs(want));
    }
    EXPECT_LT(err, 1e-3 * norm) << spec;
    if (band == 0) continue;
    EXPECT_GT(banded_pairs, 0) << spec;
    if (slow < 1e12) EXPECT_LT(banded_pairs, s.d / 2) << spec;
    // The band tables in one call: [group][bands][codes], band j's entries as Score's.
    const int64_t bands = NumBands(*idx, s.n);
    ASSERT_EQ(bands, 8);
    std::vector<float> table(size_t(bands) * idx->num_codes());
    ASSERT_TRUE(idx->BandCodeScores(s.dq_pre.data(), s.dq_post.data(), 1, pos, s.n, absl::MakeSpan(table)).ok());
    for (int64_t i = 0; i < s.n; ++i) ASSERT_EQ(table[i / 16 * 63 + idx->codes()[i]], got[i]) << i;
    EXPECT_EQ(idx->BandCodeScores(s.dq_pre.data(), s.dq_post.data(), 1, pos, s.n, absl::MakeSpan(table).subspan(1))
                  .code(),
              absl::StatusCode::kInvalidArgument);
  }
  EXPECT_EQ(MakeRetrievalIndex("a2ats:band=16", s.layout).value()->spec(),
            "a2ats:b=2048,centroids=4096,iters=20,seed=1,band=16,horizon=1048576,slow=8");
  // Bands too narrow for the context: a clear error, not a giant table.
  const Sequence longer = MakeSequence(6, 0, 3000, 1);
  auto narrow = Build("a2ats:centroids=1500,iters=1,band=1", longer);  // 3000 bands x 1500 codes
  std::vector<float> scores(longer.n);
  EXPECT_EQ(narrow->Score(longer.dq_pre.data(), longer.dq_post.data(), longer.n, absl::MakeSpan(scores)).code(),
            absl::StatusCode::kInvalidArgument);
  SelectionConfig cfg;
  EXPECT_EQ(SelectTokens(*narrow, longer.dq_pre.data(), longer.dq_post.data(), 1, longer.n, cfg).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(MakeRetrievalIndex("a2ats:band=-1", s.layout).ok());
  EXPECT_FALSE(MakeRetrievalIndex("a2ats:band=1.5", s.layout).ok());
  EXPECT_FALSE(MakeRetrievalIndex("a2ats:band=16,horizon=0", s.layout).ok());
  EXPECT_FALSE(MakeRetrievalIndex("a2ats:band=16,slow=-1", s.layout).ok());
}

}  // namespace
}  // namespace kvrecall
