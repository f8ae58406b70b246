// GPU retrieval (VQ table + exact top-K with the group union) against the
// CPU index (index/retrieval_index.h): the same A²ATS codes, table and
// selection rule must pick exactly the same tokens. Skips without a GPU.
#include <cuda_runtime.h>

#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "codec/bytes.h"
#include "codec/rope.h"
#include "codec/simd.h"
#include "codec/synthetic_kv.h"
#include "gpu/cuda_test_util.h"
#include "gpu/stories_trace.h"
#include "gpu/vq_topk_kernels.h"
#include "index/retrieval_index.h"

namespace kvrecall {
namespace {

// Trains the CPU A²ATS index on (kpre, kpost) and queries of one KV head's
// group, then checks the GPU table and selection for the decode queries
// (dq_pre/dq_post [G][d]) against SelectTokens over the n tokens.
void CheckSelection(const std::vector<float>& kpre, const std::vector<float>& kpost, const std::vector<float>& qpre,
                    const std::vector<float>& qpost, const std::vector<float>& dq_pre, const std::vector<float>& dq_post,
                    int n, int G, const KvLayout& l, int C, int64_t train_keys, const std::vector<int64_t>& ks) {
  const int d = l.head_dim;
  const double b = 64;
  auto idx = MakeRetrievalIndex(absl::StrCat("a2ats:b=64,centroids=", C, ",iters=4,seed=1"), l);
  ASSERT_TRUE(idx.ok());
  TrainingData t;
  t.dim = d, t.k_pre = kpre.data(), t.k_post = kpost.data(), t.num_keys = train_keys;
  t.q_pre = qpre.data(), t.q_post = qpost.data(), t.num_queries = train_keys * G;
  ASSERT_TRUE((*idx)->Train(t).ok());
  ASSERT_TRUE((*idx)->Add(kpre.data(), kpost.data(), n).ok());
  // The index's state: L [d][d] f64, whitened centroids [C][d], codes [n].
  std::string state;
  (*idx)->SaveState(&state);
  const auto* p = reinterpret_cast<const uint8_t*>(state.data());
  size_t off = 8;
  std::vector<double> L(size_t(d) * d);
  for (auto& x : L) x = LoadLE<double>(p + off), off += 8;
  std::vector<float> cent(size_t(C) * d);
  for (auto& x : cent) x = LoadLE<float>(p + off), off += 4;
  off += 8;
  std::vector<uint16_t> codes(n);
  for (auto& c : codes) c = LoadLE<uint16_t>(p + off), off += 2;
  // y = L^-1 R_b q per query head, then the table, as the CPU index computes them.
  const float scale = 1.0f / std::sqrt(float(d));
  std::vector<float> y(size_t(G) * d), table(size_t(G) * C);
  for (int g = 0; g < G; ++g) {
    std::vector<float> q(dq_pre.begin() + size_t(g) * d, dq_pre.begin() + size_t(g + 1) * d);
    ApplyRope(q.data(), l, b);
    for (int i = 0; i < d; ++i) {
      double s = q[i];
      for (int j = 0; j < i; ++j) s -= L[size_t(i) * d + j] * y[size_t(g) * d + j];
      y[size_t(g) * d + i] = static_cast<float>(s / L[size_t(i) * d + i]);
    }
    for (int c = 0; c < C; ++c) table[size_t(g) * C + c] = Dot(y.data() + size_t(g) * d, cent.data() + size_t(c) * d, d) * scale;
  }
  // The table kernel agrees with the host table (to float rounding).
  float *dy = Upload(y), *dcent = Upload(cent), *dtable = nullptr;
  ASSERT_EQ(cudaMalloc(&dtable, table.size() * 4), cudaSuccess);
  ASSERT_EQ(LaunchVqTable(dy, dcent, G, C, d, scale, dtable, nullptr), cudaSuccess);
  std::vector<float> gtable(table.size());
  ASSERT_EQ(cudaMemcpy(gtable.data(), dtable, table.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  for (size_t i = 0; i < table.size(); ++i) EXPECT_NEAR(gtable[i], table[i], 1e-4 * (1 + std::fabs(table[i])));
  // Selection from the host table: identical scores, so identical picks.
  ASSERT_EQ(cudaMemcpy(dtable, table.data(), table.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  std::vector<uint8_t> packed(PackedCodeBytes(n));
  PackCodes12(codes.data(), n, packed.data());
  uint8_t* dcodes = Upload(packed);
  uint8_t* mask = nullptr;
  int32_t *sel = nullptr, *count = nullptr;
  ASSERT_EQ(cudaMalloc(&mask, n), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&sel, n * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&count, 4), cudaSuccess);
  // Scores of every token: table[g][code].
  float* dscores = nullptr;
  ASSERT_EQ(cudaMalloc(&dscores, size_t(G) * n * 4), cudaSuccess);
  ASSERT_EQ(LaunchVqScore(dtable, G, C, dcodes, n, dscores, nullptr), cudaSuccess);
  const std::vector<float> scores = Download(dscores, size_t(G) * n);
  for (int g = 0; g < G; ++g)
    for (int i = 0; i < n; ++i) ASSERT_EQ(scores[size_t(g) * n + i], table[size_t(g) * C + codes[i]]) << g << "," << i;
  cudaFree(dscores);
  for (int64_t k : ks) {
    VqSelectArgs a;
    a.table = dtable, a.group = G, a.num_centroids = C, a.codes = dcodes, a.n = n, a.sinks = 4, a.window = 64;
    a.k = k, a.mask = mask, a.selected = sel, a.num_selected = count;
    ASSERT_EQ(LaunchVqSelect(a, nullptr), cudaSuccess);
    int32_t m = 0;
    ASSERT_EQ(cudaMemcpy(&m, count, 4, cudaMemcpyDeviceToHost), cudaSuccess);
    std::vector<int32_t> got(m);
    ASSERT_EQ(cudaMemcpy(got.data(), sel, size_t(m) * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    SelectionConfig sc;
    sc.sinks = 4, sc.window = 64, sc.topk = k;
    auto want = SelectTokens(**idx, dq_pre.data(), dq_post.data(), G, n - 1, sc);
    ASSERT_TRUE(want.ok());
    ASSERT_EQ(got.size(), want->size()) << "k=" << k;
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], (*want)[i]) << "k=" << k << " at " << i;
  }
  cudaFree(dy), cudaFree(dcent), cudaFree(dtable), cudaFree(dcodes), cudaFree(mask), cudaFree(sel), cudaFree(count);
}

// One synthetic KV head with its query group: n tokens of pre/post-RoPE keys
// and queries, and the one-KV-head layout they belong to.
struct SyntheticGroup {
  SyntheticGroup(int n, int kv_head) : gen(Config(n), kv_head) {
    const SyntheticConfig& c = Config(n);
    d = c.head_dim, G = c.group_size;
    kpre.resize(size_t(n) * d), kpost.resize(kpre.size()), qpre.resize(size_t(n) * G * d), qpost.resize(qpre.size());
    gen.Next(n, kpre.data(), kpost.data(), nullptr, qpre.data(), qpost.data());
    layout.num_layers = 1, layout.num_q_heads = G, layout.num_kv_heads = 1, layout.head_dim = d;
    layout.rope_style = c.rope_style, layout.rope_theta = c.rope_theta;
  }
  static SyntheticConfig Config(int n) {
    SyntheticConfig c;
    c.total_tokens = n;
    return c;
  }
  SyntheticHead gen;
  int d = 0, G = 0;
  std::vector<float> kpre, kpost, qpre, qpost;
  KvLayout layout;
};

TEST(GpuVqTopK, SelectsExactlyWhatTheCpuIndexSelects) {
  KVR_REQUIRE_GPU();
  const int n = 20000;
  SyntheticGroup s(n, 0);
  std::vector<float> dq_pre(size_t(s.G) * s.d), dq_post(dq_pre.size());
  s.gen.Next(1, nullptr, nullptr, nullptr, dq_pre.data(), dq_post.data());
  CheckSelection(s.kpre, s.kpost, s.qpre, s.qpost, dq_pre, dq_post, n, s.G, s.layout, 64, n / 2, {1, 37, 600, n});
}

// Every (layer, KV head) of a real story: the last token's query group
// selects among the tokens before it, with head_dim 8 and GQA groups of 2.
TEST(GpuVqTopK, RealStoriesTraceSelectsWhatTheCpuIndexSelects) {
  KVR_REQUIRE_GPU();
  KVR_REQUIRE_STORIES_TRACE(trace, 11, 400);
  const KvLayout& tl = trace.layout;
  const int d = tl.head_dim, Hq = tl.num_q_heads, Hk = tl.num_kv_heads, G = Hq / Hk;
  KvLayout l = tl;
  l.num_layers = 1, l.num_q_heads = G, l.num_kv_heads = 1;
  for (const KvTraceRecord& r : trace.records) {
    const int T = static_cast<int>(r.tokens), n = T - 1;
    for (int h = 0; h < Hk; ++h) {
      const auto kpre = HeadRows(r.k_pre_rope, T, Hk, d, h), kpost = HeadRows(r.k, T, Hk, d, h);
      // The group's queries, [tokens][G][d]: query heads h*G .. h*G+G-1 are adjacent.
      std::vector<float> qpre(size_t(T) * G * d), qpost(qpre.size());
      for (int t = 0; t < T; ++t) {
        std::copy_n(r.q_pre_rope.begin() + (size_t(t) * Hq + h * G) * d, G * d, qpre.begin() + size_t(t) * G * d);
        std::copy_n(r.q.begin() + (size_t(t) * Hq + h * G) * d, G * d, qpost.begin() + size_t(t) * G * d);
      }
      const std::vector<float> dq_pre(qpre.end() - G * d, qpre.end()), dq_post(qpost.end() - G * d, qpost.end());
      CheckSelection(kpre, kpost, qpre, qpost, dq_pre, dq_post, n, G, l, 64, n, {1, 7, 50, n});
    }
  }
}

TEST(GpuVqTopK, PackingRoundTrips) {
  std::vector<uint16_t> codes = {0, 1, 4095, 2048, 7, 4094, 12};
  std::vector<uint8_t> p(PackedCodeBytes(codes.size()));
  PackCodes12(codes.data(), codes.size(), p.data());
  for (size_t i = 0; i < codes.size(); ++i) {
    const size_t bit = 12 * i;
    const uint32_t w = p[bit / 8] | (uint32_t(p[bit / 8 + 1]) << 8);
    EXPECT_EQ((w >> (bit % 8)) & 0xFFF, codes[i]) << i;
  }
}

// New keys encoded on the GPU get the CPU index's codes (up to exact ties),
// appended into a packed buffer at an odd offset without touching neighbours.
TEST(GpuVqTopK, EncodeMatchesTheCpuIndex) {
  KVR_REQUIRE_GPU();
  const int n = 4000, C = 256, m = 301;
  SyntheticGroup s(n, 1);
  const int d = s.d, G = s.G;
  const std::vector<float>&kpre = s.kpre, &kpost = s.kpost, &qpre = s.qpre, &qpost = s.qpost;
  auto idx = MakeRetrievalIndex("a2ats:b=64,centroids=256,iters=4,seed=2", s.layout);
  TrainingData t;
  t.dim = d, t.k_pre = kpre.data(), t.k_post = kpost.data(), t.num_keys = n;
  t.q_pre = qpre.data(), t.q_post = qpost.data(), t.num_queries = int64_t(n) * G;
  ASSERT_TRUE((*idx)->Train(t).ok());
  ASSERT_TRUE((*idx)->Add(kpre.data(), kpost.data(), m).ok());
  std::string state;
  (*idx)->SaveState(&state);
  const auto* p = reinterpret_cast<const uint8_t*>(state.data());
  size_t off = 8;
  std::vector<float> L(size_t(d) * d), cent(size_t(C) * d);
  for (auto& x : L) x = static_cast<float>(LoadLE<double>(p + off)), off += 8;
  for (auto& x : cent) x = LoadLE<float>(p + off), off += 4;
  off += 8;
  std::vector<uint16_t> want(m);
  for (auto& c : want) c = LoadLE<uint16_t>(p + off), off += 2;
  const int64_t start = 5;  // odd: the first code shares a byte with code 4
  std::vector<uint16_t> before(start + m + 3, 0xABC);
  std::vector<uint8_t> packed(PackedCodeBytes(before.size()));
  PackCodes12(before.data(), before.size(), packed.data());
  std::vector<float> keys(kpre.begin(), kpre.begin() + size_t(m) * d);
  float *dk = Upload(keys), *dL = Upload(L), *dc = Upload(cent);
  uint8_t* dp = Upload(packed);
  uint16_t* scratch = nullptr;
  ASSERT_EQ(cudaMalloc(&scratch, m * 2), cudaSuccess);
  ASSERT_EQ(LaunchVqEncode(dk, m, d, dL, dc, C, start, scratch, dp, nullptr), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(packed.data(), dp, packed.size(), cudaMemcpyDeviceToHost), cudaSuccess);
  auto code_at = [&](int64_t i) {
    const int64_t bit = 12 * i;
    const uint32_t w = packed[bit / 8] | (uint32_t(packed[bit / 8 + 1]) << 8);
    return static_cast<uint16_t>((w >> (bit % 8)) & 0xFFF);
  };
  for (int64_t i = 0; i < start; ++i) EXPECT_EQ(code_at(i), 0xABC) << "neighbour " << i;
  for (int64_t i = start + m; i < int64_t(before.size()); ++i) EXPECT_EQ(code_at(i), 0xABC) << "neighbour " << i;
  int mismatches = 0;
  for (int i = 0; i < m; ++i) mismatches += code_at(start + i) != want[i];
  EXPECT_LE(mismatches, m / 100) << "codes differ beyond float ties";
  cudaFree(dk), cudaFree(dL), cudaFree(dc), cudaFree(dp), cudaFree(scratch);
}

}  // namespace
}  // namespace kvrecall
