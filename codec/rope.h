// Rotary position embedding (RoPE) for both pairing conventions, applied to
// one head vector in place. Unapply is the exact inverse rotation (angle
// negated), so pre-RoPE keys can be recovered from post-RoPE ones and back.
#ifndef KVRECALL_CODEC_ROPE_H_
#define KVRECALL_CODEC_ROPE_H_

#include <vector>

#include "codec/kv_layout.h"

namespace kvrecall {

// Per-pair inverse frequencies theta^(-2j/d), j in [0, d/2).
std::vector<double> RopeInvFreq(int head_dim, double theta);

// Rotates x[0..head_dim) by RoPE at position `pos` (after dividing by
// `scaling`). A no-op for RopeStyle::kNone. REQUIRES: head_dim even.
void ApplyRope(float* x, int head_dim, double pos, RopeStyle style, double theta,
               double scaling = 1.0);
void UnapplyRope(float* x, int head_dim, double pos, RopeStyle style, double theta,
                 double scaling = 1.0);

// Convenience: the layout's style, theta and scaling.
inline void ApplyRope(float* x, const KvLayout& l, double pos) {
  ApplyRope(x, l.head_dim, pos, l.rope_style, l.rope_theta, l.rope_scaling);
}
inline void UnapplyRope(float* x, const KvLayout& l, double pos) {
  UnapplyRope(x, l.head_dim, pos, l.rope_style, l.rope_theta, l.rope_scaling);
}

// Precomputed rotations for one position: cos/sin of pair j's angle. Apply
// to every head of a token without recomputing transcendental functions.
struct RopeAngles {
  std::vector<float> cos, sin;  // [head_dim / 2]
  void Compute(const std::vector<double>& inv_freq, double pos, double scaling = 1.0);
};
void ApplyRope(float* x, int head_dim, RopeStyle style, const RopeAngles& angles);

// The channel indices (a, b) of pair j under `style`.
inline void RopePair(RopeStyle style, int head_dim, int j, int* a, int* b) {
  if (style == RopeStyle::kInterleaved) {
    *a = 2 * j;
    *b = 2 * j + 1;
  } else {
    *a = j;
    *b = j + head_dim / 2;
  }
}

}  // namespace kvrecall

#endif  // KVRECALL_CODEC_ROPE_H_
