// GPU dequantization of KIVI blocks against the CPU codec's DecodeRows, for
// keys (per channel) and values (per token), selected and ragged rows, 2
// and 3 bits (codes crossing byte boundaries). Skips without a GPU.
#include <cuda_runtime.h>

#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

#include "codec/codec.h"
#include "codec/container.h"
#include "codec/half.h"
#include "gpu/dequant_kernels.h"
#include "gpu/cuda_test_util.h"

namespace kvrecall {
namespace {

TEST(GpuDequant, KiviRowsMatchTheCpuDecoder) {
  KVR_REQUIRE_GPU();
  for (int bits : {2, 3}) {
    const int layers = 2, H = 2, T = 45, d = 64;
    KvChunkRef c;
    c.layout.num_layers = layers, c.layout.num_q_heads = 4, c.layout.num_kv_heads = H, c.layout.head_dim = d;
    c.layer_count = layers;
    c.tokens = T;
    std::vector<float> k(size_t(layers) * H * T * d), v(k.size());
    std::mt19937 rng(bits);
    std::normal_distribution<float> n01;
    for (float& x : k) x = n01(rng);
    for (float& x : v) x = n01(rng);
    c.k = k.data(), c.v = v.data();
    auto codec = MakeCodec(absl::StrCat("kivi:bits=", bits, ",kgroup=32,vgroup=32"));
    ASSERT_TRUE(codec.ok());
    EncodeOptions o;
    auto block = (*codec)->Encode(c, &o);
    ASSERT_TRUE(block.ok());
    auto view = ParseBlock(AsBytes(*block));
    ASSERT_TRUE(view.ok());
    const std::vector<int> rows = {44, 0, 31, 32, 7, 7};
    std::vector<float> rk(size_t(layers) * H * rows.size() * d), rv(rk.size());
    ASSERT_TRUE((*codec)->DecodeRows(*view, rows, rk.data(), rv.data()).ok());
    // Sections after the parameters: K scales, K codes, V scales, V codes.
    for (int kv = 0; kv < 2; ++kv) {
      const auto& scales = view->sections[1 + 2 * kv];
      const auto& codes = view->sections[2 + 2 * kv];
      DequantRowsArgs a;
      a.heads = layers * H, a.tokens = T, a.dim = d, a.bits = bits, a.group = 32, a.per_channel = kv == 0;
      a.codes = Upload(codes.data(), codes.size());
      a.scales = reinterpret_cast<const uint16_t*>(Upload(scales.data(), scales.size()));
      std::vector<int32_t> r32(rows.begin(), rows.end());
      a.rows = Upload(r32.data(), r32.size());
      a.num_rows = static_cast<int>(rows.size());
      uint16_t* out = nullptr;
      ASSERT_EQ(cudaMalloc(&out, rk.size() * 2), cudaSuccess);
      a.out = out;
      ASSERT_EQ(LaunchDequantizeRows(a, nullptr), cudaSuccess);
      std::vector<uint16_t> got(rk.size());
      ASSERT_EQ(cudaMemcpy(got.data(), out, got.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
      const std::vector<float>& want = kv == 0 ? rk : rv;
      for (size_t i = 0; i < got.size(); ++i) {
        const float w = want[i], g = HalfToFloat(got[i]);
        ASSERT_NEAR(g, w, std::fabs(w) * 1e-3 + 1e-3) << "bits " << bits << " kv " << kv << " element " << i;
      }
      cudaFree(const_cast<uint8_t*>(a.codes)), cudaFree(const_cast<uint16_t*>(a.scales));
      cudaFree(const_cast<int32_t*>(a.rows)), cudaFree(out);
    }
  }
}

}  // namespace
}  // namespace kvrecall
