#include "common/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace kvrecall {
namespace {

constexpr uint32_t kPoly = 0x82F63B78u;  // reflected Castagnoli

constexpr std::array<uint32_t, 256> MakeTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kTable = MakeTable();

uint32_t UpdatePortable(uint32_t crc, const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) crc = kTable[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t UpdateHw(uint32_t crc, const uint8_t* p, size_t n) {
  uint64_t c = crc;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);  // little-endian, as the reflected CRC wants
    c = _mm_crc32_u64(c, w);
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  for (; i < n; ++i) c32 = _mm_crc32_u8(c32, p[i]);
  return c32;
}

__attribute__((target("sse4.2"))) void Crc32c4Hw(const uint8_t* const p[4], size_t n, uint32_t out[4]) {
  uint64_t c0 = 0xFFFFFFFFu, c1 = c0, c2 = c0, c3 = c0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w0, w1, w2, w3;
    std::memcpy(&w0, p[0] + i, 8), std::memcpy(&w1, p[1] + i, 8);
    std::memcpy(&w2, p[2] + i, 8), std::memcpy(&w3, p[3] + i, 8);
    c0 = _mm_crc32_u64(c0, w0), c1 = _mm_crc32_u64(c1, w1);
    c2 = _mm_crc32_u64(c2, w2), c3 = _mm_crc32_u64(c3, w3);
  }
  const uint64_t c[4] = {c0, c1, c2, c3};
  for (int k = 0; k < 4; ++k) {
    uint32_t c32 = static_cast<uint32_t>(c[k]);
    for (size_t j = i; j < n; ++j) c32 = _mm_crc32_u8(c32, p[k][j]);
    out[k] = ~c32;
  }
}

const bool kHaveSse42 = __builtin_cpu_supports("sse4.2");
#endif

}  // namespace

uint32_t Crc32cPortable(const void* data, size_t size) {
  return ~UpdatePortable(0xFFFFFFFFu, static_cast<const uint8_t*>(data), size);
}

uint32_t Crc32c(const void* data, size_t size) {
#if defined(__x86_64__)
  if (kHaveSse42) return ~UpdateHw(0xFFFFFFFFu, static_cast<const uint8_t*>(data), size);
#endif
  return Crc32cPortable(data, size);
}

void Crc32c4(const uint8_t* const p[4], size_t size, uint32_t out[4]) {
#if defined(__x86_64__)
  if (kHaveSse42) return Crc32c4Hw(p, size, out);
#endif
  for (int k = 0; k < 4; ++k) out[k] = Crc32cPortable(p[k], size);
}

}  // namespace kvrecall
