#include "engine/prefix_kv.h"

#include <cmath>

#include <gtest/gtest.h>

#include "engine/test_data.h"

namespace kvrecall {
namespace {

std::unique_ptr<KvClient> Embedded() {
  KvClient::Options o;
  o.namespace_salt = "test";
  return std::move(*KvClient::Create(o));
}

std::vector<float> Cold(const Model& m, const std::vector<int>& tokens) {
  auto cache = NewExactKvCache();
  EXPECT_TRUE(cache->Begin(m.kv_layout()).ok());
  Transformer tf(&m);
  absl::Span<const float> logits;
  for (size_t p = 0; p < tokens.size(); ++p) logits = *tf.Forward(tokens[p], static_cast<int>(p), cache.get());
  return std::vector<float>(logits.begin(), logits.end());
}

TEST(PrefixKv, WarmPrefixGivesTheColdLogitsExactlyWithF32Blocks) {
  KVR_REQUIRE_REAL_MODEL(rm);
  const std::vector<int> prompt = rm.tok->Encode(
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her "
      "friends. One day, she saw a big red ball.");
  ASSERT_GT(prompt.size(), 40u);
  auto client = Embedded();
  auto pk = PrefixKv::Create(rm.model.get(), client.get(), "f32", 8);
  ASSERT_TRUE(pk.ok()) << pk.status();
  Transformer tf(rm.model.get());
  auto cache = NewExactKvCache();
  PrefillStats cold, warm;
  auto l0 = (*pk)->Prefill(prompt, cache.get(), &tf, &cold);
  ASSERT_TRUE(l0.ok()) << l0.status();
  EXPECT_EQ(cold.loaded_tokens, 0);
  EXPECT_EQ(cold.saved_blocks, int(prompt.size() / 8));
  EXPECT_EQ(*l0, Cold(*rm.model, prompt));
  auto l1 = (*pk)->Prefill(prompt, cache.get(), &tf, &warm);
  ASSERT_TRUE(l1.ok());
  EXPECT_EQ(warm.loaded_tokens, int((prompt.size() - 1) / 8) * 8);
  EXPECT_EQ(warm.computed_tokens, int(prompt.size()) - warm.loaded_tokens);
  EXPECT_EQ(*l1, *l0) << "logits with loaded KV must equal the cold run exactly (f32 blocks)";
  // A different continuation of the same opening shares only the common blocks.
  std::vector<int> other(prompt.begin(), prompt.begin() + 20);
  const std::vector<int> tail = rm.tok->Encode(" The dog ran to the tree and barked at a cat.");
  other.insert(other.end(), tail.begin(), tail.end());
  PrefillStats st;
  auto l2 = (*pk)->Prefill(other, cache.get(), &tf, &st);
  ASSERT_TRUE(l2.ok());
  EXPECT_EQ(st.loaded_tokens, 16);  // two full 8-token blocks in common
  EXPECT_EQ(*l2, Cold(*rm.model, other));
}

TEST(PrefixKv, F16BlocksStayWithinRounding) {
  KVR_REQUIRE_REAL_MODEL(rm);
  const std::vector<int> prompt = rm.tok->Encode("Tom had a small boat. He liked to sail it on the lake every day after school.");
  auto client = Embedded();
  auto pk = PrefixKv::Create(rm.model.get(), client.get(), "f16", 4);
  ASSERT_TRUE(pk.ok());
  Transformer tf(rm.model.get());
  auto cache = NewExactKvCache();
  PrefillStats st;
  ASSERT_TRUE((*pk)->Prefill(prompt, cache.get(), &tf, &st).ok());
  auto warm = (*pk)->Prefill(prompt, cache.get(), &tf, &st);
  ASSERT_TRUE(warm.ok());
  EXPECT_GT(st.loaded_tokens, 0);
  const std::vector<float> cold = Cold(*rm.model, prompt);
  double max_diff = 0;
  for (size_t i = 0; i < cold.size(); ++i) max_diff = std::max(max_diff, double(std::fabs(cold[i] - (*warm)[i])));
  EXPECT_LT(max_diff, 0.05);
  EXPECT_EQ(ArgMax(*warm), ArgMax(cold));
  EXPECT_FALSE(PrefixKv::Create(rm.model.get(), client.get(), "squat", 4).ok());
}

}  // namespace
}  // namespace kvrecall
