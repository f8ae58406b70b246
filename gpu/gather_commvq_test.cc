// GPU gather from mapped pinned memory and CommVQ scoring from codes, each
// against its CPU reference (skips without a GPU).
#include <cuda_runtime.h>

#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "codec/commvq.h"
#include "codec/rope.h"
#include "gpu/cuda_test_util.h"
#include "gpu/gather_commvq_kernels.h"
#include "gpu/stories_trace.h"

namespace kvrecall {
namespace {

TEST(GpuGather, RowsFromMappedPinnedMemory) {
  KVR_REQUIRE_GPU();
  const int rows_total = 1000, elems = 256;
  uint16_t* host = nullptr;
  ASSERT_EQ(cudaHostAlloc(&host, size_t(rows_total) * elems * 2, cudaHostAllocMapped), cudaSuccess);
  for (size_t i = 0; i < size_t(rows_total) * elems; ++i) host[i] = static_cast<uint16_t>(i * 7);
  uint16_t* mapped = nullptr;
  ASSERT_EQ(cudaHostGetDevicePointer(reinterpret_cast<void**>(&mapped), host, 0), cudaSuccess);
  const std::vector<int32_t> rows = {999, 0, 500, 500, 3};
  int32_t* drows = Upload(rows);
  uint16_t* dst = nullptr;
  ASSERT_EQ(cudaMalloc(&dst, rows.size() * elems * 2), cudaSuccess);
  cudaStream_t st;
  ASSERT_EQ(cudaStreamCreate(&st), cudaSuccess);
  ASSERT_EQ(LaunchGatherRows(mapped, drows, static_cast<int>(rows.size()), elems, dst, st), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(st), cudaSuccess);
  std::vector<uint16_t> got(rows.size() * elems);
  ASSERT_EQ(cudaMemcpy(got.data(), dst, got.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  for (size_t i = 0; i < rows.size(); ++i)
    for (int c = 0; c < elems; ++c) ASSERT_EQ(got[i * elems + c], host[size_t(rows[i]) * elems + c]);
  cudaStreamDestroy(st), cudaFree(drows), cudaFree(dst), cudaFreeHost(host);
}

// Trains a CommVQ key codebook on keys [n][d], encodes them, and checks the
// GPU scores (one query, per-token RoPE rotation by position) against the
// CPU codebook's Score for every token.
void CheckCommVqScores(const std::vector<float>& keys, int n, int d, RopeStyle style, const std::vector<float>& q,
                       double theta, const CommVqTrainOptions& o) {
  auto cb = CommVqKeyCodebook::Train(d, style, keys.data(), n, o);
  ASSERT_TRUE(cb.ok()) << cb.status();
  std::vector<uint16_t> codes(size_t(n) * o.stages);
  std::vector<float> norms(n);
  std::vector<uint32_t> c32(o.stages);
  for (int t = 0; t < n; ++t) {
    cb->Encode(keys.data() + size_t(t) * d, c32.data());
    for (int r = 0; r < o.stages; ++r) codes[size_t(t) * o.stages + r] = static_cast<uint16_t>(c32[r]);
    norms[t] = 0.5f + (t % 7) * 0.1f;
  }
  std::vector<float> table(cb->table_size());
  cb->QueryTable(q.data(), table.data());
  const std::vector<double> inv = RopeInvFreq(d, theta);
  std::vector<float> invf(inv.begin(), inv.end());
  CommVqScoreArgs a;
  a.table = Upload(table), a.codes = Upload(codes), a.norms = Upload(norms), a.inv_freq = Upload(invf);
  a.n = n, a.stages = o.stages, a.digit_bits = o.digit_bits, a.pairs = d / 2, a.inv_sqrt_d = 1.0f / std::sqrt(float(d));
  float* scores = nullptr;
  ASSERT_EQ(cudaMalloc(&scores, size_t(n) * 4), cudaSuccess);
  a.scores = scores;
  ASSERT_EQ(LaunchCommVqScore(a, nullptr), cudaSuccess);
  std::vector<float> got(n);
  ASSERT_EQ(cudaMemcpy(got.data(), scores, size_t(n) * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  for (int t = 0; t < n; ++t) {
    RopeAngles ang;
    ang.Compute(inv, t);
    std::vector<uint32_t> ct(codes.begin() + size_t(t) * o.stages, codes.begin() + size_t(t + 1) * o.stages);
    const float ref = norms[t] * a.inv_sqrt_d * cb->Score(table.data(), ct.data(), ang.cos.data(), ang.sin.data());
    ASSERT_NEAR(got[t], ref, 1e-3 * (1 + std::fabs(ref))) << t;
  }
  cudaFree(const_cast<float*>(a.table)), cudaFree(const_cast<uint16_t*>(a.codes));
  cudaFree(const_cast<float*>(a.norms)), cudaFree(const_cast<float*>(a.inv_freq)), cudaFree(scores);
}

TEST(GpuCommVq, ScoresFromCodesMatchTheCpuCodebook) {
  KVR_REQUIRE_GPU();
  const int d = 64, n = 3000;
  std::mt19937 rng(4);
  std::normal_distribution<float> n01;
  std::vector<float> keys(size_t(n) * d), q(d);
  for (float& x : keys) x = n01(rng);
  for (float& x : q) x = n01(rng);
  CommVqTrainOptions o;
  o.stages = 3, o.digit_bits = 4, o.iters = 3;
  CheckCommVqScores(keys, n, d, RopeStyle::kHalfSplit, q, 10000.0, o);
}

// Real keys and queries: every layer and KV head of a stories260K story
// (pre-RoPE keys, the head group's first query at the last position), with
// one and two stages of 3-bit digits.
TEST(GpuCommVq, RealStoriesTraceScoresMatchTheCpuCodebook) {
  KVR_REQUIRE_GPU();
  KVR_REQUIRE_STORIES_TRACE(trace, 5, 300);
  const KvLayout& l = trace.layout;
  const int d = l.head_dim, Hq = l.num_q_heads, Hk = l.num_kv_heads, G = Hq / Hk;
  for (const KvTraceRecord& r : trace.records) {
    const int T = static_cast<int>(r.tokens);
    for (int h = 0; h < Hk; ++h) {
      const std::vector<float> keys = HeadRows(r.k_pre_rope, T, Hk, d, h);
      const std::vector<float> q(r.q_pre_rope.begin() + (size_t(T - 1) * Hq + h * G) * d,
                                 r.q_pre_rope.begin() + (size_t(T - 1) * Hq + h * G + 1) * d);
      for (int stages : {1, 2}) {
        CommVqTrainOptions o;
        o.stages = stages, o.digit_bits = 3, o.iters = 3;
        SCOPED_TRACE(testing::Message() << "layer " << r.layer << " head " << h << " stages " << stages);
        CheckCommVqScores(keys, T, d, l.rope_style, q, l.rope_theta, o);
      }
    }
  }
}

}  // namespace
}  // namespace kvrecall
