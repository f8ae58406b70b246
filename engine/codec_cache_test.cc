// Every codec runs the real model in streaming mode (perplexity on real text).
#include <gtest/gtest.h>

#include "engine/cache_factory.h"
#include "engine/eval.h"
#include "engine/test_data.h"

namespace kvrecall {
namespace {

class CodecCaches : public ::testing::Test {
 protected:
  PerplexityResult Run(const std::string& spec) {
    KvCacheContext ctx;
    ctx.model_id = rm_.model->id();
    ctx.num_layers = rm_.model->config().n_layers;
    ctx.k_norms = rm_.model->wk_norms();
    ctx.v_norms = rm_.model->wv_norms();
    auto cache = MakeKvCache(spec, ctx);
    EXPECT_TRUE(cache.ok()) << spec << ": " << cache.status();
    if (!cache.ok()) return {};
    auto r = EvaluatePerplexity(*rm_.model, *rm_.tok, stories_, cache->get());
    EXPECT_TRUE(r.ok()) << spec << ": " << r.status();
    return r.ok() ? *r : PerplexityResult{};
  }
  void SetUp() override {
    std::string why;
    if (!LoadRealModel(&rm_, &why)) GTEST_SKIP() << why;
    auto all = LoadStories(Env::Default(), rm_.dir + "/tinystories_valid_first1000.txt");
    ASSERT_TRUE(all.ok());
    stories_.assign(all->begin(), all->begin() + 10);
  }
  RealModel rm_;
  std::vector<std::string> stories_;
};

TEST_F(CodecCaches, PerplexityOrdersAsBitsDo) {
  const PerplexityResult exact = Run("exact");
  const PerplexityResult f16 = Run("f16");
  EXPECT_NEAR(f16.perplexity(), exact.perplexity(), 1e-3);
  EXPECT_LT(f16.kv_bytes_per_token, 0.52 * exact.kv_bytes_per_token);
  const PerplexityResult k8 = Run("kivi:bits=8"), k4 = Run("kivi:bits=4"), k2 = Run("kivi:bits=2");
  EXPECT_NEAR(k8.perplexity(), exact.perplexity(), 0.01);
  EXPECT_LT(k4.perplexity(), k2.perplexity());
  EXPECT_GT(k2.perplexity(), exact.perplexity());
  EXPECT_LT(k2.kv_bytes_per_token, k4.kv_bytes_per_token);
  EXPECT_LT(k4.kv_bytes_per_token, k8.kv_bytes_per_token);
  // Keys need the bits: K4V2 beats K2V4 at the same size.
  const PerplexityResult k4v2 = Run("qwc:kbits=4,vbits=2"), k2v4 = Run("qwc:kbits=2,vbits=4");
  EXPECT_LT(k4v2.perplexity(), k2v4.perplexity());
  EXPECT_EQ(k4v2.kv_bytes_per_token, k2v4.kv_bytes_per_token);
}

TEST_F(CodecCaches, EveryMethodRunsTheModel) {
  const PerplexityResult ref = Run("exact");
  const double exact = ref.perplexity();
  for (const char* spec : {"bf16", "qwc:budget=3", "qwc:kbits=4,vbits=2,pre_rope=1", "gear", "gear_l", "squat",
                           "squat:qspace=pre,rank=2,block=2,lambda=0.01", "kivi:bits=3,residual=0"}) {
    const PerplexityResult r = Run(spec);
    EXPECT_GT(r.perplexity(), exact * 0.99) << spec;
    EXPECT_LT(r.perplexity(), exact * 1.15) << spec;
    EXPECT_LT(r.kv_bytes_per_token, 1280.0) << spec;
    EXPECT_EQ(r.tokens, ref.tokens) << spec;
  }
}

}  // namespace
}  // namespace kvrecall
