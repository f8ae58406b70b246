#include "codec/squat.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "codec/bytes.h"
#include "codec/codec_internal.h"
#include "codec/group_quant.h"
#include "codec/half.h"
#include "codec/linalg.h"
#include "common/status.h"

namespace kvrecall {
namespace {

struct HeadMatrices {
  std::vector<float> qhat;               // [rank][d], as stored (f16-rounded unless meta=f32)
  std::vector<std::vector<double>> w;    // block b >= 1: [g][b·g] = (A_RR⁻¹ A_RQ) rows of block b
};

class SquatState final : public CodecState {
 public:
  std::vector<HeadMatrices> heads;  // [layer_count × kv_heads]
};

// Solves A_RR X = A_RQ for X (|R|×|Q|) by Cholesky; returns the first g rows.
std::vector<double> BlockFeedback(const std::vector<double>& a, int d, int b, int g) {
  const int q = b * g, r = d - q;
  std::vector<double> arr(size_t(r) * r), l;
  for (int i = 0; i < r; ++i)
    for (int j = 0; j < r; ++j) arr[size_t(i) * r + j] = a[size_t(q + i) * d + q + j];
  l = *Cholesky(arr, r);  // A is SPD (I + λ·PSD)
  std::vector<double> out(size_t(g) * q);
  std::vector<double> y(r), x(r);
  for (int col = 0; col < q; ++col) {
    // Forward then backward substitution for column `col` of A_RQ.
    for (int i = 0; i < r; ++i) {
      double s = a[size_t(q + i) * d + col];
      for (int k = 0; k < i; ++k) s -= l[size_t(i) * r + k] * y[k];
      y[i] = s / l[size_t(i) * r + i];
    }
    for (int i = r - 1; i >= 0; --i) {
      double s = y[i];
      for (int k = i + 1; k < r; ++k) s -= l[size_t(k) * r + i] * x[k];
      x[i] = s / l[size_t(i) * r + i];
    }
    for (int i = 0; i < g; ++i) out[size_t(i) * q + col] = x[i];
  }
  return out;
}

class SquatCodec final : public KvCodec {
 public:
  SquatCodec(int bits, int kgroup, int vgroup, int residual, int rank, int block, double lambda, bool pre_rope,
             bool f32_meta, bool qspace_pre)
      : bits_(bits), kgroup_(kgroup), vgroup_(vgroup), residual_(residual), rank_(rank), block_(block),
        lambda_(lambda), pre_rope_(pre_rope), f32_meta_(f32_meta), qspace_pre_(qspace_pre) {}

  CodecId id() const override { return CodecId::kSquat; }
  std::string name() const override { return "squat"; }
  std::string params() const override {
    return absl::StrCat("bits=", bits_, ",block=", block_, ",kgroup=", kgroup_, ",lambda=", lambda_,
                        f32_meta_ ? ",meta=f32" : "", ",pre_rope=", pre_rope_ ? 1 : 0,
                        qspace_pre_ ? ",qspace=pre" : "", ",rank=", rank_, ",residual=", residual_,
                        ",vgroup=", vgroup_);
  }

 protected:
  GroupQuantSpec KSpec() const { return GroupQuantSpec{bits_, kgroup_, true, f32_meta_}; }
  GroupQuantSpec VSpec() const { return GroupQuantSpec{bits_, vgroup_, false, f32_meta_}; }
  size_t QhatWidth() const { return f32_meta_ ? 4 : 2; }
  // A channel block wider than the head covers the whole head.
  int Block(int d) const { return std::min(block_, d); }

  absl::Status BuildState(const KvChunkRef& c, const EncodeOptions& o, SquatState* st) const {
    const int d = c.layout.head_dim, G = c.layout.group_size(), H = c.layout.num_kv_heads;
    if (o.queries == nullptr || o.num_queries < 1) {
      return absl::FailedPreconditionError("squat needs the prompt's queries for its first chunk");
    }
    if (d % Block(d) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("block ", block_, " does not divide head_dim ", d));
    }
    const int r = std::min(rank_, d);
    st->heads.assign(size_t(c.layer_count) * H, {});
    for (int l = 0; l < c.layer_count; ++l) {
      for (int h = 0; h < H; ++h) {
        // Gram of the group's queries: [l][q_head][i][d], heads h·G .. h·G+G-1.
        const float* q = o.queries + (size_t(l) * c.layout.num_q_heads + size_t(h) * G) * o.num_queries * d;
        for (int64_t i = 0; i < int64_t(G) * o.num_queries * d; ++i) {
          if (!std::isfinite(q[i])) return absl::InvalidArgumentError("squat: queries contain NaN or Inf");
        }
        const std::vector<double> gram = Gram(q, int64_t(G) * o.num_queries, d);
        ASSIGN_OR_RETURN(SymEigen e, SymmetricEigen(gram, d));
        HeadMatrices& m = st->heads[size_t(l) * H + h];
        m.qhat.resize(size_t(r) * d);
        // Q̂ = diag(s)·V_rᵀ with s = sqrt(eigenvalue); A is built from the
        // f16-rounded Q̂ so later chunks (which reload it) agree exactly.
        std::vector<double> qhat(size_t(r) * d);
        for (int i = 0; i < r; ++i) {
          const double s = std::sqrt(std::max(e.values[i], 0.0));
          for (int c2 = 0; c2 < d; ++c2) {
            float x = static_cast<float>(s * e.vectors[size_t(c2) * d + i]);
            if (!f32_meta_) x = HalfToFloat(FloatToHalf(x));
            m.qhat[size_t(i) * d + c2] = x;
            qhat[size_t(i) * d + c2] = x;
          }
        }
        std::vector<double> a(size_t(d) * d, 0.0);
        for (int x = 0; x < d; ++x) {
          for (int y = 0; y < d; ++y) {
            double s = 0;
            for (int i = 0; i < r; ++i) s += qhat[size_t(i) * d + x] * qhat[size_t(i) * d + y];
            a[size_t(x) * d + y] = (x == y ? 1.0 : 0.0) + lambda_ * s;
          }
        }
        const int g = Block(d);
        m.w.resize(d / g);
        for (int b = 1; b < d / g; ++b) m.w[b] = BlockFeedback(a, d, b, g);
      }
    }
    return absl::OkStatus();
  }

  absl::Status EncodeSections(const KvChunkRef& c, EncodeOptions* o, std::vector<std::string>* sections) const override {
    const int d = c.layout.head_dim, n = c.tokens;
    const int heads = c.layer_count * c.layout.num_kv_heads;
    std::unique_ptr<CodecState> local;
    std::unique_ptr<CodecState>* slot = o->state ? o->state : &local;
    auto* st = dynamic_cast<SquatState*>(slot->get());
    bool built = false;
    if (st == nullptr || st->heads.size() != size_t(heads)) {
      auto fresh = std::make_unique<SquatState>();
      RETURN_IF_ERROR(BuildState(c, *o, fresh.get()));
      st = fresh.get();
      *slot = std::move(fresh);
      built = true;
    }
    const TensorShape ts{heads, n, d};
    const GroupQuantSpec ks = KSpec();
    UnpackedQuant kq;
    kq.codes.resize(ts.elements());
    kq.scales.resize(GroupQuantScaleBytes(ts, ks) / (f32_meta_ ? 4 : 2));
    const int ng = (n + kgroup_ - 1) / kgroup_;
    std::vector<float> cur(size_t(n) * d), err(size_t(n) * d, 0.0f);
    for (int h = 0; h < heads; ++h) {
      const float* k = c.k + size_t(h) * n * d;
      std::copy(k, k + size_t(n) * d, cur.begin());
      uint8_t* codes = kq.codes.data() + size_t(h) * n * d;
      const HeadMatrices& m = st->heads[h];
      const int blk = Block(d);
      for (int b = 0; b < d / blk; ++b) {
        const int c0 = b * blk;
        if (b > 0) {
          const std::vector<double>& w = m.w[b];
          for (int t = 0; t < n; ++t) {
            const float* e = err.data() + size_t(t) * d;
            for (int i = 0; i < blk; ++i) {
              double s = 0;
              for (int j = 0; j < c0; ++j) s += w[size_t(i) * c0 + j] * e[j];
              cur[size_t(t) * d + c0 + i] = static_cast<float>(k[size_t(t) * d + c0 + i] - s);
            }
          }
        }
        for (int g = 0; g < ng; ++g) {
          const int t0 = g * kgroup_, cnt = std::min(kgroup_, n - t0);
          for (int ch = c0; ch < c0 + blk; ++ch) {
            float* sc = &kq.scales[2 * ((size_t(h) * ng + g) * d + ch)];
            QuantizeGroup(cur.data() + size_t(t0) * d + ch, d, cnt, bits_, f32_meta_, sc, codes + size_t(t0) * d + ch);
            const float mn = sc[0], dl = sc[1];
            for (int t = t0; t < t0 + cnt; ++t) {
              const float kh = mn + dl * codes[size_t(t) * d + ch];
              err[size_t(t) * d + ch] = kh - k[size_t(t) * d + ch];
            }
          }
        }
      }
    }
    sections->resize(5);
    PackQuant(kq, ts, ks, &(*sections)[0], &(*sections)[1]);
    PackQuant(QuantizeTensor(c.v, ts, VSpec()), ts, VSpec(), &(*sections)[2], &(*sections)[3]);
    if (built) {
      std::string& q = (*sections)[4];
      for (const HeadMatrices& hm : st->heads) {
        for (float x : hm.qhat) {
          if (f32_meta_) AppendLE<float>(&q, x);
          else AppendLE<uint16_t>(&q, FloatToHalf(x));
        }
      }
    }
    return absl::OkStatus();
  }

  absl::Status Check(const std::vector<absl::Span<const uint8_t>>& s, const TensorShape& ts) const {
    if (s.size() != 5) return absl::DataLossError(absl::StrCat("squat block has ", s.size(), " sections, want 5"));
    RETURN_IF_ERROR(Annotate(CheckQuantSections(s[0], s[1], ts, KSpec()), "K"));
    RETURN_IF_ERROR(Annotate(CheckQuantSections(s[2], s[3], ts, VSpec()), "V"));
    const size_t sub = size_t(ts.heads) * std::min(rank_, ts.dim) * ts.dim * QhatWidth();
    if (!s[4].empty() && s[4].size() != sub) {
      return absl::DataLossError(absl::StrCat("subspace section has ", s[4].size(), " bytes, want 0 or ", sub));
    }
    return absl::OkStatus();
  }

  absl::Status DecodeSections(const std::vector<absl::Span<const uint8_t>>& s, const Shape& shape, float* k,
                              float* v) const override {
    const TensorShape ts{shape.heads, shape.tokens, shape.dim};
    RETURN_IF_ERROR(Check(s, ts));
    DequantizeTensor(s[0], s[1], ts, KSpec(), k);
    DequantizeTensor(s[2], s[3], ts, VSpec(), v);
    return absl::OkStatus();
  }

  absl::Status DecodeRowsSections(const std::vector<absl::Span<const uint8_t>>& s, const Shape& shape,
                                  absl::Span<const int> rows, float* k, float* v) const override {
    const TensorShape ts{shape.heads, shape.tokens, shape.dim};
    RETURN_IF_ERROR(Check(s, ts));
    DequantizeRows(s[0], s[1], ts, KSpec(), rows, k);
    DequantizeRows(s[2], s[3], ts, VSpec(), rows, v);
    return absl::OkStatus();
  }

  std::vector<Owner> SectionOwners(size_t) const override {
    return {Owner::kK, Owner::kK, Owner::kV, Owner::kV, Owner::kK};
  }

 private:
  int bits_, kgroup_, vgroup_, residual_, rank_, block_;
  double lambda_;
  bool pre_rope_, f32_meta_, qspace_pre_;
};

}  // namespace

namespace codec_internal {

absl::StatusOr<std::unique_ptr<KvCodec>> MakeSquatCodec(ParamReader* p) {
  const int bits = p->Int("bits", 2, 1, 8);
  const int kgroup = p->Int("kgroup", 32, 1, 1 << 16);
  const int vgroup = p->Int("vgroup", 32, 1, 1 << 16);
  const int residual = p->Int("residual", 32, 0, 1 << 20);
  const int rank = p->Int("rank", 20, 1, 4096);
  const int block = p->Int("block", 64, 1, 4096);
  const double lambda = p->Double("lambda", 0.001, 0, 1e6);
  const bool pre_rope = p->Bool("pre_rope", true);
  const bool f32_meta = p->Choice("meta", "f16", {"f16", "f32"}) == "f32";
  const bool qspace_pre = p->Choice("qspace", "post", {"pre", "post"}) == "pre";
  RETURN_IF_ERROR(p->Finish());
  return std::unique_ptr<KvCodec>(
      new SquatCodec(bits, kgroup, vgroup, residual, rank, block, lambda, pre_rope, f32_meta, qspace_pre));
}

}  // namespace codec_internal
}  // namespace kvrecall
