// GPU kernel benchmark (runs only with a GPU): achieved memory bandwidth of
// VQ scoring, CommVQ scoring, dequantization (KIVI, GEAR) and sparse decode
// attention against a device-to-device copy measured in the same run (the
// ceiling), the top-K selection's latency, and the batched H2D row gather
// from mapped pinned memory against a pinned cudaMemcpy of the same bytes.
// Bandwidth counts bytes read + written once (what the kernel must move);
// the copy counts read + write the same way. Medians over --reps.
//
//   bazel run -c opt --config=cuda //bench:gpu_bench -- [--tokens 131072,1048576] [--reps 20] [--out bench/results]
// Last line: score_frac <f> attention_frac <f> gather_frac <f> (at the largest --tokens).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/results_io.h"
#include "gpu/dequant_kernels.h"
#include "gpu/device_probe.h"
#include "gpu/gather_commvq_kernels.h"
#include "gpu/sparse_attention.h"
#include "gpu/vq_topk_kernels.h"

namespace kvrecall {
namespace {

#define CHECK_CUDA(x)                                                                   \
  do {                                                                                  \
    const cudaError_t e_ = (x);                                                         \
    if (e_ != cudaSuccess) {                                                            \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                     \
    }                                                                                   \
  } while (0)

template <typename T>
T* DeviceAlloc(size_t n) {
  void* p = nullptr;
  CHECK_CUDA(cudaMalloc(&p, std::max<size_t>(1, n * sizeof(T))));
  return static_cast<T*>(p);
}

template <typename T>
T* DeviceCopy(const std::vector<T>& h) {
  T* d = DeviceAlloc<T>(h.size());
  CHECK_CUDA(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

// Median seconds of `reps` timed runs of `fn` on `st` (after 2 warm-ups).
double MedianSeconds(cudaStream_t st, int reps, const std::function<void()>& fn) {
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  for (int i = 0; i < 2; ++i) fn();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    CHECK_CUDA(cudaEventRecord(a, st));
    fn();
    CHECK_CUDA(cudaEventRecord(b, st));
    CHECK_CUDA(cudaEventSynchronize(b));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms * 1e-3);
  }
  CHECK_CUDA(cudaEventDestroy(a));
  CHECK_CUDA(cudaEventDestroy(b));
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return t[t.size() / 2];
}

struct Row {
  std::string op;
  int64_t tokens;
  double us, gbps, ceiling_gbps;
};

int Main(int argc, char** argv) {
  std::vector<int64_t> tokens = {131072, 1048576};
  int reps = 20;
  std::string out_dir;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) { std::fprintf(stderr, "%s needs a value\n", a.c_str()); std::exit(2); }
      return argv[++i];
    };
    if (a == "--tokens") {
      tokens.clear();
      for (absl::string_view s : absl::StrSplit(next(), ',')) {
        int64_t v = 0;
        if (!absl::SimpleAtoi(s, &v) || v < 1024 || v > (int64_t{1} << 26)) {
          std::fprintf(stderr, "--tokens: each in [1024, 2^26]\n");
          return 2;
        }
        tokens.push_back(v);
      }
    } else if (a == "--reps") {
      if (!absl::SimpleAtoi(next(), &reps) || reps < 1) { std::fprintf(stderr, "--reps: >= 1\n"); return 2; }
    } else if (a == "--out") {
      out_dir = next();
    } else if (a == "--help") {
      std::printf("gpu_bench [--tokens N,N] [--reps R] [--out DIR]\n");
      return 0;
    } else {
      std::fprintf(stderr, "unknown flag %s (--help)\n", a.c_str());
      return 2;
    }
  }
  auto info = ProbeGpu();
  if (!info.ok()) {
    std::fprintf(stderr, "gpu_bench: needs a GPU: %s\n", std::string(info.status().message()).c_str());
    return 1;
  }
  int dev = 0, clock_khz = 0, bus_bits = 0;
  CHECK_CUDA(cudaGetDevice(&dev));
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, dev));
  cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, dev);
  cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, dev);
  const double spec_gbps = 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9;
  std::printf("device: %s, %d SMs, %.1f GiB, spec HBM %.0f GB/s\n", prop.name, prop.multiProcessorCount,
              prop.totalGlobalMem / double(1 << 30), spec_gbps);
  cudaStream_t st;
  CHECK_CUDA(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  std::mt19937 rng(1);
  std::normal_distribution<float> n01;

  // Ceiling: device-to-device copy of 1 GiB (read + write counted).
  const size_t copy_bytes = size_t(1) << 30;
  uint8_t *ca = DeviceAlloc<uint8_t>(copy_bytes), *cb = DeviceAlloc<uint8_t>(copy_bytes);
  CHECK_CUDA(cudaMemset(ca, 1, copy_bytes));
  const double copy_s = MedianSeconds(st, reps, [&] { CHECK_CUDA(cudaMemcpyAsync(cb, ca, copy_bytes, cudaMemcpyDeviceToDevice, st)); });
  const double copy_gbps = 2.0 * copy_bytes / copy_s / 1e9;
  CHECK_CUDA(cudaFree(ca));
  CHECK_CUDA(cudaFree(cb));
  std::printf("ceiling: D2D copy %.0f GB/s (%.0f%% of spec)\n", copy_gbps, 100 * copy_gbps / spec_gbps);

  std::vector<Row> rows;
  auto report = [&](const std::string& op, int64_t n, double s, double bytes, double ceiling) {
    rows.push_back({op, n, s * 1e6, bytes / s / 1e9, ceiling});
    std::printf("%-28s %9lld tokens %10.1f us %8.1f GB/s  %5.1f%% of ceiling\n", op.c_str(), (long long)n, s * 1e6,
                bytes / s / 1e9, 100 * bytes / s / 1e9 / ceiling);
    std::fflush(stdout);
  };

  const int d = 128, G = 4, C = 4096;
  double score_frac = 0, attention_frac = 0, gather_frac = 0;
  for (const int64_t n : tokens) {
    // A²ATS scoring (table lookup from packed 12-bit codes), then top-K 3%.
    std::vector<uint16_t> codes(n);
    for (auto& c : codes) c = static_cast<uint16_t>(rng() % C);
    std::vector<uint8_t> packed(PackedCodeBytes(n));
    PackCodes12(codes.data(), n, packed.data());
    std::vector<float> table(size_t(G) * C);
    for (float& x : table) x = n01(rng);
    uint8_t* dcodes = DeviceCopy(packed);
    float* dtable = DeviceCopy(table);
    float* dscores = DeviceAlloc<float>(size_t(G) * n);
    const double ss = MedianSeconds(st, reps, [&] { CHECK_CUDA(static_cast<cudaError_t>(LaunchVqScore(dtable, G, C, dcodes, n, dscores, st))); });
    report("a2ats_score(G=4)", n, ss, double(packed.size()) + 4.0 * G * n, copy_gbps);
    if (n == tokens.back()) score_frac = rows.back().gbps / copy_gbps;
    uint8_t* mask = DeviceAlloc<uint8_t>(n);
    int32_t *sel = DeviceAlloc<int32_t>(n), *count = DeviceAlloc<int32_t>(1);
    VqSelectArgs va;
    va.table = dtable, va.group = G, va.num_centroids = C, va.codes = dcodes, va.n = n, va.sinks = 4, va.window = 64;
    va.k = std::max<int64_t>(1, n * 3 / 100), va.mask = mask, va.selected = sel, va.num_selected = count;
    const double sel_s = MedianSeconds(st, reps, [&] { CHECK_CUDA(static_cast<cudaError_t>(LaunchVqSelect(va, st))); });
    report("a2ats_select_top3%(G=4)", n, sel_s, double(packed.size()) * G * 5, copy_gbps);
    CHECK_CUDA(cudaFree(dcodes)); CHECK_CUDA(cudaFree(dtable)); CHECK_CUDA(cudaFree(dscores));
    CHECK_CUDA(cudaFree(mask)); CHECK_CUDA(cudaFree(sel)); CHECK_CUDA(cudaFree(count));

    // CommVQ scoring from codes (21 stages of 12 bits, 64 RoPE pairs).
    {
      const int S = 21, cbits = 6, P = d / 2;
      std::vector<float> ct(size_t(S) * (1 << cbits) * 4 * P), norms(n), inv(P);
      for (float& x : ct) x = n01(rng);
      for (float& x : norms) x = 1 + std::fabs(n01(rng));
      for (int p = 0; p < P; ++p) inv[p] = std::pow(10000.0f, -2.0f * p / d);
      std::vector<uint16_t> cc(size_t(n) * S);
      for (auto& c : cc) c = static_cast<uint16_t>(rng() % (1 << (2 * cbits)));
      CommVqScoreArgs a;
      float *dct = DeviceCopy(ct), *dn = DeviceCopy(norms), *di = DeviceCopy(inv), *ds = DeviceAlloc<float>(n);
      uint16_t* dc = DeviceCopy(cc);
      a.table = dct, a.codes = dc, a.norms = dn, a.inv_freq = di, a.n = n, a.stages = S, a.digit_bits = cbits, a.pairs = P;
      a.inv_sqrt_d = 1.0f / std::sqrt(float(d)), a.scores = ds;
      const double s = MedianSeconds(st, reps, [&] { CHECK_CUDA(static_cast<cudaError_t>(LaunchCommVqScore(a, st))); });
      report("commvq_score(21x12b)", n, s, double(n) * (2 * S + 4 + 4), copy_gbps);
      CHECK_CUDA(cudaFree(dct)); CHECK_CUDA(cudaFree(dn)); CHECK_CUDA(cudaFree(di)); CHECK_CUDA(cudaFree(ds));
      CHECK_CUDA(cudaFree(dc));
    }

    // KIVI-2 keys (per channel, groups of 32 tokens) and GEAR (+ rank 4, 2%
    // outliers): every row of one head into f16.
    {
      const int bits = 2, group = 32, rank = 4;
      std::vector<uint8_t> qcodes(size_t(n) * d * bits / 8 + 1);
      for (auto& b : qcodes) b = static_cast<uint8_t>(rng());
      std::vector<uint16_t> scales(size_t((n + group - 1) / group) * d * 2, 0x3C00);
      std::vector<int32_t> all(n);
      std::iota(all.begin(), all.end(), 0);
      DequantRowsArgs a;
      a.heads = 1, a.tokens = static_cast<int>(n), a.dim = d, a.bits = bits, a.group = group, a.per_channel = true;
      a.codes = DeviceCopy(qcodes), a.scales = DeviceCopy(scales), a.rows = DeviceCopy(all);
      a.num_rows = static_cast<int>(n);
      a.out = DeviceAlloc<uint16_t>(size_t(n) * d);
      const double base = double(qcodes.size()) + scales.size() * 2.0 + 4.0 * n + 2.0 * n * d;
      const double s = MedianSeconds(st, reps, [&] { CHECK_CUDA(static_cast<cudaError_t>(LaunchDequantizeRows(a, st))); });
      report("kivi2_dequant_rows", n, s, base, copy_gbps);
      // GEAR sections: U [n][r], V [d][r] f16; outliers: count, sorted cells, values.
      std::vector<uint8_t> lowrank(size_t(n + d) * rank * 2);
      for (size_t i = 0; i < lowrank.size(); i += 2) {
        const uint16_t h = 0x2000 | (rng() & 0x3FF);
        lowrank[i] = h & 255, lowrank[i + 1] = h >> 8;
      }
      const uint64_t cells = uint64_t(n) * d, cnt = cells / 50;
      std::vector<uint8_t> ol(4 + 6 * cnt);
      std::memcpy(ol.data(), &cnt, 4);
      for (uint64_t i = 0; i < cnt; ++i) {
        const uint32_t cell = static_cast<uint32_t>(i * 50 + rng() % 50);
        std::memcpy(ol.data() + 4 + 4 * i, &cell, 4);
        const uint16_t v = 0x4800;
        std::memcpy(ol.data() + 4 + 4 * cnt + 2 * i, &v, 2);
      }
      GearRowsArgs g;
      g.base = a, g.rank = rank;
      uint64_t head0 = 0;
      uint8_t *dlr = DeviceCopy(lowrank), *dol = DeviceCopy(ol);
      uint64_t* dh = DeviceCopy(std::vector<uint64_t>{head0});
      g.lowrank = dlr, g.outliers = dol, g.outlier_heads = dh;
      const double gs = MedianSeconds(st, reps, [&] { CHECK_CUDA(static_cast<cudaError_t>(LaunchGearDequantizeRows(g, st))); });
      report("gear2_r4_s2%_dequant_rows", n, gs, base + lowrank.size() + ol.size(), copy_gbps);
      CHECK_CUDA(cudaFree(const_cast<uint8_t*>(a.codes))); CHECK_CUDA(cudaFree(const_cast<uint16_t*>(a.scales)));
      CHECK_CUDA(cudaFree(const_cast<int32_t*>(a.rows))); CHECK_CUDA(cudaFree(a.out));
      CHECK_CUDA(cudaFree(dlr)); CHECK_CUDA(cudaFree(dol)); CHECK_CUDA(cudaFree(dh));
    }

    // Sparse decode attention: 8 KV heads x 4 query heads, each query over
    // sinks + window + 3% of the n rows of its KV head's f16 K/V.
    {
      const int kv_heads = 8, nq = kv_heads * G;
      const int per = static_cast<int>(std::min<int64_t>(n, 4 + 64 + n * 3 / 100));
      std::vector<uint16_t> kv(size_t(n) * d);
      for (auto& x : kv) x = 0x3000 | (rng() & 0x3FF);
      uint16_t *dk = DeviceAlloc<uint16_t>(size_t(kv_heads) * n * d), *dv = DeviceAlloc<uint16_t>(size_t(kv_heads) * n * d);
      for (int h = 0; h < kv_heads; ++h) {
        CHECK_CUDA(cudaMemcpy(dk + size_t(h) * n * d, kv.data(), kv.size() * 2, cudaMemcpyHostToDevice));
        CHECK_CUDA(cudaMemcpy(dv + size_t(h) * n * d, kv.data(), kv.size() * 2, cudaMemcpyHostToDevice));
      }
      std::vector<int32_t> r(size_t(nq) * per), counts(nq, per);
      for (int q = 0; q < nq; ++q) {
        std::vector<int32_t> pick;
        for (int64_t t = 0; t < n && int(pick.size()) < per; t += std::max<int64_t>(1, n / per)) pick.push_back(int32_t(t));
        while (int(pick.size()) < per) pick.push_back(int32_t(rng() % n));
        for (int j = 0; j < per; ++j) r[size_t(q) * per + j] = int32_t((q / G) * n + pick[j]);
      }
      std::vector<float> qv(size_t(nq) * d);
      for (float& x : qv) x = n01(rng);
      auto plan = PlanSparseAttention(nq, d, per, 2 * prop.multiProcessorCount);
      if (!plan.ok()) { std::fprintf(stderr, "%s\n", std::string(plan.status().message()).c_str()); return 1; }
      float *dq = DeviceCopy(qv), *dout = DeviceAlloc<float>(qv.size()), *dlse = DeviceAlloc<float>(nq);
      int32_t *dr = DeviceCopy(r), *dcnt = DeviceCopy(counts);
      void* ws = DeviceAlloc<uint8_t>(plan->workspace_bytes);
      const double s = MedianSeconds(st, reps, [&] {
        auto status = RunSparseAttention(*plan, dq, dk, dv, dr, dcnt, 1.0f / std::sqrt(float(d)), dout, dlse, ws, st);
        if (!status.ok()) { std::fprintf(stderr, "%s\n", std::string(status.message()).c_str()); std::exit(1); }
      });
      report("sparse_attention(32q,3%)", n, s, double(nq) * per * (2.0 * d * 2 + 4), copy_gbps);
      if (n == tokens.back()) attention_frac = rows.back().gbps / copy_gbps;
      CHECK_CUDA(cudaFree(dk)); CHECK_CUDA(cudaFree(dv)); CHECK_CUDA(cudaFree(dq)); CHECK_CUDA(cudaFree(dout));
      CHECK_CUDA(cudaFree(dlse)); CHECK_CUDA(cudaFree(dr)); CHECK_CUDA(cudaFree(dcnt)); CHECK_CUDA(cudaFree(ws));
    }

    // Gather: 3% of n rows of K+V (2 x 128 f16 = 512 B) from mapped pinned
    // host memory, against a pinned cudaMemcpy of the same bytes.
    {
      const int row_elems = 2 * d;
      const int m = static_cast<int>(std::max<int64_t>(1, n * 3 / 100));
      uint16_t* host = nullptr;
      CHECK_CUDA(cudaHostAlloc(reinterpret_cast<void**>(&host), size_t(n) * row_elems * 2, cudaHostAllocMapped));
      std::memset(host, 1, size_t(n) * row_elems * 2);
      uint16_t* mapped = nullptr;
      CHECK_CUDA(cudaHostGetDevicePointer(reinterpret_cast<void**>(&mapped), host, 0));
      std::vector<int32_t> idx(m);
      for (auto& x : idx) x = static_cast<int32_t>(rng() % n);
      int32_t* didx = DeviceCopy(idx);
      uint16_t* dst = DeviceAlloc<uint16_t>(size_t(m) * row_elems);
      const double bytes = double(m) * row_elems * 2;
      const double cs = MedianSeconds(st, reps, [&] {
        CHECK_CUDA(cudaMemcpyAsync(dst, host, size_t(bytes), cudaMemcpyHostToDevice, st));
      });
      const double memcpy_gbps = bytes / cs / 1e9;
      report("pinned_memcpy_h2d", n, cs, bytes, memcpy_gbps);
      const double gs = MedianSeconds(st, reps, [&] {
        CHECK_CUDA(static_cast<cudaError_t>(LaunchGatherRows(mapped, didx, m, row_elems, dst, st)));
      });
      report("gather_rows_h2d(3%)", n, gs, bytes, memcpy_gbps);
      if (n == tokens.back()) gather_frac = rows.back().gbps / memcpy_gbps;
      CHECK_CUDA(cudaFreeHost(host)); CHECK_CUDA(cudaFree(didx)); CHECK_CUDA(cudaFree(dst));
    }
  }

  std::string md = absl::StrCat("Device: ", prop.name, " (", prop.multiProcessorCount, " SMs); spec HBM ",
                                static_cast<int>(spec_gbps), " GB/s; ceiling (D2D copy, read+write) ",
                                static_cast<int>(copy_gbps), " GB/s. Medians of ", reps, " runs.\n\n",
                                "| op | tokens | median µs | GB/s | ceiling GB/s | fraction |\n|---|---:|---:|---:|---:|---:|\n");
  std::string csv = "op,tokens,us,gbps,ceiling_gbps\n";
  for (const Row& r : rows) {
    absl::StrAppend(&md, "| ", r.op, " | ", r.tokens, " | ", absl::StrFormat("%.1f", r.us), " | ",
                    absl::StrFormat("%.1f", r.gbps), " | ", absl::StrFormat("%.1f", r.ceiling_gbps), " | ",
                    absl::StrFormat("%.2f", r.gbps / r.ceiling_gbps), " |\n");
    absl::StrAppend(&csv, r.op, ",", r.tokens, ",", r.us, ",", r.gbps, ",", r.ceiling_gbps, "\n");
  }
  if (!WriteResults(out_dir, "gpu_bench", md, csv)) std::fprintf(stderr, "could not write results to %s\n", out_dir.c_str());
  std::printf("score_frac %.3f attention_frac %.3f gather_frac %.3f\n", score_frac, attention_frac, gather_frac);
  return 0;
}

}  // namespace
}  // namespace kvrecall

int main(int argc, char** argv) { return kvrecall::Main(argc, argv); }
