#include "codec/codec.h"

#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "codec/attention.h"
#include "codec/kivi.h"
#include "codec/metrics.h"

namespace kvrecall {
namespace {

struct Chunk {
  KvLayout layout;
  std::vector<float> k, v;
  KvChunkRef ref;
};

// Keys with outlier channels and a low-rank structure, values Gaussian.
Chunk MakeChunk(int layers, int heads, int tokens, int dim, uint64_t seed) {
  Chunk c;
  c.layout.num_layers = layers;
  c.layout.num_q_heads = heads * 2;
  c.layout.num_kv_heads = heads;
  c.layout.head_dim = dim;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n01;
  const size_t n = size_t(layers) * heads * tokens * dim;
  c.k.resize(n);
  c.v.resize(n);
  std::vector<float> basis(3 * dim);
  for (float& b : basis) b = n01(rng);
  for (size_t i = 0; i < n; ++i) {
    const int ch = i % dim;
    const size_t row = i / dim;
    float s = 0;
    for (int j = 0; j < 3; ++j) s += basis[j * dim + ch] * std::sin(0.1f * row * (j + 1));
    c.k[i] = s + 0.3f * n01(rng) + (ch % 16 == 3 ? 8.0f : 0.0f);
    c.v[i] = 0.5f * n01(rng);
  }
  c.ref.layout = c.layout;
  c.ref.layer_count = layers;
  c.ref.tokens = tokens;
  c.ref.k = c.k.data();
  c.ref.v = c.v.data();
  return c;
}

struct Decoded {
  std::string block;
  std::vector<float> k, v;
};

Decoded RoundTrip(const KvCodec& codec, const KvChunkRef& ref, EncodeOptions* opts = nullptr) {
  Decoded d;
  auto block = codec.Encode(ref, opts);
  EXPECT_TRUE(block.ok()) << codec.spec() << ": " << block.status();
  if (!block.ok()) return d;
  d.block = *block;
  auto view = ParseBlock(AsBytes(d.block));
  EXPECT_TRUE(view.ok()) << view.status();
  const size_t n = size_t(ref.layer_count) * ref.layout.num_kv_heads * ref.tokens * ref.layout.head_dim;
  d.k.resize(n);
  d.v.resize(n);
  EXPECT_TRUE(codec.Decode(*view, d.k.data(), d.v.data()).ok());
  return d;
}

const char* kSpecs[] = {
    "f32", "f16", "bf16", "kivi:bits=1", "kivi:bits=2", "kivi:bits=3", "kivi:bits=4", "kivi:bits=8",
    "qwc:kbits=4,vbits=2", "qwc:kbits=2,vbits=4,kgroup=32,vgroup=16", "gear", "gear_l",
    "gear:bits=4,rank=2", "squat:bits=2,rank=8,block=16", "squat:bits=3,rank=4,block=64,lambda=0.01",
    "kivi:bits=2,meta=f32", "squat:rank=8,block=16,meta=f32",
};

class EveryCodec : public ::testing::TestWithParam<const char*> {};

TEST_P(EveryCodec, RoundTripRowsAndBitAccounting) {
  auto codec = MakeCodec(GetParam());
  ASSERT_TRUE(codec.ok()) << codec.status();
  Chunk c = MakeChunk(2, 2, 45, 64, 7);  // 45 tokens: a ragged last group
  std::vector<float> queries(size_t(2) * 4 * 16 * 64);
  std::mt19937 rng(1);
  std::normal_distribution<float> n01;
  for (float& q : queries) q = n01(rng);
  EncodeOptions opts;
  opts.queries = queries.data();
  opts.num_queries = 16;
  Decoded d = RoundTrip(**codec, c.ref, &opts);
  ASSERT_FALSE(d.block.empty());
  const int64_t n = c.k.size();
  const double ek = RelativeError(c.k.data(), d.k.data(), n), ev = RelativeError(c.v.data(), d.v.data(), n);
  EXPECT_LT(ek, 0.5) << GetParam();
  EXPECT_LT(ev, 1.5) << GetParam();  // 1-bit values are coarse
  if (std::string(GetParam()) == "f32") EXPECT_EQ(ek, 0.0);
  // Rows decode to exactly the rows of the full decode.
  auto view = ParseBlock(AsBytes(d.block));
  ASSERT_TRUE(view.ok());
  const std::vector<int> rows = {44, 0, 31, 32, 7};
  std::vector<float> rk(4 * rows.size() * 64), rv(rk.size());
  ASSERT_TRUE((*codec)->DecodeRows(*view, rows, rk.data(), rv.data()).ok());
  for (int h = 0; h < 4; ++h)
    for (size_t r = 0; r < rows.size(); ++r)
      for (int ch = 0; ch < 64; ++ch) {
        ASSERT_EQ(rk[(h * rows.size() + r) * 64 + ch], d.k[(size_t(h) * 45 + rows[r]) * 64 + ch]) << h << " " << r;
        ASSERT_EQ(rv[(h * rows.size() + r) * 64 + ch], d.v[(size_t(h) * 45 + rows[r]) * 64 + ch]);
      }
  // Bits: K and V shares add up to the serialized size exactly.
  const BitsPerElement bits = (*codec)->Bits(*view, d.block.size());
  EXPECT_NEAR(bits.k + bits.v, 8.0 * d.block.size() / n, 1e-9);
  // The block names its codec: CodecForBlock rebuilds the same one.
  auto again = CodecForBlock(*view);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->spec(), (*codec)->spec());
}

// A 2-layer x 2-head, 45-token, 64-dim chunk (seed) encoded with 256-byte
// chunk checksums; SQuat's queries all `query`.
absl::StatusOr<std::string> EncodeWithChunkSums(const KvCodec& codec, uint64_t seed, float query) {
  Chunk c = MakeChunk(2, 2, 45, 64, seed);
  std::vector<float> queries(size_t(2) * 4 * 16 * 64, query);
  EncodeOptions opts;
  opts.queries = queries.data();
  opts.num_queries = 16;
  opts.chunk_shift = 8;
  return codec.Encode(c.ref, &opts);
}

// A codec that lists the bytes a row read touches (RowByteRanges) must list
// all of them: scrambling every other byte of the codec's sections leaves the
// rows' decode unchanged, and a partial view verifies exactly those chunks.
TEST_P(EveryCodec, RowRangesCoverWhatRowReadsRead) {
  auto codec = MakeCodec(GetParam());
  ASSERT_TRUE(codec.ok()) << codec.status();
  auto block = EncodeWithChunkSums(**codec, 11, 0.5f);
  ASSERT_TRUE(block.ok()) << block.status();
  auto full = ParseBlock(AsBytes(*block));
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->header.chunk_shift, 8);
  const std::vector<int> rows = {44, 0, 31, 32, 7, 8};
  std::vector<absl::Span<const uint8_t>> ranges;
  const absl::Status listed = (*codec)->RowByteRanges(*full, rows, &ranges);
  if (listed.code() == absl::StatusCode::kUnimplemented) GTEST_SKIP() << GetParam() << ": " << listed;
  ASSERT_TRUE(listed.ok()) << listed;
  EXPECT_EQ((*codec)->RowByteRanges(*full, std::vector<int>{45}, &ranges).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE((*codec)->RowByteRanges(*full, rows, &ranges).ok());
  std::vector<float> want_k(4 * rows.size() * 64), want_v(want_k.size());
  ASSERT_TRUE((*codec)->DecodeRows(*full, rows, want_k.data(), want_v.data()).ok());
  // Scramble every byte of sections 1.. outside the listed ranges.
  std::string scrambled = *block;
  const uint8_t* base = reinterpret_cast<const uint8_t*>(block->data());
  std::vector<bool> listed_byte(block->size(), false);
  size_t listed_bytes = 0;
  for (const auto& r : ranges) {
    ASSERT_GE(r.data(), full->sections[1].data());
    for (size_t i = 0; i < r.size(); ++i) listed_byte[r.data() - base + i] = true;
  }
  const size_t begin = full->sections[1].data() - base, end = full->chunk_sums.data() - base;
  const size_t head_chunks_end = (((begin - 1) >> 8) + 1) << 8;  // chunks verified with the header: left alone
  for (size_t i = begin; i < end; ++i) {
    if (i < head_chunks_end) continue;
    if (listed_byte[i]) ++listed_bytes;
    else scrambled[i] = static_cast<char>(scrambled[i] ^ 0x5a);
  }
  EXPECT_LT(listed_bytes, (end - begin) / 2) << "a row read should not need most of the block";
  auto partial = ParseBlockForRows(AsBytes(scrambled));
  ASSERT_TRUE(partial.ok()) << partial.status();
  EXPECT_TRUE(partial->partial);
  EXPECT_FALSE(ParseBlock(AsBytes(scrambled)).ok());
  std::vector<absl::Span<const uint8_t>> ranges2;
  ASSERT_TRUE((*codec)->RowByteRanges(*partial, rows, &ranges2).ok());
  std::vector<float> got_k(want_k.size()), got_v(want_v.size());
  ASSERT_TRUE((*codec)->DecodeRows(*partial, rows, got_k.data(), got_v.data()).ok());
  EXPECT_EQ(got_k, want_k) << GetParam();
  EXPECT_EQ(got_v, want_v) << GetParam();
  // And so does attention over them (f16 reads the rows in place).
  std::vector<float> q(4 * 64, 0.1f), att_full(q.size()), att_part(q.size()), lse_full(4), lse_part(4);
  ASSERT_TRUE((*codec)->AttendRows(*full, rows, q.data(), 1, 0.125f, att_full.data(), lse_full.data()).ok());
  ASSERT_TRUE((*codec)->AttendRows(*partial, rows, q.data(), 1, 0.125f, att_part.data(), lse_part.data()).ok());
  EXPECT_EQ(att_part, att_full) << GetParam();
  EXPECT_EQ(lse_part, lse_full) << GetParam();
  // The scrambling is caught when the listed ranges' chunks include a scrambled byte, else not.
  bool shares_chunk = false;
  for (const auto& r : ranges2) {
    const size_t c0 = (r.data() - reinterpret_cast<const uint8_t*>(scrambled.data())) >> 8;
    const size_t c1 = (r.data() + r.size() - 1 - reinterpret_cast<const uint8_t*>(scrambled.data())) >> 8;
    for (size_t i = c0 << 8; i < std::min(end, (c1 + 1) << 8); ++i) {
      shares_chunk |= i >= head_chunks_end && !listed_byte[i];
    }
  }
  const absl::Status verified = VerifyBlockRanges(*partial, ranges2);
  EXPECT_EQ(verified.ok(), !shares_chunk) << verified;
  if (!verified.ok()) EXPECT_EQ(verified.code(), absl::StatusCode::kDataLoss);
  // The unscrambled block's ranges verify.
  auto clean = ParseBlockForRows(AsBytes(*block));
  ASSERT_TRUE(clean.ok());
  ASSERT_TRUE((*codec)->RowByteRanges(*clean, rows, &ranges2).ok());
  EXPECT_TRUE(VerifyBlockRanges(*clean, ranges2).ok());
}

// AttendRows gives bit for bit what DecodeRows then AttendGroup per head
// gives (f16 reads its rows in place); bad rows and groups are errors.
TEST_P(EveryCodec, AttendRowsEqualsDecodedRowsAttended) {
  auto codec = MakeCodec(GetParam());
  ASSERT_TRUE(codec.ok()) << codec.status();
  auto block = EncodeWithChunkSums(**codec, 13, 0.25f);
  ASSERT_TRUE(block.ok()) << block.status();
  auto view = ParseBlockForRows(AsBytes(*block));
  ASSERT_TRUE(view.ok()) << view.status();
  const std::vector<int> rows = {44, 0, 31, 32, 7, 8, 31};
  const int heads = 4, d = 64, R = static_cast<int>(rows.size());
  std::vector<float> rk(size_t(heads) * R * d), rv(rk.size());
  ASSERT_TRUE((*codec)->DecodeRows(*view, rows, rk.data(), rv.data()).ok());
  std::mt19937 rng(3);
  std::normal_distribution<float> n01;
  for (int G : {1, 3}) {
    std::vector<float> q(size_t(heads) * G * d);
    for (float& x : q) x = n01(rng);
    std::vector<float> want(q.size()), want_lse(size_t(heads) * G), got(q.size()), got_lse(want_lse.size());
    for (int h = 0; h < heads; ++h) {
      AttendGroup(q.data() + size_t(h) * G * d, G, rk.data() + size_t(h) * R * d, rv.data() + size_t(h) * R * d, R,
                  d, d, 0.125f, want.data() + size_t(h) * G * d, want_lse.data() + size_t(h) * G);
    }
    std::vector<float> scratch;
    ASSERT_TRUE((*codec)->AttendRows(*view, rows, q.data(), G, 0.125f, got.data(), got_lse.data(), &scratch).ok());
    EXPECT_EQ(got, want) << GetParam() << " G=" << G;
    EXPECT_EQ(got_lse, want_lse) << GetParam() << " G=" << G;
  }
  std::vector<float> q(size_t(heads) * d), out(q.size()), lse(heads);
  EXPECT_EQ((*codec)->AttendRows(*view, std::vector<int>{45}, q.data(), 1, 1.0f, out.data(), lse.data()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*codec)->AttendRows(*view, rows, q.data(), 0, 1.0f, out.data(), lse.data()).code(),
            absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Specs, EveryCodec, ::testing::ValuesIn(kSpecs));

TEST(Codec, MoreBitsLessError) {
  Chunk c = MakeChunk(1, 2, 256, 128, 3);
  double prev = 1e9;
  for (int b : {1, 2, 3, 4, 8}) {
    auto codec = MakeCodec("kivi:bits=" + std::to_string(b));
    Decoded d = RoundTrip(**codec, c.ref);
    const double e = RelativeError(c.k.data(), d.k.data(), c.k.size());
    EXPECT_LT(e, prev) << b;
    prev = e;
  }
  EXPECT_LT(prev, 0.01);
}

TEST(Codec, KiviBitsMatchThePaperAccounting) {
  // 2 bits + fp16 (m, Δ) per 32 elements = 3.0 bits; the header is amortized.
  Chunk c = MakeChunk(1, 8, 1024, 128, 4);
  auto codec = MakeCodec("kivi:bits=2");
  Decoded d = RoundTrip(**codec, c.ref);
  auto view = ParseBlock(AsBytes(d.block));
  const BitsPerElement b = (*codec)->Bits(*view, d.block.size());
  EXPECT_NEAR(b.k, 3.0, 0.001);
  EXPECT_NEAR(b.v, 3.0, 0.001);
  auto qwc = MakeCodec("qwc:kbits=4,vbits=2");
  d = RoundTrip(**qwc, c.ref);
  view = ParseBlock(AsBytes(d.block));
  const BitsPerElement q = (*qwc)->Bits(*view, d.block.size());
  EXPECT_NEAR(q.k, 4.5, 0.001);
  EXPECT_NEAR(q.v, 2.5, 0.001);
  EXPECT_NEAR(q.mean(), 3.5, 0.001);
}

TEST(Codec, GearStoresOutliersExactlyAndBeatsItsBackbone) {
  Chunk c = MakeChunk(1, 1, 128, 64, 5);
  c.k[1000] = 300.0f;  // a planted outlier
  c.k[2000] = -250.0f;
  auto gear = MakeCodec("gear:outliers=0.01");
  Decoded d = RoundTrip(**gear, c.ref);
  EXPECT_EQ(d.k[1000], 300.0f);
  EXPECT_EQ(d.k[2000], -250.0f);
  auto backbone = MakeCodec("kivi:bits=2,kgroup=64,vgroup=64");
  Decoded b = RoundTrip(**backbone, c.ref);
  const double gear_err = RelativeError(c.k.data(), d.k.data(), c.k.size());
  EXPECT_LT(gear_err, 0.8 * RelativeError(c.k.data(), b.k.data(), c.k.size()));
  Decoded more = RoundTrip(**MakeCodec("gear:outliers=0.01,rank=8"), c.ref);
  EXPECT_LT(RelativeError(c.k.data(), more.k.data(), c.k.size()), gear_err) << "more rank, less error";
}

TEST(Codec, SquatReusesItsStateForLaterChunks) {
  Chunk c = MakeChunk(1, 1, 64, 32, 6);
  std::vector<float> queries(2 * 16 * 32, 0.5f);
  for (size_t i = 0; i < queries.size(); ++i) queries[i] = std::cos(0.37f * i);
  auto codec = MakeCodec("squat:rank=4,block=8,lambda=1");
  std::unique_ptr<CodecState> state;
  EncodeOptions first;
  first.queries = queries.data();
  first.num_queries = 16;
  first.state = &state;
  Decoded a = RoundTrip(**codec, c.ref, &first);
  ASSERT_NE(state, nullptr);
  EncodeOptions later;  // no queries: uses the state
  later.state = &state;
  Decoded b = RoundTrip(**codec, c.ref, &later);
  EXPECT_EQ(a.k, b.k);
  EXPECT_LT(b.block.size(), a.block.size()) << "the subspace is stored once";
  EncodeOptions none;
  EXPECT_EQ((*codec)->Encode(c.ref, &none).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(Codec, BadInputsAreClearErrors) {
  Chunk c = MakeChunk(1, 1, 8, 16, 1);
  auto kivi = MakeCodec("kivi");
  ASSERT_TRUE(kivi.ok());
  c.k[5] = NAN;
  auto s = (*kivi)->Encode(c.ref, nullptr).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("K[5]"), absl::string_view::npos) << s;
  c.k[5] = 1e6f;
  EXPECT_EQ((*kivi)->Encode(c.ref, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  c.k[5] = 0;
  c.ref.tokens = 0;
  EXPECT_EQ((*kivi)->Encode(c.ref, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  c.ref.tokens = 8;
  c.ref.layer_count = 2;  // layout has 1 layer
  EXPECT_EQ((*kivi)->Encode(c.ref, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  c.ref.layer_count = 1;
  for (const char* bad : {"kivi:bits=9", "kivi:bits=two", "kivi:color=red", "nope", "kivi:bits", "gear:sparse=0",
                          "squat:lambda=-1"}) {
    EXPECT_EQ(MakeCodec(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  // A block of another codec, or another parameter set, is refused.
  auto block = (*kivi)->Encode(c.ref, nullptr);
  auto view = ParseBlock(AsBytes(*block));
  std::vector<float> k(8 * 16), v(8 * 16);
  EXPECT_EQ((*MakeCodec("f16"))->Decode(*view, k.data(), v.data()).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*MakeCodec("kivi:bits=3"))->Decode(*view, k.data(), v.data()).code(),
            absl::StatusCode::kFailedPrecondition);
  const int bad_row[] = {8};
  EXPECT_EQ((*kivi)->DecodeRows(*view, bad_row, k.data(), v.data()).code(), absl::StatusCode::kInvalidArgument);
  // Sections that disagree with the header: DATA_LOSS, no read past them.
  BlockHeader h = view->header;
  const std::string p = (*kivi)->params();
  std::vector<absl::Span<const uint8_t>> secs = view->sections;
  secs[2] = secs[2].subspan(0, secs[2].size() - 1);
  auto rebuilt = BuildBlock(h, secs);
  auto rv = ParseBlock(AsBytes(*rebuilt));
  ASSERT_TRUE(rv.ok());
  EXPECT_EQ((*kivi)->Decode(*rv, k.data(), v.data()).code(), absl::StatusCode::kDataLoss);
}

TEST(Allocator, GivesMoreBitsToMoreSensitiveTensors) {
  // Keys 4x as sensitive as values: the budget of 3 bits/tensor goes K-heavy.
  const std::vector<double> c = {16, 1, 16, 1};
  const std::vector<int> bits = AllocateBits(c, {1, 2, 3, 4, 6, 8}, 3.0);
  ASSERT_EQ(bits.size(), 4u);
  EXPECT_GT(bits[0], bits[1]);
  EXPECT_GT(bits[2], bits[3]);
  EXPECT_LE(bits[0] + bits[1] + bits[2] + bits[3], 12);
  EXPECT_EQ(AllocateBits({1, 1}, {2, 4}, 4.0), (std::vector<int>{4, 4}));
  EXPECT_EQ(AllocateBits({1, 1}, {2, 4}, 2.0), (std::vector<int>{2, 2}));
}

}  // namespace
}  // namespace kvrecall
