// UCX data-plane transport on loopback, once per UCX_TLS set: small and
// large (rendezvous) payloads both ways, heads too big for the AM header,
// concurrent callers, deadlines and a server that goes away.
#include "common/ucx_transport.h"

#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <thread>

#include <gtest/gtest.h>

namespace kvrecall {
namespace {

// Released by tests: a "heavy" exchange's Finish waits for it (at most 10 s).
struct Gate {
  std::atomic<bool> open{false};
  std::atomic<std::thread::id> heavy_thread{}, light_thread{};
};

// Echo: reply head = "re:" + head; reply payload = request payload with
// every byte + 1. A head starting with "sleep" stalls the server 400 ms; one
// starting with "heavy" is Exchange::Heavy and waits for the gate.
class EchoExchange final : public Exchange {
 public:
  EchoExchange(std::string head, uint64_t n, Gate* gate) : head_(std::move(head)), buf_(n), gate_(gate) {}
  bool Heavy() const override { return head_.rfind("heavy", 0) == 0; }
  MutableIov PayloadDestination() override {
    if (buf_.empty()) return {};
    const size_t half = buf_.size() / 2;  // two spans: scatter works
    return {{buf_.data(), half}, {buf_.data() + half, buf_.size() - half}};
  }
  void Finish(const absl::Status& s) override {
    if (head_.rfind("sleep", 0) == 0) std::this_thread::sleep_for(std::chrono::milliseconds(400));
    if (Heavy()) {
      gate_->heavy_thread = std::this_thread::get_id();
      for (int i = 0; i < 10000 && !gate_->open; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    } else {
      gate_->light_thread = std::this_thread::get_id();
    }
    status_ = s;
    for (uint8_t& b : buf_) ++b;
    reply_ = "re:" + head_ + (s.ok() ? "" : ":payload-failed");
  }
  absl::string_view reply_head() const override { return reply_; }
  ConstIov reply_payload() const override {
    if (buf_.empty()) return {};
    return {{buf_.data(), buf_.size()}};
  }

 private:
  std::string head_, reply_;
  std::vector<uint8_t> buf_;
  Gate* gate_;
  absl::Status status_;
};

class Echo final : public RequestHandler {
 public:
  std::unique_ptr<Exchange> Begin(absl::Span<const uint8_t> head, uint64_t n) override {
    ++calls;
    return std::make_unique<EchoExchange>(std::string(reinterpret_cast<const char*>(head.data()), head.size()), n,
                                          &gate);
  }
  std::atomic<int> calls{0};
  Gate gate;
};

absl::StatusOr<std::string> EchoCall(ClientTransport* t, const std::string& head, const std::string& payload,
                                     std::string* reply_payload, absl::Duration timeout = absl::Seconds(10)) {
  CallArgs a;
  a.head = head;
  if (!payload.empty()) a.payload = {{reinterpret_cast<const uint8_t*>(payload.data()), payload.size()}};
  a.timeout = timeout;
  a.sink = [reply_payload](absl::Span<const uint8_t>, uint64_t n) -> absl::StatusOr<MutableIov> {
    reply_payload->assign(n, '\0');
    if (n == 0) return MutableIov{};
    return MutableIov{{reinterpret_cast<uint8_t*>(reply_payload->data()), n}};
  };
  return t->Call(std::move(a));
}

std::string Pattern(size_t n, int seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 31 + seed) & 0xff);
  return s;
}

std::string PlusOne(std::string s) {
  for (char& c : s) c = static_cast<char>(static_cast<uint8_t>(c) + 1);
  return s;
}

// `threads` threads making `calls` echo calls each (payload sizes from
// `size(t, i)`); every wrong head, payload or error counts in *bad.
std::vector<std::thread> StartEchoCallers(ClientTransport* client, int threads, int calls,
                                          std::function<size_t(int, int)> size, std::atomic<int>* bad) {
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([=] {
      std::string rp;
      for (int i = 0; i < calls; ++i) {
        const std::string head = "c" + std::to_string(t) + "." + std::to_string(i);
        const std::string p = Pattern(size(t, i), t * 100 + i);
        auto r = EchoCall(client, head, p, &rp);
        if (!r.ok() || *r != "re:" + head || rp != PlusOne(p)) ++*bad;
      }
    });
  }
  return ts;
}

class UcxTransport : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    setenv("UCX_TLS", GetParam(), 1);
    setenv("UCX_NET_DEVICES", "lo", 1);
    auto s = UcxServer::Start(&echo_, {});
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    auto c = ConnectUcx(server_->address());
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = std::move(*c);
  }
  Echo echo_;
  std::unique_ptr<UcxServer> server_;
  std::unique_ptr<ClientTransport> client_;
};

TEST_P(UcxTransport, SmallLargeAndHugeHeadMessages) {
  std::string rp;
  auto r = EchoCall(client_.get(), "hello", "", &rp);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "re:hello");
  EXPECT_TRUE(rp.empty());
  for (size_t n : {size_t{100}, size_t{64} << 10, size_t{4} << 20}) {
    const std::string payload = Pattern(n, int(n));
    r = EchoCall(client_.get(), "size" + std::to_string(n), payload, &rp);
    ASSERT_TRUE(r.ok()) << n << ": " << r.status();
    EXPECT_EQ(*r, "re:size" + std::to_string(n));
    ASSERT_EQ(rp.size(), n);
    EXPECT_TRUE(rp == PlusOne(payload)) << n;
  }
  const std::string big_head = Pattern(200 << 10, 3);  // beyond any AM header limit
  r = EchoCall(client_.get(), big_head, Pattern(1 << 20, 4), &rp);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(*r == "re:" + big_head);
  EXPECT_TRUE(rp == PlusOne(Pattern(1 << 20, 4)));
}

TEST_P(UcxTransport, ConcurrentCallers) {
  std::atomic<int> bad{0};
  std::vector<std::thread> ts =
      StartEchoCallers(client_.get(), 4, 40, [](int t, int i) { return size_t((i % 3 == 0 ? 300 << 10 : 1000) + t); }, &bad);
  for (auto& t : ts) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(echo_.calls.load(), 160);
}

TEST_P(UcxTransport, DeadlinesAndAServerThatGoesAway) {
  std::string rp;
  const auto t0 = std::chrono::steady_clock::now();
  auto r = EchoCall(client_.get(), "sleep", "", &rp, absl::Milliseconds(100));
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_LT(ms, 1000);  // 100 ms deadline; generous for loaded CI machines
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the late reply arrives and is dropped
  r = EchoCall(client_.get(), "after", "", &rp);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r, "re:after");
  server_->Shutdown();
  const auto t1 = std::chrono::steady_clock::now();
  r = EchoCall(client_.get(), "gone", Pattern(1 << 20, 9), &rp, absl::Seconds(2));
  EXPECT_FALSE(r.ok());
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count(), 4.0);
  EXPECT_EQ(ConnectUcx("127.0.0.1:1").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(ConnectUcx("nonsense").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(UcxTuning, RendezvousThresholdOnlyWhenTcpIsTheOnlyTransport) {
  auto has = [](const std::string& tls, const std::string& name) {
    for (const auto& [n, v] : UcxTuning(tls)) {
      if (n == name) return true;
    }
    return false;
  };
  EXPECT_TRUE(has("tcp", "RNDV_THRESH"));
  EXPECT_TRUE(has("tcp,self", "RNDV_THRESH"));
  EXPECT_FALSE(has("shm,self", "RNDV_THRESH"));
  EXPECT_FALSE(has("tcp,cma", "RNDV_THRESH"));
  EXPECT_FALSE(has("", "RNDV_THRESH"));  // UCX picks the transports
  EXPECT_TRUE(has("tcp", "TCP_TX_SEG_SIZE") && has("tcp", "TCP_RX_SEG_SIZE"));
  EXPECT_FALSE(has("shm,self", "TCP_TX_SEG_SIZE"));
}

// The tuning is what the transport runs with: a 64 KiB message over tcp
// alone goes in one eager segment and arrives intact (and one past the
// segment, and one past the rendezvous threshold).
TEST(UcxTuning, TcpSegmentsCarryWholeBlocks) {
  setenv("UCX_TLS", "tcp", 1);
  setenv("UCX_NET_DEVICES", "lo", 1);
  Echo echo;
  auto server = UcxServer::Start(&echo, {});
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = ConnectUcx((*server)->address());
  ASSERT_TRUE(client.ok()) << client.status();
  for (size_t n : {size_t{64} << 10, (size_t{64} << 10) + 1, size_t{300} << 10}) {
    std::string rp;
    auto r = EchoCall(client->get(), "seg", Pattern(n, 3), &rp);
    ASSERT_TRUE(r.ok()) << n << ": " << r.status();
    EXPECT_TRUE(rp == PlusOne(Pattern(n, 3))) << n;
  }
}

// More callers than one lane: each gets its own lane, and a call that times
// out (closing its lane's endpoint) does not disturb the others.
TEST_P(UcxTransport, ATimedOutLaneReconnectsWhileOthersRun) {
  std::atomic<int> bad{0};
  std::vector<std::thread> ts = StartEchoCallers(client_.get(), 3, 30, [](int, int) { return size_t{300} << 10; }, &bad);
  std::string rp;
  auto r = EchoCall(client_.get(), "sleep", Pattern(1 << 20, 5), &rp, absl::Milliseconds(50));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  for (auto& t : ts) t.join();
  EXPECT_EQ(bad.load(), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  r = EchoCall(client_.get(), "again", Pattern(1 << 20, 6), &rp);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(rp == PlusOne(Pattern(1 << 20, 6)));
}

// A heavy exchange's Finish runs on a worker thread: while it waits, light
// calls are answered by the progress thread; then it answers too. A heavy
// call still in progress at shutdown is finished, not dropped.
TEST_P(UcxTransport, HeavyExchangesRunOffTheProgressThread) {
  std::string heavy_reply;
  absl::StatusOr<std::string> heavy = absl::UnknownError("not run");
  std::thread h([&] { heavy = EchoCall(client_.get(), "heavy", Pattern(300 << 10, 7), &heavy_reply); });
  while (echo_.gate.heavy_thread.load() == std::thread::id()) std::this_thread::yield();
  std::string rp;
  for (int i = 0; i < 5; ++i) {
    auto r = EchoCall(client_.get(), "light", Pattern(1000, i), &rp, absl::Seconds(5));
    ASSERT_TRUE(r.ok()) << r.status();  // the heavy one holds a worker, not the progress thread
    EXPECT_EQ(rp, PlusOne(Pattern(1000, i)));
  }
  EXPECT_NE(echo_.gate.heavy_thread.load(), echo_.gate.light_thread.load());
  echo_.gate.open = true;
  h.join();
  ASSERT_TRUE(heavy.ok()) << heavy.status();
  EXPECT_EQ(*heavy, "re:heavy");
  EXPECT_TRUE(heavy_reply == PlusOne(Pattern(300 << 10, 7)));
}

// With two progress threads, lanes are spread over them: a request that
// stalls one loop (a light exchange sleeping 400 ms in Finish) does not hold
// up a call on another lane, which the other loop answers meanwhile.
TEST_P(UcxTransport, ProgressThreadsServeLanesInParallel) {
  Echo echo;
  UcxServerOptions o;
  o.progress_threads = 2;
  auto server = UcxServer::Start(&echo, o);
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = ConnectUcx((*server)->address());  // its first lane: loop 0
  ASSERT_TRUE(client.ok()) << client.status();
  std::atomic<bool> slow_started{false}, slow_done{false};
  absl::StatusOr<std::string> slow = absl::UnknownError("not run");
  std::thread t([&] {
    std::string rp;
    slow_started = true;
    slow = EchoCall(client->get(), "sleep", Pattern(1000, 1), &rp);  // lane 0
    slow_done = true;
  });
  while (!slow_started || echo.calls.load() == 0) std::this_thread::yield();
  std::string rp;
  auto fast = EchoCall(client->get(), "light", Pattern(300 << 10, 2), &rp);  // a new lane: loop 1
  EXPECT_FALSE(slow_done.load()) << "the light call waited for the stalled loop";
  ASSERT_TRUE(fast.ok()) << fast.status();
  EXPECT_TRUE(rp == PlusOne(Pattern(300 << 10, 2)));
  t.join();
  ASSERT_TRUE(slow.ok()) << slow.status();
  EXPECT_EQ(*slow, "re:sleep");
}

TEST_P(UcxTransport, ShutdownFinishesHeavyExchangesInProgress) {
  echo_.gate.open = false;
  std::string rp;
  absl::StatusOr<std::string> heavy = absl::UnknownError("not run");
  std::thread h([&] { heavy = EchoCall(client_.get(), "heavy", "", &rp, absl::Seconds(20)); });
  while (echo_.gate.heavy_thread.load() == std::thread::id()) std::this_thread::yield();
  std::thread opener([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    echo_.gate.open = true;
  });
  server_->Shutdown();  // waits for the worker, then sends what it can
  opener.join();
  h.join();
  // Either answered before the worker went, or failed cleanly: never a hang or a crash.
  if (heavy.ok()) EXPECT_EQ(*heavy, "re:heavy");
}

INSTANTIATE_TEST_SUITE_P(Tls, UcxTransport, ::testing::Values("tcp", "shm,self", "tcp,cma"),
                         [](const ::testing::TestParamInfo<const char*>& i) {
                           std::string n = i.param;
                           for (char& c : n) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return n;
                         });

}  // namespace
}  // namespace kvrecall
