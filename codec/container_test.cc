#include "codec/container.h"

#include <algorithm>
#include <cstring>

#include <string>

#include <gtest/gtest.h>

#include "codec/bytes.h"
#include "common/crc32c.h"

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

// A block with chunk checksums: 256-byte chunks over header and sections.
std::string ChunkedBlock(std::string* big) {
  BlockHeader h = SmallHeader();
  h.chunk_shift = 8;
  *big = std::string(2000, '\0');
  for (size_t i = 0; i < big->size(); ++i) (*big)[i] = static_cast<char>(i * 7 + 1);
  const std::string a = "codec params", c = "v";
  auto built = BuildBlock(h, {AsBytes(a), AsBytes(*big), AsBytes(c)});
  EXPECT_TRUE(built.ok()) << built.status();
  return *built;
}

TEST(Container, ChunkSumsRoundTripAndVerifyOnlyWhatIsRead) {
  std::string big;
  const std::string block = ChunkedBlock(&big);
  // Sections start on chunk boundaries: header 112 bytes, params at 256,
  // the 2000-byte section at 512, the last one at 2560.
  const size_t covered = 2560 + 1;
  EXPECT_EQ(block.size(), covered + 4 * ((covered + 255) / 256) + kBlockTrailerBytes);
  auto full = ParseBlock(AsBytes(block));
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_FALSE(full->partial);
  EXPECT_EQ(full->header.chunk_shift, 8);
  auto rebuilt = BuildBlock(full->header, full->sections);
  ASSERT_TRUE(rebuilt.ok());
  EXPECT_EQ(*rebuilt, block);  // canonical
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ((full->sections[i].data() - reinterpret_cast<const uint8_t*>(block.data())) % 256, 0u) << i;
  }
  {  // The padding must be zero (canonical blocks); the chunk sums guard it too.
    std::string padded = block;
    padded[300] = 1;  // between the params (256..268) and the next section (512)
    const uint64_t sum = Checksum64(padded.data(), padded.size() - kBlockTrailerBytes);
    std::memcpy(&padded[padded.size() - kBlockTrailerBytes], &sum, 8);
    EXPECT_EQ(ParseBlock(AsBytes(padded)).status().code(), absl::StatusCode::kDataLoss);
    // Flag bits 0 and 1 go together.
    std::string flags = block;
    flags[10] = static_cast<char>(flags[10] & ~kBlockFlagAlignedSections);
    EXPECT_EQ(ParseBlockForRows(AsBytes(flags)).status().code(), absl::StatusCode::kDataLoss);
  }
  auto partial = ParseBlockForRows(AsBytes(block));
  ASSERT_TRUE(partial.ok()) << partial.status();
  EXPECT_TRUE(partial->partial);
  EXPECT_EQ(partial->header, full->header);
  EXPECT_EQ(std::string(partial->sections[0].begin(), partial->sections[0].end()), "codec params");
  const auto sec = partial->sections[1];
  EXPECT_TRUE(VerifyBlockRanges(*partial, {sec, sec.subspan(1000, 10)}).ok());

  // Damage byte 1500 of section 1: whole-block parsing fails; a row read
  // verifies only the chunks it reads, so reads elsewhere still succeed.
  std::string bad = block;
  const size_t at = (sec.data() - reinterpret_cast<const uint8_t*>(block.data())) + 1500;
  bad[at] = static_cast<char>(bad[at] ^ 1);
  EXPECT_EQ(ParseBlock(AsBytes(bad)).status().code(), absl::StatusCode::kDataLoss);
  auto view = ParseBlockForRows(AsBytes(bad));
  ASSERT_TRUE(view.ok()) << view.status();
  const auto bsec = view->sections[1];
  EXPECT_TRUE(VerifyBlockRanges(*view, {bsec.subspan(0, 100), bsec.subspan(1900, 100)}).ok());
  const absl::Status hit = VerifyBlockRanges(*view, {bsec.subspan(0, 100), bsec.subspan(1500, 1)});
  EXPECT_EQ(hit.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(hit.message().find("chunk"), std::string::npos) << hit;
  // Adjacent and overlapping rows share chunks, which are hashed once; the
  // damaged chunk is still found whichever range reaches it, in any order.
  for (size_t row : {size_t{64}, size_t{100}, size_t{200}}) {
    std::vector<absl::Span<const uint8_t>> rows;
    for (size_t r = 0; r + row <= 2000; r += row) rows.push_back(bsec.subspan(r, row));
    EXPECT_EQ(VerifyBlockRanges(*view, rows).code(), absl::StatusCode::kDataLoss) << row;
    std::reverse(rows.begin(), rows.end());
    EXPECT_EQ(VerifyBlockRanges(*view, rows).code(), absl::StatusCode::kDataLoss) << row;
    rows.erase(std::remove_if(rows.begin(), rows.end(), [&](absl::Span<const uint8_t> r) {
                 return r.data() - bsec.data() <= 1500 && r.data() - bsec.data() + r.size() > 1500;
               }), rows.end());
    EXPECT_EQ(VerifyBlockRanges(*view, rows).code(), absl::StatusCode::kDataLoss) << row;  // neighbours share its chunk
  }
  EXPECT_EQ(VerifyBlockRanges(*view, {bsec.subspan(1400, 50), bsec.subspan(1300, 300)}).code(),
            absl::StatusCode::kDataLoss);
  // A range outside header + sections is refused.
  EXPECT_EQ(VerifyBlockRanges(*view, {absl::Span<const uint8_t>(view->chunk_sums.data(), 4)}).code(),
            absl::StatusCode::kInvalidArgument);

  // Every flip in the header, section 0 or the chunk table stops a partial
  // parse or the verification of the chunk it guards; no flip goes unseen by
  // ParseBlock.
  for (size_t i = 0; i < block.size(); ++i) {
    std::string b = block;
    b[i] = static_cast<char>(b[i] ^ 0x10);
    ASSERT_FALSE(ParseBlock(AsBytes(b)).ok()) << i;
    auto v = ParseBlockForRows(AsBytes(b));
    if (!v.ok()) continue;
    ASSERT_TRUE(v->partial);
    const size_t trailer = b.size() - kBlockTrailerBytes;
    if (i >= trailer) continue;  // the trailer guards whole-block reads only
    const size_t table = v->chunk_sums.data() - reinterpret_cast<const uint8_t*>(b.data());
    const size_t chunk = i >= table ? (i - table) / 4 : i / 256;
    const auto* p = reinterpret_cast<const uint8_t*>(b.data()) + chunk * 256;
    const absl::Span<const uint8_t> guarded(p, std::min<size_t>(256, table - chunk * 256));
    EXPECT_EQ(VerifyBlockRanges(*v, {guarded}).code(), absl::StatusCode::kDataLoss) << "flip at " << i;
  }
}

// New blocks carry CRC32C chunk sums (flag bit 2). Blocks written before,
// with the low half of XXH3-64 and no bit 2, are still read and verified;
// bit 2 without chunk sums, or sums of the other kind, are refused.
TEST(Container, ChunkSumKinds) {
  std::string big;
  const std::string block = ChunkedBlock(&big);
  auto* b = reinterpret_cast<const uint8_t*>(block.data());
  EXPECT_EQ(LoadLE<uint16_t>(b + 10),
            kBlockFlagChunkSums | kBlockFlagAlignedSections | kBlockFlagCrc32cChunkSums);
  auto full = ParseBlock(AsBytes(block));
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_TRUE(full->crc_chunk_sums);
  const size_t table = full->chunk_sums.data() - b, chunks = full->chunk_sums.size() / 4;
  for (size_t c = 0; c < chunks; ++c) {
    EXPECT_EQ(LoadLE<uint32_t>(b + table + 4 * c), Crc32c(b + 256 * c, std::min<size_t>(256, table - 256 * c))) << c;
  }
  auto reseal = [](std::string* x) {  // a valid trailer over the changed bytes
    const uint64_t sum = Checksum64(x->data(), x->size() - kBlockTrailerBytes);
    std::memcpy(&(*x)[x->size() - kBlockTrailerBytes], &sum, 8);
  };
  // The same block as written before: XXH3 chunk sums, flag bit 2 clear.
  std::string old = block;
  old[10] = static_cast<char>(kBlockFlagChunkSums | kBlockFlagAlignedSections);
  for (size_t c = 0; c < chunks; ++c) {
    const uint32_t x = static_cast<uint32_t>(Checksum64(old.data() + 256 * c, std::min<size_t>(256, table - 256 * c)));
    std::memcpy(&old[table + 4 * c], &x, 4);
  }
  reseal(&old);
  auto old_full = ParseBlock(AsBytes(old));
  ASSERT_TRUE(old_full.ok()) << old_full.status();
  EXPECT_FALSE(old_full->crc_chunk_sums);
  EXPECT_EQ(old_full->header, full->header);
  auto old_rows = ParseBlockForRows(AsBytes(old));
  ASSERT_TRUE(old_rows.ok()) << old_rows.status();
  EXPECT_TRUE(VerifyBlockRanges(*old_rows, {old_rows->sections[1]}).ok());
  std::string old_bad = old;
  old_bad[(old_rows->sections[1].data() - reinterpret_cast<const uint8_t*>(old.data())) + 700] ^= 4;
  auto old_bad_rows = ParseBlockForRows(AsBytes(old_bad));
  ASSERT_TRUE(old_bad_rows.ok());
  EXPECT_EQ(VerifyBlockRanges(*old_bad_rows, {old_bad_rows->sections[1]}).code(), absl::StatusCode::kDataLoss);
  // XXH3 sums under bit 2 (or CRC sums without it) fail where they are checked.
  std::string mixed = old;
  mixed[10] = static_cast<char>(mixed[10] | kBlockFlagCrc32cChunkSums);
  reseal(&mixed);
  EXPECT_EQ(ParseBlock(AsBytes(mixed)).status().code(), absl::StatusCode::kDataLoss);
  // Bit 2 alone, on a block without chunk sums.
  std::string lone = SmallBlock();
  lone[10] = static_cast<char>(kBlockFlagCrc32cChunkSums);
  reseal(&lone);
  const absl::Status s = ParseBlock(AsBytes(lone)).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("chunk sum kind"), std::string::npos) << s;
}

TEST(Container, BlocksWithoutChunkSumsAreVerifiedWholeForRows) {
  const std::string block = SmallBlock();
  auto v = ParseBlockForRows(AsBytes(block));
  ASSERT_TRUE(v.ok());
  EXPECT_FALSE(v->partial);
  std::string bad = block;
  bad[kBlockFixedHeaderBytes + 4 * 8 + 20] ^= 1;
  EXPECT_EQ(ParseBlockForRows(AsBytes(bad)).status().code(), absl::StatusCode::kDataLoss);
  BlockHeader h = SmallHeader();
  h.chunk_shift = 5;
  EXPECT_EQ(BuildBlock(h, {}).status().code(), absl::StatusCode::kInvalidArgument);
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
