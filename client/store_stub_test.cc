// The data plane end to end in one process: StoreStub -> transport ->
// StoreService -> BlockStore, with the in-process transport and the seeded
// fault-injecting decorator.
#include "client/store_stub.h"

#include <cstdlib>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "codec/codec.h"
#include "codec/random_block.h"
#include "codec/container.h"
#include "store/protocol.h"
#include "store/service.h"
#include "tests/server_process.h"

namespace kvrecall {
namespace {

std::string MakeBlock(int tokens, uint64_t seed) {
  return RandomF16Block(2, 2, 64, tokens, seed);
}

struct Fixture {
  std::unique_ptr<BlockStore> store;
  std::unique_ptr<StoreService> service;
  std::unique_ptr<ClientTransport> transport;
  explicit Fixture(uint64_t host_bytes = 8 << 20) {
    StoreOptions o;
    o.host_bytes = host_bytes;
    o.admin_token = "admin-token-xyz";
    store = std::move(*BlockStore::Open(o, {{"a", "token-a-123456", 1ull << 30, "sa"}, {"b", "token-b-654321", 1ull << 30, "sb"}}));
    service = std::make_unique<StoreService>(store.get(), Env::Default());
    transport = NewInProcessTransport(service.get());
  }
};

ConstIov Iov(const std::vector<std::string>& blocks) {
  ConstIov v;
  for (const auto& b : blocks) v.push_back(AsBytes(b));
  return v;
}

TEST(StoreStub, BatchedPutGetExistsDeleteGather) {
  Fixture f;
  StoreStub a(f.transport.get(), "token-a-123456");
  std::vector<BlockKey> keys;
  std::vector<std::string> blocks;
  for (int i = 0; i < 5; ++i) keys.push_back({uint64_t(i), 1}), blocks.push_back(MakeBlock(8 + i, i));
  auto put = a.Put(keys, Iov(blocks), false);
  ASSERT_TRUE(put.ok()) << put.status();
  for (const auto& s : *put) EXPECT_TRUE(s.ok()) << s;
  std::vector<std::string> bufs(6, std::string(1 << 16, '\0'));
  MutableIov dst;
  for (auto& b : bufs) dst.push_back({reinterpret_cast<uint8_t*>(b.data()), b.size()});
  std::vector<BlockKey> want = keys;
  want.insert(want.begin() + 2, BlockKey{99, 99});  // a miss in the middle
  auto got = a.Get(want, dst);
  ASSERT_TRUE(got.ok()) << got.status();
  for (size_t i = 0; i < want.size(); ++i) {
    if (i == 2) {
      EXPECT_EQ((*got)[i].status().code(), absl::StatusCode::kNotFound);
      continue;
    }
    const std::string& b = blocks[i < 2 ? i : i - 1];
    ASSERT_TRUE((*got)[i].ok()) << i << (*got)[i].status();
    EXPECT_EQ(bufs[i].substr(0, *(*got)[i]), b);
  }
  auto ex = a.Exists(want);
  ASSERT_TRUE(ex.ok());
  EXPECT_EQ(ex->prefix, 2u);
  EXPECT_EQ(ex->present, (std::vector<bool>{true, true, false, true, true, true}));
  auto gathered = a.Gather({{keys[4], {0, 11}}, {BlockKey{7, 7}, {0}}});
  ASSERT_TRUE(gathered.ok()) << gathered.status();
  ASSERT_TRUE((*gathered)[0].ok());
  EXPECT_EQ((*gathered)[0]->size(), 2u * 4 * 2 * 64);
  EXPECT_EQ((*gathered)[1].status().code(), absl::StatusCode::kNotFound);
  auto del = a.Delete({keys[0], BlockKey{42, 42}});
  ASSERT_TRUE(del.ok());
  EXPECT_TRUE((*del)[0].ok());
  EXPECT_EQ((*del)[1].code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(a.Exists(keys)->prefix, 0u);
  EXPECT_GT(f.service->Stats().get.count, 0u);
}

TEST(StoreStub, TokensAreChecked) {
  Fixture f;
  StoreStub a(f.transport.get(), "token-a-123456"), b(f.transport.get(), "token-b-654321");
  StoreStub none(f.transport.get(), ""), wrong(f.transport.get(), "token-c-000000");
  const std::string blk = MakeBlock(8, 1);
  const BlockKey k{1, 2};
  ASSERT_TRUE(a.Put({&k, 1}, Iov({blk}), false).ok());
  EXPECT_EQ(none.Exists({&k, 1}).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(wrong.Exists({&k, 1}).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(wrong.Put({&k, 1}, Iov({blk}), false).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(b.Exists({&k, 1})->prefix, 0u);  // another tenant sees nothing
  EXPECT_EQ((*b.Delete({&k, 1}))[0].code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(a.Exists({&k, 1})->prefix, 1u);  // and removed nothing
}

TEST(StoreService, MalformedRequestsGetErrorRepliesAndTheServerStaysUp) {
  Fixture f;
  std::mt19937 rng(3);
  Request r;
  r.header.op = uint16_t(Op::kExists);
  r.token = "token-a-123456";
  r.keys = {BlockKey{1, 1}};
  const std::string good = EncodeRequest(r);
  for (int i = 0; i < 3000; ++i) {
    std::string junk = i % 3 == 0 ? std::string(rng() % 100, '\0') : good;
    for (char& c : junk) {
      if (i % 3 == 0 || rng() % 16 == 0) c = static_cast<char>(rng());
    }
    auto ex = f.service->Begin(AsBytes(junk), rng() % 4 == 0 ? 100 : 0);
    MutableIov dst = ex->PayloadDestination();
    ex->Finish(absl::OkStatus());
    auto reply = ParseReply(AsBytes(std::string(ex->reply_head())));
    ASSERT_TRUE(reply.ok()) << "the server must always answer with a well-formed reply";
  }
  EXPECT_GT(f.store->Stats().rejected, 1000u);
  StoreStub a(f.transport.get(), "token-a-123456");
  EXPECT_TRUE(a.Exists({BlockKey{1, 1}}).ok());
}

// Which requests a server runs off its progress thread (Exchange::Heavy):
// those that wait on the SSD tier, and attention; not puts and gets from RAM.
TEST(StoreService, RequestsThatWaitOnTheSsdRunOffTheProgressThread) {
  const std::string dir = TempDir("heavy");
  StoreOptions o;
  o.host_bytes = 8 << 20;
  o.admin_token = "admin-token-xyz";
  o.ssd_path = dir;
  o.ssd_bytes = 64 << 20;
  auto store = BlockStore::Open(o, {{"a", "token-a-123456", 1ull << 30, "sa"}});
  ASSERT_TRUE(store.ok()) << store.status();
  StoreService service(store->get(), Env::Default());
  const std::string blk = MakeBlock(8, 1);
  const uint32_t ns = *(*store)->Authenticate("token-a-123456");
  ASSERT_TRUE((*store)->Put(ns, BlockKey{1, 1}, AsBytes(blk), false).ok());

  auto heavy = [&](const Request& r, uint64_t payload) { return service.Begin(AsBytes(EncodeRequest(r)), payload)->Heavy(); };
  Request get;
  get.header.op = uint16_t(Op::kGet);
  get.token = "token-a-123456";
  get.keys = {BlockKey{1, 1}};
  EXPECT_FALSE(heavy(get, 0)) << "a get from RAM";
  get.keys = {BlockKey{1, 1}, BlockKey{9, 9}};
  EXPECT_TRUE(heavy(get, 0)) << "a key not in RAM is looked up on the SSD";
  Request put;
  put.header.op = uint16_t(Op::kPut);
  put.token = "token-a-123456";
  put.puts = {{BlockKey{2, 2}, 0, uint32_t(blk.size())}};
  put.header.payload_len = blk.size();
  EXPECT_FALSE(heavy(put, blk.size())) << "a write-back put lands in RAM";
  put.header.flags = kFlagDurable;
  EXPECT_TRUE(heavy(put, blk.size())) << "a durable put writes and syncs the SSD";

  Fixture f;  // no SSD tier: a missing key is a plain miss
  StoreService& ram_only = *f.service;
  get.keys = {BlockKey{9, 9}};
  EXPECT_FALSE(ram_only.Begin(AsBytes(EncodeRequest(get)), 0)->Heavy());
  (void)std::system(("rm -rf '" + dir + "'").c_str());
}

TEST(StoreStub, InjectedFaultsCostHitsNeverCorrectness) {
  Fixture f;
  const std::string blk = MakeBlock(16, 5);
  const BlockKey k{5, 5};
  {
    StoreStub a(f.transport.get(), "token-a-123456");
    ASSERT_TRUE(a.Put({&k, 1}, Iov({blk}), false).ok());
  }
  std::string buf(1 << 16, '\0');
  MutableIov dst = {{reinterpret_cast<uint8_t*>(buf.data()), buf.size()}};
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    // Corrupted replies: the block is reported lost, never returned.
    FaultPlan plan;
    plan.kind = FaultPlan::Kind::kCorrupt;
    plan.nth = 1;
    plan.seed = seed;
    auto t = NewFaultInjectingTransport(NewInProcessTransport(f.service.get()), plan);
    StoreStub a(t.get(), "token-a-123456");
    auto got = a.Get({&k, 1}, dst);
    ASSERT_TRUE(got.ok());
    EXPECT_EQ((*got)[0].status().code(), absl::StatusCode::kDataLoss) << seed;
    got = a.Get({&k, 1}, dst);  // the next call is clean
    ASSERT_TRUE((*got)[0].ok());
    EXPECT_EQ(buf.substr(0, blk.size()), blk);
  }
  // A corrupted put payload is refused by the server; nothing is stored.
  FaultPlan plan;
  plan.kind = FaultPlan::Kind::kCorrupt;
  plan.one_in = 1;
  plan.corrupt_reply = false;
  auto t = NewFaultInjectingTransport(NewInProcessTransport(f.service.get()), plan);
  StoreStub a(t.get(), "token-a-123456");
  const BlockKey k2{6, 6};
  auto put = a.Put({&k2, 1}, Iov({blk}), false);
  ASSERT_TRUE(put.ok());
  EXPECT_EQ((*put)[0].code(), absl::StatusCode::kDataLoss);
  StoreStub clean(f.transport.get(), "token-a-123456");
  EXPECT_EQ(clean.Exists({&k2, 1})->prefix, 0u);
  // Drops and failures are call errors; later calls work.
  for (auto kind : {FaultPlan::Kind::kDrop, FaultPlan::Kind::kFail}) {
    FaultPlan p;
    p.kind = kind;
    p.nth = 2;
    auto tt = NewFaultInjectingTransport(NewInProcessTransport(f.service.get()), p);
    StoreStub s(tt.get(), "token-a-123456");
    EXPECT_TRUE(s.Exists({&k, 1}).ok());
    const absl::StatusCode code = s.Exists({&k, 1}).status().code();
    EXPECT_EQ(code, kind == FaultPlan::Kind::kDrop ? absl::StatusCode::kDeadlineExceeded : absl::StatusCode::kUnavailable);
    EXPECT_TRUE(s.Exists({&k, 1}).ok());
  }
  // 1-in-N faults are seeded: the same seed fails the same calls.
  auto pattern = [&](uint64_t seed) {
    FaultPlan p;
    p.kind = FaultPlan::Kind::kFail;
    p.one_in = 3;
    p.seed = seed;
    auto tt = NewFaultInjectingTransport(NewInProcessTransport(f.service.get()), p);
    StoreStub s(tt.get(), "token-a-123456");
    std::string bits;
    for (int i = 0; i < 30; ++i) bits += s.Exists({&k, 1}).ok() ? '1' : '0';
    return bits;
  };
  EXPECT_EQ(pattern(7), pattern(7));
  EXPECT_NE(pattern(7), pattern(8));
}

TEST(StoreStub, ConcurrentClientsOnASmallHostTier) {
  Fixture f(2 << 20);
  std::vector<std::string> blocks;
  for (int i = 0; i < 8; ++i) blocks.push_back(MakeBlock(32 + i, 100 + i));
  std::atomic<int> wrong{0}, hits{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      StoreStub s(f.transport.get(), "token-a-123456");
      std::mt19937 rng(t);
      std::string buf(1 << 17, '\0');
      MutableIov dst = {{reinterpret_cast<uint8_t*>(buf.data()), buf.size()}};
      for (int i = 0; i < 300; ++i) {
        const int id = rng() % 64;
        const BlockKey k{uint64_t(id), 0};
        const std::string& b = blocks[id % 8];
        if (rng() % 2) {
          (void)s.Put({&k, 1}, {AsBytes(b)}, false);
        } else {
          auto got = s.Get({&k, 1}, dst);
          if (got.ok() && (*got)[0].ok()) {
            ++hits;
            if (buf.substr(0, *(*got)[0]) != b) ++wrong;
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_GT(hits.load(), 0);
  EXPECT_LE(f.store->Stats().host.used_bytes, 2u << 20);
}

}  // namespace
}  // namespace kvrecall
