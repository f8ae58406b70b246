#include "codec/half.h"

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

namespace kvrecall {
namespace {

TEST(Half, KnownValues) {
  EXPECT_EQ(FloatToHalf(0.0f), 0x0000);
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);            // max finite
  EXPECT_EQ(FloatToHalf(65519.0f), 0x7bff);            // rounds down
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);            // tie -> even = Inf
  EXPECT_EQ(FloatToHalf(1e9f), 0x7c00);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -14)), 0x0400);  // min normal
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -24)), 0x0001);  // min subnormal
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -25)), 0x0000);  // tie -> even = 0
  EXPECT_EQ(FloatToHalf(std::ldexp(3.0f, -26)), 0x0001);  // 0.75 ulp -> 1
  EXPECT_EQ(FloatToHalf(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 ulp tie -> 2
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie -> even
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(3.0f, -11)), 0x3c02);  // tie -> even (up)
  EXPECT_EQ(FloatToHalf(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(FloatToHalf(-std::numeric_limits<float>::infinity()), 0xfc00);
  const uint16_t nan = FloatToHalf(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7c00, 0x7c00);
  EXPECT_NE(nan & 0x3ff, 0);
  EXPECT_TRUE(std::isnan(HalfToFloat(nan)));
  // A signalling NaN whose payload lives only in the low bits stays a NaN.
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(BitsFloat(0x7f800001u)))));
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(HalfToFloat(0x83ff), -std::ldexp(1023.0f, -24));
}

TEST(Half, EveryHalfRoundTrips) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(f)))) << h;
      continue;
    }
    ASSERT_EQ(FloatToHalf(f), h) << "half 0x" << std::hex << h;
  }
}

TEST(Half, RoundingIsNearestAgainstDoubleReference) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> exp_d(-26.0f, 16.5f);
  for (int i = 0; i < 200000; ++i) {
    const float f = std::exp2(exp_d(rng)) * ((rng() & 1) ? 1.0f : -1.0f);
    const uint16_t h = FloatToHalf(f);
    const double got = HalfToFloat(h);
    if (std::isinf(got)) {
      ASSERT_GE(std::fabs(f), 65520.0f);
      continue;
    }
    // No other half is strictly closer to f.
    const uint16_t up = static_cast<uint16_t>(h + 1), down = static_cast<uint16_t>(h - 1);
    for (uint16_t n : {up, down}) {
      const float nf = HalfToFloat(n);
      if (std::isnan(nf) || std::isinf(nf) || (n & 0x8000) != (h & 0x8000)) continue;
      ASSERT_LE(std::fabs(got - f), std::fabs(static_cast<double>(nf) - f)) << f;
    }
  }
}

TEST(Bf16, KnownValuesAndRoundTrip) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBf16(-2.0f), 0xc000);
  EXPECT_EQ(FloatToBf16(BitsFloat(0x3f808000u)), 0x3f80);  // tie -> even
  EXPECT_EQ(FloatToBf16(BitsFloat(0x3f818000u)), 0x3f82);  // tie -> even (up)
  EXPECT_EQ(FloatToBf16(BitsFloat(0x3f808001u)), 0x3f81);
  EXPECT_EQ(FloatToBf16(std::numeric_limits<float>::max()), 0x7f80);  // overflow -> Inf
  EXPECT_EQ(FloatToBf16(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(BitsFloat(0x7f800001u)))));
  EXPECT_EQ(Bf16ToFloat(0x0001), BitsFloat(0x00010000u));  // subnormal
  for (uint32_t b = 0; b < 65536; ++b) {
    const float f = Bf16ToFloat(static_cast<uint16_t>(b));
    if (std::isnan(f)) continue;
    ASSERT_EQ(FloatToBf16(f), b);
  }
}

// The bulk conversion (F16C where present) agrees with the scalar one on
// every half, at every offset and tail length.
TEST(Half, BulkConversionMatchesScalar) {
  std::vector<uint8_t> src(2 * 65536 + 2);
  for (uint32_t h = 0; h < 65536; ++h) src[2 * h + 1] = uint8_t(h), src[2 * h + 2] = uint8_t(h >> 8);  // unaligned
  std::vector<float> out(65536);
  HalfToFloatN(src.data() + 1, out.data(), out.size());
  for (uint32_t h = 0; h < 65536; ++h) {
    const float want = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(want)) {
      ASSERT_TRUE(std::isnan(out[h])) << h;
      ASSERT_EQ(std::signbit(out[h]), std::signbit(want)) << h;
    } else {
      ASSERT_EQ(FloatBits(out[h]), FloatBits(want)) << h;
    }
  }
  for (size_t n = 0; n < 20; ++n) {  // tails shorter than a vector
    std::vector<float> t(n + 1, -7.0f);
    HalfToFloatN(src.data() + 1 + 2 * 15360, t.data(), n);  // from 1.0 upward
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(t[i], HalfToFloat(static_cast<uint16_t>(15360 + i)));
    ASSERT_EQ(t[n], -7.0f);  // nothing past the end
  }
}

}  // namespace
}  // namespace kvrecall
