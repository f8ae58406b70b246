#include "codec/attention.h"

#include "codec/simd.h"

#include <algorithm>
#include <cmath>
#include <limits>

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
