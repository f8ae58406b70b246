// The hot window: the CPU reference's ring semantics (runs everywhere), and
// the CUDA append against it on the same stream of batches (GPU only).
#include "gpu/hot_window.h"

#include <random>

#include <gtest/gtest.h>

namespace kvrecall {
namespace {

std::vector<uint16_t> Rows(int heads, int count, int d, int64_t first_pos) {
  std::vector<uint16_t> r(size_t(heads) * count * d);
  for (int h = 0; h < heads; ++h)
    for (int i = 0; i < count; ++i)
      for (int c = 0; c < d; ++c) r[(size_t(h) * count + i) * d + c] = static_cast<uint16_t>(h * 10007 + (first_pos + i) * 31 + c);
  return r;
}

TEST(HotWindowCpu, KeepsSinksAndTheRecentWindowAndEvictsTheOldestInOrder) {
  const HotWindowShape s{2, 8, 3, 5};
  HotWindowCpu w(s);
  std::mt19937 rng(1);
  int64_t pos = 0;
  std::vector<int64_t> evicted_all;
  while (pos < 40) {
    const int count = 1 + static_cast<int>(rng() % s.window);
    auto k = Rows(s.heads, count, s.head_dim, pos), v = Rows(s.heads, count, s.head_dim, pos + 1000);
    std::vector<uint16_t> ek(k.size()), ev(k.size());
    std::vector<int64_t> epos(count);
    w.Append(pos, count, k.data(), v.data(), ek.data(), ev.data(), epos.data());
    for (int i = 0; i < count; ++i) {
      if (epos[i] < 0) continue;
      evicted_all.push_back(epos[i]);
      // The evicted rows are that token's.
      const auto want = Rows(s.heads, 1, s.head_dim, epos[i]);
      for (int h = 0; h < s.heads; ++h)
        for (int c = 0; c < s.head_dim; ++c) ASSERT_EQ(ek[(size_t(h) * count + i) * s.head_dim + c], want[size_t(h) * s.head_dim + c]);
    }
    pos += count;
  }
  // Every non-sink token older than the window was evicted once, in order.
  ASSERT_EQ(int64_t(evicted_all.size()), pos - s.window - s.sinks);
  for (size_t i = 0; i < evicted_all.size(); ++i) EXPECT_EQ(evicted_all[i], int64_t(s.sinks + i));
  // What remains: sinks 0..2 and the last 5 positions.
  for (int64_t p : {int64_t{0}, int64_t{1}, int64_t{2}, pos - 5, pos - 4, pos - 3, pos - 2, pos - 1}) {
    const auto want = Rows(s.heads, 1, s.head_dim, p);
    for (int h = 0; h < s.heads; ++h)
      for (int c = 0; c < s.head_dim; ++c) EXPECT_EQ(w.k()[(size_t(h) * s.slots() + s.Slot(p)) * s.head_dim + c], want[size_t(h) * s.head_dim + c]);
  }
}

}  // namespace
}  // namespace kvrecall
