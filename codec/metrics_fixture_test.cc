// The metrics on real data: the squat_qk fixture with plain 2-bit per-channel
// quantization (group 32 tokens) must give the published golden values.
#include <algorithm>
#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "codec/metrics.h"
#include "common/shared_data.h"

namespace kvrecall {
namespace {

TEST(MetricsOnFixture, VanillaTwoBitMatchesGoldenValues) {
  auto sample = LoadSquatQkSample();
  if (absl::IsNotFound(sample.status())) GTEST_SKIP() << "fixture absent, skipping: " << sample.status().message();
  ASSERT_TRUE(sample.ok()) << sample.status();
  const int n = SquatQkSample::kTokens, d = SquatQkSample::kDim;
  const std::vector<float>& q = sample->q;
  const std::vector<float>& k = sample->k;
  // Asymmetric 2-bit per channel over the 32-token group (algorithms.md §0).
  std::vector<float> kh(k.size());
  for (int c = 0; c < d; ++c) {
    float mn = k[c], mx = k[c];
    for (int t = 0; t < n; ++t) mn = std::min(mn, k[t * d + c]), mx = std::max(mx, k[t * d + c]);
    const float delta = (mx - mn) / 3.0f;
    for (int t = 0; t < n; ++t) {
      const float code = delta > 0 ? std::clamp(std::nearbyint((k[t * d + c] - mn) / delta), 0.0f, 3.0f) : 0;
      kh[t * d + c] = mn + delta * code;
    }
  }
  std::vector<int> pos(n);
  for (int i = 0; i < n; ++i) pos[i] = i;
  AttentionError e = CompareAttention(q.data(), n, pos.data(), k.data(), kh.data(), nullptr,
                                      nullptr, n, d, 1.0 / std::sqrt(128.0));
  EXPECT_NEAR(e.prob_l1_sum, 5.1405, 1e-3);
  EXPECT_NEAR(MeanSquaredError(k.data(), kh.data(), n * d), 0.17163, 1e-4);
  EXPECT_NEAR(ComputeLogitError(q.data(), n, nullptr, k.data(), kh.data(), n, d).rms, 5.826, 1e-3);
}

}  // namespace
}  // namespace kvrecall
