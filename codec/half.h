// IEEE binary16 (f16) and bfloat16 (bf16) conversions, bit-exact and portable
// (no compiler half type needed). Float -> half rounds to nearest, ties to
// even; overflow gives ±Inf; NaN stays NaN (quiet, sign kept); subnormals are
// produced and read correctly.
#ifndef KVRECALL_CODEC_HALF_H_
#define KVRECALL_CODEC_HALF_H_

#include <cmath>
#include <cstdint>
#include <cstring>

namespace kvrecall {

inline uint32_t FloatBits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  return x;
}
inline float BitsFloat(uint32_t x) {
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

inline uint16_t FloatToHalf(float f) {
  const uint32_t x = FloatBits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  uint32_t a = x & 0x7fffffffu;
  if (a >= 0x7f800000u) {  // Inf or NaN
    if (a == 0x7f800000u) return sign | 0x7c00u;
    return sign | 0x7e00u | static_cast<uint16_t>((a >> 13) & 0x3ffu);  // quiet NaN
  }
  if (a >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to Inf
  if (a < 0x38800000u) {                         // below 2^-14: subnormal half or 0
    // In units of 2^-24 the value is exact in float; rint rounds ties to even.
    const float units = BitsFloat(a) * 16777216.0f;
    return sign | static_cast<uint16_t>(std::nearbyint(units));
  }
  a += 0xfffu + ((a >> 13) & 1u);  // round to nearest even on the 13 dropped bits
  a -= 0x38000000u;                // rebias exponent 127 -> 15
  return sign | static_cast<uint16_t>(a >> 13);
}

inline float HalfToFloat(uint16_t h) {
  // Shift exponent and mantissa into place and rebias; only Inf/NaN and
  // zero/subnormals (rare) take a branch. Subnormals are renormalized exactly
  // by a float subtraction of the implicit bit (2^-14).
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t o = static_cast<uint32_t>(h & 0x7fffu) << 13;
  const uint32_t exp = o & 0x0f800000u;
  o += (127u - 15u) << 23;
  if (exp == 0x0f800000u) {  // Inf or NaN
    o += (128u - 16u) << 23;
  } else if (exp == 0) {  // zero or subnormal
    o += 1u << 23;
    o = FloatBits(BitsFloat(o) - BitsFloat(113u << 23));
  }
  return BitsFloat(o | sign);
}

inline uint16_t FloatToBf16(float f) {
  uint32_t x = FloatBits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

inline float Bf16ToFloat(uint16_t b) { return BitsFloat(static_cast<uint32_t>(b) << 16); }

// dst[i] = HalfToFloat(src[i]) for n halves stored little-endian (unaligned
// is fine): F16C where the CPU has it (8 at a time), the scalar code
// otherwise. Same results as HalfToFloat, except that a signalling NaN comes
// out quiet on the F16C path.
void HalfToFloatN(const uint8_t* src, float* dst, size_t n);

// Whether this CPU converts halves in hardware (x86-64 F16C, with AVX).
bool HasF16c();

}  // namespace kvrecall

#endif  // KVRECALL_CODEC_HALF_H_
