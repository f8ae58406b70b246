#include "codec/half.h"

#include <cpuid.h>
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

// CPUID leaf 1, ECX bit 29 (clang 14's __builtin_cpu_supports does not know
// "f16c"); AVX too, for the 256-bit stores.
bool HaveF16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __builtin_cpu_supports("avx") && __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) != 0;
}

const bool kHaveF16c = HaveF16c();

}  // namespace

bool HasF16c() { return kHaveF16c; }

void HalfToFloatN(const uint8_t* src, float* dst, size_t n) {
  if (kHaveF16c) return HalfToFloatF16c(src, dst, n);
  HalfToFloatScalar(src, dst, n);
}

}  // namespace kvrecall
