#include "codec/container.h"

#include <string>

#include <gtest/gtest.h>

#include "codec/bytes.h"

namespace kvrecall {
namespace {

BlockHeader SmallHeader() {
  BlockHeader h;
  h.codec_id = 7;
  h.layout.num_layers = 5;
  h.layout.num_q_heads = 8;
  h.layout.num_kv_heads = 4;
  h.layout.head_dim = 8;
  h.layout.dtype = DType::kF16;
  h.layout.rope_style = RopeStyle::kInterleaved;
  h.layer_begin = 1;
  h.layer_count = 3;
  h.first_token = 32;
  h.token_count = 16;
  h.fingerprint = Hash128Of("stories260K");
  return h;
}

std::string SmallBlock() {
  const std::string a = "codec params", b(40, 'k'), c = "v";
  auto built = BuildBlock(SmallHeader(), {AsBytes(a), AsBytes(b), AsBytes(c), {}});
  EXPECT_TRUE(built.ok()) << built.status();
  return *built;
}

TEST(Container, RoundTrip) {
  const std::string block = SmallBlock();
  EXPECT_EQ(block.size(), kBlockFixedHeaderBytes + 4 * 8 + 12 + 40 + 1 + kBlockTrailerBytes);
  auto view = ParseBlock(AsBytes(block));
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_EQ(view->header, SmallHeader());
  ASSERT_EQ(view->sections.size(), 4u);
  EXPECT_EQ(std::string(view->sections[0].begin(), view->sections[0].end()), "codec params");
  EXPECT_EQ(view->sections[1].size(), 40u);
  EXPECT_EQ(view->sections[2][0], 'v');
  EXPECT_TRUE(view->sections[3].empty());
  EXPECT_EQ(view->checksum, LoadLE<uint64_t>(reinterpret_cast<const uint8_t*>(block.data()) +
                                             block.size() - 8));
}

TEST(Container, BuildRejectsInconsistentHeaders) {
  BlockHeader h = SmallHeader();
  h.layer_begin = 4;  // 4 + 3 > 5 layers
  EXPECT_EQ(BuildBlock(h, {}).status().code(), absl::StatusCode::kInvalidArgument);
  h = SmallHeader();
  h.layout.num_kv_heads = 3;
  EXPECT_EQ(BuildBlock(h, {}).status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<absl::Span<const uint8_t>> many(kMaxBlockSections + 1);
  EXPECT_EQ(BuildBlock(SmallHeader(), many).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Container, EveryByteFlipIsDetected) {
  const std::string block = SmallBlock();
  for (size_t i = 0; i < block.size(); ++i) {
    for (uint8_t mask : {0x01, 0x80, 0xff}) {
      std::string bad = block;
      bad[i] = static_cast<char>(bad[i] ^ mask);
      auto view = ParseBlock(AsBytes(bad));
      ASSERT_FALSE(view.ok()) << "flip of byte " << i << " with mask " << int{mask}
                              << " went undetected";
      EXPECT_TRUE(view.status().code() == absl::StatusCode::kDataLoss ||
                  view.status().code() == absl::StatusCode::kUnimplemented)
          << view.status();
    }
  }
}

TEST(Container, EveryTruncationAndExtensionIsDetected) {
  const std::string block = SmallBlock();
  for (size_t len = 0; len < block.size(); ++len) {
    auto view = ParseBlock(AsBytes(absl::string_view(block).substr(0, len)));
    ASSERT_FALSE(view.ok()) << len;
    EXPECT_EQ(view.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_NE(view.status().message().find("truncated"), absl::string_view::npos)
        << view.status();
  }
  auto longer = ParseBlock(AsBytes(block + "x"));
  EXPECT_NE(longer.status().message().find("trailing"), absl::string_view::npos);
}

TEST(Container, ErrorsNameTheProblem) {
  std::string bad = SmallBlock();
  bad[0] = 'X';
  EXPECT_NE(ParseBlock(AsBytes(bad)).status().message().find("magic"), absl::string_view::npos);
  bad = SmallBlock();
  bad[4] = 2;  // version 2
  auto v2 = ParseBlock(AsBytes(bad));
  EXPECT_EQ(v2.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(v2.status().message().find("version 2"), absl::string_view::npos);
  bad = SmallBlock();
  bad[kBlockFixedHeaderBytes + 32 + 3] ^= 1;  // a payload byte
  EXPECT_NE(ParseBlock(AsBytes(bad)).status().message().find("checksum"), absl::string_view::npos);
  bad = SmallBlock();
  bad[kBlockFixedHeaderBytes + 7] = 0x10;  // first section length -> huge
  EXPECT_NE(ParseBlock(AsBytes(bad)).status().message().find("past the payload"),
            absl::string_view::npos);
}

}  // namespace
}  // namespace kvrecall
