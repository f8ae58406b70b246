// The reference engine decoding with a RetrievalSession whose KV lives on a
// real kvrecall-server process gives exactly the perplexity it gives with the
// embedded store (same blocks, same selections, same attention).
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"
#include "client/retrieval_session.h"
#include "codec/synthetic_kv.h"
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

// The server dies and comes back empty (RAM only) on the same address while
// a session is decoding: the session's steps fail clearly (UNAVAILABLE while
// the node is away or marked down, NOT_FOUND once it answers without the
// blocks) and leave the output untouched; they never return attention over
// wrong rows. Recovery is the engine's: re-prefill into a new session, which
// gives the same output as before the crash.
TEST(SessionOnServer, ServerRestartMidSessionIsReportedNeverWrongRows) {
  Server s;
  ASSERT_TRUE(s.Start({"--namespace_spec=t:session-token-2:268435456:salty", "--host_bytes=67108864"}));
  SyntheticConfig c;
  const int n = 3000;
  c.total_tokens = n;
  SyntheticHead gen(c, 3);
  const int d = c.head_dim, G = c.group_size;
  std::vector<float> kpre(size_t(n) * d), kpost(kpre.size()), v(kpre.size()), qpre(size_t(G) * d), qpost(qpre.size());
  gen.Next(n, kpre.data(), kpost.data(), v.data(), nullptr, nullptr);
  gen.Next(1, nullptr, nullptr, nullptr, qpre.data(), qpost.data());
  KvClient::Options co;
  co.nodes = {{s.data, 1.0}};
  co.namespace_token = "session-token-2";
  co.namespace_salt = "salty";
  co.timeout = absl::Seconds(2);
  co.down_backoff = absl::Milliseconds(200);
  auto client = KvClient::Create(co);
  ASSERT_TRUE(client.ok()) << client.status();
  RetrievalSessionOptions o;
  o.layout.num_layers = 1, o.layout.num_q_heads = G, o.layout.num_kv_heads = 1, o.layout.head_dim = d;
  o.layout.rope_style = c.rope_style, o.layout.rope_theta = c.rope_theta;
  o.index = "oracle";
  o.block_tokens = 64;
  o.topk_fraction = 0.05;
  auto open = [&](const std::string& id) {
    o.sequence_id = id;
    auto ses = RetrievalSession::Open(client->get(), o, {});
    EXPECT_TRUE(ses.ok()) << ses.status();
    EXPECT_TRUE((*ses)->Append(0, kpre.data(), kpost.data(), v.data(), n).ok());
    return std::move(*ses);
  };
  auto session = open("before");
  std::vector<float> before(size_t(G) * d), out(before.size());
  ASSERT_TRUE(session->Step(0, qpre.data(), qpost.data(), before.data()).ok());

  const std::string port = s.data.substr(s.data.find(':') + 1);
  s.Stop(SIGKILL);
  Server again;
  ASSERT_TRUE(again.Start({"--namespace_spec=t:session-token-2:268435456:salty", "--host_bytes=67108864",
                           absl::StrCat("--port=", port)}));
  bool saw_not_found = false;
  for (int attempt = 0; attempt < 20 && !saw_not_found; ++attempt) {
    std::fill(out.begin(), out.end(), 12345.0f);
    const absl::Status st = session->Step(0, qpre.data(), qpost.data(), out.data());
    ASSERT_FALSE(st.ok()) << "a step over blocks the server no longer has succeeded";
    ASSERT_TRUE(st.code() == absl::StatusCode::kNotFound || st.code() == absl::StatusCode::kUnavailable ||
                st.code() == absl::StatusCode::kDeadlineExceeded)
        << st;
    for (float x : out) ASSERT_EQ(x, 12345.0f) << "a failed step wrote output";
    saw_not_found = st.code() == absl::StatusCode::kNotFound;
    if (!saw_not_found) usleep(250 * 1000);
  }
  EXPECT_TRUE(saw_not_found) << "the restarted server was never seen answering";
  // Re-prefill: the same tokens, the same selection, the same output.
  auto fresh = open("after");
  ASSERT_TRUE(fresh->Step(0, qpre.data(), qpost.data(), out.data()).ok());
  EXPECT_EQ(out, before);
  EXPECT_TRUE(WIFEXITED(again.Stop(SIGTERM)));
}

}  // namespace
}  // namespace kvrecall
