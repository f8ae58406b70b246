// Loader and tokenizer: the real files, and every way a bad file fails.
#include <cmath>
#include <cstring>

#include <gtest/gtest.h>

#include "codec/bytes.h"
#include "common/env.h"
#include "engine/eval.h"
#include "engine/test_data.h"

namespace kvrecall {
namespace {

std::string ReadAll(const std::string& path) {
  auto s = ReadFileToString(Env::Default(), path);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : "";
}

TEST(Model, LoadsStories260KWithTheDocumentedConfig) {
  KVR_REQUIRE_REAL_MODEL(rm);
  const ModelConfig& c = rm.model->config();
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.hidden_dim, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.seq_len, 512);
  EXPECT_TRUE(c.shared_classifier);
  EXPECT_EQ(c.ExpectedFileBytes(), 1056540u);
  const KvLayout l = rm.model->kv_layout();
  EXPECT_EQ(l.group_size(), 2);
  EXPECT_EQ(l.kv_elements_per_token() * 4, 1280);  // README: 1,280 B/token in fp32
  // Offsets from the README: wq starts at byte 132380.
  const std::string raw = ReadAll(rm.dir + "/stories260K.bin");
  EXPECT_EQ(std::memcmp(rm.model->wq(0), raw.data() + 132380, 4 * 64), 0);
  EXPECT_EQ(std::memcmp(rm.model->rms_final(), raw.data() + 1039900, 4 * 64), 0);
  for (double n : rm.model->wk_norms()) EXPECT_GT(n, 0);
}

TEST(Model, RejectsTruncatedOverlongAndCorruptFiles) {
  KVR_REQUIRE_REAL_MODEL(rm);
  const std::string raw = ReadAll(rm.dir + "/stories260K.bin");
  auto code = [](const std::string& b) { return Model::FromBytes(b, "m").status(); };
  absl::Status s = code(raw.substr(0, raw.size() - 1));
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("truncated"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("1056540"), absl::string_view::npos) << s;
  EXPECT_EQ(code(raw.substr(0, 10)).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(code(raw + "xx").code(), absl::StatusCode::kDataLoss);
  std::string bad = raw;
  StoreLE<int32_t>(reinterpret_cast<uint8_t*>(bad.data()) + 16, 3);  // n_kv_heads 3 vs 8 heads
  s = code(bad);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("n_kv_heads"), absl::string_view::npos) << s;
  bad = raw;
  StoreLE<int32_t>(reinterpret_cast<uint8_t*>(bad.data()), -64);  // dim
  EXPECT_EQ(code(bad).code(), absl::StatusCode::kInvalidArgument);
  bad = raw;
  StoreLE<float>(reinterpret_cast<uint8_t*>(bad.data()) + 132380 + 40, NAN);
  s = code(bad);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("wq"), absl::string_view::npos) << s;
  EXPECT_EQ(Model::Load(Env::Default(), "/nonexistent/model.bin").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(Tokenizer, ReproducesTheReferenceEncodings) {
  KVR_REQUIRE_REAL_MODEL(rm);
  EXPECT_EQ(rm.tok->Encode("Once upon a time"), (std::vector<int>{403, 407, 261, 378}));
  EXPECT_EQ(rm.tok->Encode("Lily's mom said, \"Hi!\""),
            (std::vector<int>{317, 439, 419, 357, 336, 432, 313, 440, 417, 443, 436}));
  EXPECT_TRUE(rm.tok->Encode("").empty());
}

TEST(Tokenizer, DecodeInvertsEncodeIncludingByteFallback) {
  KVR_REQUIRE_REAL_MODEL(rm);
  for (const std::string text : {"Once upon a time", "Tom's dog ran 42 km!",
                                 "mojibake â€™ and \xe4\xbd\xa0\xe5\xa5\xbd", "a\nb\tc"}) {
    std::vector<int> ids = rm.tok->Encode(text);
    // Decode after BOS strips the dummy-prefix space.
    EXPECT_EQ(rm.tok->DecodeAll(ids), text);
  }
  EXPECT_EQ(rm.tok->Decode(5, 3 + 'A'), "A");  // <0x41>
  EXPECT_EQ(rm.tok->Decode(5, 9999), "");       // out of range: nothing
}

TEST(Tokenizer, RejectsBadFiles) {
  KVR_REQUIRE_REAL_MODEL(rm);
  const std::string raw = ReadAll(rm.dir + "/tok512.bin");
  EXPECT_TRUE(Tokenizer::FromBytes(raw, 512).ok());
  for (size_t cut : {size_t{0}, size_t{3}, size_t{100}, raw.size() - 1}) {
    EXPECT_EQ(Tokenizer::FromBytes(raw.substr(0, cut), 512).status().code(),
              absl::StatusCode::kDataLoss) << cut;
  }
  EXPECT_EQ(Tokenizer::FromBytes(raw, 600).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(Tokenizer::FromBytes(raw, 100).status().code(), absl::StatusCode::kInvalidArgument);
  std::string bad = raw;
  StoreLE<int32_t>(reinterpret_cast<uint8_t*>(bad.data()) + 8, -5);  // first record's length
  EXPECT_EQ(Tokenizer::FromBytes(bad, 512).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Stories, SplitFollowsTheProtocol) {
  auto s = SplitStories("  one\n<|endoftext|>\n\ntwo two\n<|endoftext|>\n  \n<|endoftext|>\n");
  EXPECT_EQ(s, (std::vector<std::string>{"one", "two two"}));
}

}  // namespace
}  // namespace kvrecall
