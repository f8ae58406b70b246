#include "codec/rope.h"

#include <cmath>

namespace kvrecall {

std::vector<double> RopeInvFreq(int head_dim, double theta) {
  std::vector<double> f(head_dim / 2);
  for (int j = 0; j < head_dim / 2; ++j) f[j] = std::pow(theta, -2.0 * j / head_dim);
  return f;
}

namespace {

void Rotate(float* x, int head_dim, double pos, RopeStyle style, double theta, double scaling,
            double sign) {
  if (style == RopeStyle::kNone) return;
  const double p = pos / scaling;
  for (int j = 0; j < head_dim / 2; ++j) {
    const double angle = sign * p * std::pow(theta, -2.0 * j / head_dim);
    const double c = std::cos(angle), s = std::sin(angle);
    int a, b;
    RopePair(style, head_dim, j, &a, &b);
    const double x0 = x[a], x1 = x[b];
    x[a] = static_cast<float>(x0 * c - x1 * s);
    x[b] = static_cast<float>(x0 * s + x1 * c);
  }
}

}  // namespace

void ApplyRope(float* x, int head_dim, double pos, RopeStyle style, double theta, double scaling) {
  Rotate(x, head_dim, pos, style, theta, scaling, 1.0);
}

void UnapplyRope(float* x, int head_dim, double pos, RopeStyle style, double theta,
                 double scaling) {
  Rotate(x, head_dim, pos, style, theta, scaling, -1.0);
}

void RopeAngles::Compute(const std::vector<double>& inv_freq, double pos, double scaling) {
  cos.resize(inv_freq.size());
  sin.resize(inv_freq.size());
  for (size_t j = 0; j < inv_freq.size(); ++j) {
    const double a = pos / scaling * inv_freq[j];
    cos[j] = static_cast<float>(std::cos(a));
    sin[j] = static_cast<float>(std::sin(a));
  }
}

void ApplyRope(float* x, int head_dim, RopeStyle style, const RopeAngles& angles) {
  if (style == RopeStyle::kNone) return;
  for (int j = 0; j < head_dim / 2; ++j) {
    int a, b;
    RopePair(style, head_dim, j, &a, &b);
    const float x0 = x[a], x1 = x[b];
    x[a] = x0 * angles.cos[j] - x1 * angles.sin[j];
    x[b] = x0 * angles.sin[j] + x1 * angles.cos[j];
  }
}

}  // namespace kvrecall
