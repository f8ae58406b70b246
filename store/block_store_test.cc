#include "store/block_store.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <random>

#include <gtest/gtest.h>

#include "codec/attention.h"
#include "codec/codec.h"
#include "codec/random_block.h"
#include "codec/container.h"

namespace kvrecall {
namespace {

constexpr char kAdmin[] = "admin-secret-token";

std::string TempDir(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string dir = std::string(base ? base : "/tmp") + "/" + name + "_" + std::to_string(getpid());
  (void)std::system(("rm -rf '" + dir + "'").c_str());
  return dir;
}

// A valid f16 block of `tokens` tokens (2 layers x 2 heads x 64 dims): 1 KiB per token.
std::string MakeBlock(int tokens, uint64_t seed) {
  return RandomF16Block(2, 2, 64, tokens, seed);
}

absl::Span<const uint8_t> B(const std::string& s) { return AsBytes(s); }

std::unique_ptr<BlockStore> OpenStore(StoreOptions o) {
  o.admin_token = kAdmin;
  auto s = BlockStore::Open(o, {{"a", "token-of-a-123", 64ull << 20, "salt-a"}, {"b", "token-of-b-456", 64ull << 20, "salt-b"}});
  EXPECT_TRUE(s.ok()) << s.status();
  return std::move(*s);
}

// A 1 MiB host tier over a 64 MiB SSD tier: most blocks spill.
std::unique_ptr<BlockStore> OpenSmallHostStore(const std::string& name) {
  StoreOptions o;
  o.host_bytes = 1 << 20;
  o.ssd_path = TempDir(name);
  o.ssd_bytes = 64 << 20;
  return OpenStore(o);
}

TEST(BlockStore, TokensAndAdmin) {
  StoreOptions o;
  o.host_bytes = 4 << 20;
  auto s = OpenStore(o);
  EXPECT_EQ(s->Authenticate("").status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(s->Authenticate("token-of-c-789").status().code(), absl::StatusCode::kPermissionDenied);
  ASSERT_TRUE(s->Authenticate("token-of-a-123").ok());
  EXPECT_EQ(*s->Salt(*s->Authenticate("token-of-b-456")), "salt-b");
  const NamespaceConfig c{"c", "token-of-c-789", 1 << 20, "salt-c"};
  EXPECT_EQ(s->CreateNamespace("", c).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(s->CreateNamespace("guess", c).code(), absl::StatusCode::kPermissionDenied);
  ASSERT_TRUE(s->CreateNamespace(kAdmin, c).ok());
  EXPECT_EQ(s->CreateNamespace(kAdmin, c).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(s->Authenticate("token-of-c-789").ok());
  EXPECT_EQ(s->CreateNamespace(kAdmin, {"d", "short", 1, ""}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s->SetQuota(kAdmin, "nope", 10).code(), absl::StatusCode::kNotFound);
}

TEST(BlockStore, PutGetVerifiedAndNamespacesIsolated) {
  StoreOptions o;
  o.host_bytes = 8 << 20;
  auto s = OpenStore(o);
  const uint32_t a = *s->Authenticate("token-of-a-123"), b = *s->Authenticate("token-of-b-456");
  const std::string blk = MakeBlock(32, 1);
  const BlockKey key{11, 22};
  ASSERT_TRUE(s->Put(a, key, B(blk), false).ok());
  auto got = s->Get(a, key);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, blk);
  // Namespace b can not read, probe, delete or pin a's block.
  EXPECT_EQ(s->Get(b, key).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s->Exists(b, {&key, 1}).prefix, 0u);
  EXPECT_FALSE(*s->Delete(b, key));
  EXPECT_EQ(s->Pin(b, key).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(s->Get(a, key).ok());
  EXPECT_EQ(s->Exists(a, {&key, 1}).prefix, 1u);
  // Corrupted or truncated blocks are refused and change nothing.
  std::string bad = blk;
  bad[bad.size() / 2] ^= 1;
  EXPECT_EQ(s->Put(a, BlockKey{1, 1}, B(bad), false).code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(s->Put(a, BlockKey{1, 1}, B(blk.substr(0, 100)), false).ok());
  EXPECT_EQ(s->Get(a, BlockKey{1, 1}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s->Stats().rejected, 2u);
  // A buffer too small is an error and nothing is written past it.
  std::string small(100, 'x');
  EXPECT_EQ(s->Get(a, key, {reinterpret_cast<uint8_t*>(small.data()), 50}).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(small, std::string(100, 'x'));
  // Exists: longest present prefix + bitmap.
  const BlockKey chain[] = {key, BlockKey{5, 5}, key};
  const ExistsResult e = s->Exists(a, chain);
  EXPECT_EQ(e.prefix, 1u);
  EXPECT_EQ(e.present, (std::vector<bool>{true, false, true}));
  // Unknown namespace ids are refused.
  EXPECT_EQ(s->Put(999, key, B(blk), false).code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(s->Put(a, key, B(blk), true).code(), absl::StatusCode::kFailedPrecondition);  // durable without SSD
}

TEST(BlockStore, ThreeTimesTheBudgetStaysBoundedAndHits) {
  StoreOptions o;
  o.host_bytes = 4 << 20;
  for (const char* policy : {"lru", "s3fifo"}) {
    o.eviction = policy;
    auto s = OpenStore(o);
    const uint32_t a = *s->Authenticate("token-of-a-123");
    const std::string blk = MakeBlock(64, 3);  // ~64 KiB
    const int n = static_cast<int>(3 * o.host_bytes / blk.size());
    for (int i = 0; i < n; ++i) {
      ASSERT_TRUE(s->Put(a, BlockKey{uint64_t(i), 0}, B(blk), false).ok()) << i;
      ASSERT_LE(s->Stats().host.used_bytes, o.host_bytes);
      // A block put a moment ago is still there.
      if (i >= 4) ASSERT_TRUE(s->Get(a, BlockKey{uint64_t(i - 3), 0}).ok()) << policy << " " << i;
    }
    const StoreStats st = s->Stats();
    EXPECT_GT(st.host.evictions, 0u);
    EXPECT_LE(st.host.used_bytes, o.host_bytes);
    EXPECT_EQ(st.misses, 0u);
  }
}

TEST(BlockStore, QuotaEvictsOnlyTheOwnerAndBoundsPins) {
  StoreOptions o;
  o.host_bytes = 16 << 20;
  o.admin_token = kAdmin;
  auto s = *BlockStore::Open(o, {{"small", "token-small-1", 512 << 10, ""}, {"big", "token-big-22", 8 << 20, ""}});
  const uint32_t sm = *s->Authenticate("token-small-1"), bg = *s->Authenticate("token-big-22");
  const std::string blk = MakeBlock(64, 4);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(s->Put(bg, BlockKey{uint64_t(i), 1}, B(blk), false).ok());
  for (int i = 0; i < 30; ++i) ASSERT_TRUE(s->Put(sm, BlockKey{uint64_t(i), 2}, B(blk), false).ok());
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(s->Get(bg, BlockKey{uint64_t(i), 1}).ok()) << "other tenant evicted";
  for (const NamespaceStats& n : s->Stats().namespaces) EXPECT_LE(n.host_bytes, n.quota_bytes) << n.name;
  // Pin every block the namespace still has: its quota is then all pinned.
  int pinned = 0;
  for (int i = 0; i < 30; ++i) {
    const absl::Status st = s->Pin(sm, BlockKey{uint64_t(i), 2});
    if (st.code() == absl::StatusCode::kNotFound) continue;  // evicted earlier
    ASSERT_TRUE(st.ok()) << st;
    ++pinned;
  }
  EXPECT_GT(pinned, 0);
  EXPECT_EQ(s->SetQuota(kAdmin, "small", 64 << 10).code(), absl::StatusCode::kFailedPrecondition);
  // A full quota of pinned blocks: a new put can not evict them.
  EXPECT_EQ(s->Put(sm, BlockKey{99, 2}, B(blk), false).code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(s->Unpin(sm, BlockKey{29, 2}).ok());
  EXPECT_TRUE(s->Put(sm, BlockKey{99, 2}, B(blk), false).ok());
  EXPECT_EQ(s->Unpin(sm, BlockKey{12345, 2}).code(), absl::StatusCode::kNotFound);
}

TEST(BlockStore, SsdDemotionPromotionDurabilityAndCorruption) {
  const std::string dir = TempDir("store_ssd");
  StoreOptions o;
  o.host_bytes = 1 << 20;
  o.ssd_path = dir;
  o.ssd_bytes = 64 << 20;
  const std::string blk = MakeBlock(64, 5);
  {
    auto s = OpenStore(o);
    const uint32_t a = *s->Authenticate("token-of-a-123");
    for (int i = 0; i < 40; ++i) ASSERT_TRUE(s->Put(a, BlockKey{uint64_t(i), 3}, B(blk), false).ok());
    ASSERT_TRUE(s->Put(a, BlockKey{1000, 3}, B(blk), true).ok());  // durable
    ASSERT_TRUE(s->Flush().ok());  // pending write-back demotions reach the SSD
    EXPECT_GT(s->Stats().demotions, 0u);
    // Block 0 was demoted: served from SSD, then promoted back.
    auto got = s->Get(a, BlockKey{0, 3});
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, blk);
    EXPECT_EQ(s->Stats().hits_ssd, 1u);
    EXPECT_EQ(s->Stats().promotions, 1u);
    ASSERT_TRUE(s->Get(a, BlockKey{0, 3}).ok());
    EXPECT_EQ(s->Stats().hits_host, 1u);
  }
  {
    auto s = OpenStore(o);  // a restart: the durable block is back
    const uint32_t a = *s->Authenticate("token-of-a-123");
    auto got = s->Get(a, BlockKey{1000, 3});
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, blk);
  }
  // Damage every blob file: reads are misses or DATA_LOSS, never wrong bytes.
  DIR* d = opendir(dir.c_str());
  ASSERT_NE(d, nullptr);
  int damaged = 0;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() < 5 || name.substr(name.size() - 5) != ".blob") continue;
    std::fstream f(dir + "/" + name, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(0, std::ios::end);
    const std::streamoff size = f.tellg();
    for (std::streamoff off = 64; off < size; off += 4096) {
      f.seekp(off);
      f.put('\x5a');
    }
    ++damaged;
  }
  closedir(d);
  ASSERT_GT(damaged, 0);
  o.host_bytes = 1 << 20;
  auto s = OpenStore(o);
  const uint32_t a = *s->Authenticate("token-of-a-123");
  int served = 0;
  for (int i = 0; i <= 1000; i = i < 40 ? i + 1 : 1000 + (i == 1000)) {
    auto got = s->Get(a, BlockKey{uint64_t(i), 3});
    if (got.ok()) {
      EXPECT_EQ(*got, blk);
      ++served;
    } else {
      EXPECT_TRUE(got.status().code() == absl::StatusCode::kNotFound ||
                  got.status().code() == absl::StatusCode::kDataLoss)
          << got.status();
    }
    if (i == 1001) break;
  }
  EXPECT_LT(served, 41);
}

TEST(BlockStore, DemotionsRunOffTheRequestPathAndDeletesWin) {
  auto s = OpenSmallHostStore("store_demote");
  const uint32_t a = *s->Authenticate("token-of-a-123");
  const std::string blk = MakeBlock(64, 9);
  for (int i = 0; i < 60; ++i) ASSERT_TRUE(s->Put(a, BlockKey{uint64_t(i), 4}, B(blk), false).ok());
  // Every block is readable right away: from RAM, the demotion queue or the SSD.
  for (int i = 0; i < 60; ++i) {
    auto got = s->Get(a, BlockKey{uint64_t(i), 4});
    ASSERT_TRUE(got.ok()) << i << ": " << got.status();
    EXPECT_EQ(*got, blk);
  }
  // A deleted block stays deleted even if its demotion was queued.
  for (int i = 0; i < 60; ++i) ASSERT_TRUE(s->Delete(a, BlockKey{uint64_t(i), 4}).ok());
  ASSERT_TRUE(s->Flush().ok());
  for (int i = 0; i < 60; ++i) {
    EXPECT_EQ(s->Get(a, BlockKey{uint64_t(i), 4}).status().code(), absl::StatusCode::kNotFound) << i;
  }
  EXPECT_EQ(s->Stats().ssd.blocks, 0u);
  EXPECT_GT(s->Stats().host.evictions, 0u);
  EXPECT_EQ(s->Stats().demotions_dropped, 0u);  // a full queue waits, it does not drop
}

// Blocks promoted from the SSD tier are clean: evicting them again writes
// nothing back (the SSD copy is still there), and they stay readable.
TEST(BlockStore, PromotedBlocksAreNotWrittenBackAgain) {
  auto s = OpenSmallHostStore("store_clean");
  const uint32_t a = *s->Authenticate("token-of-a-123");
  std::vector<std::string> blocks;
  for (int i = 0; i < 80; ++i) {
    blocks.push_back(MakeBlock(64, 100 + i));
    ASSERT_TRUE(s->Put(a, BlockKey{uint64_t(i), 5}, B(blocks.back()), false).ok());
  }
  ASSERT_TRUE(s->Flush().ok());
  EXPECT_GT(s->Stats().demotions, 0u);
  auto read_all = [&] {
    for (int i = 0; i < 80; ++i) {
      auto got = s->Get(a, BlockKey{uint64_t(i), 5});
      ASSERT_TRUE(got.ok()) << i << ": " << got.status();
      ASSERT_EQ(*got, blocks[i]);
    }
    ASSERT_TRUE(s->Flush().ok());
  };
  read_all();  // evicts the blocks never demoted (written back now) for promoted ones
  const StoreStats before = s->Stats();
  read_all();  // evicts only promoted, clean blocks
  const StoreStats after = s->Stats();
  EXPECT_GT(after.promotions, before.promotions);
  EXPECT_GT(after.host.evictions, before.host.evictions);
  EXPECT_EQ(after.demotions, before.demotions) << "promoted (clean) blocks were written back again";
  EXPECT_EQ(after.demotions_dropped, 0u);
}

// Row reads promote an SSD block only when it is read again within a
// host tier's worth of other row reads: a scan over more blocks than the
// host tier holds copies nothing into RAM (it would be evicted before its
// next use), a block read twice in a row is promoted and then hits RAM.
TEST(BlockStore, RowReadsPromoteOnlyOnASecondTouch) {
  auto s = OpenSmallHostStore("store_ghost");
  const uint32_t a = *s->Authenticate("token-of-a-123");
  for (int i = 0; i < 80; ++i) ASSERT_TRUE(s->Put(a, BlockKey{uint64_t(i), 6}, B(MakeBlock(64, 300 + i)), false).ok());
  ASSERT_TRUE(s->Flush().ok());
  const std::vector<int> rows = {1, 30, 63};
  const StoreStats s0 = s->Stats();
  for (int pass = 0; pass < 2; ++pass)
    for (int i = 0; i < 80; ++i) ASSERT_TRUE(s->GatherRows(a, BlockKey{uint64_t(i), 6}, rows).ok()) << i;
  const StoreStats s1 = s->Stats();
  EXPECT_GT(s1.hits_ssd, s0.hits_ssd + 100);
  EXPECT_EQ(s1.promotions, s0.promotions) << "a scan larger than the host tier was promoted";
  ASSERT_TRUE(s->GatherRows(a, BlockKey{0, 6}, rows).ok());
  ASSERT_TRUE(s->GatherRows(a, BlockKey{0, 6}, rows).ok());
  const StoreStats s2 = s->Stats();
  EXPECT_EQ(s2.promotions, s1.promotions + 1);
  auto got = s->GatherRows(a, BlockKey{0, 6}, rows);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(s->Stats().hits_host, s2.hits_host + 1);
  // Whole-block reads still promote on the first touch.
  ASSERT_TRUE(s->Get(a, BlockKey{1, 6}).ok());
  EXPECT_EQ(s->Stats().promotions, s2.promotions + 1);
}

// A sequence a bit larger than the host tier, scanned step after step: its
// SSD blocks are few enough to fit a ghost list of the host tier's size, but
// each is read again only after more than the host tier's bytes of reads, so
// promoting it would only churn the host tier. Nothing is promoted.
TEST(BlockStore, RowReadsDoNotPromoteACyclicScanLargerThanTheHostTier) {
  auto s = OpenSmallHostStore("store_cyclic");
  const uint32_t a = *s->Authenticate("token-of-a-123");
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(s->Put(a, BlockKey{uint64_t(i), 7}, B(MakeBlock(64, 400 + i)), false).ok());
  ASSERT_TRUE(s->Flush().ok());
  const std::vector<int> rows = {2, 40};
  const StoreStats s0 = s->Stats();
  for (int pass = 0; pass < 3; ++pass)
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(s->GatherRows(a, BlockKey{uint64_t(i), 7}, rows).ok()) << i;
  const StoreStats s1 = s->Stats();
  EXPECT_GT(s1.hits_ssd, s0.hits_ssd);
  EXPECT_GT(s1.hits_host, s0.hits_host);
  EXPECT_EQ(s1.promotions, s0.promotions);
  // A block read again soon is promoted.
  ASSERT_TRUE(s->GatherRows(a, BlockKey{0, 7}, rows).ok());
  if (s->Stats().hits_ssd > s1.hits_ssd) {  // block 0 was on the SSD
    ASSERT_TRUE(s->GatherRows(a, BlockKey{0, 7}, rows).ok());
    EXPECT_EQ(s->Stats().promotions, s1.promotions + 1);
  }
}

// One request over many blocks (a decode step's Attend) is a scan: however
// its blocks' order changes between steps, nothing is promoted. Row reads of
// the same blocks one request at a time, in reversed order the second time,
// are reused within the host tier's capacity and promoted.
TEST(BlockStore, ScansNeverPromote) {
  auto s = OpenSmallHostStore("store_scan");
  const uint32_t a = *s->Authenticate("token-of-a-123");
  std::vector<BlockStore::AttendItem> items;
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(s->Put(a, BlockKey{uint64_t(i), 8}, B(MakeBlock(64, 500 + i)), false).ok());
    items.push_back({BlockKey{uint64_t(i), 8}, {3, 33}});
  }
  ASSERT_TRUE(s->Flush().ok());
  const std::vector<float> q(2 * 2 * 1 * 64, 0.1f);
  std::vector<float> out, lse;
  const StoreStats s0 = s->Stats();
  for (int pass = 0; pass < 4; ++pass) {
    ASSERT_TRUE(s->Attend(a, items, 1, 0.125f, q, &out, &lse).ok());
    std::reverse(items.begin(), items.end());
  }
  const StoreStats s1 = s->Stats();
  EXPECT_GT(s1.hits_ssd, s0.hits_ssd);
  EXPECT_EQ(s1.promotions, s0.promotions);
  std::reverse(items.begin(), items.end());  // the oldest blocks (on the SSD) last, then first
  for (int pass = 0; pass < 2; ++pass) {
    for (const BlockStore::AttendItem& it : items) {
      ASSERT_TRUE(s->GatherRows(a, it.key, std::vector<int>{3, 33}).ok());
    }
    std::reverse(items.begin(), items.end());
  }
  EXPECT_GT(s->Stats().promotions, s1.promotions);
}

TEST(BlockStore, GatherRowsDecodesTheBlocksRows) {
  StoreOptions o;
  o.host_bytes = 4 << 20;
  auto s = OpenStore(o);
  const uint32_t a = *s->Authenticate("token-of-a-123");
  const std::string blk = MakeBlock(16, 7);
  ASSERT_TRUE(s->Put(a, BlockKey{7, 7}, B(blk), false).ok());
  auto view = ParseBlock(B(blk));
  std::vector<float> k(2 * 2 * 16 * 64), v(k.size());
  ASSERT_TRUE((*MakeCodec("f16"))->Decode(*view, k.data(), v.data()).ok());
  const std::vector<int> rows = {15, 2};
  auto got = s->GatherRows(a, BlockKey{7, 7}, rows);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 2u * 4 * 2 * 64);
  for (int h = 0; h < 4; ++h)
    for (int r = 0; r < 2; ++r)
      for (int c = 0; c < 64; ++c) {
        ASSERT_EQ((*got)[(h * 2 + r) * 64 + c], k[(h * 16 + rows[r]) * 64 + c]);
        ASSERT_EQ((*got)[4 * 2 * 64 + (h * 2 + r) * 64 + c], v[(h * 16 + rows[r]) * 64 + c]);
      }
  EXPECT_EQ(s->GatherRows(a, BlockKey{7, 7}, std::vector<int>{16}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s->GatherRows(a, BlockKey{8, 8}, rows).status().code(), absl::StatusCode::kNotFound);
}

// Row reads of a block with chunk checksums verify only the chunks they read:
// damage elsewhere does not stop them, damage under a read row is DATA_LOSS
// inside the store (the copy dropped and counted, then a miss here, where no
// SSD copy exists), never wrong rows.
TEST(BlockStore, RowReadsVerifyTheChunksTheyRead) {
  StoreOptions o;
  o.host_bytes = 4 << 20;
  auto s = OpenStore(o);
  const uint32_t a = *s->Authenticate("token-of-a-123");
  const std::string blk = RandomF16Block(2, 2, 64, 16, 9, /*chunk_shift=*/8);
  ASSERT_TRUE(s->Put(a, BlockKey{9, 9}, B(blk), false).ok());
  auto view = ParseBlock(B(blk));
  ASSERT_TRUE(view.ok());
  std::vector<float> k(2 * 2 * 16 * 64), v(k.size());
  ASSERT_TRUE((*MakeCodec("f16"))->Decode(*view, k.data(), v.data()).ok());
  // Damage token 3's K row of head 0 in the host copy (tests reach into the arena).
  {
    auto lease = s->Lease(a, BlockKey{9, 9});
    ASSERT_TRUE(lease.ok());
    const uint8_t* row3 = lease->view().sections[1].data() + 3 * 64 * 2;
    const_cast<uint8_t*>(row3)[5] ^= 0x40;
  }
  const uint64_t failures = s->Stats().checksum_failures;
  const std::vector<int> far = {12, 14};  // another chunk: 128-byte rows, 2 per 256-byte chunk
  auto got = s->GatherRows(a, BlockKey{9, 9}, far);
  ASSERT_TRUE(got.ok()) << got.status();
  for (int h = 0; h < 4; ++h)
    for (int r = 0; r < 2; ++r)
      for (int c = 0; c < 64; ++c) ASSERT_EQ((*got)[(h * 2 + r) * 64 + c], k[(h * 16 + far[r]) * 64 + c]);
  EXPECT_EQ(s->Stats().checksum_failures, failures);
  // Token 2 shares token 3's chunk: refused, counted, and the bad copy dropped.
  EXPECT_EQ(s->GatherRows(a, BlockKey{9, 9}, std::vector<int>{2}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s->Stats().checksum_failures, failures + 1);
  EXPECT_EQ(s->GatherRows(a, BlockKey{9, 9}, far).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s->Stats().checksum_failures, failures + 1);
  // Rows past the block are refused before anything is read.
  ASSERT_TRUE(s->Put(a, BlockKey{9, 10}, B(blk), false).ok());
  EXPECT_EQ(s->GatherRows(a, BlockKey{9, 10}, std::vector<int>{16}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Attend over many blocks (each opened while the previous one is read):
// exactly attention over the union of the picked rows; a damaged row in a
// later block, a missing block or a row past a block's end fails the whole
// request with the same codes as a single-block read, never a wrong result.
TEST(BlockStore, AttendOverManyBlocksIsAttentionOverTheirRows) {
  StoreOptions o;
  o.host_bytes = 8 << 20;
  auto s = OpenStore(o);
  const uint32_t a = *s->Authenticate("token-of-a-123");
  constexpr int kBlocks = 12, kTokens = 32, d = 64, G = 2;
  std::vector<BlockStore::AttendItem> items;
  std::vector<float> k_all, v_all;  // the picked rows, in item order
  std::mt19937 rng(5);
  for (int b = 0; b < kBlocks; ++b) {
    const std::string blk = RandomF16Block(1, 1, d, kTokens, 600 + b, /*chunk_shift=*/8);
    ASSERT_TRUE(s->Put(a, BlockKey{uint64_t(b), 11}, B(blk), false).ok());
    auto view = ParseBlock(B(blk));
    ASSERT_TRUE(view.ok());
    std::vector<float> k(kTokens * d), v(k.size());
    ASSERT_TRUE((*MakeCodec("f16"))->Decode(*view, k.data(), v.data()).ok());
    std::vector<int> rows;
    for (int t = 0; t < kTokens; ++t) {
      if (rng() % 4 == 0) rows.push_back(t);
    }
    if (rows.empty()) rows.push_back(b % kTokens);
    for (int t : rows) {
      k_all.insert(k_all.end(), k.begin() + t * d, k.begin() + (t + 1) * d);
      v_all.insert(v_all.end(), v.begin() + t * d, v.begin() + (t + 1) * d);
    }
    items.push_back({BlockKey{uint64_t(b), 11}, rows});
  }
  std::vector<float> q(G * d);
  for (float& x : q) x = std::uniform_real_distribution<float>(-1, 1)(rng);
  const int64_t n = static_cast<int64_t>(k_all.size() / d);
  std::vector<float> want(G * d), want_lse(G);
  AttendGroup(q.data(), G, k_all.data(), v_all.data(), n, d, d, 0.125f, want.data(), want_lse.data());
  std::vector<float> out, lse;
  ASSERT_TRUE(s->Attend(a, items, G, 0.125f, q, &out, &lse).ok());
  ASSERT_EQ(out.size(), want.size());
  for (int g = 0; g < G; ++g) {
    EXPECT_NEAR(lse[g], want_lse[g], 1e-4f);
    for (int c = 0; c < d; ++c) EXPECT_NEAR(out[g * d + c], want[g * d + c], 1e-5f) << g << " " << c;
  }
  // The same rows gathered in one pass: per block, what GatherRows of that block gives.
  {
    std::vector<BlockStore::AttendItem> g = items;
    g[3].rows.push_back(kTokens);           // past the end: its own error
    g.insert(g.begin() + 6, {BlockKey{98, 11}, {0}});  // missing: its own miss
    const auto got = s->GatherRows(a, g, /*max_bytes=*/1 << 20);
    ASSERT_EQ(got.size(), g.size());
    for (size_t i = 0; i < g.size(); ++i) {
      const auto one = s->GatherRows(a, g[i].key, g[i].rows);
      ASSERT_EQ(got[i].status().code(), one.status().code()) << i;
      if (one.ok()) EXPECT_EQ(*got[i], *one) << i;
    }
    EXPECT_EQ(got[3].status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(got[6].status().code(), absl::StatusCode::kNotFound);
    EXPECT_TRUE(got[7].ok());
    // A limit that holds blocks 0 and 1's rows: the rest are refused unread,
    // except a later block small enough to fit what is left.
    const uint64_t two = (got[0]->size() + got[1]->size()) * sizeof(float);
    std::vector<BlockStore::AttendItem> h = {items[0], items[1], items[2], {items[4].key, {0}}};
    const uint64_t one_row = 2 * d * sizeof(float);
    const auto capped = s->GatherRows(a, h, two + one_row);
    ASSERT_EQ(capped.size(), 4u);
    EXPECT_TRUE(capped[0].ok() && capped[1].ok());
    ASSERT_GT(items[2].rows.size(), 1u);
    EXPECT_EQ(capped[2].status().code(), absl::StatusCode::kResourceExhausted);
    EXPECT_TRUE(capped[3].ok());
    EXPECT_EQ(s->GatherRows(a, h, 0)[0].status().code(), absl::StatusCode::kResourceExhausted);
  }
  // A row past block 5's end.
  std::vector<BlockStore::AttendItem> bad = items;
  bad[5].rows.push_back(kTokens);
  EXPECT_EQ(s->Attend(a, bad, G, 0.125f, q, &out, &lse).code(), absl::StatusCode::kInvalidArgument);
  // A missing last block.
  bad = items;
  bad.push_back({BlockKey{99, 11}, {0}});
  EXPECT_EQ(s->Attend(a, bad, G, 0.125f, q, &out, &lse).code(), absl::StatusCode::kNotFound);
  // Damage a picked row of block 7 in the host copy: DATA_LOSS inside the
  // store (counted, the copy dropped), a miss for the caller.
  {
    auto lease = s->Lease(a, BlockKey{7, 11});
    ASSERT_TRUE(lease.ok());
    const uint8_t* row = lease->view().sections[1].data() + items[7].rows[0] * d * 2;
    const_cast<uint8_t*>(row)[3] ^= 0x10;
  }
  const uint64_t failures = s->Stats().checksum_failures;
  EXPECT_EQ(s->Attend(a, items, G, 0.125f, q, &out, &lse).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s->Stats().checksum_failures, failures + 1);
  // Without block 7 the rest still attends.
  items.erase(items.begin() + 7);
  EXPECT_TRUE(s->Attend(a, items, G, 0.125f, q, &out, &lse).ok());
}

}  // namespace
}  // namespace kvrecall
