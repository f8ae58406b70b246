#include <cuda_runtime.h>

#include <random>

#include <gtest/gtest.h>

#include "gpu/device_probe.h"
#include "gpu/hot_window.h"

namespace kvrecall {
namespace {

TEST(HotWindowCuda, MatchesTheCpuReference) {
  auto info = ProbeGpu();
  if (!info.ok()) GTEST_SKIP() << "no usable GPU: " << info.status().message();
  const HotWindowShape s{10, 128, 4, 64};
  HotWindowCpu ref(s);
  uint16_t *wk, *wv, *k, *v, *ek, *ev;
  const size_t wsize = size_t(s.heads) * s.slots() * s.head_dim, bsize = size_t(s.heads) * s.window * s.head_dim;
  ASSERT_EQ(cudaMalloc(&wk, wsize * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&wv, wsize * 2), cudaSuccess);
  ASSERT_EQ(cudaMemset(wk, 0, wsize * 2), cudaSuccess);
  ASSERT_EQ(cudaMemset(wv, 0, wsize * 2), cudaSuccess);
  for (auto** p : {&k, &v, &ek, &ev}) ASSERT_EQ(cudaMalloc(p, bsize * 2), cudaSuccess);
  std::mt19937 rng(2);
  int64_t pos = 0;
  for (int step = 0; step < 30; ++step) {
    const int count = 1 + static_cast<int>(rng() % s.window);
    std::vector<uint16_t> hk(size_t(s.heads) * count * s.head_dim), hv(hk.size());
    for (auto& x : hk) x = static_cast<uint16_t>(rng());
    for (auto& x : hv) x = static_cast<uint16_t>(rng());
    std::vector<uint16_t> rek(hk.size()), rev(hk.size()), gek(hk.size()), gev(hk.size());
    std::vector<int64_t> epos(count);
    ref.Append(pos, count, hk.data(), hv.data(), rek.data(), rev.data(), epos.data());
    ASSERT_EQ(cudaMemcpy(k, hk.data(), hk.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(v, hv.data(), hv.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(LaunchHotWindowAppend(s, pos, count, k, v, wk, wv, ek, ev, nullptr), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(gek.data(), ek, gek.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
    for (int h = 0; h < s.heads; ++h)
      for (int i = 0; i < count; ++i) {
        if (epos[i] < 0) continue;
        for (int c = 0; c < s.head_dim; ++c) {
          const size_t e = (size_t(h) * count + i) * s.head_dim + c;
          ASSERT_EQ(gek[e], rek[e]) << step;
        }
      }
    pos += count;
  }
  std::vector<uint16_t> gk(wsize);
  ASSERT_EQ(cudaMemcpy(gk.data(), wk, wsize * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(gk, ref.k());
  for (auto* p : {wk, wv, k, v, ek, ev}) cudaFree(p);
}

}  // namespace
}  // namespace kvrecall
