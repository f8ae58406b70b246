#include "codec/kv_layout.h"

#include <cmath>

#include <gtest/gtest.h>

#include "codec/rope.h"
#include "codec/tensor_view.h"

namespace kvrecall {
namespace {

KvLayout Llama8B() {
  KvLayout l;
  l.num_layers = 32;
  l.num_q_heads = 32;
  l.num_kv_heads = 8;
  l.head_dim = 128;
  l.dtype = DType::kBF16;
  l.rope_theta = 500000.0f;
  return l;
}

TEST(KvLayout, ValidateNamesTheBadField) {
  EXPECT_TRUE(Llama8B().Validate().ok());
  EXPECT_EQ(Llama8B().group_size(), 4);
  EXPECT_EQ(Llama8B().kv_elements_per_token(), 2 * 32 * 8 * 128);
  KvLayout l = Llama8B();
  l.num_q_heads = 30;
  EXPECT_NE(l.Validate().message().find("multiple of num_kv_heads"), absl::string_view::npos);
  l = Llama8B();
  l.head_dim = 0;
  EXPECT_NE(l.Validate().message().find("head_dim"), absl::string_view::npos);
  l = Llama8B();
  l.head_dim = 7;
  EXPECT_NE(l.Validate().message().find("even"), absl::string_view::npos);
  l = Llama8B();
  l.rope_theta = NAN;
  EXPECT_EQ(l.Validate().code(), absl::StatusCode::kInvalidArgument);
}

TEST(KvLayout, EncodeDecodeRoundTripAndRejectsGarbage) {
  KvLayout l = Llama8B();
  l.keys_pre_rope = true;
  l.rope_style = RopeStyle::kInterleaved;
  uint8_t buf[kEncodedLayoutBytes];
  EncodeLayout(l, buf);
  auto back = DecodeLayout(buf);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, l);
  buf[8] = 9;  // dtype
  EXPECT_EQ(DecodeLayout(buf).status().code(), absl::StatusCode::kDataLoss);
}

TEST(KvLayout, FingerprintCoversEveryField) {
  const KvLayout base = Llama8B();
  const Hash128 f = ModelFingerprint("llama", base, 3, "bits=2", 1);
  EXPECT_EQ(f, ModelFingerprint("llama", base, 3, "bits=2", 1));
  EXPECT_NE(f, ModelFingerprint("llamb", base, 3, "bits=2", 1));
  EXPECT_NE(f, ModelFingerprint("llama", base, 4, "bits=2", 1));
  EXPECT_NE(f, ModelFingerprint("llama", base, 3, "bits=3", 1));
  EXPECT_NE(f, ModelFingerprint("llama", base, 3, "bits=2", 2));
  KvLayout l = base;
  l.keys_pre_rope = true;
  EXPECT_NE(f, ModelFingerprint("llama", l, 3, "bits=2", 1));
  l = base;
  l.dtype = DType::kF16;
  EXPECT_NE(f, ModelFingerprint("llama", l, 3, "bits=2", 1));
}

class RopeTest : public ::testing::TestWithParam<RopeStyle> {};

TEST_P(RopeTest, UnapplyInvertsApplyAndPreservesPairNorms) {
  const int d = 128;
  std::vector<float> x(d), y;
  for (int i = 0; i < d; ++i) x[i] = std::sin(0.37f * i) * (1 + i % 5);
  for (double pos : {0.0, 1.0, 17.0, 4095.0, 131071.0}) {
    y = x;
    ApplyRope(y.data(), d, pos, GetParam(), 500000.0);
    for (int j = 0; j < d / 2; ++j) {
      int a, b;
      RopePair(GetParam(), d, j, &a, &b);
      EXPECT_NEAR(std::hypot(y[a], y[b]), std::hypot(x[a], x[b]), 1e-4);
    }
    UnapplyRope(y.data(), d, pos, GetParam(), 500000.0);
    for (int i = 0; i < d; ++i) ASSERT_NEAR(y[i], x[i], 2e-5 * (1 + std::fabs(x[i]))) << pos;
  }
}

TEST_P(RopeTest, RelativePositionProperty) {
  // (R_m q)·(R_n k) depends only on n - m.
  const int d = 64;
  std::vector<float> q(d), k(d);
  for (int i = 0; i < d; ++i) {
    q[i] = std::cos(0.11f * i);
    k[i] = std::sin(0.23f * i + 1);
  }
  auto dot_at = [&](double m, double n) {
    std::vector<float> a = q, b = k;
    ApplyRope(a.data(), d, m, GetParam(), 10000.0);
    ApplyRope(b.data(), d, n, GetParam(), 10000.0);
    double s = 0;
    for (int i = 0; i < d; ++i) s += double{a[i]} * b[i];
    return s;
  };
  EXPECT_NEAR(dot_at(10, 3), dot_at(110, 103), 1e-4);
  EXPECT_NEAR(dot_at(7, 7), dot_at(0, 0), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Styles, RopeTest,
                         ::testing::Values(RopeStyle::kHalfSplit, RopeStyle::kInterleaved));

TEST(Rope, ConventionsPairTheDocumentedChannels) {
  // Rotating by a quarter turn at pair 0 (inverse frequency 1, pos = pi/2)
  // moves channel a into channel b.
  const int d = 8;
  for (RopeStyle s : {RopeStyle::kHalfSplit, RopeStyle::kInterleaved}) {
    std::vector<float> x(d, 0.0f);
    int a, b;
    RopePair(s, d, 0, &a, &b);
    x[a] = 1.0f;
    ApplyRope(x.data(), d, M_PI / 2, s, 10000.0);
    EXPECT_NEAR(x[a], 0.0f, 1e-6);
    EXPECT_NEAR(x[b], 1.0f, 1e-6);
  }
  int a, b;
  RopePair(RopeStyle::kHalfSplit, 128, 5, &a, &b);
  EXPECT_EQ(a, 5);
  EXPECT_EQ(b, 69);
  RopePair(RopeStyle::kInterleaved, 128, 5, &a, &b);
  EXPECT_EQ(a, 10);
  EXPECT_EQ(b, 11);
}

TEST(TensorView, IndexSliceTranspose) {
  std::vector<float> buf(2 * 3 * 4 * 5);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<float>(i);
  TensorView<float> t(buf.data(), {2, 3, 4, 5});
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.size(), 120);
  EXPECT_EQ(t(1, 2, 3, 4), 119.0f);
  EXPECT_EQ(t(1, 0, 2, 1), 60 + 10 + 1);
  TensorView<float> s = t.Slice(2, 1, 3);
  EXPECT_EQ(s.dim(2), 2);
  EXPECT_FALSE(s.is_contiguous());
  EXPECT_EQ(s(0, 1, 0, 0), t(0, 1, 1, 0));
  TensorView<const float> tr = t.Transpose(2, 3);
  EXPECT_EQ(tr(1, 2, 4, 3), t(1, 2, 3, 4));
}

}  // namespace
}  // namespace kvrecall
