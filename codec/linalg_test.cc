#include "codec/linalg.h"

#include <cmath>
#include <random>

#include <gtest/gtest.h>

namespace kvrecall {
namespace {

TEST(Linalg, EigenOfKnownMatrix) {
  // [[2,1],[1,2]] has eigenvalues 3 and 1, eigenvectors (1,1)/√2, (1,-1)/√2.
  auto e = SymmetricEigen({2, 1, 1, 2}, 2);
  ASSERT_TRUE(e.ok());
  EXPECT_NEAR(e->values[0], 3, 1e-12);
  EXPECT_NEAR(e->values[1], 1, 1e-12);
  EXPECT_NEAR(std::fabs(e->vectors[0]), 1 / std::sqrt(2.0), 1e-12);
  EXPECT_NEAR(e->vectors[0], e->vectors[2], 1e-12);  // column 0 = (a, a)
}

TEST(Linalg, EigenReconstructsRandomGram) {
  std::mt19937 rng(5);
  std::normal_distribution<float> n01;
  const int n = 50, d = 24;
  std::vector<float> x(n * d);
  for (float& f : x) f = n01(rng);
  const std::vector<double> g = Gram(x.data(), n, d);
  auto e = SymmetricEigen(g, d);
  ASSERT_TRUE(e.ok());
  double trace = 0, sum = 0;
  for (int i = 0; i < d; ++i) trace += g[i * d + i], sum += e->values[i];
  EXPECT_NEAR(trace, sum, 1e-8 * trace);
  for (int i = 0; i < d; ++i) {
    for (int j = 0; j < d; ++j) {
      double r = 0;
      for (int k = 0; k < d; ++k) r += e->vectors[i * d + k] * e->values[k] * e->vectors[j * d + k];
      ASSERT_NEAR(r, g[i * d + j], 1e-8 * trace);
    }
  }
  for (int i = 1; i < d; ++i) EXPECT_GE(e->values[i - 1], e->values[i]);
  auto l = Cholesky(g, d);
  ASSERT_TRUE(l.ok());
  for (int i = 0; i < d; ++i) {
    for (int j = 0; j < d; ++j) {
      double r = 0;
      for (int k = 0; k < d; ++k) r += (*l)[i * d + k] * (*l)[j * d + k];
      ASSERT_NEAR(r, g[i * d + j], 1e-9 * trace);
    }
  }
}

TEST(Linalg, BadInputs) {
  EXPECT_EQ(SymmetricEigen({1, 2, 3}, 2).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SymmetricEigen({1, NAN, NAN, 1}, 2).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Cholesky({1, 2, 2, 1}, 2).status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace kvrecall
