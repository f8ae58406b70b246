#include "codec/block_key.h"

#include <gtest/gtest.h>

#include "absl/container/flat_hash_set.h"

namespace kvrecall {
namespace {

std::vector<int32_t> Tokens(int n, int seed) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = (i * 7919 + seed * 104729) % 32000;
  return t;
}

TEST(BlockKey, SamePrefixSameKeys) {
  const Hash128 fp = Hash128Of("model");
  std::vector<int32_t> a = Tokens(64, 1), b = a;
  b.resize(48);
  b.insert(b.end(), {5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20});
  auto ka = ChainBlockKeys(fp, "ns", a, 16), kb = ChainBlockKeys(fp, "ns", b, 16);
  ASSERT_EQ(ka.size(), 4u);
  ASSERT_EQ(kb.size(), 4u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(ka[i], kb[i]) << i;
  EXPECT_NE(ka[3], kb[3]);
  // A partial tail block gets no key.
  a.resize(63);
  EXPECT_EQ(ChainBlockKeys(fp, "ns", a, 16).size(), 3u);
}

TEST(BlockKey, AnyChangedTokenChangesThatAndEveryLaterKey) {
  const Hash128 fp = Hash128Of("model");
  const std::vector<int32_t> base = Tokens(64, 2);
  const auto kb = ChainBlockKeys(fp, "ns", base, 16);
  for (int pos : {0, 15, 16, 40, 63}) {
    std::vector<int32_t> t = base;
    t[pos] += 1;
    const auto k = ChainBlockKeys(fp, "ns", t, 16);
    for (int blk = 0; blk < 4; ++blk) {
      if (blk < pos / 16) {
        EXPECT_EQ(k[blk], kb[blk]);
      } else {
        EXPECT_NE(k[blk], kb[blk]) << "pos " << pos << " block " << blk;
      }
    }
  }
}

TEST(BlockKey, SaltAndFingerprintSeparateNamespacesAndModels) {
  const std::vector<int32_t> t = Tokens(32, 3);
  const auto k = ChainBlockKeys(Hash128Of("m"), "tenant-a", t, 16);
  const auto other_salt = ChainBlockKeys(Hash128Of("m"), "tenant-b", t, 16);
  const auto other_model = ChainBlockKeys(Hash128Of("m2"), "tenant-a", t, 16);
  for (int i = 0; i < 2; ++i) {
    EXPECT_NE(k[i], other_salt[i]);
    EXPECT_NE(k[i], other_model[i]);
  }
  // Salt boundaries are length-prefixed: ("ab", tokens) != ("a", "b"+tokens).
  EXPECT_NE(ChainBlockKey({}, Hash128Of("m"), "ab", {1}),
            ChainBlockKey({}, Hash128Of("m"), "a", {1}));
}

TEST(BlockKey, NoCollisionsAcrossManyBlocks) {
  absl::flat_hash_set<Hash128> seen;
  const Hash128 fp = Hash128Of("m");
  for (int s = 0; s < 200; ++s) {
    for (const BlockKey& k : ChainBlockKeys(fp, "ns", Tokens(256, s), 16)) {
      EXPECT_TRUE(seen.insert(k).second);
    }
  }
  EXPECT_EQ(seen.size(), 200u * 16);
}

}  // namespace
}  // namespace kvrecall

namespace kvrecall {
namespace {

TEST(SequenceBlockKey, EveryFieldMatters) {
  const Hash128 fp{3, 4};
  const BlockKey k = SequenceBlockKey(fp, "salt", "seq", 0, 4, 7);
  EXPECT_EQ(k, SequenceBlockKey(fp, "salt", "seq", 0, 4, 7));
  EXPECT_NE(k, SequenceBlockKey(Hash128{3, 5}, "salt", "seq", 0, 4, 7));
  EXPECT_NE(k, SequenceBlockKey(fp, "pepper", "seq", 0, 4, 7));
  EXPECT_NE(k, SequenceBlockKey(fp, "salt", "seq2", 0, 4, 7));
  EXPECT_NE(k, SequenceBlockKey(fp, "salt", "seq", 1, 4, 7));
  EXPECT_NE(k, SequenceBlockKey(fp, "salt", "seq", 0, 3, 7));
  EXPECT_NE(k, SequenceBlockKey(fp, "salt", "seq", 0, 4, 8));
}

}  // namespace
}  // namespace kvrecall
