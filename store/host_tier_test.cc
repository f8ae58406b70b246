#include "store/host_tier.h"

#include <unistd.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/server_process.h"

namespace kvrecall {
namespace {

TEST(Arena, SizeClassesBoundWasteAndFreesCoalesce) {
  for (uint64_t b : {1ull, 256ull, 257ull, 1000ull, 4096ull, 65537ull, 1048600ull, 8388608ull}) {
    const uint64_t c = Arena::ClassOf(b);
    EXPECT_GE(c, b);
    EXPECT_LE(c, std::max<uint64_t>(Arena::kMinClass, b + b / 8 + 1)) << b;
  }
  auto a = Arena::Create(1 << 20);
  ASSERT_TRUE(a.ok());
  std::mt19937 rng(1);
  std::vector<std::pair<uint64_t, uint64_t>> live;
  for (int i = 0; i < 2000; ++i) {
    if (!live.empty() && (rng() % 2 || live.size() > 50)) {
      const size_t j = rng() % live.size();
      (*a)->Free(live[j].first, live[j].second);
      live.erase(live.begin() + j);
    } else {
      const uint64_t b = 100 + rng() % 30000;
      if (auto off = (*a)->Allocate(b)) {
        for (const auto& [o, s] : live) {
          EXPECT_TRUE(*off + Arena::ClassOf(b) <= o || o + Arena::ClassOf(s) <= *off) << "overlap";
        }
        live.push_back({*off, b});
      }
    }
  }
  for (const auto& [o, s] : live) (*a)->Free(o, s);
  EXPECT_EQ((*a)->used(), 0u);
  EXPECT_EQ((*a)->free_extents(), 1u);
  EXPECT_EQ((*a)->largest_free(), 1u << 20);
}

TEST(Arena, PrefaultBacksTheWholeArenaUpFront) {
  const uint64_t cap = 64 << 20;
  const uint64_t before = RssBytes(getpid());
  auto lazy = Arena::Create(cap);
  ASSERT_TRUE(lazy.ok());
  EXPECT_LT(RssBytes(getpid()), before + cap / 4) << "without prefault, untouched pages stay unbacked";
  auto eager = Arena::Create(cap, /*prefault=*/true);
  ASSERT_TRUE(eager.ok());
  EXPECT_GE(RssBytes(getpid()), before + cap) << "prefault backs every page";
  auto off = (*eager)->Allocate(1 << 20);
  ASSERT_TRUE(off.has_value());
  std::memset((*eager)->base() + *off, 7, 1 << 20);
  EXPECT_EQ((*eager)->base()[*off + 12345], 7);
}

TEST(Eviction, LruEvictsLeastRecentAndSkipsUnevictable) {
  auto p = MakeEvictionPolicy("lru", 1000);
  ASSERT_TRUE(p.ok());
  for (uint64_t id = 1; id <= 4; ++id) (*p)->Insert(id, id, 10);
  (*p)->Touch(1);
  EXPECT_EQ(*(*p)->Victim([](uint64_t) { return true; }), 2u);
  EXPECT_EQ(*(*p)->Victim([](uint64_t id) { return id != 3; }), 4u);
  EXPECT_EQ(*(*p)->Victim([](uint64_t) { return true; }), 3u);
  EXPECT_FALSE((*p)->Victim([](uint64_t) { return false; }).has_value());
  EXPECT_EQ((*p)->size(), 1u);
  EXPECT_FALSE(MakeEvictionPolicy("mru", 1).ok());
}

TEST(Eviction, S3FifoKeepsTheHotBlockThroughAScan) {
  // One hot block accessed between every insert of a long scan of one-hit
  // blocks: S3-FIFO keeps it (it moved to main), LRU keeps it too only
  // because it is touched; with a burst of scan inserts between touches
  // larger than the cache, LRU loses it and S3-FIFO does not.
  for (const char* name : {"lru", "s3fifo"}) {
    auto p = MakeEvictionPolicy(name, 100 * 10);
    uint64_t next = 2;
    (*p)->Insert(1, 1, 10);
    (*p)->Touch(1);
    (*p)->Touch(1);
    bool hot_evicted = false;
    for (int round = 0; round < 20; ++round) {
      for (int i = 0; i < 150; ++i) {  // a scan burst of 1.5x the cache
        (*p)->Insert(next, next, 10);
        ++next;
        while ((*p)->size() > 100) {
          const uint64_t v = *(*p)->Victim([](uint64_t) { return true; });
          if (v == 1) hot_evicted = true;
        }
      }
      if (!hot_evicted) (*p)->Touch(1);
    }
    if (std::string(name) == "lru") EXPECT_TRUE(hot_evicted);
    else EXPECT_FALSE(hot_evicted);
  }
}

std::string Fill(size_t n, char c) { return std::string(n, c); }

TEST(HostTier, TwoPhasePutReadEvictPin) {
  auto t = HostTier::Create(64 << 10, "lru");
  ASSERT_TRUE(t.ok());
  HostTier& tier = **t;
  std::vector<TierKey> demoted;
  auto demote = [&](const TierKey& k, absl::Span<const uint8_t> b) {
    demoted.push_back(k);
    EXPECT_EQ(b.size(), 10000u);
  };
  auto put = [&](uint64_t id, char c) {
    auto r = tier.Reserve(10000, nullptr, demote);
    if (!r.ok()) return r.status();
    std::string data = Fill(10000, c);
    std::copy(data.begin(), data.end(), tier.Data(*r).begin());
    EXPECT_FALSE(tier.Contains({0, BlockKey{id, 0}}));  // not visible before commit
    tier.Commit({0, BlockKey{id, 0}}, *r);
    return absl::OkStatus();
  };
  for (uint64_t i = 1; i <= 6; ++i) ASSERT_TRUE(put(i, char('a' + i)).ok());
  EXPECT_EQ(tier.stats().blocks, 6u);
  // A reader holds block 1: it survives the next inserts, which evict 2, 3...
  auto ref = tier.Acquire({0, BlockKey{1, 0}});
  ASSERT_TRUE(ref.has_value());
  ASSERT_TRUE(tier.Pin({0, BlockKey{2, 0}}));
  for (uint64_t i = 7; i <= 12; ++i) ASSERT_TRUE(put(i, char('a' + i)).ok());
  EXPECT_TRUE(tier.Contains({0, BlockKey{1, 0}}));
  EXPECT_TRUE(tier.Contains({0, BlockKey{2, 0}}));
  EXPECT_FALSE(tier.Contains({0, BlockKey{3, 0}}));
  EXPECT_EQ(ref->bytes[0], 'b');
  EXPECT_EQ(demoted.size(), tier.stats().evictions);
  EXPECT_LE(tier.stats().used_bytes, tier.capacity());
  // Erase while read: gone from the index, bytes still valid until release.
  EXPECT_TRUE(tier.Erase({0, BlockKey{1, 0}}));
  EXPECT_FALSE(tier.Contains({0, BlockKey{1, 0}}));
  EXPECT_EQ(ref->bytes[9999], 'b');
  tier.Release(*ref);
  // The freed slot takes one more block; then, everything pinned, a new put
  // cannot evict and gets RESOURCE_EXHAUSTED.
  ASSERT_TRUE(put(13, 'x').ok());
  const uint64_t evictions = tier.stats().evictions;
  for (uint64_t i = 1; i <= 13; ++i) tier.Pin({0, BlockKey{i, 0}});
  EXPECT_EQ(put(99, 'z').code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(tier.stats().evictions, evictions);
  EXPECT_EQ(tier.Reserve(1 << 20, nullptr, nullptr).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(HostTier, ScopedEvictionOnlyTouchesItsNamespace) {
  auto t = HostTier::Create(64 << 10, "s3fifo");
  HostTier& tier = **t;
  for (uint32_t ns : {1u, 2u}) {
    for (uint64_t i = 0; i < 3; ++i) {
      auto r = tier.Reserve(5000, nullptr, nullptr);
      ASSERT_TRUE(r.ok());
      tier.Commit({ns, BlockKey{i, 0}}, *r);
    }
  }
  int ns1 = 3;
  ASSERT_TRUE(tier.EvictUntil([](const TierKey& k) { return k.ns == 1; }, [&] { return ns1 <= 1; },
                              [&](const TierKey& k, absl::Span<const uint8_t>) {
                                EXPECT_EQ(k.ns, 1u);
                                --ns1;
                              }));
  for (uint64_t i = 0; i < 3; ++i) EXPECT_TRUE(tier.Contains({2, BlockKey{i, 0}}));
}

}  // namespace
}  // namespace kvrecall
