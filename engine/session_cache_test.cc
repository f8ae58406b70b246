#include "engine/session_cache.h"

#include <cmath>

#include <gtest/gtest.h>

#include "engine/cache_factory.h"
#include "engine/eval.h"
#include "engine/test_data.h"

namespace kvrecall {
namespace {

double Ppl(const RealModel& rm, const std::vector<std::string>& stories, const std::string& spec, const KvTrace* cal) {
  KvCacheContext ctx;
  ctx.model_id = rm.model->id();
  ctx.num_layers = rm.model->config().n_layers;
  ctx.calibration = cal;
  ctx.context_len = rm.model->config().seq_len;
  auto cache = MakeKvCache(spec, ctx);
  EXPECT_TRUE(cache.ok()) << spec << ": " << cache.status();
  auto r = EvaluatePerplexity(*rm.model, *rm.tok, stories, cache->get());
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? r->perplexity() : 0;
}

TEST(SessionCache, AttendEqualsGatherAndEverythingSelectedIsExact) {
  KVR_REQUIRE_REAL_MODEL(rm);
  auto all = LoadStories(Env::Default(), rm.dir + "/tinystories_valid_first1000.txt");
  ASSERT_TRUE(all.ok());
  const std::vector<std::string> stories(all->begin(), all->begin() + 4);
  std::vector<int> cal_ids;
  for (int i = 980; i < 1000; ++i) cal_ids.push_back(i);
  auto cal = TraceStories(*rm.model, *rm.tok, *all, cal_ids, {}, 512);
  ASSERT_TRUE(cal.ok());
  const double exact = Ppl(rm, stories, "exact", nullptr);
  const double attend = Ppl(rm, stories, "session:fetch=attend,topk=0.1", &*cal);
  const double gather = Ppl(rm, stories, "session:fetch=gather,topk=0.1", &*cal);
  const double prefetched = Ppl(rm, stories, "session:fetch=gather,topk=0.1,prefetch=1", &*cal);
  const double full = Ppl(rm, stories, "session:fetch=attend,topk=1", &*cal);
  EXPECT_NEAR(attend, gather, 1e-4);
  EXPECT_EQ(prefetched, gather);  // rows fetched ahead are the same rows
  EXPECT_NEAR(full, exact, 2e-3);  // offloaded rows are f16
  EXPECT_LT(attend - exact, 0.05);
  EXPECT_FALSE(MakeKvCache("session:fetch=teleport", KvCacheContext{"m", 5}).ok());
}

}  // namespace
}  // namespace kvrecall
