#include "codec/metrics.h"

#include <cmath>
#include <random>

#include <gtest/gtest.h>

namespace kvrecall {
namespace {

TEST(Metrics, ReconstructionErrors) {
  const float x[4] = {3, 0, 0, 4}, xh[4] = {3, 1, 0, 4};
  EXPECT_DOUBLE_EQ(RelativeError(x, xh, 4), 1.0 / 5.0);
  EXPECT_DOUBLE_EQ(MeanSquaredError(x, xh, 4), 0.25);
  EXPECT_EQ(RelativeError(x, x, 4), 0.0);
}

TEST(Metrics, LogitErrorAllPairsAndCausal) {
  // d = 1: q = (1, 2), e = k̂ − k = (1, -1) -> q·e = [[1,-1],[2,-2]].
  const float q[2] = {1, 2}, k[2] = {0, 0}, kh[2] = {1, -1};
  LogitError all = ComputeLogitError(q, 2, nullptr, k, kh, 2, 1);
  EXPECT_EQ(all.pairs, 4);
  EXPECT_DOUBLE_EQ(all.rms, std::sqrt((1 + 1 + 4 + 4) / 4.0));
  EXPECT_DOUBLE_EQ(all.mae, 1.5);
  const int pos[2] = {0, 1};
  LogitError causal = ComputeLogitError(q, 2, pos, k, kh, 2, 1);
  EXPECT_EQ(causal.pairs, 3);  // (0,0), (1,0), (1,1)
  EXPECT_DOUBLE_EQ(causal.rms, std::sqrt((1 + 4 + 4) / 3.0));
  // Query-weighted distortion equals the mean squared all-pairs logit error.
  EXPECT_DOUBLE_EQ(QueryWeightedDistortion(q, 2, k, kh, 2, 1), all.rms * all.rms);
}

TEST(Metrics, AttentionErrorHandComputed) {
  // One query at position 1 over two keys, d = 1, scale 1.
  // Exact logits (0, ln 3): p = (1/4, 3/4). Approx keys make logits equal: p̂ = (1/2, 1/2).
  const float q[1] = {1}, k[2] = {0, std::log(3.0f)}, kh[2] = {0, 0};
  const float v[2] = {4, 8}, vh[2] = {4, 8};
  const int pos[1] = {1};
  AttentionError e = CompareAttention(q, 1, pos, k, kh, v, vh, 2, 1, 1.0);
  EXPECT_NEAR(e.prob_l1_sum, 0.5, 1e-7);
  EXPECT_NEAR(e.kl_mean, 0.25 * std::log(0.5) + 0.75 * std::log(1.5), 1e-7);
  // O = 1 + 6 = 7; Ô = 2 + 4 = 6.
  EXPECT_NEAR(e.output_rel, 1.0 / 7.0, 1e-7);
  // Causal: a query at position 0 sees only key 0, so there is no error.
  const int pos0[1] = {0};
  EXPECT_EQ(CompareAttention(q, 1, pos0, k, kh, v, vh, 2, 1, 1.0).prob_l1_sum, 0.0);
}

TEST(Metrics, SelectionRecall) {
  const std::vector<double> p = {0.05, 0.5, 0.1, 0.3, 0.05};
  SelectionRecall r = ComputeSelectionRecall(p, {1, 3});
  EXPECT_DOUBLE_EQ(r.topk_recall, 1.0);
  EXPECT_DOUBLE_EQ(r.mass_recall, 0.8);
  r = ComputeSelectionRecall(p, {1, 2, 4, 4, 99});  // duplicates and out-of-range ignored
  EXPECT_NEAR(r.topk_recall, 2.0 / 3.0, 1e-12);     // top-3 = {1, 3, 2}
  EXPECT_NEAR(r.mass_recall, 0.65, 1e-12);
  EXPECT_EQ(ComputeSelectionRecall(p, {}).mass_recall, 0.0);
}

// The group version on logits that are log-probabilities (d = 1, q = 1):
// the same answers as ComputeSelectionRecall, ties going to the earlier token.
TEST(Metrics, GroupSelectionRecallHandCases) {
  const float q[1] = {1.0f};
  std::vector<float> k;
  for (double x : {0.05, 0.5, 0.1, 0.3, 0.05}) k.push_back(static_cast<float>(std::log(x)));
  std::vector<SelectionRecall> r = GroupSelectionRecall(q, 1, k.data(), 5, 1, 1, 1.0f, {1, 3});
  ASSERT_EQ(r.size(), 1u);
  EXPECT_DOUBLE_EQ(r[0].topk_recall, 1.0);
  EXPECT_NEAR(r[0].mass_recall, 0.8, 1e-6);
  r = GroupSelectionRecall(q, 1, k.data(), 5, 1, 1, 1.0f, {1, 2, 4, 4, 99});
  EXPECT_NEAR(r[0].topk_recall, 2.0 / 3.0, 1e-12);
  EXPECT_NEAR(r[0].mass_recall, 0.65, 1e-6);
  EXPECT_EQ(GroupSelectionRecall(q, 1, k.data(), 5, 1, 1, 1.0f, {})[0].mass_recall, 0.0);
  // Three tokens tie at the threshold of the top 2 = {3, 0}.
  k.clear();
  for (double x : {0.2, 0.2, 0.2, 0.4}) k.push_back(static_cast<float>(std::log(x)));
  EXPECT_DOUBLE_EQ(GroupSelectionRecall(q, 1, k.data(), 4, 1, 1, 1.0f, {0, 3})[0].topk_recall, 1.0);
  EXPECT_DOUBLE_EQ(GroupSelectionRecall(q, 1, k.data(), 4, 1, 1, 1.0f, {1, 3})[0].topk_recall, 0.5);
  r = GroupSelectionRecall(q, 1, k.data(), 4, 1, 1, 1.0f, {2, 0});
  EXPECT_DOUBLE_EQ(r[0].topk_recall, 0.5);
  EXPECT_NEAR(r[0].mass_recall, 0.4, 1e-6);
}

// Against the double-precision path on random heads: the same mass recall
// to float accuracy, the same top-K up to near-ties at the threshold.
TEST(Metrics, GroupSelectionRecallMatchesPerHeadPath) {
  std::mt19937 rng(5);
  std::normal_distribution<float> n01;
  const int G = 5, d = 64, n = 3000, stride = 72;
  std::vector<float> q(size_t(G) * d), k(size_t(n) * stride);
  for (float& x : q) x = n01(rng);
  for (float& x : k) x = n01(rng);
  std::vector<float> dense(size_t(n) * d);
  for (int r = 0; r < n; ++r) std::copy_n(k.data() + size_t(r) * stride, d, dense.data() + size_t(r) * d);
  std::vector<int> selected;
  for (int i = 0; i < 90; ++i) selected.push_back(static_cast<int>(rng() % n));
  selected.push_back(selected[0]);  // a duplicate
  const float scale = 1.0f / std::sqrt(float(d));
  const std::vector<SelectionRecall> fast = GroupSelectionRecall(q.data(), G, k.data(), n, d, stride, scale, selected);
  ASSERT_EQ(fast.size(), size_t(G));
  for (int g = 0; g < G; ++g) {
    const SelectionRecall ref =
        ComputeSelectionRecall(AttentionProbs(q.data() + size_t(g) * d, n - 1, dense.data(), n, d, scale), selected);
    EXPECT_NEAR(fast[g].mass_recall, ref.mass_recall, 1e-5) << g;
    EXPECT_NEAR(fast[g].topk_recall, ref.topk_recall, 2.5 / 90) << g;
    EXPECT_GT(fast[g].mass_recall, 0.0);
  }
}

TEST(Metrics, ProbsAreCausalAndNormalized) {
  std::mt19937 rng(2);
  std::normal_distribution<float> n01;
  std::vector<float> q(8), k(10 * 8);
  for (float& x : q) x = n01(rng);
  for (float& x : k) x = n01(rng);
  std::vector<double> p = AttentionProbs(q.data(), 4, k.data(), 10, 8, 0.3);
  double s = 0;
  for (int j = 0; j < 10; ++j) {
    s += p[j];
    if (j > 4) EXPECT_EQ(p[j], 0.0);
  }
  EXPECT_NEAR(s, 1.0, 1e-12);
}

}  // namespace
}  // namespace kvrecall
