// The SQuat golden test on real data (algorithms.md §9.4): the squat_qk
// fixture, 2-bit per-channel quantization in 32-token groups, vanilla vs
// SQuat r=30, block g=2, λ=0.1.
#include <cmath>

#include <gtest/gtest.h>

#include "codec/codec.h"
#include "codec/metrics.h"
#include "common/shared_data.h"

namespace kvrecall {
namespace {

struct Golden {
  double l1, mse, rms;
};

Golden Measure(const std::string& spec, const std::vector<float>& q, const std::vector<float>& k) {
  KvChunkRef c;
  c.layout.num_layers = 1;
  c.layout.num_q_heads = 1;
  c.layout.num_kv_heads = 1;
  c.layout.head_dim = 128;
  c.layer_count = 1;
  c.tokens = 32;
  c.k = k.data();
  c.v = k.data();  // values are not part of the golden numbers
  auto codec = MakeCodec(spec);
  EXPECT_TRUE(codec.ok()) << codec.status();
  EncodeOptions o;
  o.queries = q.data();  // [layer][q_head][32][128]
  o.num_queries = 32;
  auto block = (*codec)->Encode(c, &o);
  EXPECT_TRUE(block.ok()) << block.status();
  auto view = ParseBlock(AsBytes(*block));
  std::vector<float> kh(k.size()), vh(k.size());
  EXPECT_TRUE((*codec)->Decode(*view, kh.data(), vh.data()).ok());
  std::vector<int> pos(32);
  for (int i = 0; i < 32; ++i) pos[i] = i;
  Golden g;
  g.l1 = CompareAttention(q.data(), 32, pos.data(), k.data(), kh.data(), nullptr, nullptr, 32, 128,
                          1 / std::sqrt(128.0)).prob_l1_sum;
  g.mse = MeanSquaredError(k.data(), kh.data(), k.size());
  g.rms = ComputeLogitError(q.data(), 32, nullptr, k.data(), kh.data(), 32, 128).rms;
  return g;
}

TEST(CodecGolden, SquatAndVanillaOnTheSquatFixture) {
  auto sample = LoadSquatQkSample();
  if (absl::IsNotFound(sample.status())) GTEST_SKIP() << "fixture absent, skipping: " << sample.status().message();
  ASSERT_TRUE(sample.ok()) << sample.status();
  const std::vector<float>& q = sample->q;
  const std::vector<float>& k = sample->k;
  const Golden vanilla = Measure("kivi:bits=2,kgroup=32,meta=f32", q, k);
  EXPECT_NEAR(vanilla.l1, 5.1405, 1e-3);
  EXPECT_NEAR(vanilla.mse, 0.17163, 1e-3);
  EXPECT_NEAR(vanilla.rms, 5.826, 1e-3);
  const Golden squat = Measure("squat:bits=2,kgroup=32,rank=30,block=2,lambda=0.1,meta=f32", q, k);
  EXPECT_NEAR(squat.l1, 1.5488, 1e-3);
  EXPECT_NEAR(squat.mse, 0.23113, 1e-3);
  EXPECT_NEAR(squat.rms, 1.518, 1e-3);
}

}  // namespace
}  // namespace kvrecall
