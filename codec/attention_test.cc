#include "codec/attention.h"

#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace kvrecall {
namespace {

TEST(Attention, HandComputedCase) {
  // q = (1, 0); keys (0,0) and (ln 3, 0), scale 1 -> weights 1/4, 3/4.
  const float q[2] = {1, 0};
  const float k[4] = {0, 0, std::log(3.0f), 0};
  const float v[4] = {4, 0, 0, 8};
  float out[2], scratch[2];
  const float lse = AttendRows(q, k, v, 2, 2, 2, 1.0f, out, scratch);
  EXPECT_NEAR(out[0], 1.0f, 1e-6);
  EXPECT_NEAR(out[1], 6.0f, 1e-6);
  EXPECT_NEAR(lse, std::log(4.0f), 1e-6);
  EXPECT_TRUE(std::isinf(AttendRows(q, k, v, 0, 2, 2, 1.0f, out, scratch)));
  EXPECT_EQ(out[0], 0.0f);
}

TEST(Attention, MergeOfSplitsEqualsTheWhole) {
  std::mt19937 rng(1);
  std::normal_distribution<float> n01;
  const int n = 37, d = 16;
  std::vector<float> q(d), k(n * d), v(n * d), scratch(n);
  for (auto* x : {&q, &k, &v}) for (float& f : *x) f = n01(rng);
  std::vector<float> whole(d), a(d), b(d);
  const float lw = AttendRows(q.data(), k.data(), v.data(), n, d, d, 0.25f, whole.data(), scratch.data());
  float la = AttendRows(q.data(), k.data(), v.data(), 10, d, d, 0.25f, a.data(), scratch.data());
  const float lb = AttendRows(q.data(), k.data() + 10 * d, v.data() + 10 * d, n - 10, d, d, 0.25f,
                              b.data(), scratch.data());
  MergeAttention(a.data(), &la, b.data(), lb, d);
  EXPECT_NEAR(la, lw, 1e-5);
  for (int c = 0; c < d; ++c) EXPECT_NEAR(a[c], whole[c], 1e-5);
  // Merging an empty partial changes nothing; merging into an empty one copies.
  std::vector<float> e(d, 0.0f);
  float le = -INFINITY;
  MergeAttention(e.data(), &le, whole.data(), lw, d);
  EXPECT_EQ(e, whole);
  MergeAttention(e.data(), &le, b.data(), -INFINITY, d);
  EXPECT_EQ(e, whole);
}

}  // namespace
}  // namespace kvrecall
