#include "client/kv_client.h"

#include <chrono>
#include <random>

#include <gtest/gtest.h>

#include "codec/attention.h"
#include "codec/codec.h"
#include "codec/random_block.h"
#include "codec/container.h"
#include "common/env.h"
#include "common/ucx_transport.h"
#include "store/block_store.h"
#include "store/service.h"

namespace kvrecall {
namespace {

std::string MakeBlock(int tokens, uint64_t seed) {
  return RandomF16Block(2, 2, 16, tokens, seed);
}

std::vector<absl::Span<const uint8_t>> Spans(const std::vector<std::string>& b) {
  std::vector<absl::Span<const uint8_t>> v;
  for (const auto& x : b) v.push_back(AsBytes(x));
  return v;
}

void ExerciseClient(KvClient* c, int n) {
  std::vector<BlockKey> keys;
  std::vector<std::string> blocks;
  for (int i = 0; i < n; ++i) keys.push_back({uint64_t(i) * 7919, 11}), blocks.push_back(MakeBlock(4 + i % 5, i));
  auto saved = c->Save(keys, Spans(blocks)).get();
  for (const auto& s : saved) ASSERT_TRUE(s.ok()) << s;
  std::vector<BlockKey> chain = keys;
  chain.insert(chain.begin() + n / 2, BlockKey{1, 1});  // a hole
  auto prefix = c->LookupPrefix(chain).get();
  ASSERT_TRUE(prefix.ok());
  EXPECT_EQ(*prefix, n / 2);
  std::vector<std::string> bufs(n, std::string(4096, '\0'));
  std::vector<absl::Span<uint8_t>> dst;
  for (auto& b : bufs) dst.push_back({reinterpret_cast<uint8_t*>(b.data()), b.size()});
  auto loaded = c->Load(keys, dst).get();
  for (int i = 0; i < n; ++i) {
    ASSERT_TRUE(loaded[i].ok()) << i << " " << loaded[i].status();
    EXPECT_EQ(bufs[i].substr(0, *loaded[i]), blocks[i]);
  }
  auto rows = c->Gather({{keys[0], {0, 3}}}).get();
  ASSERT_TRUE(rows[0].ok()) << rows[0].status();
  EXPECT_EQ(rows[0]->size(), 2u * 4 * 2 * 16);
  auto del = c->Delete({keys[0]}).get();
  EXPECT_TRUE(del[0].ok());
  EXPECT_EQ(*c->LookupPrefix(keys).get(), 0);
}

TEST(KvClient, EmbeddedByDefault) {
  KvClient::Options o;
  o.namespace_salt = "salty";
  auto c = KvClient::Create(o);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE((*c)->embedded());
  EXPECT_EQ((*c)->namespace_salt(), "salty");
  ExerciseClient(c->get(), 20);
  // Bad blocks are refused, never stored.
  std::string bad = MakeBlock(4, 1);
  bad[bad.size() / 2] ^= 1;
  auto s = (*c)->Save({BlockKey{5, 5}}, {AsBytes(bad)}).get();
  EXPECT_EQ(s[0].code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(*(*c)->LookupPrefix({BlockKey{5, 5}}).get(), 0);
}

struct Cluster {
  std::vector<std::unique_ptr<BlockStore>> stores;
  std::vector<std::unique_ptr<StoreService>> services;
  std::vector<std::unique_ptr<UcxServer>> servers;
  explicit Cluster(int n) {
    setenv("UCX_TLS", "tcp", 1);
    setenv("UCX_NET_DEVICES", "lo", 1);
    for (int i = 0; i < n; ++i) {
      StoreOptions o;
      o.host_bytes = 8 << 20;
      stores.push_back(std::move(*BlockStore::Open(o, {{"t", "cluster-token-1", 8 << 20, "salt"}})));
      services.push_back(std::make_unique<StoreService>(stores.back().get(), Env::Default()));
      servers.push_back(std::move(*UcxServer::Start(services.back().get(), {})));
    }
  }
  KvClient::Options ClientOptions(int replicas) const {
    KvClient::Options o;
    for (const auto& s : servers) o.nodes.push_back({s->address(), 1.0});
    o.namespace_token = "cluster-token-1";
    o.namespace_salt = "salt";
    o.replicas = replicas;
    o.timeout = absl::Milliseconds(500);
    o.down_backoff = absl::Milliseconds(300);
    return o;
  }
};

TEST(KvClient, ThreeNodesSpreadKeysAndSurviveANodeLoss) {
  Cluster cl(3);
  auto c = KvClient::Create(cl.ClientOptions(1));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE((*c)->embedded());
  ExerciseClient(c->get(), 30);
  for (const auto& s : cl.stores) EXPECT_GT(s->Stats().puts, 0u) << "a node got no keys";
  // Save more, then one node dies: its keys become misses; the rest load;
  // nothing hangs past the deadline.
  std::vector<BlockKey> keys;
  std::vector<std::string> blocks;
  for (int i = 0; i < 30; ++i) keys.push_back({uint64_t(i), 99}), blocks.push_back(MakeBlock(4, 100 + i));
  for (const auto& s : (*c)->Save(keys, Spans(blocks)).get()) ASSERT_TRUE(s.ok());
  cl.servers[1]->Shutdown();
  std::vector<std::string> bufs(30, std::string(4096, '\0'));
  std::vector<absl::Span<uint8_t>> dst;
  for (auto& b : bufs) dst.push_back({reinterpret_cast<uint8_t*>(b.data()), b.size()});
  const auto t0 = std::chrono::steady_clock::now();
  auto loaded = (*c)->Load(keys, dst).get();
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 3.0);
  int hits = 0;
  for (int i = 0; i < 30; ++i) {
    if (loaded[i].ok()) {
      ++hits;
      EXPECT_EQ(bufs[i].substr(0, *loaded[i]), blocks[i]);
    } else {
      EXPECT_EQ(loaded[i].status().code(), absl::StatusCode::kNotFound);
    }
  }
  EXPECT_GT(hits, 0);
  EXPECT_LT(hits, 30);
  EXPECT_GT((*c)->stats().node_failures, 0u);
}

TEST(KvClient, ReplicasKeepEveryBlockThroughANodeLoss) {
  Cluster cl(3);
  auto c = KvClient::Create(cl.ClientOptions(2));
  ASSERT_TRUE(c.ok());
  std::vector<BlockKey> keys;
  std::vector<std::string> blocks;
  for (int i = 0; i < 24; ++i) keys.push_back({uint64_t(i), 7}), blocks.push_back(MakeBlock(4, 200 + i));
  for (const auto& s : (*c)->Save(keys, Spans(blocks)).get()) ASSERT_TRUE(s.ok());
  cl.servers[0]->Shutdown();
  EXPECT_EQ(*(*c)->LookupPrefix(keys).get(), 24);
  std::vector<std::string> bufs(24, std::string(4096, '\0'));
  std::vector<absl::Span<uint8_t>> dst;
  for (auto& b : bufs) dst.push_back({reinterpret_cast<uint8_t*>(b.data()), b.size()});
  auto loaded = (*c)->Load(keys, dst).get();
  for (int i = 0; i < 24; ++i) {
    ASSERT_TRUE(loaded[i].ok()) << i;
    EXPECT_EQ(bufs[i].substr(0, *loaded[i]), blocks[i]);
  }
}

TEST(KvClient, BadOptionsAndTokens) {
  KvClient::Options o;
  o.nodes = {{"127.0.0.1:1", 1.0}};
  EXPECT_EQ(KvClient::Create(o).status().code(), absl::StatusCode::kInvalidArgument);  // no token
  o.namespace_token = "x";
  o.replicas = 0;
  EXPECT_EQ(KvClient::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  Cluster cl(1);
  KvClient::Options w = cl.ClientOptions(1);
  w.namespace_token = "wrong-token-999";
  auto c = KvClient::Create(w);
  ASSERT_TRUE(c.ok());
  auto s = (*c)->Save({BlockKey{1, 2}}, {AsBytes(MakeBlock(4, 1))}).get();
  EXPECT_EQ(s[0].code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(cl.stores[0]->Stats().puts, 0u);
}

}  // namespace
}  // namespace kvrecall

namespace kvrecall {
namespace {

TEST(KvClient, GatherSequenceRowsAcrossBlocks) {
  auto c = KvClient::Create({});
  ASSERT_TRUE(c.ok());
  const Hash128 fp{1, 2};
  KvClient::SequenceRef seq{fp, "doc-7", 0, 2, 4, 2, 16};
  // Two 4-token sequence blocks (2 layers x 2 heads x 16 dims), f16.
  std::vector<std::string> blocks = {MakeBlock(4, 31), MakeBlock(4, 32)};
  std::vector<BlockKey> keys = {SequenceBlockKey(fp, "", "doc-7", 0, 2, 0), SequenceBlockKey(fp, "", "doc-7", 0, 2, 1)};
  for (const auto& s : (*c)->Save(keys, Spans(blocks)).get()) ASSERT_TRUE(s.ok());
  ASSERT_TRUE((*c)->RegisterBuffer({reinterpret_cast<uint8_t*>(blocks[0].data()), blocks[0].size()}).ok());
  const std::vector<int64_t> rows = {6, 1, 4, 3};
  auto got = (*c)->GatherSequence(seq, rows).get();
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 2u * 2 * 2 * 4 * 16);
  // Expected: decode each block fully and pick rows.
  std::vector<std::vector<float>> k(2, std::vector<float>(2 * 2 * 4 * 16)), v = k;
  for (int b = 0; b < 2; ++b) {
    auto view = ParseBlock(AsBytes(blocks[b]));
    ASSERT_TRUE((*MakeCodec("f16"))->Decode(*view, k[b].data(), v[b].data()).ok());
  }
  const size_t per = 2 * 2 * 4 * 16;
  for (size_t j = 0; j < rows.size(); ++j) {
    const int b = static_cast<int>(rows[j] / 4), t = static_cast<int>(rows[j] % 4);
    for (int lh = 0; lh < 4; ++lh)
      for (int e = 0; e < 16; ++e) {
        ASSERT_EQ((*got)[(lh * 4 + j) * 16 + e], k[b][(lh * 4 + t) * 16 + e]);
        ASSERT_EQ((*got)[per + (lh * 4 + j) * 16 + e], v[b][(lh * 4 + t) * 16 + e]);
      }
  }
  EXPECT_EQ((*c)->GatherSequence(seq, {9}).get().status().code(), absl::StatusCode::kNotFound);  // block 2 absent
  EXPECT_EQ((*c)->GatherSequence(seq, {-1}).get().status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvrecall

namespace kvrecall {
namespace {

// Near-data attention equals exact attention over the union of the rows,
// in the embedded store and split across three UCX nodes.
void CheckAttend(KvClient* c) {
  const int L = 2, H = 2, G = 2, d = 16, T = 8;
  std::vector<std::string> blocks;
  std::vector<BlockKey> keys;
  for (int b = 0; b < 3; ++b) blocks.push_back(RandomF16Block(L, H, d, T, 400 + b)), keys.push_back({uint64_t(b), 31337});
  for (const auto& s : c->Save(keys, Spans(blocks)).get()) ASSERT_TRUE(s.ok());
  const std::vector<std::vector<uint32_t>> rows = {{0, 3, 7}, {5}, {1, 2, 6, 4}};
  std::vector<KvClient::GatherItem> items;
  for (int b = 0; b < 3; ++b) items.push_back({keys[b], rows[b]});
  std::mt19937 rng(3);
  std::normal_distribution<float> n01;
  std::vector<float> q(size_t(L) * H * G * d);
  for (float& x : q) x = n01(rng);
  const float scale = 0.25f;
  auto res = c->Attend(items, G, scale, q, d).get();
  ASSERT_TRUE(res.ok()) << res.status();
  // Reference: decode every selected row, attend once over all of them.
  std::vector<std::vector<float>> ks(L * H), vs(L * H);
  for (int b = 0; b < 3; ++b) {
    auto view = ParseBlock(AsBytes(blocks[b]));
    std::vector<int> r(rows[b].begin(), rows[b].end());
    std::vector<float> k(size_t(L) * H * r.size() * d), v(k.size());
    ASSERT_TRUE((*MakeCodec("f16"))->DecodeRows(*view, r, k.data(), v.data()).ok());
    for (int lh = 0; lh < L * H; ++lh) {
      ks[lh].insert(ks[lh].end(), k.begin() + size_t(lh) * r.size() * d, k.begin() + size_t(lh + 1) * r.size() * d);
      vs[lh].insert(vs[lh].end(), v.begin() + size_t(lh) * r.size() * d, v.begin() + size_t(lh + 1) * r.size() * d);
    }
  }
  for (int lh = 0; lh < L * H; ++lh) {
    for (int g = 0; g < G; ++g) {
      const size_t qi = size_t(lh) * G + g;
      std::vector<float> ref(d), scratch(16);
      const float lse = AttendRows(q.data() + qi * d, ks[lh].data(), vs[lh].data(), 8, d, d, scale, ref.data(),
                                   scratch.data());
      EXPECT_NEAR(res->lse[qi], lse, 1e-5);
      for (int j = 0; j < d; ++j) EXPECT_NEAR(res->out[qi * d + j], ref[j], 1e-5);
    }
  }
  // A missing block is a miss; a bad row is the caller's error.
  items.push_back({BlockKey{99, 99}, {0}});
  EXPECT_EQ(c->Attend(items, G, scale, q, d).get().status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(c->Attend({{keys[0], {8}}}, G, scale, q, d).get().status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(KvClient, AttendEmbedded) {
  auto c = KvClient::Create({});
  ASSERT_TRUE(c.ok());
  CheckAttend(c->get());
}

TEST(KvClient, AttendAcrossThreeNodes) {
  Cluster cl(3);
  auto c = KvClient::Create(cl.ClientOptions(1));
  ASSERT_TRUE(c.ok());
  CheckAttend(c->get());
}

}  // namespace
}  // namespace kvrecall
