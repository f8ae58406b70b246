// Small dense kernels written so the compiler vectorizes them without
// -ffast-math: independent partial sums make the reduction order explicit.
#ifndef KVRECALL_CODEC_SIMD_H_
#define KVRECALL_CODEC_SIMD_H_

#include <cstdint>

namespace kvrecall {

// Σ a[i]·b[i], summed in 8 interleaved lanes then pairwise.
inline float Dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) acc[l] += a[i + l] * b[i + l];
  }
  for (int l = 0; i < n; ++i, ++l) acc[l] += a[i] * b[i];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// y[i] += alpha · x[i]. x and y must not overlap (restrict: gcc would
// otherwise keep this loop scalar at -O2, one element per iteration).
inline void Axpy(float alpha, const float* __restrict x, float* __restrict y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) y[i + l] += alpha * x[i + l];
  }
  for (; i < n; ++i) y[i] += alpha * x[i];
}

}  // namespace kvrecall

#endif  // KVRECALL_CODEC_SIMD_H_
