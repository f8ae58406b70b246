#include "codec/linalg.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace kvrecall {

absl::StatusOr<SymEigen> SymmetricEigen(const std::vector<double>& a_in, int d) {
  if (d <= 0 || a_in.size() != size_t(d) * d) {
    return absl::InvalidArgumentError(absl::StrCat("matrix of ", a_in.size(), " entries is not ", d, "x", d));
  }
  for (double x : a_in) {
    if (!std::isfinite(x)) return absl::InvalidArgumentError("matrix has non-finite entries");
  }
  std::vector<double> a = a_in, v(size_t(d) * d, 0.0);
  for (int i = 0; i < d; ++i) v[size_t(i) * d + i] = 1.0;
  auto A = [&](int i, int j) -> double& { return a[size_t(i) * d + j]; };
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0, diag = 0;
    for (int i = 0; i < d; ++i) {
      diag += A(i, i) * A(i, i);
      for (int j = i + 1; j < d; ++j) off += A(i, j) * A(i, j);
    }
    if (off <= 1e-30 * std::max(diag, 1e-300)) break;
    for (int p = 0; p < d; ++p) {
      for (int q = p + 1; q < d; ++q) {
        const double apq = A(p, q);
        if (std::fabs(apq) < 1e-300) continue;
        const double theta = (A(q, q) - A(p, p)) / (2 * apq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1));
        const double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (int k = 0; k < d; ++k) {  // rotate columns p, q
          const double akp = A(k, p), akq = A(k, q);
          A(k, p) = c * akp - s * akq;
          A(k, q) = s * akp + c * akq;
        }
        for (int k = 0; k < d; ++k) {  // rotate rows p, q
          const double apk = A(p, k), aqk = A(q, k);
          A(p, k) = c * apk - s * aqk;
          A(q, k) = s * apk + c * aqk;
        }
        for (int k = 0; k < d; ++k) {
          const double vkp = v[size_t(k) * d + p], vkq = v[size_t(k) * d + q];
          v[size_t(k) * d + p] = c * vkp - s * vkq;
          v[size_t(k) * d + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  std::vector<int> order(d);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int x, int y) { return A(x, x) > A(y, y); });
  SymEigen out;
  out.values.resize(d);
  out.vectors.resize(size_t(d) * d);
  for (int i = 0; i < d; ++i) {
    out.values[i] = A(order[i], order[i]);
    for (int k = 0; k < d; ++k) out.vectors[size_t(k) * d + i] = v[size_t(k) * d + order[i]];
  }
  return out;
}

absl::StatusOr<std::vector<double>> Cholesky(const std::vector<double>& a, int d) {
  if (d <= 0 || a.size() != size_t(d) * d) return absl::InvalidArgumentError("matrix is not d x d");
  std::vector<double> l(size_t(d) * d, 0.0);
  for (int j = 0; j < d; ++j) {
    double s = a[size_t(j) * d + j];
    for (int k = 0; k < j; ++k) s -= l[size_t(j) * d + k] * l[size_t(j) * d + k];
    if (!(s > 0) || !std::isfinite(s)) {
      return absl::FailedPreconditionError(absl::StrCat("matrix is not positive definite (pivot ", j, ")"));
    }
    const double ljj = std::sqrt(s);
    l[size_t(j) * d + j] = ljj;
    for (int i = j + 1; i < d; ++i) {
      double t = a[size_t(i) * d + j];
      for (int k = 0; k < j; ++k) t -= l[size_t(i) * d + k] * l[size_t(j) * d + k];
      l[size_t(i) * d + j] = t / ljj;
    }
  }
  return l;
}

std::vector<double> Gram(const float* x, int64_t n, int d) {
  std::vector<double> g(size_t(d) * d, 0.0);
  for (int64_t r = 0; r < n; ++r) {
    const float* xr = x + r * d;
    for (int a = 0; a < d; ++a) {
      const double xa = xr[a];
      for (int b = a; b < d; ++b) g[size_t(a) * d + b] += xa * xr[b];
    }
  }
  for (int a = 0; a < d; ++a) {
    for (int b = 0; b < a; ++b) g[size_t(a) * d + b] = g[size_t(b) * d + a];
  }
  return g;
}

}  // namespace kvrecall
