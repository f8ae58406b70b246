#include "codec/commvq.h"

#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "codec/codec.h"
#include "codec/metrics.h"
#include "codec/rope.h"
#include "codec/simd.h"

namespace kvrecall {
namespace {

// Keys with a low-rank structure and an outlier channel pair; values Gaussian
// with per-channel scales. [tokens][heads][dim] like a trace.
void MakeKv(int tokens, int heads, int dim, uint64_t seed, std::vector<float>* k, std::vector<float>* v) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n01;
  std::vector<float> basis(size_t(heads) * 4 * dim);
  for (float& b : basis) b = n01(rng);
  k->resize(size_t(tokens) * heads * dim);
  v->resize(k->size());
  for (int t = 0; t < tokens; ++t)
    for (int h = 0; h < heads; ++h) {
      float z[4];
      for (float& x : z) x = n01(rng);
      for (int c = 0; c < dim; ++c) {
        float s = 0;
        for (int j = 0; j < 4; ++j) s += z[j] * basis[(size_t(h) * 4 + j) * dim + c];
        (*k)[(size_t(t) * heads + h) * dim + c] = s + 0.2f * n01(rng) + (c == 1 ? 3.0f : 0.0f);
        (*v)[(size_t(t) * heads + h) * dim + c] = (1.0f + 0.1f * c) * n01(rng);
      }
    }
}

std::vector<float> Head(const std::vector<float>& x, int tokens, int heads, int dim, int h) {
  std::vector<float> out;
  for (int t = 0; t < tokens; ++t) {
    const float* r = x.data() + (size_t(t) * heads + h) * dim;
    out.insert(out.end(), r, r + dim);
  }
  return out;
}

double KeyError(const CommVqKeyCodebook& cb, const std::vector<float>& x, int dim) {
  const int64_t n = int64_t(x.size()) / dim;
  std::vector<float> y(x.size());
  std::vector<uint32_t> codes(cb.stages());
  for (int64_t i = 0; i < n; ++i) {
    cb.Encode(x.data() + i * dim, codes.data());
    cb.Decode(codes.data(), y.data() + i * dim);
  }
  return RelativeError(x.data(), y.data(), int64_t(x.size()));
}

TEST(CommVqKeys, MoreStagesLessErrorAndEmBeatsItsInit) {
  const int d = 16, T = 3000;
  std::vector<float> k, v;
  MakeKv(T, 1, d, 3, &k, &v);
  CommVqTrainOptions o;
  o.digit_bits = 3;
  o.stages = 4;
  o.iters = 8;
  auto cb = CommVqKeyCodebook::Train(d, RopeStyle::kHalfSplit, k.data(), T, o);
  ASSERT_TRUE(cb.ok()) << cb.status();
  o.iters = 1;  // one M-step from the data-point init, at the hottest temperature
  auto raw = CommVqKeyCodebook::Train(d, RopeStyle::kHalfSplit, k.data(), T, o);
  ASSERT_TRUE(raw.ok());
  o.iters = 8;
  o.stages = 1;
  auto one = CommVqKeyCodebook::Train(d, RopeStyle::kHalfSplit, k.data(), T, o);
  ASSERT_TRUE(one.ok());
  const double e4 = KeyError(*cb, k, d), e1 = KeyError(*one, k, d), eraw = KeyError(*raw, k, d);
  EXPECT_LT(e4, 0.6 * e1) << e4 << " vs " << e1;
  EXPECT_LT(e4, eraw) << e4 << " vs " << eraw;
  EXPECT_LT(e4, 0.35);
}

TEST(CommVqKeys, ScoresFromCodesEqualRopeOfTheDecodedKey) {
  for (RopeStyle style : {RopeStyle::kHalfSplit, RopeStyle::kInterleaved}) {
    const int d = 16, T = 600;
    std::vector<float> k, v;
    MakeKv(T, 1, d, 5, &k, &v);
    CommVqTrainOptions o;
    o.digit_bits = 3, o.stages = 3, o.iters = 4;
    auto cb = CommVqKeyCodebook::Train(d, style, k.data(), T, o);
    ASSERT_TRUE(cb.ok());
    std::mt19937 rng(2);
    std::normal_distribution<float> n01;
    std::vector<float> q(d), table(cb->table_size()), y(d);
    for (float& x : q) x = n01(rng);
    cb->QueryTable(q.data(), table.data());
    const std::vector<double> inv = RopeInvFreq(d, 10000.0);
    std::vector<uint32_t> codes(cb->stages());
    for (int t : {0, 1, 17, 511, 4099}) {
      cb->Encode(k.data() + t % T * d, codes.data());
      cb->Decode(codes.data(), y.data());
      ApplyRope(y.data(), d, t, style, 10000.0);
      RopeAngles ang;
      ang.Compute(inv, t);
      const float got = cb->Score(table.data(), codes.data(), ang.cos.data(), ang.sin.data());
      const float want = Dot(q.data(), y.data(), d);
      EXPECT_NEAR(got, want, 1e-4 * (1 + std::fabs(want))) << "t=" << t;
    }
  }
}

TEST(CommVqKeys, BadInput) {
  std::vector<float> k(16 * 100, 1.0f);
  CommVqTrainOptions o;
  o.digit_bits = 3;
  EXPECT_EQ(CommVqKeyCodebook::Train(15, RopeStyle::kHalfSplit, k.data(), 100, o).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CommVqKeyCodebook::Train(16, RopeStyle::kHalfSplit, k.data(), 7, o).status().code(),
            absl::StatusCode::kInvalidArgument);  // fewer keys than codebook vectors
  k[5] = NAN;
  EXPECT_EQ(CommVqKeyCodebook::Train(16, RopeStyle::kHalfSplit, k.data(), 100, o).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Calibration on the first 1500 tokens of each layer's stream; `held_out`
// gets layer 1's next 13 tokens (same distribution, never trained on).
std::shared_ptr<const CommVqCalibration> SmallCalibration(KvLayout* layout, std::vector<float>* held_k = nullptr,
                                                          std::vector<float>* held_v = nullptr) {
  layout->num_layers = 2;
  layout->num_q_heads = 4;
  layout->num_kv_heads = 2;
  layout->head_dim = 16;
  layout->keys_pre_rope = true;
  CommVqTrainingSet data;
  for (int l = 0; l < 2; ++l) {
    std::vector<float> k, v;
    MakeKv(1513, 2, 16, 10 + l, &k, &v);
    const size_t cut = size_t(1500) * 2 * 16;
    if (l == 1 && held_k) held_k->assign(k.begin() + cut, k.end()), held_v->assign(v.begin() + cut, v.end());
    k.resize(cut), v.resize(cut);
    data.k_pre.push_back(k);
    data.v.push_back(v);
  }
  CommVqConfig cfg = CommVqConfigForBits(2, 16, /*kdigit=*/3, /*vbits=*/4);
  cfg.train.iters = 4;
  cfg.residual = 4, cfg.chunk = 8;
  auto cal = TrainCommVqCalibration(*layout, 2, data, cfg);
  EXPECT_TRUE(cal.ok()) << cal.status();
  return cal.ok() ? *cal : nullptr;
}

TEST(CommVqCalibration, SerializesWithItsHashAndRejectsDamage) {
  KvLayout layout;
  auto cal = SmallCalibration(&layout);
  ASSERT_NE(cal, nullptr);
  EXPECT_EQ(cal->config.kstages, 5);   // round(2·16 / 6)
  EXPECT_EQ(cal->config.vstages, 8);   // 2·16 / 4
  const std::string bytes = SerializeCommVqCalibration(*cal);
  auto back = ParseCommVqCalibration(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ((*back)->hash, cal->hash);
  EXPECT_EQ(SerializeCommVqCalibration(**back), bytes);
  for (size_t at : {size_t(0), size_t(9), bytes.size() / 2, bytes.size() - 1}) {
    std::string bad = bytes;
    bad[at] ^= 0x20;
    EXPECT_EQ(ParseCommVqCalibration(bad).status().code(), absl::StatusCode::kDataLoss) << at;
  }
  for (size_t len : {size_t(0), size_t(20), bytes.size() - 9}) {
    EXPECT_EQ(ParseCommVqCalibration(bytes.substr(0, len)).status().code(), absl::StatusCode::kDataLoss) << len;
  }
}

TEST(CommVqCodec, RoundTripRowsBitsAndBlockIdentity) {
  KvLayout layout;
  std::vector<float> k, v;
  auto cal = SmallCalibration(&layout, &k, &v);
  ASSERT_NE(cal, nullptr);
  const std::string spec = CommVqCodecSpec(*cal);
  EXPECT_EQ(MakeCodec(spec).status().code(), absl::StatusCode::kFailedPrecondition);  // not registered yet
  RegisterCommVqCalibration(cal);
  auto codec = MakeCodec(spec);
  ASSERT_TRUE(codec.ok()) << codec.status();
  // One layer (layer 1 of 2), 2 heads, 13 tokens, in codec layout [1][2][13][16].
  std::vector<float> ck(k.size()), cv(v.size());
  for (int t = 0; t < 13; ++t)
    for (int h = 0; h < 2; ++h)
      for (int c = 0; c < 16; ++c) {
        ck[(size_t(h) * 13 + t) * 16 + c] = k[(size_t(t) * 2 + h) * 16 + c];
        cv[(size_t(h) * 13 + t) * 16 + c] = v[(size_t(t) * 2 + h) * 16 + c];
      }
  KvChunkRef ref;
  ref.layout = layout;
  ref.layer_begin = 1;
  ref.layer_count = 1;
  ref.tokens = 13;
  ref.k = ck.data();
  ref.v = cv.data();
  EncodeOptions opts;
  auto block = (*codec)->Encode(ref, &opts);
  ASSERT_TRUE(block.ok()) << block.status();
  auto view = ParseBlock(AsBytes(*block));
  ASSERT_TRUE(view.ok());
  std::vector<float> dk(ck.size()), dv(cv.size());
  ASSERT_TRUE((*codec)->Decode(*view, dk.data(), dv.data()).ok());
  EXPECT_LT(RelativeError(ck.data(), dk.data(), int64_t(ck.size())), 0.25);
  EXPECT_LT(RelativeError(cv.data(), dv.data(), int64_t(cv.size())), 0.6);
  const std::vector<int> rows = {12, 0, 5};
  std::vector<float> rk(2 * 3 * 16), rv(rk.size());
  ASSERT_TRUE((*codec)->DecodeRows(*view, rows, rk.data(), rv.data()).ok());
  for (int h = 0; h < 2; ++h)
    for (int r = 0; r < 3; ++r)
      for (int c = 0; c < 16; ++c) {
        ASSERT_EQ(rk[(h * 3 + r) * 16 + c], dk[(size_t(h) * 13 + rows[r]) * 16 + c]);
        ASSERT_EQ(rv[(h * 3 + r) * 16 + c], dv[(size_t(h) * 13 + rows[r]) * 16 + c]);
      }
  const BitsPerElement bits = (*codec)->Bits(*view, block->size());
  EXPECT_NEAR(bits.k + bits.v, 8.0 * block->size() / ck.size(), 1e-9);
  // Own sections: codes 5 stages × 6 bits / 16 dims plus one f16 prescale per token over 2 heads.
  EXPECT_GT(bits.k, 30.0 / 16 + 16.0 / 32);
  EXPECT_LT(bits.k, 30.0 / 16 + 16.0 / 32 + 3.0);  // + half of header/params/trailer over 416 elements
  auto again = CodecForBlock(*view);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->spec(), (*codec)->spec());
  StreamingParams sp = StreamingParamsOf(**codec);
  EXPECT_TRUE(sp.pre_rope);
  EXPECT_EQ(sp.residual, 4);
  EXPECT_EQ(sp.chunk, 8);
  // Post-RoPE chunks, other layouts and layer ranges are refused.
  ref.layout.keys_pre_rope = false;
  EXPECT_EQ((*codec)->Encode(ref, &opts).status().code(), absl::StatusCode::kInvalidArgument);
  ref.layout = layout;
  ref.layout.num_layers = 3;
  ref.layer_begin = 2;
  EXPECT_EQ((*codec)->Encode(ref, &opts).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeCodec(spec + ",kstages=9").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeCodec("commvq:cal=zz").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvrecall
