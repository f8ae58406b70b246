// Small dense linear algebra in double precision for calibration-time work
// (query subspaces, whitening, statistics): row-major square matrices.
// O(d³); meant for d up to a few hundred.
#ifndef KVRECALL_CODEC_LINALG_H_
#define KVRECALL_CODEC_LINALG_H_

#include <vector>

#include "absl/status/statusor.h"

namespace kvrecall {

struct SymEigen {
  std::vector<double> values;   // descending
  std::vector<double> vectors;  // [d][d]: column i is the eigenvector of values[i]
};

// Eigen-decomposition of the symmetric matrix `a` [d][d] by cyclic Jacobi
// rotations. INVALID_ARGUMENT if a is not d×d or has non-finite entries.
absl::StatusOr<SymEigen> SymmetricEigen(const std::vector<double>& a, int d);

// Lower-triangular L with a = L Lᵀ. FAILED_PRECONDITION if a is not
// positive definite.
absl::StatusOr<std::vector<double>> Cholesky(const std::vector<double>& a, int d);

// Gram matrix XᵀX of rows x [n][d] (float input, double output).
std::vector<double> Gram(const float* x, int64_t n, int d);

}  // namespace kvrecall

#endif  // KVRECALL_CODEC_LINALG_H_
