#include "codec/attention.h"

#include "codec/simd.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace kvrecall {

float AttendRows(const float* q, const float* k, const float* v, int64_t n, int d, int64_t stride,
                 float scale, float* out, float* scratch) {
  std::fill(out, out + d, 0.0f);
  if (n <= 0) return -std::numeric_limits<float>::infinity();
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t r = 0; r < n; ++r) {
    const float s = Dot(q, k + r * stride, d) * scale;
    scratch[r] = s;
    mx = std::max(mx, s);
  }
  double sum = 0;
  for (int64_t r = 0; r < n; ++r) {
    scratch[r] = std::exp(scratch[r] - mx);
    sum += scratch[r];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t r = 0; r < n; ++r) {
    const float p = scratch[r] * inv;
    Axpy(p, v + r * stride, out, d);
  }
  return mx + static_cast<float>(std::log(sum));
}

namespace {

// AttendGroup's body, compiled twice: for the baseline ISA and for AVX2,
// picked at run time. Dot's 8 lanes and Axpy's elementwise updates do the
// same float operations in the same order at any vector width (no FMA
// contraction: the AVX2 build does not enable FMA), so both give identical
// results.
__attribute__((always_inline)) inline void AttendGroupBody(const float* q, int G, const float* k, const float* v,
                                                           int64_t n, int d, int64_t stride, float scale, float* out,
                                                           float* lse) {
  constexpr int64_t kChunk = 512;  // G x 512 scores stay in L1/L2
  const float kNegInf = -std::numeric_limits<float>::infinity();
  std::fill(out, out + size_t(G) * d, 0.0f);
  std::fill(lse, lse + G, kNegInf);
  if (n <= 0 || G <= 0) return;
  // Scores of one chunk per query head; sized to the rows there are (a
  // store's Attend calls this per block with a few dozen rows).
  const int64_t cs = std::min(kChunk, n);
  std::vector<float> s(size_t(G) * cs), m(G, kNegInf);
  std::vector<double> l(G, 0.0);
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t cn = std::min(kChunk, n - c0);
    for (int64_t r = 0; r < cn; ++r) {
      const float* kr = k + (c0 + r) * stride;
      for (int g = 0; g < G; ++g) s[size_t(g) * cs + r] = Dot(q + size_t(g) * d, kr, d) * scale;
    }
    for (int g = 0; g < G; ++g) {
      float* sg = s.data() + size_t(g) * cs;
      const float cm = *std::max_element(sg, sg + cn);
      if (cm > m[g]) {  // rescale what was accumulated under the old max
        const float f = std::isinf(m[g]) ? 0.0f : std::exp(m[g] - cm);
        for (int c = 0; c < d; ++c) out[size_t(g) * d + c] *= f;
        l[g] *= f;
        m[g] = cm;
      }
      double sum = 0;
      for (int64_t r = 0; r < cn; ++r) sum += (sg[r] = std::exp(sg[r] - m[g]));
      l[g] += sum;
    }
    for (int64_t r = 0; r < cn; ++r) {
      const float* vr = v + (c0 + r) * stride;
      for (int g = 0; g < G; ++g) Axpy(s[size_t(g) * cs + r], vr, out + size_t(g) * d, d);
    }
  }
  for (int g = 0; g < G; ++g) {
    const float inv = static_cast<float>(1.0 / l[g]);
    for (int c = 0; c < d; ++c) out[size_t(g) * d + c] *= inv;
    lse[g] = m[g] + static_cast<float>(std::log(l[g]));
  }
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) void AttendGroupAvx2(const float* q, int G, const float* k, const float* v,
                                                      int64_t n, int d, int64_t stride, float scale, float* out,
                                                      float* lse) {
  AttendGroupBody(q, G, k, v, n, d, stride, scale, out, lse);
}

bool HasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}
#endif

}  // namespace

void AttendGroup(const float* q, int G, const float* k, const float* v, int64_t n, int d, int64_t stride,
                 float scale, float* out, float* lse) {
#if defined(__x86_64__)
  if (HasAvx2()) return AttendGroupAvx2(q, G, k, v, n, d, stride, scale, out, lse);
#endif
  AttendGroupBody(q, G, k, v, n, d, stride, scale, out, lse);
}

void MergeAttention(float* out_a, float* lse_a, const float* out_b, float lse_b, int d) {
  if (std::isinf(lse_b) && lse_b < 0) return;
  if (std::isinf(*lse_a) && *lse_a < 0) {
    std::copy(out_b, out_b + d, out_a);
    *lse_a = lse_b;
    return;
  }
  const float m = std::max(*lse_a, lse_b);
  const float wa = std::exp(*lse_a - m), wb = std::exp(lse_b - m);
  const float inv = 1.0f / (wa + wb);
  for (int c = 0; c < d; ++c) out_a[c] = (wa * out_a[c] + wb * out_b[c]) * inv;
  *lse_a = m + std::log(wa + wb);
}

}  // namespace kvrecall
