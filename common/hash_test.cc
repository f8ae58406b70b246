#include "common/hash.h"

#include <string>

#include <gtest/gtest.h>

namespace kvrecall {
namespace {

// Reference values from the xxhsum CLI (`printf X | xxhsum -H3` / `-H2`) and
// the xxHash sanity tables: XXH3 output is frozen since xxHash 0.8.0.
TEST(Hash, Xxh3KnownVectors) {
  EXPECT_EQ(Checksum64("", 0), 0x2d06800538d394c2ull);
  EXPECT_EQ(Checksum64("kvrecall", 8), 0x40d7cb75968ce699ull);
  EXPECT_EQ(Hash128Of("").ToHex(), "99aa06d3014798d86001c324468d497f");
  EXPECT_EQ(Hash128Of("kvrecall").ToHex(), "3fcec75bdf88eaa33669ff30052e8275");
}

TEST(Hash, StreamEqualsOneShot) {
  std::string data;
  for (int i = 0; i < 5000; ++i) data.push_back(static_cast<char>(i * 31 + 7));
  Checksum64Stream s;
  size_t pos = 0;
  for (size_t step : {1, 7, 100, 1000, 3892}) {
    s.Update(data.data() + pos, step);
    pos += step;
  }
  ASSERT_EQ(pos, data.size());
  EXPECT_EQ(s.Digest(), Checksum64(data.data(), data.size()));
}

TEST(Hash, AnyByteChangeChangesHash) {
  std::string data(64, 'x');
  const uint64_t base64 = Checksum64(data.data(), data.size());
  const Hash128 base128 = Hash128Of(data);
  for (size_t i = 0; i < data.size(); ++i) {
    std::string d = data;
    d[i] ^= 1;
    EXPECT_NE(Checksum64(d.data(), d.size()), base64) << i;
    EXPECT_NE(Hash128Of(d), base128) << i;
  }
}

}  // namespace
}  // namespace kvrecall

namespace kvrecall {
namespace {

TEST(Hash, VectorizedPathAgreesWithTheLibrary) {
  std::string s;
  for (int n : {0, 1, 17, 240, 241, 256, 257, 512, 1023, 1024, 1025, 4096, 65537, 1 << 20}) {
    s.resize(n);
    for (int i = 0; i < n; ++i) s[i] = static_cast<char>(i * 131 + n);
    EXPECT_EQ(Checksum64(s.data(), s.size()), Checksum64Portable(s.data(), s.size())) << n;
  }
}

}  // namespace
}  // namespace kvrecall
