#include "common/crc32c.h"

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace kvrecall {
namespace {

// RFC 3720 (iSCSI) appendix B.4 and the usual check value.
TEST(Crc32c, KnownValues) {
  const std::string check = "123456789";
  EXPECT_EQ(Crc32c(check.data(), check.size()), 0xE3069283u);
  EXPECT_EQ(Crc32cPortable(check.data(), check.size()), 0xE3069283u);
  std::vector<uint8_t> b(32, 0);
  EXPECT_EQ(Crc32c(b.data(), b.size()), 0x8A9136AAu);
  std::fill(b.begin(), b.end(), 0xFF);
  EXPECT_EQ(Crc32c(b.data(), b.size()), 0x62A8AB43u);
  for (int i = 0; i < 32; ++i) b[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(Crc32c(b.data(), b.size()), 0x46DD794Eu);
  for (int i = 0; i < 32; ++i) b[i] = static_cast<uint8_t>(31 - i);
  EXPECT_EQ(Crc32c(b.data(), b.size()), 0x113FDB5Cu);
  EXPECT_EQ(Crc32c(nullptr, 0), 0u);
}

// The hardware path, the table and the four-way form agree at every length
// and alignment (the tails past the last 8 bytes included).
TEST(Crc32c, PathsAgree) {
  std::mt19937 rng(3);
  std::vector<uint8_t> buf(4 * 600 + 8);
  for (auto& x : buf) x = static_cast<uint8_t>(rng());
  for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{8}, size_t{9}, size_t{255}, size_t{256}, size_t{600}}) {
    for (size_t off = 0; off < 8; off += 3) {
      const uint8_t* p[4] = {buf.data() + off, buf.data() + off + 600, buf.data() + off + 1200,
                             buf.data() + off + 1800};
      uint32_t four[4];
      Crc32c4(p, n, four);
      for (int k = 0; k < 4; ++k) {
        const uint32_t want = Crc32cPortable(p[k], n);
        EXPECT_EQ(Crc32c(p[k], n), want) << n << " " << off;
        EXPECT_EQ(four[k], want) << n << " " << off << " " << k;
      }
    }
  }
}

// Every single-bit flip and every burst up to 32 bits in a 256-byte chunk
// changes the value (a CRC's guarantee; checked, not assumed).
TEST(Crc32c, DetectsFlipsAndBursts) {
  std::mt19937 rng(9);
  std::vector<uint8_t> c(256);
  for (auto& x : c) x = static_cast<uint8_t>(rng());
  const uint32_t base = Crc32c(c.data(), c.size());
  for (size_t bit = 0; bit < 8 * c.size(); ++bit) {
    c[bit / 8] ^= uint8_t(1u << (bit % 8));
    EXPECT_NE(Crc32c(c.data(), c.size()), base) << bit;
    c[bit / 8] ^= uint8_t(1u << (bit % 8));
  }
  for (int trial = 0; trial < 2000; ++trial) {
    const size_t len = 1 + rng() % 32, start = rng() % (8 * c.size() - len);
    std::vector<uint8_t> d = c;
    d[start / 8] ^= uint8_t(1u << (start % 8));  // a burst: first and last bits flipped, any in between
    const size_t last = start + len - 1;
    if (last != start) d[last / 8] ^= uint8_t(1u << (last % 8));
    for (size_t b = start + 1; b < last; ++b) {
      if (rng() & 1) d[b / 8] ^= uint8_t(1u << (b % 8));
    }
    EXPECT_NE(Crc32c(d.data(), d.size()), base) << start << " " << len;
  }
}

}  // namespace
}  // namespace kvrecall
