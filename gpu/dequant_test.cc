// GPU dequantization against the CPU codecs' DecodeRows: KIVI (keys per
// channel, values per token; 2 and 3 bits, codes crossing byte boundaries)
// and GEAR (the same plus the fused low-rank + sparse-outlier correction), on
// random data and on a real stories260K trace, selected and ragged rows.
// Skips without a GPU.
#include <cuda_runtime.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

#include "codec/codec.h"
#include "codec/container.h"
#include "codec/half.h"
#include "gpu/cuda_test_util.h"
#include "gpu/dequant_kernels.h"
#include "gpu/stories_trace.h"

namespace kvrecall {
namespace {

struct Chunk {
  KvChunkRef ref;
  std::vector<float> k, v;  // [layer][kv head][token][d]
};

Chunk RandomChunk(int layers, int heads, int tokens, int d, uint32_t seed) {
  Chunk c;
  c.ref.layout.num_layers = layers, c.ref.layout.num_q_heads = 2 * heads, c.ref.layout.num_kv_heads = heads;
  c.ref.layout.head_dim = d;
  c.ref.layer_count = layers;
  c.ref.tokens = tokens;
  c.k.resize(size_t(layers) * heads * tokens * d), c.v.resize(c.k.size());
  std::mt19937 rng(seed);
  std::normal_distribution<float> n01;
  for (float& x : c.k) x = n01(rng);
  for (float& x : c.v) x = n01(rng);
  for (size_t i = 0; i < c.k.size(); i += 97) c.k[i] *= 12;  // outlier channels for GEAR to find
  c.ref.k = c.k.data(), c.ref.v = c.v.data();
  return c;
}

Chunk TraceChunk(const KvTrace& trace) {
  const KvLayout& l = trace.layout;
  Chunk c;
  c.ref.layout = l;
  c.ref.layout.dtype = DType::kF32;
  c.ref.layer_count = static_cast<int>(trace.records.size());
  const int T = static_cast<int>(trace.records[0].tokens), H = l.num_kv_heads, d = l.head_dim;
  c.ref.tokens = T;
  for (const KvTraceRecord& r : trace.records) {
    for (int h = 0; h < H; ++h) {
      const auto k = HeadRows(r.k, T, H, d, h), v = HeadRows(r.v, T, H, d, h);
      c.k.insert(c.k.end(), k.begin(), k.end());
      c.v.insert(c.v.end(), v.begin(), v.end());
    }
  }
  c.ref.k = c.k.data(), c.ref.v = c.v.data();
  return c;
}

// Encodes with `spec` (kivi or gear, whose bits and groups are given again),
// decodes `rows` on the CPU and on the GPU from the block's sections, and
// compares.
void CheckRows(const std::string& spec, int bits, int kgroup, int vgroup, const Chunk& c,
               const std::vector<int>& rows) {
  const bool gear = spec.rfind("gear", 0) == 0;
  auto codec = MakeCodec(spec);
  ASSERT_TRUE(codec.ok()) << codec.status();
  EncodeOptions o;
  auto block = (*codec)->Encode(c.ref, &o);
  ASSERT_TRUE(block.ok()) << block.status();
  auto view = ParseBlock(AsBytes(*block));
  ASSERT_TRUE(view.ok());
  const int heads = c.ref.layer_count * c.ref.layout.num_kv_heads, T = c.ref.tokens, d = c.ref.layout.head_dim;
  std::vector<float> rk(size_t(heads) * rows.size() * d), rv(rk.size());
  ASSERT_TRUE((*codec)->DecodeRows(*view, rows, rk.data(), rv.data()).ok());
  // Sections after the parameters, per tensor: scales, codes (+ GEAR: low-rank, outliers).
  const int per = gear ? 4 : 2;
  std::vector<int32_t> r32(rows.begin(), rows.end());
  int32_t* drows = Upload(r32);
  for (int kv = 0; kv < 2; ++kv) {
    const auto& scales = view->sections[1 + per * kv];
    const auto& codes = view->sections[2 + per * kv];
    DequantRowsArgs a;
    a.heads = heads, a.tokens = T, a.dim = d;
    a.bits = bits, a.group = kv == 0 ? kgroup : vgroup;
    a.per_channel = kv == 0;
    a.codes = Upload(codes.data(), codes.size());
    a.scales = reinterpret_cast<const uint16_t*>(Upload(scales.data(), scales.size()));
    a.rows = drows;
    a.num_rows = static_cast<int>(rows.size());
    uint16_t* out = nullptr;
    ASSERT_EQ(cudaMalloc(&out, rk.size() * 2), cudaSuccess);
    a.out = out;
    uint8_t *dlr = nullptr, *dol = nullptr;
    uint64_t* dheads = nullptr;
    if (gear) {
      const auto& lr = view->sections[3 + per * kv];
      const auto& ol = view->sections[4 + per * kv];
      GearRowsArgs g;
      g.base = a;
      g.rank = lr[0] | lr[1] << 8;
      dlr = Upload(lr.data() + 2, lr.size() - 2);
      dol = Upload(ol.data(), ol.size());
      std::vector<uint64_t> offsets(heads);
      ASSERT_TRUE(GearOutlierHeadOffsets(ol.data(), ol.size(), heads, uint64_t(T) * d, offsets.data()));
      dheads = Upload(offsets);
      g.lowrank = dlr, g.outliers = dol, g.outlier_heads = dheads;
      ASSERT_EQ(LaunchGearDequantizeRows(g, nullptr), cudaSuccess);
    } else {
      ASSERT_EQ(LaunchDequantizeRows(a, nullptr), cudaSuccess);
    }
    const std::vector<uint16_t> got = Download(out, rk.size());
    const std::vector<float>& want = kv == 0 ? rk : rv;
    for (size_t i = 0; i < got.size(); ++i) {
      const float w = want[i], g = HalfToFloat(got[i]);
      ASSERT_NEAR(g, w, std::fabs(w) * 1e-3 + 1e-3) << spec << " kv " << kv << " element " << i;
    }
    cudaFree(const_cast<uint8_t*>(a.codes)), cudaFree(const_cast<uint16_t*>(a.scales)), cudaFree(out);
    cudaFree(dlr), cudaFree(dol), cudaFree(dheads);
  }
  cudaFree(drows);
}

TEST(GpuDequant, KiviRowsMatchTheCpuDecoder) {
  KVR_REQUIRE_GPU();
  const Chunk c = RandomChunk(2, 2, 45, 64, 1);
  for (int bits : {2, 3}) CheckRows(absl::StrCat("kivi:bits=", bits, ",kgroup=32,vgroup=32"), bits, 32, 32, c, {44, 0, 31, 32, 7, 7});
}

TEST(GpuDequant, GearRowsWithLowRankAndOutliersMatchTheCpuDecoder) {
  KVR_REQUIRE_GPU();
  for (int d : {64, 128}) {
    const Chunk c = RandomChunk(2, 2, 77, d, d);
    std::vector<int> all(77);
    for (int i = 0; i < 77; ++i) all[i] = 76 - i;
    CheckRows("gear:bits=2,kgroup=32,vgroup=32,rank=4,outliers=0.02", 2, 32, 32, c, {76, 0, 31, 32, 7, 7});
    CheckRows("gear:bits=4,kgroup=16,vgroup=64,rank=8,outliers=0.05", 4, 16, 64, c, all);
    CheckRows("gear_l:bits=3,kgroup=32,vgroup=32,rank=2", 3, 32, 32, c, {3, 60});
  }
}

TEST(GpuDequant, RealStoriesTraceKiviAndGear) {
  KVR_REQUIRE_GPU();
  KVR_REQUIRE_STORIES_TRACE(trace, 3, 200);
  const Chunk c = TraceChunk(trace);
  std::vector<int> rows;
  for (int t = 0; t < c.ref.tokens; t += 3) rows.push_back(t);
  rows.push_back(c.ref.tokens - 1);
  CheckRows("kivi:bits=2,kgroup=32,vgroup=32", 2, 32, 32, c, rows);
  CheckRows("gear:bits=2,kgroup=32,vgroup=32,rank=2,outliers=0.02", 2, 32, 32, c, rows);
}

TEST(GpuDequant, GearOutlierPlanRejectsMalformedSections) {
  // Two heads: counts 1 and 0; then truncated, overlong and oversized counts.
  std::vector<uint8_t> ok = {1, 0, 0, 0, 5, 0, 0, 0, 0, 60, 0, 0, 0, 0};
  uint64_t off[2];
  ASSERT_TRUE(GearOutlierHeadOffsets(ok.data(), ok.size(), 2, 100, off));
  EXPECT_EQ(off[0], 0u);
  EXPECT_EQ(off[1], 10u);
  EXPECT_FALSE(GearOutlierHeadOffsets(ok.data(), ok.size() - 1, 2, 100, off));
  std::vector<uint8_t> extra = ok;
  extra.push_back(0);
  EXPECT_FALSE(GearOutlierHeadOffsets(extra.data(), extra.size(), 2, 100, off));
  std::vector<uint8_t> big = ok;
  big[0] = 200;
  EXPECT_FALSE(GearOutlierHeadOffsets(big.data(), big.size(), 2, 100, off));
}

}  // namespace
}  // namespace kvrecall
