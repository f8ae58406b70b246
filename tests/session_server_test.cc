// The reference engine decoding with a RetrievalSession whose KV lives on a
// real kvrecall-server process gives exactly the perplexity it gives with the
// embedded store (same blocks, same selections, same attention).
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "engine/cache_factory.h"
#include "engine/eval.h"
#include "engine/test_data.h"
#include "tests/server_process.h"

namespace kvrecall {
namespace {

TEST(SessionOnServer, SamePerplexityAsEmbedded) {
  KVR_REQUIRE_REAL_MODEL(rm);
  auto all = LoadStories(Env::Default(), rm.dir + "/tinystories_valid_first1000.txt");
  ASSERT_TRUE(all.ok());
  const std::vector<std::string> stories(all->begin(), all->begin() + 3);
  std::vector<int> cal_ids;
  for (int i = 980; i < 1000; ++i) cal_ids.push_back(i);
  auto cal = TraceStories(*rm.model, *rm.tok, *all, cal_ids, {}, 512);
  ASSERT_TRUE(cal.ok());
  Server s;
  ASSERT_TRUE(s.Start({"--namespace_spec=t:session-token-1:268435456:salty", "--host_bytes=67108864"}));
  auto ppl = [&](const std::string& spec) {
    KvCacheContext ctx;
    ctx.model_id = rm.model->id();
    ctx.num_layers = rm.model->config().n_layers;
    ctx.calibration = &*cal;
    ctx.context_len = rm.model->config().seq_len;
    auto cache = MakeKvCache(spec, ctx);
    EXPECT_TRUE(cache.ok()) << cache.status();
    auto r = EvaluatePerplexity(*rm.model, *rm.tok, stories, cache->get());
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->perplexity() : 0.0;
  };
  const double embedded = ppl("session:fetch=attend,topk=0.1,salt=salty");
  const double remote = ppl(absl::StrCat("session:fetch=attend,topk=0.1,salt=salty,token=session-token-1,nodes=", s.data));
  EXPECT_GT(embedded, 1.0);
  EXPECT_EQ(remote, embedded);
  // Live recall sampled on the server-backed session lands in the server's metrics.
  EXPECT_EQ(HttpGet(s.metrics, "/metrics").find("kvrecall_retrieval_mass_recall_count 0\n") != std::string::npos, true);
  const double sampled =
      ppl(absl::StrCat("session:fetch=attend,topk=0.1,recall=50,salt=salty,token=session-token-1,nodes=", s.data));
  EXPECT_EQ(sampled, remote);  // sampling observes, it does not change the result
  const std::string m = HttpGet(s.metrics, "/metrics");
  const size_t at = m.find("kvrecall_retrieval_mass_recall_count ");
  ASSERT_NE(at, std::string::npos) << m;
  const int64_t samples = std::stoll(m.substr(at + 37));
  EXPECT_GT(samples, 0);
  const size_t sum_at = m.find("kvrecall_retrieval_mass_recall_sum ");
  ASSERT_NE(sum_at, std::string::npos);
  const double mean = std::stod(m.substr(sum_at + 35)) / samples;
  EXPECT_GT(mean, 0.5);
  EXPECT_LE(mean, 1.0);
  EXPECT_TRUE(WIFEXITED(s.Stop(SIGTERM)));
}

}  // namespace
}  // namespace kvrecall
