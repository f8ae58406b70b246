#include "codec/half.h"

#include <immintrin.h>

namespace kvrecall {
namespace {

void HalfToFloatScalar(const uint8_t* src, float* dst, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    uint16_t h;
    std::memcpy(&h, src + 2 * i, 2);  // x86 and every target we build for are little-endian
    dst[i] = HalfToFloat(h);
  }
}

__attribute__((target("avx,f16c"))) void HalfToFloatF16c(const uint8_t* src, float* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
  HalfToFloatScalar(src + 2 * i, dst + i, n - i);
}

const bool kHaveF16c = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");

}  // namespace

void HalfToFloatN(const uint8_t* src, float* dst, size_t n) {
  if (kHaveF16c) return HalfToFloatF16c(src, dst, n);
  HalfToFloatScalar(src, dst, n);
}

}  // namespace kvrecall
