// A real cluster on loopback: etcd + 3 kvrecall-server processes that
// register themselves, a client process that saves, a client that loads
// through etcd's member list; then a server killed with -9 under load, its
// restart, a 4th server joining, a wrong token and etcd going away.
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "client/kv_client.h"
#include "codec/codec.h"
#include "codec/random_block.h"
#include "codec/container.h"
#include "proto/etcd/etcd_test_server.h"
#include "tests/server_process.h"

namespace kvrecall {
namespace {

constexpr char kToken[] = "cluster-tenant-token";

std::string MakeBlock(uint64_t seed) {
  return RandomF16Block(2, 2, 32, 16, seed);
}

bool WaitFor(const std::function<bool()>& pred, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return pred();
}

KvClient::Options ClientOptions(const std::string& etcd, const std::string& token = kToken) {
  KvClient::Options o;
  o.etcd_endpoint = etcd;
  o.etcd_prefix = "/kvrecall/test-cluster/";
  o.namespace_token = token;
  o.namespace_salt = "cluster-salt";
  o.timeout = absl::Milliseconds(800);
  o.down_backoff = absl::Milliseconds(300);
  return o;
}

// Loads keys; counts hits and checks every hit against the recomputed block.
int LoadAndVerify(KvClient* c, const std::vector<uint64_t>& ids, int* wrong) {
  std::vector<BlockKey> keys;
  std::vector<std::string> bufs(ids.size(), std::string(16 << 10, '\0'));
  std::vector<absl::Span<uint8_t>> dst;
  for (size_t i = 0; i < ids.size(); ++i) {
    keys.push_back({ids[i], 4242});
    dst.push_back({reinterpret_cast<uint8_t*>(bufs[i].data()), bufs[i].size()});
  }
  auto got = c->Load(keys, dst).get();
  int hits = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!got[i].ok()) continue;
    ++hits;
    if (bufs[i].substr(0, *got[i]) != MakeBlock(ids[i])) ++*wrong;
  }
  return hits;
}

TEST(Cluster, SharedPrefixesAcrossServersThroughFailuresAndJoins) {
  if (!EtcdTestServer::Available()) GTEST_SKIP() << "etcd not installed (apt install etcd-server)";
  EtcdTestServer etcd(25000 + getpid() % 2000 * 2);
  ASSERT_TRUE(etcd.Start());
  const std::vector<std::string> flags = {absl::StrCat("--etcd=", etcd.endpoint()),
                                          "--etcd_prefix=/kvrecall/test-cluster/", "--etcd_ttl=2",
                                          absl::StrCat("--namespace_spec=tenant:", kToken, ":8388608:cluster-salt")};
  std::vector<std::unique_ptr<Server>> servers;
  for (int i = 0; i < 3; ++i) {
    servers.push_back(std::make_unique<Server>());
    ASSERT_TRUE(servers.back()->Start(flags)) << "server " << i;
  }
  // Client process A saves 90 blocks and exits.
  std::vector<uint64_t> ids(90);
  for (int i = 0; i < 90; ++i) ids[i] = 1000 + i;
  const pid_t child = fork();
  if (child == 0) {
    auto c = KvClient::Create(ClientOptions(etcd.endpoint()));
    if (!c.ok()) _exit(2);
    if (!WaitFor([&] { return (*c)->stats().nodes == 3; }, 5)) _exit(3);
    std::vector<BlockKey> keys;
    std::vector<std::string> blocks;
    for (uint64_t id : ids) keys.push_back({id, 4242}), blocks.push_back(MakeBlock(id));
    std::vector<absl::Span<const uint8_t>> spans;
    for (const auto& b : blocks) spans.push_back(AsBytes(b));
    for (const auto& s : (*c)->Save(keys, spans).get()) {
      if (!s.ok()) _exit(4);
    }
    _exit(0);
  }
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "saving client failed: " << WEXITSTATUS(status);

  // Client B (this process) finds everything through etcd's member list.
  auto b = KvClient::Create(ClientOptions(etcd.endpoint()));
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_TRUE(WaitFor([&] { return (*b)->stats().nodes == 3; }, 5));
  std::vector<BlockKey> chain;
  for (uint64_t id : ids) chain.push_back({id, 4242});
  EXPECT_EQ(*(*b)->LookupPrefix(chain).get(), 90);
  int wrong = 0;
  EXPECT_EQ(LoadAndVerify(b->get(), ids, &wrong), 90);

  // kill -9 one server under load: misses, never wrong bytes; it leaves the
  // member list within the lease TTL.
  const std::string dead_port = servers[1]->data.substr(servers[1]->data.rfind(':') + 1);
  servers[1]->Stop(SIGKILL);
  const int after_kill = LoadAndVerify(b->get(), ids, &wrong);
  EXPECT_LT(after_kill, 90);
  EXPECT_GT(after_kill, 30);
  ASSERT_TRUE(WaitFor([&] { return (*b)->stats().nodes == 2; }, 6)) << "membership did not converge";
  EXPECT_EQ(LoadAndVerify(b->get(), ids, &wrong), after_kill);

  // It comes back on the same address: used again once its lease is seen.
  std::vector<std::string> again = flags;
  again.push_back(absl::StrCat("--port=", dead_port));
  servers[1] = std::make_unique<Server>();
  ASSERT_TRUE(servers[1]->Start(again));
  ASSERT_TRUE(WaitFor([&] { return (*b)->stats().nodes == 3; }, 6));
  std::vector<BlockKey> fresh;
  std::vector<std::string> fresh_blocks;
  // 120 keys: the join check below bounds a binomial(120, 1/4) count of
  // moved keys at ±4σ (with 30 keys a ±1.8σ bound failed about once in 30).
  constexpr int kFresh = 120;
  for (int i = 0; i < kFresh; ++i) fresh.push_back({uint64_t(5000 + i), 4242}), fresh_blocks.push_back(MakeBlock(5000 + i));
  std::vector<absl::Span<const uint8_t>> spans;
  for (const auto& x : fresh_blocks) spans.push_back(AsBytes(x));
  for (const auto& s : (*b)->Save(fresh, spans).get()) EXPECT_TRUE(s.ok()) << s;
  std::vector<uint64_t> fresh_ids;
  for (int i = 0; i < kFresh; ++i) fresh_ids.push_back(5000 + i);
  EXPECT_EQ(LoadAndVerify(b->get(), fresh_ids, &wrong), kFresh) << "the restarted server must serve again";

  // A 4th server joins: only its share of the keys moves (they read as misses).
  servers.push_back(std::make_unique<Server>());
  ASSERT_TRUE(servers.back()->Start(flags));
  ASSERT_TRUE(WaitFor([&] { return (*b)->stats().nodes == 4; }, 6));
  const int after_join = LoadAndVerify(b->get(), fresh_ids, &wrong);
  // About 1/4 of the keys move to the new node (30 of 120, σ ≈ 4.7): far more
  // means placement reshuffled keys between old nodes; none means it got none.
  const int moved = kFresh - after_join;
  EXPECT_LE(moved, kFresh / 4 + 19) << "more than 1/N + 4σ of the keys moved";
  EXPECT_GE(moved, kFresh / 4 - 19) << "the new node took (almost) none of the keys";

  // A wrong token is refused.
  auto intruder = KvClient::Create(ClientOptions(etcd.endpoint(), "not-the-token"));
  ASSERT_TRUE(intruder.ok());
  ASSERT_TRUE(WaitFor([&] { return (*intruder)->stats().nodes == 4; }, 5));
  auto refused = (*intruder)->Save({BlockKey{1, 1}}, {AsBytes(fresh_blocks[0])}).get();
  EXPECT_EQ(refused[0].code(), absl::StatusCode::kPermissionDenied);

  // etcd goes away: clients keep the last membership and keep serving.
  etcd.Stop();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ((*b)->stats().nodes, 4);
  EXPECT_EQ(LoadAndVerify(b->get(), fresh_ids, &wrong), after_join);
  EXPECT_EQ(wrong, 0) << "a loaded block did not match its recomputation";
}

}  // namespace
}  // namespace kvrecall
