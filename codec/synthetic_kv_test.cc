#include "codec/synthetic_kv.h"

#include <algorithm>
#include <cmath>

#include <gtest/gtest.h>

#include "codec/metrics.h"

namespace kvrecall {
namespace {

struct Sample {
  std::vector<float> k_pre, k, v, q_pre, q;
};

Sample Generate(const SyntheticConfig& c, int head, int64_t n) {
  SyntheticHead h(c, head);
  Sample s;
  const int d = c.head_dim, g = c.group_size;
  s.k_pre.resize(n * d), s.k.resize(n * d), s.v.resize(n * d);
  s.q_pre.resize(n * g * d), s.q.resize(n * g * d);
  h.Next(n, s.k_pre.data(), s.k.data(), s.v.data(), s.q_pre.data(), s.q.data());
  return s;
}

TEST(SyntheticKv, DeterministicAndStreamsInAnyChunking) {
  SyntheticConfig c;
  c.total_tokens = 512;
  const Sample whole = Generate(c, 3, 300);
  EXPECT_EQ(Generate(c, 3, 300).k, whole.k);
  SyntheticHead h(c, 3);
  std::vector<float> k(300 * 128), q(300 * 4 * 128);
  h.Next(7, k.data(), nullptr, nullptr, q.data(), nullptr);
  h.Next(293, k.data() + 7 * 128, nullptr, nullptr, q.data() + 7 * 4 * 128, nullptr);
  EXPECT_EQ(k, whole.k_pre);
  EXPECT_EQ(q, whole.q_pre);
  EXPECT_EQ(h.position(), 300);
  c.seed = 2;
  EXPECT_NE(Generate(c, 3, 300).k, whole.k);
}

TEST(SyntheticKv, StatisticsResembleRealKeys) {
  SyntheticConfig c;
  c.total_tokens = 2048;
  for (int head : {0, 1}) {
    for (uint64_t seed : {1, 2, 3}) {
      c.seed = seed;
      const int n = 2048, d = 128;
      const Sample s = Generate(c, head, n);
      // Queries of group head 0 at every 8th position.
      std::vector<float> q, q_pre;
      std::vector<int> pos;
      for (int t = 0; t < n; t += 8) {
        q.insert(q.end(), s.q.begin() + size_t(t) * 4 * d, s.q.begin() + size_t(t) * 4 * d + d);
        q_pre.insert(q_pre.end(), s.q_pre.begin() + size_t(t) * 4 * d, s.q_pre.begin() + size_t(t) * 4 * d + d);
        pos.push_back(t);
      }
      // Channel and subspace statistics of pre-RoPE keys and queries.
      const SyntheticStats st = ComputeKvStats(s.k_pre.data(), n, q_pre.data(), static_cast<int>(pos.size()),
                                               pos.data(), d, c.sink_tokens);
      SCOPED_TRACE(testing::Message() << "head " << head << " seed " << seed);
      EXPECT_GT(st.top_channel_ratio, 4.0);
      EXPECT_LT(st.top_channel_ratio, 20.0);
      EXPECT_GT(st.query_top20_energy, 0.9);
      // Sink mass computed with pre-RoPE keys and post-RoPE queries is not
      // meaningful: recompute with post-RoPE keys.
      const SyntheticStats post = ComputeKvStats(s.k.data(), n, q.data(), static_cast<int>(pos.size()),
                                                 pos.data(), d, c.sink_tokens);
      EXPECT_GT(post.sink_mass, 0.1);
      EXPECT_LT(post.sink_mass, 0.75);
      if (head == 0) {
        EXPECT_GT(post.top3pct_mass, 0.6) << "peaky head";
      } else {
        EXPECT_LT(post.top3pct_mass, 0.6) << "flat head";
      }
    }
  }
}

TEST(SyntheticKv, NeedlesRankAtTheTopForDecodeQueries) {
  int hits = 0, total = 0;
  for (uint64_t seed : {1, 2, 3}) {
    SyntheticConfig c;
    c.seed = seed;
    c.total_tokens = 4096;
    c.needles = 6;
    SyntheticHead h(c, 0);
    const int d = 128, g = 4, n = 4096, steps = 8;
    std::vector<float> k(size_t(n) * d), q(size_t(steps) * g * d);
    h.Next(n, nullptr, k.data(), nullptr, nullptr, nullptr);
    h.Next(steps, nullptr, nullptr, nullptr, nullptr, q.data());  // decode queries at n..n+7
    ASSERT_EQ(h.needle_positions().size(), 6u);
    for (int step = 0; step < steps; ++step) {
      for (size_t i = 0; i < h.needle_positions().size(); ++i) {
        const float* qg = q.data() + (size_t(step) * g + h.needle_heads()[i]) * d;
        std::vector<float> logits(n);
        for (int t = 0; t < n; ++t) {
          float s = 0;
          for (int c2 = 0; c2 < d; ++c2) s += qg[c2] * k[size_t(t) * d + c2];
          logits[t] = s;
        }
        const float needle_logit = logits[h.needle_positions()[i]];
        const auto above = std::count_if(logits.begin() + c.sink_tokens, logits.end(),
                                         [&](float l) { return l > needle_logit; });
        hits += above < 3 * n / 100;  // in the top 3% of non-sink tokens
        ++total;
      }
    }
  }
  EXPECT_GE(hits, total * 3 / 4) << hits << " of " << total;
}

}  // namespace
}  // namespace kvrecall
