#include "proto/etcd/membership.h"

#include <unistd.h>

#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "proto/etcd/etcd_test_server.h"

namespace kvrecall {
namespace {

bool WaitFor(const std::function<bool()>& pred, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

TEST(EtcdMembership, RegisterWatchDeregisterAndSurviveAnEtcdRestart) {
  if (!EtcdTestServer::Available()) GTEST_SKIP() << "etcd not installed (apt install etcd-server)";
  EtcdTestServer etcd(23000 + getpid() % 2000 * 2);
  ASSERT_TRUE(etcd.Start());
  std::atomic<int> changes{0};
  auto m = EtcdMembership::Start(etcd.endpoint(), "/kvrecall/test/", [&](const MemberMap&) { ++changes; });
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_TRUE((*m)->members().empty());
  auto a = EtcdRegistration::Start(etcd.endpoint(), "/kvrecall/test/127.0.0.1:7000", "1.0", 2);
  ASSERT_TRUE(a.ok()) << a.status();
  auto b = EtcdRegistration::Start(etcd.endpoint(), "/kvrecall/test/127.0.0.1:7002", "2.0", 2);
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE(WaitFor([&] { return (*m)->members().size() == 2; }, 5));
  EXPECT_EQ((*m)->members().at("127.0.0.1:7002"), "2.0");
  // Leases are kept alive past their TTL.
  std::this_thread::sleep_for(std::chrono::seconds(3));
  EXPECT_EQ((*m)->members().size(), 2u);
  // Deregistration (drain) is seen at once.
  (*a)->Stop();
  ASSERT_TRUE(WaitFor([&] { return (*m)->members().size() == 1; }, 3));
  // Callbacks fire on changes only: the two joins (one or two watch
  // events, as etcd batches them) and the leave.
  const int before = changes.load();
  EXPECT_GE(before, 2);
  // etcd goes away: the last membership stays; it comes back (same data):
  // the watcher re-reads and watches again (a member joining after the
  // restart is seen), and the registration re-registers if its lease went.
  etcd.Stop();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ((*m)->members().size(), 1u);
  ASSERT_TRUE(etcd.Start());
  auto c = EtcdRegistration::Start(etcd.endpoint(), "/kvrecall/test/127.0.0.1:7004", "1.0", 2);
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(WaitFor([&] { return (*m)->members().count("127.0.0.1:7002") == 1 &&
                                   (*m)->members().count("127.0.0.1:7004") == 1; }, 10));
  EXPECT_GT(changes.load(), before);
  EXPECT_EQ(EtcdMembership::Start("127.0.0.1:1", "/x/", nullptr, absl::Milliseconds(300)).status().code(),
            absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace kvrecall
