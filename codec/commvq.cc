#include "codec/commvq.h"

#include <faiss/Clustering.h>
#include <faiss/IndexFlat.h>
#include <faiss/impl/FaissException.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "codec/bytes.h"
#include "codec/codec_internal.h"
#include "codec/half.h"
#include "codec/linalg.h"
#include "codec/rope.h"
#include "codec/simd.h"
#include "common/hash.h"
#include "common/parallel.h"
#include "common/status.h"

namespace kvrecall {
namespace {

bool AllFinite(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) return false;
  }
  return true;
}

// Bounds-checked little-endian reads for the Parse functions.
class Reader {
 public:
  Reader(absl::string_view in, size_t* off) : p_(reinterpret_cast<const uint8_t*>(in.data())), n_(in.size()), off_(off) {}
  template <typename T>
  bool Get(T* v) {
    if (*off_ > n_ || n_ - *off_ < sizeof(T)) return false;
    *v = LoadLE<T>(p_ + *off_);
    *off_ += sizeof(T);
    return true;
  }
  bool Floats(std::vector<float>* v, uint64_t count) {
    if (*off_ > n_ || count > (n_ - *off_) / 4) return false;
    v->resize(count);
    for (uint64_t i = 0; i < count; ++i) (*v)[i] = LoadLE<float>(p_ + *off_ + 4 * i);
    *off_ += 4 * count;
    return AllFinite(v->data(), static_cast<int64_t>(count));
  }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t* off_;
};

void AppendFloats(std::string* out, const std::vector<float>& v) {
  for (float x : v) AppendLE<float>(out, x);
}

}  // namespace

// ---------------------------------------------------------------------------
// Keys.

void CommVqKeyCodebook::Pair(int p, int* a, int* b) const {
  RopePair(style_ == RopeStyle::kNone ? RopeStyle::kHalfSplit : style_, d_, p, a, b);
}

void CommVqKeyCodebook::Derive() {
  const int E = entries();
  norm_.assign(size_t(stages_) * E, 0.0f);
  cross_.assign(size_t(stages_) * E * E, 0.0f);
  for (int r = 0; r < stages_; ++r) {
    const float* z = z_.data() + size_t(r) * E * 2 * P_;
    for (int a = 0; a < E; ++a) norm_[size_t(r) * E + a] = Dot(z + size_t(a) * 2 * P_, z + size_t(a) * 2 * P_, 2 * P_);
    for (int a = 0; a < E; ++a) {
      const float* za = z + size_t(a) * 2 * P_;
      for (int b = 0; b < E; ++b) {
        const float* zb = z + size_t(b) * 2 * P_;
        // z_a · (i z_b) = Σ_p Re(z_a)·(−Im z_b) + Im(z_a)·Re(z_b)
        const float c = Dot(za + P_, zb, P_) - Dot(za, zb + P_, P_);
        cross_[(size_t(r) * E + a) * E + b] = norm_[size_t(r) * E + a] + norm_[size_t(r) * E + b] + 2 * c;
      }
    }
  }
}

void CommVqKeyCodebook::Project(int stage, const float* xp, float* alpha, float* beta) const {
  const int E = entries();
  const float* z = z_.data() + size_t(stage) * E * 2 * P_;
  for (int a = 0; a < E; ++a) {
    const float* za = z + size_t(a) * 2 * P_;
    alpha[a] = Dot(xp, za, 2 * P_);
    beta[a] = Dot(xp + P_, za, P_) - Dot(xp, za + P_, P_);  // x · (i z_a)
  }
}

int CommVqKeyCodebook::Nearest(int stage, const float* alpha, const float* beta) const {
  const int E = entries();
  const float* cross = cross_.data() + size_t(stage) * E * E;
  float best = INFINITY;
  int arg = 0;
  for (int a = 0; a < E; ++a) {
    const float base = -2 * alpha[a];
    const float* row = cross + size_t(a) * E;
    for (int b = 0; b < E; ++b) {
      const float dist = row[b] + base - 2 * beta[b];
      if (dist < best) best = dist, arg = a * E + b;
    }
  }
  return arg;
}

absl::StatusOr<CommVqKeyCodebook> CommVqKeyCodebook::Train(int dim, RopeStyle style, const float* x, int64_t n,
                                                          const CommVqTrainOptions& o) {
  if (dim < 2 || dim % 2 != 0 || dim > 4096) return absl::InvalidArgumentError(absl::StrCat("commvq: head_dim ", dim, " must be even, in [2, 4096]"));
  if (o.stages < 1 || o.stages > 256) return absl::InvalidArgumentError("commvq: stages must be in [1, 256]");
  if (o.digit_bits < 1 || o.digit_bits > 8) return absl::InvalidArgumentError("commvq: digit_bits must be in [1, 8]");
  if (o.iters < 1 || !(o.tau_start > 0) || !(o.tau_end > 0)) return absl::InvalidArgumentError("commvq: bad EM schedule");
  const int E = 1 << o.digit_bits;
  if (n < E) return absl::InvalidArgumentError(absl::StrCat("commvq: ", n, " training keys for ", E, " codebook vectors"));
  if (x == nullptr || !AllFinite(x, n * dim)) return absl::InvalidArgumentError("commvq: training keys are not finite");

  CommVqKeyCodebook cb;
  cb.d_ = dim, cb.P_ = dim / 2, cb.stages_ = o.stages, cb.digit_bits_ = o.digit_bits, cb.style_ = style;
  const int P = cb.P_;
  std::mt19937_64 rng(o.seed);
  // A random training subset, planar: [re P][im P] per vector.
  std::vector<int64_t> pick(n);
  for (int64_t i = 0; i < n; ++i) pick[i] = i;
  const int64_t m = std::min<int64_t>(n, std::max<int64_t>(o.max_train, E));
  for (int64_t i = 0; i < m; ++i) std::swap(pick[i], pick[i + int64_t(rng() % uint64_t(n - i))]);
  std::vector<float> res(size_t(m) * 2 * P);
  for (int64_t i = 0; i < m; ++i) {
    for (int p = 0; p < P; ++p) {
      int a, b;
      cb.Pair(p, &a, &b);
      res[size_t(i) * 2 * P + p] = x[pick[i] * dim + a];
      res[size_t(i) * 2 * P + P + p] = x[pick[i] * dim + b];
    }
  }
  cb.z_.assign(size_t(o.stages) * E * 2 * P, 0.0f);
  cb.norm_.assign(size_t(o.stages) * E, 0.0f);
  cb.cross_.assign(size_t(o.stages) * E * E, 0.0f);
  const int workers = MaxWorkers(o.threads);

  for (int r = 0; r < o.stages; ++r) {
    float* z = cb.z_.data() + size_t(r) * E * 2 * P;
    double energy = 0;
    for (float v : res) energy += double{v} * v;
    energy /= double(m);
    if (!(energy > 1e-30)) continue;  // nothing left to code: stage stays zero
    // Init from random data points u: z = u(1 − i)/2 makes entry (a, a) = u.
    for (int a = 0; a < E; ++a) {
      const float* u = res.data() + size_t(rng() % uint64_t(m)) * 2 * P;
      for (int p = 0; p < P; ++p) {
        z[size_t(a) * 2 * P + p] = 0.5f * (u[p] + u[P + p]);
        z[size_t(a) * 2 * P + P + p] = 0.5f * (u[P + p] - u[p]);
      }
    }
    for (int it = 0; it < o.iters; ++it) {
      cb.Derive();
      const double frac = o.iters > 1 ? double(it) / (o.iters - 1) : 1.0;
      const float tau = static_cast<float>(energy * o.tau_start * std::pow(o.tau_end / o.tau_start, frac));
      // E-step: soft assignments over the E² entries; accumulate N (E×E) and
      // the right-hand sides through the row and column marginals.
      std::vector<std::vector<double>> wn(workers, std::vector<double>(size_t(E) * E, 0.0));
      std::vector<std::vector<double>> wrhs(workers, std::vector<double>(size_t(E) * 2 * P, 0.0));
      ParallelFor(m, workers, 256, [&](int64_t begin, int64_t end, int w) {
        std::vector<float> alpha(E), beta(E), dist(size_t(E) * E), ra(E), cb_(E);
        double* N = wn[w].data();
        double* rhs = wrhs[w].data();
        const float* cross = cb.cross_.data() + size_t(r) * E * E;
        for (int64_t i = begin; i < end; ++i) {
          const float* xp = res.data() + size_t(i) * 2 * P;
          cb.Project(r, xp, alpha.data(), beta.data());
          float dmin = INFINITY;
          for (int a = 0; a < E; ++a) {
            for (int b = 0; b < E; ++b) {
              const float d = cross[size_t(a) * E + b] - 2 * alpha[a] - 2 * beta[b];
              dist[size_t(a) * E + b] = d;
              dmin = std::min(dmin, d);
            }
          }
          double total = 0;
          for (float& d : dist) {
            const float t = (d - dmin) / tau;
            d = t < 30.0f ? std::exp(-t) : 0.0f;
            total += d;
          }
          const float inv = static_cast<float>(1.0 / total);
          std::fill(ra.begin(), ra.end(), 0.0f);
          std::fill(cb_.begin(), cb_.end(), 0.0f);
          for (int a = 0; a < E; ++a) {
            for (int b = 0; b < E; ++b) {
              const float wgt = dist[size_t(a) * E + b] * inv;
              if (wgt == 0) continue;
              N[size_t(a) * E + b] += wgt;
              ra[a] += wgt;
              cb_[b] += wgt;
            }
          }
          for (int a = 0; a < E; ++a) {
            if (ra[a] == 0 && cb_[a] == 0) continue;
            double* re = rhs + size_t(a) * 2 * P;
            double* im = re + P;
            for (int p = 0; p < P; ++p) {
              re[p] += ra[a] * xp[p] + cb_[a] * xp[P + p];
              im[p] += ra[a] * xp[P + p] - cb_[a] * xp[p];
            }
          }
        }
      });
      for (int w = 1; w < workers; ++w) {
        for (size_t j = 0; j < wn[0].size(); ++j) wn[0][j] += wn[w][j];
        for (size_t j = 0; j < wrhs[0].size(); ++j) wrhs[0][j] += wrhs[w][j];
      }
      const std::vector<double>& N = wn[0];
      // M-step: (Σ N_AB T_ABᵀ T_AB + λI) θ_p = Σ_j Σ_AB w T_ABᵀ x_jp + λ θ_old, all pairs share the matrix.
      const int D = 2 * E;
      std::vector<double> M(size_t(D) * D, 0.0);
      for (int a = 0; a < E; ++a) {
        for (int b = 0; b < E; ++b) {
          const double v = N[size_t(a) * E + b];
          if (v == 0) continue;
          M[size_t(a) * D + a] += v;
          M[size_t(E + b) * D + E + b] += v;
          M[size_t(E + a) * D + E + a] += v;
          M[size_t(b) * D + b] += v;
          M[size_t(a) * D + E + b] -= v;
          M[size_t(E + b) * D + a] -= v;
          M[size_t(E + a) * D + b] += v;
          M[size_t(b) * D + E + a] += v;
        }
      }
      const double lambda = 1e-3 * double(m) / E + 1e-12;
      for (int i = 0; i < D; ++i) M[size_t(i) * D + i] += lambda;
      ASSIGN_OR_RETURN(std::vector<double> L, Cholesky(M, D));
      std::vector<double> rhs(D), y(D), th(D);
      for (int p = 0; p < P; ++p) {
        for (int a = 0; a < E; ++a) {
          rhs[a] = wrhs[0][size_t(a) * 2 * P + p] + lambda * z[size_t(a) * 2 * P + p];
          rhs[E + a] = wrhs[0][size_t(a) * 2 * P + P + p] + lambda * z[size_t(a) * 2 * P + P + p];
        }
        for (int i = 0; i < D; ++i) {
          double s = rhs[i];
          for (int k = 0; k < i; ++k) s -= L[size_t(i) * D + k] * y[k];
          y[i] = s / L[size_t(i) * D + i];
        }
        for (int i = D - 1; i >= 0; --i) {
          double s = y[i];
          for (int k = i + 1; k < D; ++k) s -= L[size_t(k) * D + i] * th[k];
          th[i] = s / L[size_t(i) * D + i];
        }
        for (int a = 0; a < E; ++a) {
          z[size_t(a) * 2 * P + p] = static_cast<float>(th[a]);
          z[size_t(a) * 2 * P + P + p] = static_cast<float>(th[E + a]);
        }
      }
    }
    cb.Derive();
    // Hard (greedy) assignment; the residual feeds the next stage.
    ParallelFor(m, workers, 256, [&](int64_t begin, int64_t end, int) {
      std::vector<float> alpha(E), beta(E);
      for (int64_t i = begin; i < end; ++i) {
        float* xp = res.data() + size_t(i) * 2 * P;
        cb.Project(r, xp, alpha.data(), beta.data());
        const int code = cb.Nearest(r, alpha.data(), beta.data());
        const float* za = z + size_t(code / E) * 2 * P;
        const float* zb = z + size_t(code % E) * 2 * P;
        for (int p = 0; p < P; ++p) {
          xp[p] -= za[p] - zb[P + p];
          xp[P + p] -= za[P + p] + zb[p];
        }
      }
    });
  }
  cb.Derive();
  return cb;
}

void CommVqKeyCodebook::Encode(const float* x, uint32_t* codes) const {
  const int E = entries(), P = P_;
  std::vector<float> xp(2 * P), alpha(E), beta(E);
  for (int p = 0; p < P; ++p) {
    int a, b;
    Pair(p, &a, &b);
    xp[p] = x[a], xp[P + p] = x[b];
  }
  for (int r = 0; r < stages_; ++r) {
    Project(r, xp.data(), alpha.data(), beta.data());
    const int code = Nearest(r, alpha.data(), beta.data());
    codes[r] = static_cast<uint32_t>(code);
    const float* z = z_.data() + size_t(r) * E * 2 * P;
    const float* za = z + size_t(code / E) * 2 * P;
    const float* zb = z + size_t(code % E) * 2 * P;
    for (int p = 0; p < P; ++p) {
      xp[p] -= za[p] - zb[P + p];
      xp[P + p] -= za[P + p] + zb[p];
    }
  }
}

void CommVqKeyCodebook::Decode(const uint32_t* codes, float* x) const {
  const int E = entries(), P = P_;
  std::vector<float> acc(2 * P, 0.0f);
  for (int r = 0; r < stages_; ++r) {
    const uint32_t code = codes[r] % uint32_t(E * E);
    const float* z = z_.data() + size_t(r) * E * 2 * P;
    const float* za = z + size_t(code / E) * 2 * P;
    const float* zb = z + size_t(code % E) * 2 * P;
    for (int p = 0; p < P; ++p) {
      acc[p] += za[p] - zb[P + p];
      acc[P + p] += za[P + p] + zb[p];
    }
  }
  for (int p = 0; p < P; ++p) {
    int a, b;
    Pair(p, &a, &b);
    x[a] = acc[p], x[b] = acc[P + p];
  }
}

void CommVqKeyCodebook::QueryTable(const float* q, float* table) const {
  const int E = entries(), P = P_;
  std::vector<float> qr(P), qi(P);
  for (int p = 0; p < P; ++p) {
    int a, b;
    Pair(p, &a, &b);
    qr[p] = q[a], qi[p] = q[b];
  }
  for (int r = 0; r < stages_; ++r) {
    for (int e = 0; e < E; ++e) {
      const float* z = z_.data() + (size_t(r) * E + e) * 2 * P;
      float* t = table + (size_t(r) * E + e) * 4 * P;  // [X][Y] then i·(X + iY) = [−Y][X]
      for (int p = 0; p < P; ++p) {
        const float X = qr[p] * z[p] + qi[p] * z[P + p];
        const float Y = qr[p] * z[P + p] - qi[p] * z[p];
        t[p] = X, t[P + p] = Y, t[2 * P + p] = -Y, t[3 * P + p] = X;
      }
    }
  }
}

float CommVqKeyCodebook::Score(const float* table, const uint32_t* codes, const float* cos, const float* sin) const {
  const int E = entries(), P = P_;
  float acc[2 * 2048];
  std::fill(acc, acc + 2 * P, 0.0f);
  for (int r = 0; r < stages_; ++r) {
    const uint32_t code = codes[r] % uint32_t(E * E);
    const float* ta = table + (size_t(r) * E + code / E) * 4 * P;
    const float* tb = table + (size_t(r) * E + code % E) * 4 * P + 2 * P;
    for (int j = 0; j < 2 * P; ++j) acc[j] += ta[j] + tb[j];
  }
  float s = 0;
  for (int p = 0; p < P; ++p) s += acc[p] * cos[p] - acc[P + p] * sin[p];
  return s;
}

void CommVqKeyCodebook::Serialize(std::string* out) const {
  AppendLE<uint32_t>(out, static_cast<uint32_t>(d_));
  AppendLE<uint32_t>(out, static_cast<uint32_t>(stages_));
  AppendLE<uint32_t>(out, static_cast<uint32_t>(digit_bits_));
  AppendLE<uint32_t>(out, static_cast<uint32_t>(style_));
  AppendFloats(out, z_);
}

absl::StatusOr<CommVqKeyCodebook> CommVqKeyCodebook::Parse(absl::string_view in, size_t* offset) {
  Reader r(in, offset);
  uint32_t d, stages, digit, style;
  if (!r.Get(&d) || !r.Get(&stages) || !r.Get(&digit) || !r.Get(&style) || d < 2 || d % 2 || d > 4096 || stages < 1 ||
      stages > 256 || digit < 1 || digit > 8 || style > 2) {
    return absl::DataLossError("commvq key codebook header is inconsistent");
  }
  CommVqKeyCodebook cb;
  cb.d_ = int(d), cb.P_ = int(d / 2), cb.stages_ = int(stages), cb.digit_bits_ = int(digit);
  cb.style_ = static_cast<RopeStyle>(style);
  if (!r.Floats(&cb.z_, uint64_t(stages) * (1u << digit) * d)) return absl::DataLossError("commvq key codebook is truncated or not finite");
  cb.Derive();
  return cb;
}

// ---------------------------------------------------------------------------
// Values.

absl::StatusOr<ResidualVqCodebook> ResidualVqCodebook::Train(int dim, int stages, int bits, const float* x, int64_t n,
                                                            uint64_t seed) {
  if (dim < 1 || dim > 4096 || stages < 1 || stages > 1024 || bits < 1 || bits > 12) {
    return absl::InvalidArgumentError("residual VQ: dim in [1, 4096], stages in [1, 1024], bits in [1, 12]");
  }
  const int K = 1 << bits;
  if (n < K) return absl::InvalidArgumentError(absl::StrCat("residual VQ: ", n, " training vectors for ", K, " centroids"));
  if (x == nullptr || !AllFinite(x, n * dim)) return absl::InvalidArgumentError("residual VQ: training values are not finite");
  ResidualVqCodebook cb;
  cb.d_ = dim, cb.stages_ = stages, cb.bits_ = bits;
  std::vector<float> res(x, x + n * dim);
  cb.c_.reserve(size_t(stages) * K * dim);
  std::vector<uint32_t> code(n);
  for (int s = 0; s < stages; ++s) {
    std::vector<float> cent;
    try {
      faiss::ClusteringParameters cp;
      cp.niter = 20;
      cp.seed = static_cast<int>(seed + s);
      cp.min_points_per_centroid = 1;
      cp.max_points_per_centroid = 128;
      cp.verbose = false;
      faiss::Clustering km(dim, K, cp);
      faiss::IndexFlatL2 assign(dim);
      km.train(n, res.data(), assign);
      cent = km.centroids;
      std::vector<float> dist(n);
      std::vector<faiss::Index::idx_t> ids(n);
      assign.search(n, res.data(), 1, dist.data(), ids.data());
      for (int64_t i = 0; i < n; ++i) code[i] = static_cast<uint32_t>(ids[i]);
    } catch (const faiss::FaissException& e) {
      return absl::InternalError(absl::StrCat("residual VQ k-means: FAISS: ", e.what()));
    }
    for (int64_t i = 0; i < n; ++i) {
      const float* c = cent.data() + size_t(code[i]) * dim;
      for (int j = 0; j < dim; ++j) res[i * dim + j] -= c[j];
    }
    cb.c_.insert(cb.c_.end(), cent.begin(), cent.end());
  }
  return cb;
}

void ResidualVqCodebook::Encode(const float* x, int64_t n, uint32_t* codes) const {
  const int K = 1 << bits_;
  std::vector<float> norms(size_t(stages_) * K);
  for (size_t j = 0; j < norms.size(); ++j) norms[j] = Dot(c_.data() + j * d_, c_.data() + j * d_, d_);
  std::vector<float> r(d_);
  for (int64_t i = 0; i < n; ++i) {
    std::copy(x + i * d_, x + (i + 1) * d_, r.begin());
    for (int s = 0; s < stages_; ++s) {
      const float* c = c_.data() + size_t(s) * K * d_;
      float best = INFINITY;
      int arg = 0;
      for (int k = 0; k < K; ++k) {
        const float dist = norms[size_t(s) * K + k] - 2 * Dot(r.data(), c + size_t(k) * d_, d_);
        if (dist < best) best = dist, arg = k;
      }
      codes[i * stages_ + s] = static_cast<uint32_t>(arg);
      Axpy(-1.0f, c + size_t(arg) * d_, r.data(), d_);
    }
  }
}

void ResidualVqCodebook::Decode(const uint32_t* codes, float* x) const {
  const int K = 1 << bits_;
  std::fill(x, x + d_, 0.0f);
  for (int s = 0; s < stages_; ++s) Axpy(1.0f, c_.data() + (size_t(s) * K + codes[s] % uint32_t(K)) * d_, x, d_);
}

void ResidualVqCodebook::Serialize(std::string* out) const {
  AppendLE<uint32_t>(out, static_cast<uint32_t>(d_));
  AppendLE<uint32_t>(out, static_cast<uint32_t>(stages_));
  AppendLE<uint32_t>(out, static_cast<uint32_t>(bits_));
  AppendFloats(out, c_);
}

absl::StatusOr<ResidualVqCodebook> ResidualVqCodebook::Parse(absl::string_view in, size_t* offset) {
  Reader r(in, offset);
  uint32_t d, stages, bits;
  if (!r.Get(&d) || !r.Get(&stages) || !r.Get(&bits) || d < 1 || d > 4096 || stages < 1 || stages > 1024 || bits < 1 ||
      bits > 12) {
    return absl::DataLossError("residual VQ codebook header is inconsistent");
  }
  ResidualVqCodebook cb;
  cb.d_ = int(d), cb.stages_ = int(stages), cb.bits_ = int(bits);
  if (!r.Floats(&cb.c_, uint64_t(stages) * (1u << bits) * d)) return absl::DataLossError("residual VQ codebook is truncated or not finite");
  return cb;
}

// ---------------------------------------------------------------------------
// Calibration.

CommVqConfig CommVqConfigForBits(double bits, int head_dim, int kdigit, int vbits) {
  CommVqConfig c;
  c.kdigit = kdigit;
  c.vbits = vbits;
  c.kstages = std::max(1, static_cast<int>(std::lround(bits * head_dim / (2.0 * kdigit))));
  c.vstages = std::max(1, static_cast<int>(std::lround(bits * head_dim / double(vbits))));
  return c;
}

int64_t CommVqCalibration::FixedBytes() const {
  int64_t b = 0;
  for (const auto& k : keys) b += int64_t(k.stages()) * (int64_t{1} << k.digit_bits()) * k.dim() * 2;  // f16 on a GPU
  for (const auto& v : values) b += int64_t(v.stages()) * (int64_t{1} << v.bits()) * v.dim() * 2;
  return b + int64_t(vsigma.size()) * 2;
}

namespace {

constexpr uint32_t kCalMagic = 0x51564d43;  // "CMVQ"
constexpr uint32_t kCalVersion = 1;

// Layer norm per token over all heads of a [tokens][heads][d] array.
std::vector<float> TokenNorms(const float* x, int64_t tokens, int heads, int d, const float* sigma) {
  std::vector<float> out(tokens);
  for (int64_t t = 0; t < tokens; ++t) {
    double s = 0;
    for (int h = 0; h < heads; ++h) {
      for (int c = 0; c < d; ++c) {
        const double v = x[(t * heads + h) * d + c] / (sigma ? sigma[size_t(h) * d + c] : 1.0f);
        s += v * v;
      }
    }
    out[t] = static_cast<float>(std::sqrt(s));
  }
  return out;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const CommVqCalibration>> TrainCommVqCalibration(
    const KvLayout& layout, int num_layers, const CommVqTrainingSet& data, const CommVqConfig& config,
    void (*progress)(int, int)) {
  RETURN_IF_ERROR(layout.Validate());
  const int H = layout.num_kv_heads, d = layout.head_dim;
  if (num_layers < 1 || num_layers > layout.num_layers || data.k_pre.size() != size_t(num_layers) ||
      data.v.size() != size_t(num_layers)) {
    return absl::InvalidArgumentError("commvq calibration: one K and one V array per layer");
  }
  if (d % 2 != 0) return absl::InvalidArgumentError("commvq needs an even head_dim");
  auto cal = std::make_shared<CommVqCalibration>();
  cal->layout = layout;
  cal->num_layers = num_layers;
  cal->config = config;
  int done = 0;
  for (int l = 0; l < num_layers; ++l) {
    const auto& K = data.k_pre[l];
    const auto& V = data.v[l];
    if (K.size() != V.size() || K.empty() || K.size() % (size_t(H) * d) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("commvq calibration: layer ", l, " K/V are not [tokens][", H, "][", d, "]"));
    }
    const int64_t T = static_cast<int64_t>(K.size() / (size_t(H) * d));
    if (!AllFinite(K.data(), int64_t(K.size())) || !AllFinite(V.data(), int64_t(V.size()))) {
      return absl::InvalidArgumentError(absl::StrCat("commvq calibration: layer ", l, " has non-finite values"));
    }
    // σ: per-channel mean |v|.
    std::vector<float> sigma(size_t(H) * d, 0.0f);
    for (int64_t t = 0; t < T; ++t)
      for (size_t j = 0; j < sigma.size(); ++j) sigma[j] += std::fabs(V[size_t(t) * H * d + j]);
    for (float& s : sigma) s = s / float(T) > 1e-12f ? s / float(T) : 1.0f;
    const std::vector<float> kn = TokenNorms(K.data(), T, H, d, nullptr);
    const std::vector<float> vn = TokenNorms(V.data(), T, H, d, sigma.data());
    for (int h = 0; h < H; ++h) {
      std::vector<float> xk, xv;
      xk.reserve(size_t(T) * d), xv.reserve(size_t(T) * d);
      for (int64_t t = 0; t < T; ++t) {
        const float* k = K.data() + (size_t(t) * H + h) * d;
        const float* v = V.data() + (size_t(t) * H + h) * d;
        if (kn[t] > 0) {
          for (int c = 0; c < d; ++c) xk.push_back(k[c] / kn[t]);
        }
        if (vn[t] > 0) {
          for (int c = 0; c < d; ++c) xv.push_back(v[c] / sigma[size_t(h) * d + c] / vn[t]);
        }
      }
      CommVqTrainOptions to = config.train;
      to.stages = config.kstages;
      to.digit_bits = config.kdigit;
      to.seed = config.train.seed + 1000 * l + h;
      auto kc = CommVqKeyCodebook::Train(d, layout.rope_style, xk.data(), int64_t(xk.size()) / d, to);
      if (!kc.ok()) return Annotate(kc.status(), absl::StrCat("layer ", l, " head ", h, " keys"));
      auto vc = ResidualVqCodebook::Train(d, config.vstages, config.vbits, xv.data(), int64_t(xv.size()) / d, to.seed);
      if (!vc.ok()) return Annotate(vc.status(), absl::StrCat("layer ", l, " head ", h, " values"));
      cal->keys.push_back(std::move(*kc));
      cal->values.push_back(std::move(*vc));
      if (progress) progress(++done, num_layers * H);
    }
    cal->vsigma.insert(cal->vsigma.end(), sigma.begin(), sigma.end());
  }
  const std::string bytes = SerializeCommVqCalibration(*cal);
  cal->hash = Checksum64(bytes.data(), bytes.size());
  return std::shared_ptr<const CommVqCalibration>(std::move(cal));
}

std::string SerializeCommVqCalibration(const CommVqCalibration& cal) {
  std::string out;
  AppendLE<uint32_t>(&out, kCalMagic);
  AppendLE<uint32_t>(&out, kCalVersion);
  uint8_t layout[kEncodedLayoutBytes];
  EncodeLayout(cal.layout, layout);
  out.append(reinterpret_cast<const char*>(layout), sizeof(layout));
  const CommVqConfig& c = cal.config;
  for (int v : {cal.num_layers, c.kstages, c.kdigit, c.vstages, c.vbits, c.residual, c.chunk}) {
    AppendLE<uint32_t>(&out, static_cast<uint32_t>(v));
  }
  for (const auto& k : cal.keys) k.Serialize(&out);
  for (const auto& v : cal.values) v.Serialize(&out);
  AppendFloats(&out, cal.vsigma);
  AppendLE<uint64_t>(&out, Checksum64(out.data(), out.size()));
  return out;
}

absl::StatusOr<std::shared_ptr<const CommVqCalibration>> ParseCommVqCalibration(absl::string_view bytes) {
  const size_t header = 8 + kEncodedLayoutBytes + 7 * 4;
  if (bytes.size() < header + 8) return absl::DataLossError("commvq calibration is truncated");
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  if (LoadLE<uint32_t>(p) != kCalMagic) return absl::DataLossError("not a commvq calibration (bad magic)");
  if (LoadLE<uint32_t>(p + 4) != kCalVersion) {
    return absl::UnimplementedError(absl::StrCat("commvq calibration version ", LoadLE<uint32_t>(p + 4)));
  }
  if (LoadLE<uint64_t>(p + bytes.size() - 8) != Checksum64(p, bytes.size() - 8)) {
    return absl::DataLossError("commvq calibration checksum mismatch");
  }
  auto cal = std::make_shared<CommVqCalibration>();
  ASSIGN_OR_RETURN(cal->layout, DecodeLayout(p + 8));
  uint32_t f[7];
  for (int i = 0; i < 7; ++i) f[i] = LoadLE<uint32_t>(p + 8 + kEncodedLayoutBytes + 4 * i);
  cal->num_layers = int(f[0]);
  cal->config.kstages = int(f[1]), cal->config.kdigit = int(f[2]), cal->config.vstages = int(f[3]);
  cal->config.vbits = int(f[4]), cal->config.residual = int(f[5]), cal->config.chunk = int(f[6]);
  if (f[0] < 1 || int(f[0]) > cal->layout.num_layers || f[5] > (1u << 20) || f[6] < 1 || f[6] > (1u << 16)) {
    return absl::DataLossError("commvq calibration header is inconsistent");
  }
  const size_t heads = size_t(cal->num_layers) * cal->layout.num_kv_heads;
  const absl::string_view body = bytes.substr(0, bytes.size() - 8);
  size_t off = header;
  for (size_t i = 0; i < heads; ++i) {
    ASSIGN_OR_RETURN(CommVqKeyCodebook k, CommVqKeyCodebook::Parse(body, &off));
    if (k.dim() != cal->layout.head_dim || k.stages() != cal->config.kstages || k.digit_bits() != cal->config.kdigit) {
      return absl::DataLossError("commvq key codebook does not match the calibration header");
    }
    cal->keys.push_back(std::move(k));
  }
  for (size_t i = 0; i < heads; ++i) {
    ASSIGN_OR_RETURN(ResidualVqCodebook v, ResidualVqCodebook::Parse(body, &off));
    if (v.dim() != cal->layout.head_dim || v.stages() != cal->config.vstages || v.bits() != cal->config.vbits) {
      return absl::DataLossError("commvq value codebook does not match the calibration header");
    }
    cal->values.push_back(std::move(v));
  }
  Reader r(body, &off);
  if (!r.Floats(&cal->vsigma, heads * cal->layout.head_dim) || off != body.size()) {
    return absl::DataLossError("commvq calibration: σ truncated or trailing bytes");
  }
  for (float s : cal->vsigma) {
    if (!(s > 0)) return absl::DataLossError("commvq calibration: σ must be positive");
  }
  cal->hash = Checksum64(p, bytes.size());
  return std::shared_ptr<const CommVqCalibration>(std::move(cal));
}

namespace {
std::mutex& RegistryMu() {
  static std::mutex mu;
  return mu;
}
std::map<uint64_t, std::shared_ptr<const CommVqCalibration>>& Registry() {
  static auto* r = new std::map<uint64_t, std::shared_ptr<const CommVqCalibration>>;
  return *r;
}
}  // namespace

void RegisterCommVqCalibration(std::shared_ptr<const CommVqCalibration> cal) {
  std::lock_guard<std::mutex> l(RegistryMu());
  Registry()[cal->hash] = std::move(cal);
}

std::shared_ptr<const CommVqCalibration> FindCommVqCalibration(uint64_t hash) {
  std::lock_guard<std::mutex> l(RegistryMu());
  auto it = Registry().find(hash);
  return it == Registry().end() ? nullptr : it->second;
}

std::string CommVqCodecSpec(const CommVqCalibration& cal) {
  return absl::StrFormat("commvq:cal=%016x", cal.hash);
}

}  // namespace kvrecall

// ---------------------------------------------------------------------------
// The codec.

namespace kvrecall {
namespace {

// LSB-first bit packing of fixed-width codes.
void PackBits(const std::vector<uint32_t>& codes, int bits, std::string* out) {
  const size_t total = codes.size() * size_t(bits);
  std::string buf((total + 7) / 8, '\0');
  size_t pos = 0;
  for (uint32_t c : codes) {
    for (int b = 0; b < bits; ++b, ++pos) {
      if ((c >> b) & 1u) buf[pos / 8] = static_cast<char>(buf[pos / 8] | (1u << (pos % 8)));
    }
  }
  *out = std::move(buf);
}

uint32_t UnpackBits(const uint8_t* p, size_t first_bit, int bits) {
  uint32_t v = 0;
  for (int b = 0; b < bits; ++b) {
    const size_t pos = first_bit + size_t(b);
    v |= uint32_t((p[pos / 8] >> (pos % 8)) & 1u) << b;
  }
  return v;
}

class CommVqCodec final : public KvCodec {
 public:
  explicit CommVqCodec(std::shared_ptr<const CommVqCalibration> cal) : cal_(std::move(cal)) {}
  CodecId id() const override { return CodecId::kCommVq; }
  std::string name() const override { return "commvq"; }
  std::string params() const override {
    const CommVqConfig& c = cal_->config;
    return absl::StrFormat("buffer=%d,cal=%016x,kdigit=%d,kstages=%d,pre_rope=1,residual=%d,vbits=%d,vstages=%d", c.chunk,
                           cal_->hash, c.kdigit, c.kstages, c.residual, c.vbits, c.vstages);
  }

 protected:
  int KBits() const { return cal_->config.kstages * 2 * cal_->config.kdigit; }  // per token-head
  int VBits() const { return cal_->config.vstages * cal_->config.vbits; }

  absl::Status CheckShape(const KvLayout& l, int layer_begin, int layer_count) const {
    if (l.head_dim != cal_->layout.head_dim || l.num_kv_heads != cal_->layout.num_kv_heads ||
        l.rope_style != cal_->layout.rope_style) {
      return absl::InvalidArgumentError(absl::StrCat("commvq calibration is for ", cal_->layout.DebugString(),
                                                     ", not ", l.DebugString()));
    }
    if (layer_begin + layer_count > cal_->num_layers) {
      return absl::InvalidArgumentError(absl::StrCat("commvq calibration covers ", cal_->num_layers, " layers"));
    }
    return absl::OkStatus();
  }

  absl::Status EncodeSections(const KvChunkRef& c, EncodeOptions*, std::vector<std::string>* sections) const override {
    if (!c.layout.keys_pre_rope) return absl::InvalidArgumentError("commvq codes pre-RoPE keys (layout.keys_pre_rope)");
    RETURN_IF_ERROR(CheckShape(c.layout, c.layer_begin, c.layer_count));
    const int H = c.layout.num_kv_heads, d = c.layout.head_dim, T = c.tokens;
    const CommVqConfig& cf = cal_->config;
    std::string kscale, vscale;
    std::vector<uint32_t> kcodes(size_t(c.layer_count) * H * T * cf.kstages);
    std::vector<uint32_t> vcodes(size_t(c.layer_count) * H * T * cf.vstages);
    std::vector<float> x(d);
    for (int li = 0; li < c.layer_count; ++li) {
      const int layer = c.layer_begin + li;
      const float* sigma = cal_->vsigma.data() + size_t(layer) * H * d;
      for (int t = 0; t < T; ++t) {
        double ks = 0, vs = 0;
        for (int h = 0; h < H; ++h) {
          const size_t row = ((size_t(li) * H + h) * T + t) * d;
          for (int j = 0; j < d; ++j) {
            ks += double{c.k[row + j]} * c.k[row + j];
            const double u = c.v[row + j] / sigma[size_t(h) * d + j];
            vs += u * u;
          }
        }
        // The stored (f16) prescale is the one the codes are relative to.
        const float kp = HalfToFloat(FloatToHalf(static_cast<float>(std::sqrt(ks))));
        const float vp = HalfToFloat(FloatToHalf(static_cast<float>(std::sqrt(vs))));
        AppendLE<uint16_t>(&kscale, FloatToHalf(kp));
        AppendLE<uint16_t>(&vscale, FloatToHalf(vp));
        for (int h = 0; h < H; ++h) {
          const size_t row = ((size_t(li) * H + h) * T + t) * d;
          const size_t hh = size_t(layer) * H + h;
          const size_t slot = (size_t(li) * H + h) * T + t;
          for (int j = 0; j < d; ++j) x[j] = kp > 0 ? c.k[row + j] / kp : 0.0f;
          cal_->keys[hh].Encode(x.data(), kcodes.data() + slot * cf.kstages);
          for (int j = 0; j < d; ++j) x[j] = vp > 0 ? c.v[row + j] / sigma[size_t(h) * d + j] / vp : 0.0f;
          cal_->values[hh].Encode(x.data(), 1, vcodes.data() + slot * cf.vstages);
        }
      }
    }
    std::string kpacked, vpacked;
    PackBits(kcodes, 2 * cf.kdigit, &kpacked);
    PackBits(vcodes, cf.vbits, &vpacked);
    sections->push_back(std::move(kscale));
    sections->push_back(std::move(kpacked));
    sections->push_back(std::move(vscale));
    sections->push_back(std::move(vpacked));
    return absl::OkStatus();
  }

  // heads = layer_count × kv_heads; codebooks are per absolute layer.
  absl::Status Check(const std::vector<absl::Span<const uint8_t>>& s, const Shape& shape) const {
    if (s.size() != 4) return absl::DataLossError(absl::StrCat("commvq block has ", s.size(), " sections, want 4"));
    const int H = cal_->layout.num_kv_heads;
    if (shape.dim != cal_->layout.head_dim || shape.heads % H != 0 ||
        shape.layer_begin + shape.heads / H > cal_->num_layers) {
      return absl::FailedPreconditionError("commvq block does not match its calibration's layout");
    }
    const size_t lc = size_t(shape.heads / H), T = size_t(shape.tokens);
    const size_t kbytes = (size_t(shape.heads) * T * KBits() + 7) / 8, vbytes = (size_t(shape.heads) * T * VBits() + 7) / 8;
    if (s[0].size() != lc * T * 2 || s[2].size() != lc * T * 2 || s[1].size() != kbytes || s[3].size() != vbytes) {
      return absl::DataLossError("commvq block sections do not match its shape");
    }
    return absl::OkStatus();
  }

  void DecodeRow(const std::vector<absl::Span<const uint8_t>>& s, const Shape& shape, int layer, int li, int h, int t,
                 float* k, float* v) const {
    const CommVqConfig& cf = cal_->config;
    const int H = cal_->layout.num_kv_heads, d = shape.dim, T = shape.tokens;
    const size_t hh = size_t(layer) * H + h;
    const size_t slot = (size_t(li) * H + h) * T + t;
    uint32_t codes[1024];
    const float kp = HalfToFloat(LoadLE<uint16_t>(s[0].data() + 2 * (size_t(li) * T + t)));
    const float vp = HalfToFloat(LoadLE<uint16_t>(s[2].data() + 2 * (size_t(li) * T + t)));
    for (int r = 0; r < cf.kstages; ++r) codes[r] = UnpackBits(s[1].data(), (slot * cf.kstages + r) * (2 * cf.kdigit), 2 * cf.kdigit);
    cal_->keys[hh].Decode(codes, k);
    for (int j = 0; j < d; ++j) k[j] *= kp;
    for (int r = 0; r < cf.vstages; ++r) codes[r] = UnpackBits(s[3].data(), (slot * cf.vstages + r) * cf.vbits, cf.vbits);
    cal_->values[hh].Decode(codes, v);
    const float* sigma = cal_->vsigma.data() + hh * d;
    for (int j = 0; j < d; ++j) v[j] *= vp * sigma[j];
  }

  absl::Status DecodeSections(const std::vector<absl::Span<const uint8_t>>& s, const Shape& shape, float* k,
                              float* v) const override {
    RETURN_IF_ERROR(Check(s, shape));
    const int H = cal_->layout.num_kv_heads, T = shape.tokens, d = shape.dim;
    for (int li = 0; li < shape.heads / H; ++li)
      for (int h = 0; h < H; ++h)
        for (int t = 0; t < T; ++t) {
          const size_t row = ((size_t(li) * H + h) * T + t) * d;
          DecodeRow(s, shape, shape.layer_begin + li, li, h, t, k + row, v + row);
        }
    return absl::OkStatus();
  }

  absl::Status DecodeRowsSections(const std::vector<absl::Span<const uint8_t>>& s, const Shape& shape,
                                  absl::Span<const int> rows, float* k, float* v) const override {
    RETURN_IF_ERROR(Check(s, shape));
    const int H = cal_->layout.num_kv_heads, d = shape.dim, R = static_cast<int>(rows.size());
    for (int li = 0; li < shape.heads / H; ++li)
      for (int h = 0; h < H; ++h)
        for (int i = 0; i < R; ++i) {
          const size_t row = ((size_t(li) * H + h) * R + i) * d;
          DecodeRow(s, shape, shape.layer_begin + li, li, h, rows[i], k + row, v + row);
        }
    return absl::OkStatus();
  }

  std::vector<Owner> SectionOwners(size_t) const override { return {Owner::kK, Owner::kK, Owner::kV, Owner::kV}; }

 private:
  std::shared_ptr<const CommVqCalibration> cal_;
};

}  // namespace

namespace codec_internal {

absl::StatusOr<std::unique_ptr<KvCodec>> MakeCommVqCodec(ParamReader* p) {
  const std::string hex = p->String("cal", "");
  uint64_t hash = 0;
  if (hex.size() != 16 || !absl::SimpleHexAtoi(hex, &hash)) {
    return absl::InvalidArgumentError("commvq needs cal=<16 hex digits> naming a trained calibration");
  }
  auto cal = FindCommVqCalibration(hash);
  if (cal == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("commvq calibration ", hex,
                                                      " is not loaded in this process (RegisterCommVqCalibration)"));
  }
  const CommVqConfig& c = cal->config;
  // The remaining parameters are derived from the calibration; if given they must agree.
  const bool ok = p->Int("kstages", c.kstages, 1, 256) == c.kstages && p->Int("kdigit", c.kdigit, 1, 8) == c.kdigit &&
                  p->Int("vstages", c.vstages, 1, 1024) == c.vstages && p->Int("vbits", c.vbits, 1, 12) == c.vbits &&
                  p->Int("residual", c.residual, 0, 1 << 20) == c.residual &&
                  p->Int("buffer", c.chunk, 1, 1 << 16) == c.chunk && p->Int("pre_rope", 1, 1, 1) == 1;
  RETURN_IF_ERROR(p->Finish());
  if (!ok) return absl::InvalidArgumentError("commvq parameters disagree with the calibration they name");
  return std::unique_ptr<KvCodec>(new CommVqCodec(std::move(cal)));
}

}  // namespace codec_internal
}  // namespace kvrecall
