#include "client/retrieval_session.h"

#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "codec/attention.h"
#include "codec/half.h"
#include "codec/metrics.h"
#include "codec/synthetic_kv.h"

namespace kvrecall {
namespace {

struct Data {
  KvLayout layout;
  int n = 0, d = 0, G = 0;
  std::vector<float> kpre, kpost, v, qpre, qpost;  // decode query of the last step: [G][d]
};

Data MakeData(int n) {
  Data x;
  SyntheticConfig c;
  c.total_tokens = n;
  SyntheticHead gen(c, 0);
  x.n = n, x.d = c.head_dim, x.G = c.group_size;
  x.layout.num_layers = 1, x.layout.num_q_heads = x.G, x.layout.num_kv_heads = 1, x.layout.head_dim = x.d;
  x.layout.rope_style = c.rope_style, x.layout.rope_theta = c.rope_theta;
  x.kpre.resize(size_t(n) * x.d), x.kpost.resize(x.kpre.size()), x.v.resize(x.kpre.size());
  gen.Next(n, x.kpre.data(), x.kpost.data(), x.v.data(), nullptr, nullptr);
  x.qpre.resize(size_t(x.G) * x.d), x.qpost.resize(x.qpre.size());
  gen.Next(1, nullptr, nullptr, nullptr, x.qpre.data(), x.qpost.data());
  return x;
}

std::unique_ptr<RetrievalSession> Open(KvClient* c, const Data& x, RetrievalSessionOptions::Fetch fetch, double frac) {
  RetrievalSessionOptions o;
  o.layout = x.layout;
  o.index = "oracle";
  o.block_tokens = 64;
  o.topk_fraction = frac;
  o.fetch = fetch;
  o.sequence_id = fetch == RetrievalSessionOptions::Fetch::kGather ? "gather-seq" : "attend-seq";
  auto s = RetrievalSession::Open(c, o, {});
  EXPECT_TRUE(s.ok()) << s.status();
  // Appended in uneven pieces, as prefill + decode would.
  for (int t = 0; t < x.n;) {
    const int step = std::min(x.n - t, 1 + (t * 7) % 300);
    EXPECT_TRUE((*s)->Append(0, x.kpre.data() + size_t(t) * x.d, x.kpost.data() + size_t(t) * x.d,
                             x.v.data() + size_t(t) * x.d, step).ok());
    t += step;
  }
  return std::move(*s);
}

TEST(RetrievalSession, GatherAndAttendAgreeAndMoveFewerBytesInAttendMode) {
  const Data x = MakeData(5000);
  auto c = KvClient::Create({});
  ASSERT_TRUE(c.ok());
  auto g = Open(c->get(), x, RetrievalSessionOptions::Fetch::kGather, 0.03);
  auto a = Open(c->get(), x, RetrievalSessionOptions::Fetch::kAttend, 0.03);
  EXPECT_EQ(g->size(0), 5000);
  EXPECT_GT(g->stats().offloaded_tokens, 4800);
  std::vector<float> og(size_t(x.G) * x.d), oa(og.size());
  ASSERT_TRUE(g->Step(0, x.qpre.data(), x.qpost.data(), og.data()).ok());
  ASSERT_TRUE(a->Step(0, x.qpre.data(), x.qpost.data(), oa.data()).ok());
  for (size_t i = 0; i < og.size(); ++i) EXPECT_NEAR(og[i], oa[i], 1e-4 * (1 + std::fabs(og[i])));
  EXPECT_EQ(g->last_selection(0), a->last_selection(0));
  // Attend returns out + lse per query head; gather returns every selected row's K and V.
  EXPECT_LT(a->stats().bytes_moved * 20, g->stats().bytes_moved);
  // The result is exact attention over what was selected (offloaded rows as stored: f16).
  const std::vector<int64_t>& sel = g->last_selection(0)[0];
  std::vector<float> ks, vs;
  for (int64_t p : sel) {
    for (int j = 0; j < x.d; ++j) {
      const bool offloaded = p >= 4 && p < 4 + g->stats().offloaded_tokens;
      const float kk = x.kpost[size_t(p) * x.d + j], vv = x.v[size_t(p) * x.d + j];
      ks.push_back(offloaded ? HalfToFloat(FloatToHalf(kk)) : kk);
      vs.push_back(offloaded ? HalfToFloat(FloatToHalf(vv)) : vv);
    }
  }
  std::vector<float> ref(x.d), scratch(sel.size());
  for (int q = 0; q < x.G; ++q) {
    AttendRows(x.qpost.data() + size_t(q) * x.d, ks.data(), vs.data(), sel.size(), x.d, x.d,
               1 / std::sqrt(float(x.d)), ref.data(), scratch.data());
    for (int j = 0; j < x.d; ++j) EXPECT_NEAR(og[size_t(q) * x.d + j], ref[j], 1e-4 * (1 + std::fabs(ref[j])));
  }
}

TEST(RetrievalSession, LiveRecallIsMeasuredOnSampledSteps) {
  const Data x = MakeData(3000);
  auto c = KvClient::Create({});
  RetrievalSessionOptions o;
  o.layout = x.layout;
  o.index = "oracle";
  o.block_tokens = 64;
  o.topk_fraction = 0.03;
  o.recall_every = 1;
  auto s = RetrievalSession::Open(c->get(), o, {});
  ASSERT_TRUE(s.ok());
  ASSERT_TRUE((*s)->Append(0, x.kpre.data(), x.kpost.data(), x.v.data(), x.n).ok());
  std::vector<float> out(size_t(x.G) * x.d);
  ASSERT_TRUE((*s)->Step(0, x.qpre.data(), x.qpost.data(), out.data()).ok());
  const RetrievalSessionStats st = (*s)->stats();
  EXPECT_EQ(st.recall_samples, x.G);
  // The exact oracle picks the heaviest tokens: most of the mass is covered.
  EXPECT_GT(st.mass_recall, 0.5);
  EXPECT_LE(st.mass_recall, 1.0);
  EXPECT_LT(st.output_error, 1.0);
  // The samples went to the (embedded) store's metrics: the same count and mean.
  EXPECT_EQ(st.recall_reports, 1);
  EXPECT_EQ(st.recall_report_failures, 0);
  const std::string m = (*c)->EmbeddedMetrics();
  EXPECT_NE(m.find(absl::StrCat("kvrecall_retrieval_mass_recall_count ", x.G, "\n")), std::string::npos) << m;
  const size_t at = m.find("kvrecall_retrieval_mass_recall_sum ");
  ASSERT_NE(at, std::string::npos);
  EXPECT_NEAR(std::stod(m.substr(at + 35)) / x.G, st.mass_recall, 1e-5);
  EXPECT_NE(m.find("kvrecall_retrieval_mass_recall_bucket{le=\"+Inf\"} " + std::to_string(x.G)), std::string::npos);
  // Everything selected: full recall, tiny error.
  o.topk_fraction = 1.0;
  o.sequence_id = "full";
  auto f = RetrievalSession::Open(c->get(), o, {});
  ASSERT_TRUE((*f)->Append(0, x.kpre.data(), x.kpost.data(), x.v.data(), x.n).ok());
  ASSERT_TRUE((*f)->Step(0, x.qpre.data(), x.qpost.data(), out.data()).ok());
  EXPECT_NEAR((*f)->stats().mass_recall, 1.0, 1e-9);
  EXPECT_LT((*f)->stats().output_error, 1e-5);
}

// Gather with prefetch (the next step's rows fetched ahead from the last
// selection) decodes exactly what gather without it decodes, step after
// step with tokens appended in between, and most rows come from the prefetch.
TEST(RetrievalSession, PrefetchChangesNothingButWhereRowsComeFrom) {
  const Data x = MakeData(3000);
  auto c = KvClient::Create({});
  std::unique_ptr<RetrievalSession> plain, ahead;
  for (bool prefetch : {false, true}) {
    RetrievalSessionOptions o;
    o.layout = x.layout;
    o.index = "oracle";
    o.block_tokens = 64;
    o.topk_fraction = 0.05;
    o.fetch = RetrievalSessionOptions::Fetch::kGather;
    o.prefetch = prefetch;
    o.sequence_id = prefetch ? "ahead" : "plain";
    auto s = RetrievalSession::Open(c->get(), o, {});
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE((*s)->Append(0, x.kpre.data(), x.kpost.data(), x.v.data(), 2600).ok());
    (prefetch ? ahead : plain) = std::move(*s);
  }
  std::vector<float> a(size_t(x.G) * x.d), b(a.size());
  for (int t = 2600; t < 2600 + 8 * 50; t += 50) {
    for (RetrievalSession* s : {plain.get(), ahead.get()}) {
      ASSERT_TRUE(s->Append(0, x.kpre.data() + size_t(t) * x.d, x.kpost.data() + size_t(t) * x.d,
                            x.v.data() + size_t(t) * x.d, 50).ok());
    }
    ASSERT_TRUE(plain->Step(0, x.qpre.data(), x.qpost.data(), a.data()).ok());
    ASSERT_TRUE(ahead->Step(0, x.qpre.data(), x.qpost.data(), b.data()).ok());
    ASSERT_EQ(a, b) << "at " << t;
    EXPECT_EQ(plain->last_selection(0), ahead->last_selection(0));
  }
  const RetrievalSessionStats st = ahead->stats();
  EXPECT_EQ(plain->stats().prefetch_hits, 0);
  EXPECT_GT(st.prefetch_hits, st.fetched_rows / 2) << "the same query selects mostly the same rows";
  EXPECT_LE(st.prefetch_hits, st.fetched_rows);
}

TEST(RetrievalSession, EverythingSelectedIsFullAttention) {
  const Data x = MakeData(1500);
  auto c = KvClient::Create({});
  auto s = Open(c->get(), x, RetrievalSessionOptions::Fetch::kAttend, 1.0);
  std::vector<float> out(size_t(x.G) * x.d), ref(x.d), scratch(x.n);
  ASSERT_TRUE(s->Step(0, x.qpre.data(), x.qpost.data(), out.data()).ok());
  for (int q = 0; q < x.G; ++q) {
    AttendRows(x.qpost.data() + size_t(q) * x.d, x.kpost.data(), x.v.data(), x.n, x.d, x.d, 1 / std::sqrt(float(x.d)),
               ref.data(), scratch.data());
    EXPECT_LT(RelativeError(ref.data(), out.data() + size_t(q) * x.d, x.d), 2e-3);  // f16 offloaded rows
  }
  EXPECT_EQ(s->last_selection(0)[0].size(), size_t(x.n));
}

TEST(RetrievalSession, BadInput) {
  const Data x = MakeData(100);
  auto c = KvClient::Create({});
  RetrievalSessionOptions o;
  o.layout = x.layout;
  o.index = "oracle";
  auto s = RetrievalSession::Open(c->get(), o, {});
  ASSERT_TRUE(s.ok());
  std::vector<float> out(size_t(x.G) * x.d);
  EXPECT_EQ((*s)->Step(0, x.qpre.data(), x.qpost.data(), out.data()).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*s)->Step(3, x.qpre.data(), x.qpost.data(), out.data()).code(), absl::StatusCode::kInvalidArgument);
  std::vector<float> nan(x.d, NAN);
  EXPECT_EQ((*s)->Append(0, nan.data(), nan.data(), nan.data(), 1).code(), absl::StatusCode::kInvalidArgument);
  o.codec = "squat";
  EXPECT_FALSE(RetrievalSession::Open(c->get(), o, {}).ok());
}

}  // namespace
}  // namespace kvrecall

namespace kvrecall {
namespace {

// Code-sorted segments change where rows live and what waits on the client,
// never which tokens are attended or the result.
TEST(RetrievalSession, CodeSortedSegmentsSelectAndComputeWhatTimeOrderDoes) {
  SyntheticConfig c;
  c.total_tokens = 6000;
  c.seed = 11;
  SyntheticHead gen(c, 1);
  const int n = 5200, d = c.head_dim, G = c.group_size, cal = 1024, steps = 3;
  KvLayout layout;
  layout.num_layers = 1, layout.num_q_heads = G, layout.num_kv_heads = 1, layout.head_dim = d;
  layout.rope_style = c.rope_style, layout.rope_theta = c.rope_theta;
  std::vector<float> kpre(size_t(n) * d), kpost(kpre.size()), v(kpre.size()), qpre(size_t(n) * G * d),
      qpost(qpre.size());
  gen.Next(n, kpre.data(), kpost.data(), v.data(), qpre.data(), qpost.data());
  TrainingData t;
  t.dim = d, t.k_pre = kpre.data(), t.k_post = kpost.data(), t.num_keys = cal;
  t.q_pre = qpre.data(), t.q_post = qpost.data(), t.num_queries = int64_t(cal) * G;
  // Also with position bands (two segments of 4 x 64 tokens per band).
  for (const char* spec : {"a2ats:centroids=64,iters=4", "a2ats:centroids=64,iters=4,band=512,horizon=8192"})
  for (auto fetch : {RetrievalSessionOptions::Fetch::kGather, RetrievalSessionOptions::Fetch::kAttend}) {
    SCOPED_TRACE(spec);
    auto client = KvClient::Create({});
    ASSERT_TRUE(client.ok());
    std::vector<std::unique_ptr<RetrievalSession>> s;
    for (int segment_blocks : {0, 4}) {
      RetrievalSessionOptions o;
      o.layout = layout;
      o.sequence_id = absl::StrCat("seg", segment_blocks);
      o.index = spec;
      o.block_tokens = 64;
      o.segment_blocks = segment_blocks;
      o.window = 100;
      o.topk_fraction = 0.05;
      o.fetch = fetch;
      o.prefetch = fetch == RetrievalSessionOptions::Fetch::kGather;
      o.recall_every = 2;
      auto opened = RetrievalSession::Open(client->get(), o, {t});
      ASSERT_TRUE(opened.ok()) << opened.status();
      s.push_back(std::move(*opened));
    }
    // Steps between uneven appends: some of the picks still wait for their segment.
    int appended = 0;
    for (int step = 0; step < steps; ++step) {
      const int until = n - (steps - 1 - step) * 700;
      for (auto& x : s) {
        for (int p = appended; p < until;) {
          const int m = std::min(until - p, 1 + (p * 7) % 300);
          ASSERT_TRUE(x->Append(0, kpre.data() + size_t(p) * d, kpost.data() + size_t(p) * d,
                                v.data() + size_t(p) * d, m).ok());
          p += m;
        }
      }
      appended = until;
      std::vector<float> out0(size_t(G) * d), out1(out0.size());
      const size_t q = size_t(until - 1) * G * d;
      ASSERT_TRUE(s[0]->Step(0, qpre.data() + q, qpost.data() + q, out0.data()).ok());
      ASSERT_TRUE(s[1]->Step(0, qpre.data() + q, qpost.data() + q, out1.data()).ok());
      EXPECT_EQ(s[0]->last_selection(0), s[1]->last_selection(0)) << "step " << step;
      for (size_t i = 0; i < out0.size(); ++i) EXPECT_NEAR(out0[i], out1[i], 1e-4 * (1 + std::fabs(out0[i])));
    }
    const RetrievalSessionStats a = s[0]->stats(), b = s[1]->stats();
    EXPECT_EQ(a.pending_rows, 0);
    EXPECT_GT(b.pending_rows, 0);  // picks attended from the waiting segment
    EXPECT_EQ(a.fetched_rows, b.fetched_rows + b.pending_rows);
    EXPECT_LT(b.offloaded_tokens, a.offloaded_tokens);  // a segment is stored whole or not at all
    EXPECT_EQ(b.offloaded_tokens % (4 * 64), 0);
    EXPECT_GT(b.layout_bytes, 0);
    EXPECT_EQ(a.recall_samples, b.recall_samples);
    EXPECT_NEAR(a.mass_recall, b.mass_recall, 1e-9);
    EXPECT_NEAR(a.output_error, b.output_error, 1e-4);
  }
}

TEST(RetrievalSession, CodeSortedSegmentsNeedCodesAndFitU16) {
  auto client = KvClient::Create({});
  ASSERT_TRUE(client.ok());
  RetrievalSessionOptions o;
  o.layout.num_layers = 1, o.layout.num_q_heads = 4, o.layout.num_kv_heads = 1, o.layout.head_dim = 16;
  o.index = "oracle";
  o.segment_blocks = 2;
  EXPECT_EQ(RetrievalSession::Open(client->get(), o, {}).status().code(), absl::StatusCode::kInvalidArgument);
  o.index = "a2ats:centroids=16,iters=2";
  o.block_tokens = 1024, o.segment_blocks = 64;
  EXPECT_EQ(RetrievalSession::Open(client->get(), o, {}).status().code(), absl::StatusCode::kInvalidArgument);
  o.segment_blocks = -1;
  EXPECT_EQ(RetrievalSession::Open(client->get(), o, {}).status().code(), absl::StatusCode::kInvalidArgument);
  // Position bands must be whole segments (checked at open, not at the first seal).
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<float> keys(64 * 16), queries(256 * 16);
  for (float& x : keys) x = normal(rng);
  for (float& x : queries) x = normal(rng);
  TrainingData t;
  t.dim = 16, t.k_pre = t.k_post = keys.data(), t.num_keys = 64;
  t.q_pre = t.q_post = queries.data(), t.num_queries = 256;
  o.index = "a2ats:centroids=16,iters=2,band=128";
  o.block_tokens = 64, o.segment_blocks = 1;
  EXPECT_TRUE(RetrievalSession::Open(client->get(), o, {t}).ok());
  o.index = "a2ats:centroids=16,iters=2,band=96";
  auto straddling = RetrievalSession::Open(client->get(), o, {t});
  EXPECT_EQ(straddling.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(straddling.status().message().find("not whole segments"), std::string::npos) << straddling.status();
}

}  // namespace
}  // namespace kvrecall
