// Retrieval caches run the real model: attention over sinks + window + top-K.
#include <gtest/gtest.h>

#include "engine/cache_factory.h"
#include "engine/eval.h"
#include "engine/test_data.h"

namespace kvrecall {
namespace {

TEST(RetrievalCache, FullBudgetIsExactAndTenPercentIsClose) {
  KVR_REQUIRE_REAL_MODEL(rm);
  auto all = LoadStories(Env::Default(), rm.dir + "/tinystories_valid_first1000.txt");
  ASSERT_TRUE(all.ok());
  auto cal = TraceStories(*rm.model, *rm.tok, *all, {990, 991, 992, 993, 994, 995, 996, 997, 998, 999}, {}, 512);
  ASSERT_TRUE(cal.ok()) << cal.status();
  std::vector<std::string> stories(all->begin(), all->begin() + 8);
  KvCacheContext ctx;
  ctx.num_layers = rm.model->config().n_layers;
  ctx.calibration = &*cal;
  ctx.context_len = rm.model->config().seq_len;
  auto run = [&](const std::string& spec) {
    auto cache = MakeKvCache(spec, ctx);
    EXPECT_TRUE(cache.ok()) << spec << ": " << cache.status();
    auto r = EvaluatePerplexity(*rm.model, *rm.tok, stories, cache->get());
    EXPECT_TRUE(r.ok()) << spec << ": " << r.status();
    return r.ok() ? r->perplexity() : 0.0;
  };
  const double exact = run("exact");
  // K covering the whole context selects every token: the same numbers.
  EXPECT_NEAR(run("oracle:topk=1"), exact, 1e-6);
  EXPECT_NEAR(run("a2ats:topk=1"), exact, 1e-6);
  // A tenth of the context: close to exact, and the oracle is the best.
  const double oracle = run("oracle:topk=0.1"), a2ats = run("a2ats:topk=0.1"), quest = run("quest:topk=0.1");
  EXPECT_LT(oracle, exact * 1.01);
  EXPECT_LT(a2ats, exact * 1.03);
  EXPECT_LT(quest, exact * 1.05);
  // No calibration, no retrieval cache.
  KvCacheContext none = ctx;
  none.calibration = nullptr;
  auto cache = MakeKvCache("a2ats", none);
  ASSERT_TRUE(cache.ok());
  EXPECT_EQ((*cache)->Begin(rm.model->kv_layout()).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(MakeKvCache("a2ats:topk=-1", ctx).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvrecall
