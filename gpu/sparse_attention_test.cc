// The sparse decode attention kernels against the CPU reference
// (codec/attention.h) on random data with ragged row counts, on the real
// squat_qk sample, and the partial-result merge. Skips without a GPU.
#include "gpu/sparse_attention.h"

#include <cuda_runtime.h>

#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "codec/attention.h"
#include "codec/half.h"
#include "common/shared_data.h"
#include "gpu/cuda_test_util.h"
#include "gpu/stories_trace.h"

namespace kvrecall {
namespace {

// Runs the kernel and the CPU reference on the same (f16-rounded) data.
void Check(int nq, int d, int total_rows, const std::vector<std::vector<int32_t>>& sel, const std::vector<float>& q,
           const std::vector<float>& kf, const std::vector<float>& vf) {
  std::vector<uint16_t> k16(kf.size()), v16(vf.size());
  std::vector<float> kr(kf.size()), vr(vf.size());
  for (size_t i = 0; i < kf.size(); ++i) {
    k16[i] = FloatToHalf(kf[i]), v16[i] = FloatToHalf(vf[i]);
    kr[i] = HalfToFloat(k16[i]), vr[i] = HalfToFloat(v16[i]);
  }
  int max_rows = 0;
  for (const auto& s : sel) max_rows = std::max<int>(max_rows, s.size());
  std::vector<int32_t> rows(size_t(nq) * std::max(1, max_rows), 0), counts(nq);
  for (int i = 0; i < nq; ++i) {
    counts[i] = static_cast<int32_t>(sel[i].size());
    std::copy(sel[i].begin(), sel[i].end(), rows.begin() + size_t(i) * max_rows);
  }
  auto plan = PlanSparseAttention(nq, d, max_rows);
  ASSERT_TRUE(plan.ok()) << plan.status();
  float *dq = Upload(q), *dout, *dlse;
  uint16_t *dk = Upload(k16), *dv = Upload(v16);
  int32_t *drows = Upload(rows), *dcounts = Upload(counts);
  void* ws = nullptr;
  ASSERT_EQ(cudaMalloc(&dout, size_t(nq) * d * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dlse, size_t(nq) * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&ws, std::max<size_t>(1, plan->workspace_bytes)), cudaSuccess);
  const float scale = 1.0f / std::sqrt(float(d));
  ASSERT_TRUE(RunSparseAttention(*plan, dq, dk, dv, drows, dcounts, scale, dout, dlse, ws, nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<float> out = Download(dout, size_t(nq) * d), lse = Download(dlse, nq);
  for (int i = 0; i < nq; ++i) {
    std::vector<float> ks, vs, ref(d), scratch(sel[i].size() + 1);
    for (int32_t r : sel[i]) {
      ks.insert(ks.end(), kr.begin() + size_t(r) * d, kr.begin() + size_t(r + 1) * d);
      vs.insert(vs.end(), vr.begin() + size_t(r) * d, vr.begin() + size_t(r + 1) * d);
    }
    const float ref_lse = AttendRows(q.data() + size_t(i) * d, ks.data(), vs.data(), sel[i].size(), d, d, scale,
                                     ref.data(), scratch.data());
    if (sel[i].empty()) {
      EXPECT_TRUE(std::isinf(lse[i]) && lse[i] < 0) << i;
      continue;
    }
    EXPECT_NEAR(lse[i], ref_lse, 1e-3 * (1 + std::fabs(ref_lse))) << i;
    for (int j = 0; j < d; ++j) EXPECT_NEAR(out[size_t(i) * d + j], ref[j], 2e-4 + 1e-3 * std::fabs(ref[j])) << i << "," << j;
  }
  cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(drows), cudaFree(dcounts), cudaFree(dout), cudaFree(dlse), cudaFree(ws);
}

TEST(SparseAttention, MatchesTheCpuReferenceOnRaggedRandomSelections) {
  KVR_REQUIRE_GPU();
  std::mt19937 rng(5);
  std::normal_distribution<float> n01;
  for (int d : {64, 128}) {
    for (int total : {100, 5000}) {
      const int nq = 12;
      std::vector<float> q(size_t(nq) * d), k(size_t(total) * d), v(k.size());
      for (float& x : q) x = n01(rng);
      for (float& x : k) x = n01(rng);
      for (float& x : v) x = n01(rng);
      std::vector<std::vector<int32_t>> sel(nq);
      for (int i = 0; i < nq; ++i) {
        const int n = i == 0 ? 0 : i == 1 ? 1 : static_cast<int>(rng() % std::min(total, 3000));
        for (int r = 0; r < n; ++r) sel[i].push_back(static_cast<int32_t>(rng() % total));
      }
      Check(nq, d, total, sel, q, k, v);
    }
  }
}

TEST(SparseAttention, RealSquatQkSample) {
  KVR_REQUIRE_GPU();
  auto s = LoadSquatQkSample();
  if (!s.ok()) GTEST_SKIP() << s.status().message();
  // Causal: query t attends rows 0..t; values = keys (the sample has no V).
  std::vector<std::vector<int32_t>> sel(32);
  for (int t = 0; t < 32; ++t)
    for (int r = 0; r <= t; ++r) sel[t].push_back(r);
  Check(32, 128, 32, sel, s->q, s->k, s->k);
}

// Every layer of a real story: each query head attends causally over its KV
// head's rows, all of them and a strided subset (ragged counts), at head_dim 8.
TEST(SparseAttention, RealStoriesTrace) {
  KVR_REQUIRE_GPU();
  KVR_REQUIRE_STORIES_TRACE(trace, 7, 300);
  const KvLayout& l = trace.layout;
  const int d = l.head_dim, Hq = l.num_q_heads, Hk = l.num_kv_heads, G = Hq / Hk;
  for (const KvTraceRecord& r : trace.records) {
    const int T = static_cast<int>(r.tokens);
    for (int h = 0; h < Hk; ++h) {
      const auto k = HeadRows(r.k, T, Hk, d, h), v = HeadRows(r.v, T, Hk, d, h);
      std::vector<float> q;
      std::vector<std::vector<int32_t>> sel;
      for (int t = 0; t < T; t += 37) {
        for (int g = 0; g < G; ++g) {
          const auto qh = HeadRows(r.q, T, Hq, d, h * G + g);
          q.insert(q.end(), qh.begin() + size_t(t) * d, qh.begin() + size_t(t + 1) * d);
          sel.emplace_back();
          for (int s = 0; s <= t; s += g + 1) sel.back().push_back(s);
        }
      }
      Check(static_cast<int>(sel.size()), d, T, sel, q, k, v);
    }
  }
}

// The run is captured in a CUDA graph once and replayed on new query
// values written in place (what a decode loop does): each replay equals a
// direct run on the same inputs.
TEST(SparseAttention, RunCapturedInACudaGraphReplaysOnNewInputs) {
  KVR_REQUIRE_GPU();
  std::mt19937 rng(21);
  std::normal_distribution<float> n01;
  const int nq = 8, d = 128, total = 4000, max_rows = 1500;
  std::vector<uint16_t> k16(size_t(total) * d), v16(k16.size());
  for (auto& x : k16) x = FloatToHalf(n01(rng));
  for (auto& x : v16) x = FloatToHalf(n01(rng));
  std::vector<int32_t> rows(size_t(nq) * max_rows), counts(nq);
  for (int i = 0; i < nq; ++i) {
    counts[i] = 100 + static_cast<int32_t>(rng() % (max_rows - 100));
    for (int j = 0; j < max_rows; ++j) rows[size_t(i) * max_rows + j] = static_cast<int32_t>(rng() % total);
  }
  auto plan = PlanSparseAttention(nq, d, max_rows);
  ASSERT_TRUE(plan.ok());
  std::vector<float> q(size_t(nq) * d);
  float *dq = Upload(q), *out_graph, *lse_graph, *out_direct, *lse_direct;
  uint16_t *dk = Upload(k16), *dv = Upload(v16);
  int32_t *drows = Upload(rows), *dcounts = Upload(counts);
  void *ws_graph = nullptr, *ws_direct = nullptr;
  ASSERT_EQ(cudaMalloc(&out_graph, q.size() * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&out_direct, q.size() * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&lse_graph, nq * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&lse_direct, nq * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&ws_graph, plan->workspace_bytes), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&ws_direct, plan->workspace_bytes), cudaSuccess);
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  const float scale = 1.0f / std::sqrt(float(d));
  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  ASSERT_TRUE(RunSparseAttention(*plan, dq, dk, dv, drows, dcounts, scale, out_graph, lse_graph, ws_graph, stream).ok());
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int step = 0; step < 3; ++step) {
    for (float& x : q) x = n01(rng);
    ASSERT_EQ(cudaMemcpyAsync(dq, q.data(), q.size() * 4, cudaMemcpyHostToDevice, stream), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    ASSERT_TRUE(
        RunSparseAttention(*plan, dq, dk, dv, drows, dcounts, scale, out_direct, lse_direct, ws_direct, stream).ok());
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    EXPECT_EQ(Download(out_graph, q.size()), Download(out_direct, q.size())) << "step " << step;
    EXPECT_EQ(Download(lse_graph, nq), Download(lse_direct, nq)) << "step " << step;
  }
  cudaGraphExecDestroy(exec), cudaGraphDestroy(graph), cudaStreamDestroy(stream);
  cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(drows), cudaFree(dcounts), cudaFree(out_graph);
  cudaFree(out_direct), cudaFree(lse_graph), cudaFree(lse_direct), cudaFree(ws_graph), cudaFree(ws_direct);
}

TEST(SparseAttention, MergeEqualsAttentionOverTheUnion) {
  KVR_REQUIRE_GPU();
  std::mt19937 rng(9);
  std::normal_distribution<float> n01;
  const int n = 5, d = 32;
  std::vector<float> a(n * d), b(n * d), la(n), lb(n);
  for (float& x : a) x = n01(rng);
  for (float& x : b) x = n01(rng);
  for (int i = 0; i < n; ++i) la[i] = n01(rng), lb[i] = n01(rng);
  lb[2] = -INFINITY;  // an empty partial
  float *da = Upload(a), *db = Upload(b), *dla = Upload(la), *dlb = Upload(lb);
  ASSERT_TRUE(MergeAttentionPartials(da, dla, db, dlb, n, d, nullptr).ok());
  const std::vector<float> out = Download(da, n * d), lse = Download(dla, n);
  for (int i = 0; i < n; ++i) {
    std::vector<float> ref(a.begin() + i * d, a.begin() + (i + 1) * d);
    float rl = la[i];
    MergeAttention(ref.data(), &rl, b.data() + i * d, lb[i], d);
    EXPECT_NEAR(lse[i], rl, 1e-5);
    for (int j = 0; j < d; ++j) EXPECT_NEAR(out[i * d + j], ref[j], 1e-5);
  }
  cudaFree(da), cudaFree(db), cudaFree(dla), cudaFree(dlb);
}

TEST(SparseAttention, PlanRejectsBadSizes) {
  EXPECT_FALSE(PlanSparseAttention(4, 0, 10).ok());
  EXPECT_FALSE(PlanSparseAttention(4, 512, 10).ok());
  auto p = PlanSparseAttention(4, 128, 100000);
  ASSERT_TRUE(p.ok());
  EXPECT_LE(p->rows_per_split, 512);
  EXPECT_GE(p->splits * p->rows_per_split, 100000);
}

}  // namespace
}  // namespace kvrecall
