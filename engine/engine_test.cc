// The engine on the real model: the reference values of ../shared/data.
#include <cmath>

#include <gtest/gtest.h>

#include "codec/kv_trace.h"
#include "engine/cache_factory.h"
#include "engine/eval.h"
#include "engine/test_data.h"
#include "engine/transformer.h"

namespace kvrecall {
namespace {

TEST(Engine, GreedyGenerationFromBosMatchesKarpathysSample) {
  KVR_REQUIRE_REAL_MODEL(rm);
  auto cache = NewExactKvCache();
  auto text = Generate(*rm.model, *rm.tok, cache.get(), "", 200, 0.0f, 1);
  ASSERT_TRUE(text.ok()) << text.status();
  const std::string want =
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
      "park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.";
  EXPECT_EQ(text->substr(0, want.size()), want);
}

TEST(Engine, PerplexityOnTheFirst100StoriesIs3579) {
  KVR_REQUIRE_REAL_MODEL(rm);
  auto stories = LoadStories(Env::Default(), rm.dir + "/tinystories_valid_first1000.txt");
  ASSERT_TRUE(stories.ok()) << stories.status();
  ASSERT_EQ(stories->size(), 1000u);
  stories->resize(100);
  auto cache = NewExactKvCache();
  auto r = EvaluatePerplexity(*rm.model, *rm.tok, *stories, cache.get());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->tokens, 32997);
  EXPECT_NEAR(r->perplexity(), 3.579, 0.005);
  EXPECT_NEAR(r->mean_nll(), 1.2752, 0.0015);
  EXPECT_EQ(r->kv_bytes_per_token, 1280.0);
}

TEST(Engine, SamplingIsSeededAndBadInputsAreErrors) {
  KVR_REQUIRE_REAL_MODEL(rm);
  auto cache = NewExactKvCache();
  auto a = Generate(*rm.model, *rm.tok, cache.get(), "The cat", 40, 1.0f, 7);
  auto b = Generate(*rm.model, *rm.tok, cache.get(), "The cat", 40, 1.0f, 7);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_EQ(a->substr(0, 7), "The cat");
  Transformer tf(rm.model.get());
  ASSERT_TRUE(cache->Begin(rm.model->kv_layout()).ok());
  EXPECT_EQ(tf.Forward(512, 0, cache.get()).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tf.Forward(-1, 0, cache.get()).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tf.Forward(1, 512, cache.get()).status().code(), absl::StatusCode::kOutOfRange);
  // Skipping a position is refused by the cache, not silently accepted.
  EXPECT_EQ(tf.Forward(1, 3, cache.get()).status().code(), absl::StatusCode::kInvalidArgument);
  KvCacheContext ctx;
  ctx.num_layers = 5;
  EXPECT_EQ(MakeKvCache("nope", ctx).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeKvCache("kivi:bits=11", ctx).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Engine, HooksSeeRopeConsistentActivationsAndTracesRoundTrip) {
  KVR_REQUIRE_REAL_MODEL(rm);
  auto stories = LoadStories(Env::Default(), rm.dir + "/tinystories_valid_first1000.txt");
  ASSERT_TRUE(stories.ok());
  auto trace = TraceStories(*rm.model, *rm.tok, *stories, {0, 3}, {1, 4}, 64);
  ASSERT_TRUE(trace.ok()) << trace.status();
  ASSERT_EQ(trace->records.size(), 4u);
  const KvLayout& l = trace->layout;
  for (const KvTraceRecord& r : trace->records) {
    ASSERT_EQ(r.tokens, 64u);
    // Post-RoPE keys are the pre-RoPE keys rotated by their position.
    for (uint32_t t = 0; t < r.tokens; t += 13) {
      for (int h = 0; h < l.num_kv_heads; ++h) {
        std::vector<float> k(r.k_pre_rope.begin() + (t * l.num_kv_heads + h) * l.head_dim,
                             r.k_pre_rope.begin() + (t * l.num_kv_heads + h + 1) * l.head_dim);
        ApplyRope(k.data(), l, t);
        for (int c = 0; c < l.head_dim; ++c) {
          EXPECT_NEAR(k[c], r.k[(t * l.num_kv_heads + h) * l.head_dim + c], 1e-4);
        }
      }
    }
  }
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(tmp ? tmp : "/tmp") + "/trace.kvt";
  ASSERT_TRUE(WriteKvTrace(Env::Default(), path, *trace).ok());
  auto back = ReadKvTrace(Env::Default(), path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->layout, trace->layout);
  ASSERT_EQ(back->records.size(), 4u);
  EXPECT_EQ(back->records[2].story, 3u);
  EXPECT_EQ(back->records[3].layer, 4u);
  EXPECT_EQ(back->records[3].v, trace->records[3].v);
  EXPECT_EQ(back->records[1].q_pre_rope, trace->records[1].q_pre_rope);
}

}  // namespace
}  // namespace kvrecall
