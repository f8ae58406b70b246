#include "codec/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "codec/half.h"

namespace kvrecall {
namespace {

TEST(Attention, HandComputedCase) {
  // q = (1, 0); keys (0,0) and (ln 3, 0), scale 1 -> weights 1/4, 3/4.
  const float q[2] = {1, 0};
  const float k[4] = {0, 0, std::log(3.0f), 0};
  const float v[4] = {4, 0, 0, 8};
  float out[2], scratch[2];
  const float lse = AttendRows(q, k, v, 2, 2, 2, 1.0f, out, scratch);
  EXPECT_NEAR(out[0], 1.0f, 1e-6);
  EXPECT_NEAR(out[1], 6.0f, 1e-6);
  EXPECT_NEAR(lse, std::log(4.0f), 1e-6);
  EXPECT_TRUE(std::isinf(AttendRows(q, k, v, 0, 2, 2, 1.0f, out, scratch)));
  EXPECT_EQ(out[0], 0.0f);
}

// One pass for a query group equals G separate passes, across chunk
// boundaries, with a row stride, for peaked logits (the running max moves)
// and for no rows at all.
TEST(Attention, GroupPassEqualsSeparatePasses) {
  std::mt19937 rng(7);
  std::normal_distribution<float> n01;
  for (int G : {1, 3, 4, 5}) {
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{511}, int64_t{513}, int64_t{3000}}) {
      const int d = 64, stride = 80;
      std::vector<float> q(size_t(G) * d), k(size_t(std::max<int64_t>(n, 1)) * stride), v(k.size());
      for (auto* x : {&q, &k, &v}) for (float& f : *x) f = n01(rng);
      for (int64_t r = 0; r < n; r += 997) k[size_t(r) * stride] = 40.0f;  // a few peaks, late ones larger
      for (int g = 0; g < G; ++g) q[size_t(g) * d] = 1.0f + g;
      std::vector<float> out(size_t(G) * d), lse(G), ref(d), scratch(std::max<int64_t>(n, 1));
      AttendGroup(q.data(), G, k.data(), v.data(), n, d, stride, 0.125f, out.data(), lse.data());
      for (int g = 0; g < G; ++g) {
        const float lr = AttendRows(q.data() + size_t(g) * d, k.data(), v.data(), n, d, stride, 0.125f, ref.data(),
                                    scratch.data());
        if (n == 0) {
          EXPECT_TRUE(std::isinf(lse[g]) && lse[g] < 0);
        } else {
          EXPECT_NEAR(lse[g], lr, 1e-4 * std::max(1.0f, std::abs(lr))) << "G=" << G << " n=" << n;
        }
        for (int c = 0; c < d; ++c) EXPECT_NEAR(out[size_t(g) * d + c], ref[c], 1e-5) << "G=" << G << " n=" << n;
      }
    }
  }
}

// Softmax weights over a wide range of logits (e^x down to and past float's
// smallest normal, where the kernel's vector exp gives 0 and std::exp a
// denormal) and over a flat range: the kernel stays within float rounding of
// the scalar reference.
TEST(Attention, WideAndFlatLogitRanges) {
  const int d = 8;
  for (float spread : {0.001f, 1.0f, 30.0f, 200.0f}) {
    for (int64_t n : {int64_t{7}, int64_t{9}, int64_t{300}}) {
      std::vector<float> q(d, 0.0f), k(size_t(n) * d, 0.0f), v(size_t(n) * d), scratch(n), ref(d), out(d);
      q[0] = 1.0f;
      for (int64_t r = 0; r < n; ++r) {
        k[size_t(r) * d] = -spread * float(r) / float(n - 1);  // logits 0 down to -spread
        for (int c = 0; c < d; ++c) v[size_t(r) * d + c] = std::sin(0.3f * float(r) + float(c));
      }
      float lse = 0;
      AttendGroup(q.data(), 1, k.data(), v.data(), n, d, d, 1.0f, out.data(), &lse);
      const float lr = AttendRows(q.data(), k.data(), v.data(), n, d, d, 1.0f, ref.data(), scratch.data());
      EXPECT_NEAR(lse, lr, 2e-6f * std::max(1.0f, std::abs(lr))) << spread << " " << n;
      for (int c = 0; c < d; ++c) EXPECT_NEAR(out[c], ref[c], 2e-6f) << spread << " " << n << " " << c;
    }
  }
}

// f16 rows read in place by index give bit for bit what converting the
// picked rows to f32 and calling AttendGroup gives: any G, a head_dim that is
// not a multiple of 8, rows repeated and out of order, and more rows than
// one chunk (512) and one V block (64).
TEST(Attention, HalfRowsInPlaceEqualConvertedRows) {
  std::mt19937 rng(11);
  std::normal_distribution<float> n01;
  for (int G : {1, 4, 5}) {
    for (int d : {8, 20, 128}) {
      for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{65}, int64_t{600}}) {
        const int tokens = 700, row_bytes = 2 * d + 6;  // rows padded: a stride that is not d
        std::vector<uint8_t> kb(size_t(tokens) * row_bytes + 1), vb(kb.size());
        for (auto* b : {&kb, &vb}) {
          for (int t = 0; t < tokens; ++t) {
            for (int c = 0; c < d; ++c) {
              const uint16_t h = FloatToHalf(n01(rng) * (t % 97 == 0 ? 8.0f : 1.0f));
              std::memcpy(b->data() + 1 + size_t(t) * row_bytes + 2 * c, &h, 2);  // odd address: unaligned
            }
          }
        }
        std::vector<int> rows(n);
        for (int& r : rows) r = std::uniform_int_distribution<int>(0, tokens - 1)(rng);
        std::vector<float> q(size_t(G) * d), k(size_t(std::max<int64_t>(n, 1)) * d), v(k.size());
        for (float& f : q) f = n01(rng);
        for (int64_t i = 0; i < n; ++i) {
          for (int c = 0; c < d; ++c) {
            uint16_t hk, hv;
            std::memcpy(&hk, kb.data() + 1 + size_t(rows[i]) * row_bytes + 2 * c, 2);
            std::memcpy(&hv, vb.data() + 1 + size_t(rows[i]) * row_bytes + 2 * c, 2);
            k[size_t(i) * d + c] = HalfToFloat(hk), v[size_t(i) * d + c] = HalfToFloat(hv);
          }
        }
        std::vector<float> out(size_t(G) * d), lse(G), ref(out.size()), ref_lse(G);
        AttendGroup(q.data(), G, k.data(), v.data(), n, d, d, 0.09f, ref.data(), ref_lse.data());
        AttendGroupHalfRows(q.data(), G, kb.data() + 1, vb.data() + 1, rows.data(), n, d, row_bytes, 0.09f,
                            out.data(), lse.data());
        EXPECT_EQ(out, ref) << "G=" << G << " d=" << d << " n=" << n;
        for (int g = 0; g < G; ++g) {
          EXPECT_EQ(FloatBits(lse[g]), FloatBits(ref_lse[g])) << "G=" << G << " d=" << d << " n=" << n;
        }
      }
    }
  }
}

TEST(Attention, MergeOfSplitsEqualsTheWhole) {
  std::mt19937 rng(1);
  std::normal_distribution<float> n01;
  const int n = 37, d = 16;
  std::vector<float> q(d), k(n * d), v(n * d), scratch(n);
  for (auto* x : {&q, &k, &v}) for (float& f : *x) f = n01(rng);
  std::vector<float> whole(d), a(d), b(d);
  const float lw = AttendRows(q.data(), k.data(), v.data(), n, d, d, 0.25f, whole.data(), scratch.data());
  float la = AttendRows(q.data(), k.data(), v.data(), 10, d, d, 0.25f, a.data(), scratch.data());
  const float lb = AttendRows(q.data(), k.data() + 10 * d, v.data() + 10 * d, n - 10, d, d, 0.25f,
                              b.data(), scratch.data());
  MergeAttention(a.data(), &la, b.data(), lb, d);
  EXPECT_NEAR(la, lw, 1e-5);
  for (int c = 0; c < d; ++c) EXPECT_NEAR(a[c], whole[c], 1e-5);
  // Merging an empty partial changes nothing; merging into an empty one copies.
  std::vector<float> e(d, 0.0f);
  float le = -INFINITY;
  MergeAttention(e.data(), &le, whole.data(), lw, d);
  EXPECT_EQ(e, whole);
  MergeAttention(e.data(), &le, b.data(), -INFINITY, d);
  EXPECT_EQ(e, whole);
}

}  // namespace
}  // namespace kvrecall
