#include "client/placement.h"

#include <map>
#include <random>

#include <gtest/gtest.h>

namespace kvrecall {
namespace {

std::vector<BlockKey> Keys(int n) {
  std::mt19937_64 rng(1);
  std::vector<BlockKey> k(n);
  for (auto& x : k) x = {rng(), rng()};
  return k;
}

TEST(Placement, SharesFollowWeights) {
  Placement p({{"a:1", 1}, {"b:1", 1}, {"c:1", 2}});
  std::map<int, int> count;
  const auto keys = Keys(100000);
  for (const auto& k : keys) ++count[p.Owner(k)];
  EXPECT_NEAR(count[0] / 1e5, 0.25, 0.01);
  EXPECT_NEAR(count[1] / 1e5, 0.25, 0.01);
  EXPECT_NEAR(count[2] / 1e5, 0.50, 0.01);
  const std::vector<int> r = p.Rank(keys[0], 3);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_EQ(r[0], p.Owner(keys[0]));
  EXPECT_NE(r[0], r[1]);
  EXPECT_EQ(Placement({}).Owner(keys[0]), -1);
}

TEST(Placement, AJoinOrLeaveMovesOnlyThatNodesShare) {
  std::vector<PlacementNode> four = {{"n0", 1}, {"n1", 1}, {"n2", 1}, {"n3", 1}};
  std::vector<PlacementNode> five = four;
  five.push_back({"n4", 1});
  Placement p4(four), p5(five);
  const auto keys = Keys(100000);
  int moved = 0;
  for (const auto& k : keys) {
    const int a = p4.Owner(k), b = p5.Owner(k);
    if (four[a].id != five[b].id) {
      ++moved;
      EXPECT_EQ(five[b].id, "n4") << "a key moved between old nodes";
    }
  }
  EXPECT_LE(moved / 1e5, 1.0 / 5 + 0.01);  // <= 1/N + epsilon
  EXPECT_GE(moved / 1e5, 1.0 / 5 - 0.01);
  // n2 leaves: only its keys move.
  std::vector<PlacementNode> three = {four[0], four[1], four[3]};
  Placement p3(three);
  for (const auto& k : keys) {
    const std::string before = four[p4.Owner(k)].id, after = three[p3.Owner(k)].id;
    if (before != "n2") EXPECT_EQ(before, after);
  }
}

}  // namespace
}  // namespace kvrecall
