#include "codec/gear.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "codec/bytes.h"
#include "codec/codec_internal.h"
#include "codec/group_quant.h"
#include "codec/half.h"
#include "common/status.h"

namespace kvrecall {
namespace {

// Orthonormalizes the columns of q [n][r] in place (modified Gram-Schmidt).
void Orthonormalize(std::vector<double>* q, int n, int r) {
  for (int j = 0; j < r; ++j) {
    for (int i = 0; i < j; ++i) {
      double dot = 0;
      for (int t = 0; t < n; ++t) dot += (*q)[size_t(t) * r + i] * (*q)[size_t(t) * r + j];
      for (int t = 0; t < n; ++t) (*q)[size_t(t) * r + j] -= dot * (*q)[size_t(t) * r + i];
    }
    double norm = 0;
    for (int t = 0; t < n; ++t) norm += (*q)[size_t(t) * r + j] * (*q)[size_t(t) * r + j];
    norm = std::sqrt(norm);
    for (int t = 0; t < n; ++t) (*q)[size_t(t) * r + j] = norm > 1e-30 ? (*q)[size_t(t) * r + j] / norm : 0.0;
  }
}

class GearCodec final : public KvCodec {
 public:
  GearCodec(bool sparse, int bits, int kgroup, int vgroup, int rank, int rank_decode, double outliers, int buffer,
            int loops)
      : sparse_(sparse), bits_(bits), kgroup_(kgroup), vgroup_(vgroup), rank_(rank), rank_decode_(rank_decode),
        outliers_(outliers), buffer_(buffer), loops_(loops) {}

  CodecId id() const override { return CodecId::kGear; }
  std::string name() const override { return sparse_ ? "gear" : "gear_l"; }
  std::string params() const override {
    return absl::StrCat("bits=", bits_, ",buffer=", buffer_, ",kgroup=", kgroup_, ",loops=", loops_,
                        ",outliers=", sparse_ ? outliers_ : 0.0, ",rank=", rank_, ",rank_decode=", rank_decode_,
                        ",sparse=", sparse_ ? 1 : 0, ",vgroup=", vgroup_);
  }

 protected:
  // Encodes one tensor (K if per_channel, else V) into 4 sections.
  void EncodeTensor(const float* x_all, const TensorShape& ts, const GroupQuantSpec& spec, int rank,
                    std::string* scales, std::string* codes, std::string* lowrank, std::string* outl) const {
    const int n = ts.tokens, d = ts.dim;
    std::vector<float> filled(x_all, x_all + ts.elements());
    // Outliers: per head, the top and bottom (s/2)·n·d entries.
    std::vector<std::vector<uint32_t>> out_idx(ts.heads);
    const int per_side = sparse_ ? static_cast<int>(std::floor(outliers_ * n * d / 2)) : 0;
    for (int h = 0; h < ts.heads && per_side > 0; ++h) {
      float* x = filled.data() + size_t(h) * n * d;
      std::vector<uint32_t> order(size_t(n) * d);
      std::iota(order.begin(), order.end(), 0);
      std::nth_element(order.begin(), order.begin() + per_side, order.end(), [&](uint32_t a, uint32_t b) { return x[a] > x[b]; });
      std::vector<uint32_t> idx(order.begin(), order.begin() + per_side);
      std::nth_element(order.begin() + per_side, order.begin() + 2 * per_side, order.end(),
                       [&](uint32_t a, uint32_t b) { return x[a] < x[b]; });
      idx.insert(idx.end(), order.begin() + per_side, order.begin() + 2 * per_side);
      std::sort(idx.begin(), idx.end());
      // Replace by the channel mean (K) / token mean (V) of the non-outliers.
      std::vector<char> is_out(size_t(n) * d, 0);
      for (uint32_t i : idx) is_out[i] = 1;
      std::vector<float> orig(idx.size());
      for (size_t i = 0; i < idx.size(); ++i) orig[i] = x[idx[i]];
      for (uint32_t i : idx) {
        const int t = i / d, c = i % d;
        double s = 0;
        int cnt = 0;
        if (spec.per_channel) {
          for (int u = 0; u < n; ++u) if (!is_out[size_t(u) * d + c]) s += x[size_t(u) * d + c], ++cnt;
        } else {
          for (int e = 0; e < d; ++e) if (!is_out[size_t(t) * d + e]) s += x[size_t(t) * d + e], ++cnt;
        }
        x[i] = cnt ? static_cast<float>(s / cnt) : 0.0f;
      }
      AppendLE<uint32_t>(outl, static_cast<uint32_t>(idx.size()));
      for (uint32_t i : idx) AppendLE<uint32_t>(outl, i);
      for (float v : orig) AppendLE<uint16_t>(outl, FloatToHalf(v));
      out_idx[h] = std::move(idx);
    }
    if (per_side == 0) {
      for (int h = 0; h < ts.heads; ++h) AppendLE<uint32_t>(outl, 0);
    }
    UnpackedQuant q = QuantizeTensor(filled.data(), ts, spec);
    PackQuant(q, ts, spec, scales, codes);
    // Residual of the backbone, outlier positions excluded.
    std::vector<float> deq(ts.elements());
    DequantizeTensor(AsBytes(*scales), AsBytes(*codes), ts, spec, deq.data());
    const int r = std::min({rank, n, d});
    AppendLE<uint16_t>(lowrank, static_cast<uint16_t>(r));
    std::mt19937_64 rng(0x6ea7 + n);
    std::normal_distribution<double> n01;
    for (int h = 0; h < ts.heads; ++h) {
      std::vector<double> res(size_t(n) * d);
      for (size_t i = 0; i < res.size(); ++i) res[i] = double(filled[size_t(h) * n * d + i]) - deq[size_t(h) * n * d + i];
      for (uint32_t i : out_idx[h]) res[i] = 0;
      std::vector<double> p(size_t(d) * r), qm(size_t(n) * r);
      for (double& v : p) v = n01(rng);
      for (int it = 0; it < std::max(loops_, 1); ++it) {
        for (int t = 0; t < n; ++t)  // Q = R·P
          for (int j = 0; j < r; ++j) {
            double s = 0;
            for (int c = 0; c < d; ++c) s += res[size_t(t) * d + c] * p[size_t(c) * r + j];
            qm[size_t(t) * r + j] = s;
          }
        Orthonormalize(&qm, n, r);
        for (int c = 0; c < d; ++c)  // P = Rᵀ·Q
          for (int j = 0; j < r; ++j) {
            double s = 0;
            for (int t = 0; t < n; ++t) s += res[size_t(t) * d + c] * qm[size_t(t) * r + j];
            p[size_t(c) * r + j] = s;
          }
      }
      for (double v : qm) AppendLE<uint16_t>(lowrank, FloatToHalf(static_cast<float>(v)));
      for (double v : p) AppendLE<uint16_t>(lowrank, FloatToHalf(static_cast<float>(v)));
    }
  }

  absl::Status EncodeSections(const KvChunkRef& c, EncodeOptions* o, std::vector<std::string>* sections) const override {
    const TensorShape ts{c.layer_count * c.layout.num_kv_heads, c.tokens, c.layout.head_dim};
    const int rank = o->prefill ? rank_ : rank_decode_;
    sections->assign(8, "");
    EncodeTensor(c.k, ts, KSpec(), rank, &(*sections)[0], &(*sections)[1], &(*sections)[2], &(*sections)[3]);
    EncodeTensor(c.v, ts, VSpec(), rank, &(*sections)[4], &(*sections)[5], &(*sections)[6], &(*sections)[7]);
    return absl::OkStatus();
  }

  GroupQuantSpec KSpec() const { return GroupQuantSpec{bits_, kgroup_, true}; }
  GroupQuantSpec VSpec() const { return GroupQuantSpec{bits_, vgroup_, false}; }

  // Parsed views of one tensor's low-rank and outlier sections.
  struct Parts {
    int rank = 0;
    const uint8_t* lowrank = nullptr;  // after the u16 rank
    std::vector<const uint8_t*> out_idx, out_val;  // per head
    std::vector<uint32_t> out_count;
  };

  absl::StatusOr<Parts> ParseParts(absl::Span<const uint8_t> lr, absl::Span<const uint8_t> ol,
                                   const TensorShape& ts) const {
    Parts p;
    if (lr.size() < 2) return absl::DataLossError("GEAR low-rank section truncated");
    p.rank = LoadLE<uint16_t>(lr.data());
    if (p.rank > std::min(ts.tokens, ts.dim) ||
        lr.size() != 2 + size_t(ts.heads) * p.rank * (ts.tokens + ts.dim) * 2) {
      return absl::DataLossError("GEAR low-rank section size does not match its rank and shape");
    }
    p.lowrank = lr.data() + 2;
    size_t off = 0;
    const uint64_t cells = uint64_t(ts.tokens) * ts.dim;
    for (int h = 0; h < ts.heads; ++h) {
      if (ol.size() - off < 4) return absl::DataLossError("GEAR outlier section truncated");
      const uint32_t cnt = LoadLE<uint32_t>(ol.data() + off);
      off += 4;
      if (cnt > cells || (ol.size() - off) / 6 < cnt) return absl::DataLossError("GEAR outlier count out of range");
      p.out_count.push_back(cnt);
      p.out_idx.push_back(ol.data() + off);
      p.out_val.push_back(ol.data() + off + 4 * size_t(cnt));
      uint32_t prev = 0;
      for (uint32_t i = 0; i < cnt; ++i) {
        const uint32_t idx = LoadLE<uint32_t>(ol.data() + off + 4 * i);
        if (idx >= cells || (i > 0 && idx <= prev)) return absl::DataLossError("GEAR outlier indices not sorted or out of range");
        prev = idx;
      }
      off += 6 * size_t(cnt);
    }
    if (off != ol.size()) return absl::DataLossError("GEAR outlier section has trailing bytes");
    return p;
  }

  // Adds L and S for rows `rows` (all rows if empty) of one tensor into out.
  void ApplyParts(const Parts& p, const TensorShape& ts, absl::Span<const int> rows, float* out) const {
    const int n = ts.tokens, d = ts.dim, r = p.rank;
    const size_t nr = rows.empty() ? size_t(n) : rows.size();
    for (int h = 0; h < ts.heads; ++h) {
      const uint8_t* u = p.lowrank + size_t(h) * r * (n + d) * 2;
      const uint8_t* vv = u + size_t(n) * r * 2;
      std::vector<float> vf(size_t(d) * r);
      for (size_t i = 0; i < vf.size(); ++i) vf[i] = HalfToFloat(LoadLE<uint16_t>(vv + 2 * i));
      for (size_t ri = 0; ri < nr; ++ri) {
        const int t = rows.empty() ? static_cast<int>(ri) : rows[ri];
        float* o = out + (size_t(h) * nr + ri) * d;
        float ut[64];
        for (int j = 0; j < r; ++j) ut[j] = HalfToFloat(LoadLE<uint16_t>(u + 2 * (size_t(t) * r + j)));
        for (int c = 0; c < d; ++c) {
          float s = 0;
          for (int j = 0; j < r; ++j) s += ut[j] * vf[size_t(c) * r + j];
          o[c] += s;
        }
        // Outliers of row t: indices in [t·d, (t+1)·d), sorted.
        const uint8_t* idx = p.out_idx[h];
        uint32_t lo = 0, hi = p.out_count[h];
        while (lo < hi) {
          const uint32_t mid = (lo + hi) / 2;
          if (LoadLE<uint32_t>(idx + 4 * mid) < uint32_t(t) * d) lo = mid + 1; else hi = mid;
        }
        for (uint32_t i = lo; i < p.out_count[h]; ++i) {
          const uint32_t cell = LoadLE<uint32_t>(idx + 4 * i);
          if (cell >= uint32_t(t + 1) * d) break;
          o[cell % d] = HalfToFloat(LoadLE<uint16_t>(p.out_val[h] + 2 * i));
        }
      }
    }
  }

  absl::Status DecodeAny(const std::vector<absl::Span<const uint8_t>>& s, const Shape& shape,
                         absl::Span<const int> rows, float* k, float* v) const {
    if (s.size() != 8) return absl::DataLossError(absl::StrCat("GEAR block has ", s.size(), " sections, want 8"));
    const TensorShape ts{shape.heads, shape.tokens, shape.dim};
    for (int which = 0; which < 2; ++which) {
      const GroupQuantSpec spec = which == 0 ? KSpec() : VSpec();
      const int b = 4 * which;
      RETURN_IF_ERROR(Annotate(CheckQuantSections(s[b], s[b + 1], ts, spec), which == 0 ? "K" : "V"));
      if (ts.dim > 64 * 1024) return absl::DataLossError("head_dim too large");
      ASSIGN_OR_RETURN(Parts parts, ParseParts(s[b + 2], s[b + 3], ts));
      if (parts.rank > 64) return absl::DataLossError("GEAR rank above 64");
      float* out = which == 0 ? k : v;
      if (rows.empty()) DequantizeTensor(s[b], s[b + 1], ts, spec, out);
      else DequantizeRows(s[b], s[b + 1], ts, spec, rows, out);
      ApplyParts(parts, ts, rows, out);
    }
    return absl::OkStatus();
  }

  absl::Status DecodeSections(const std::vector<absl::Span<const uint8_t>>& s, const Shape& shape, float* k,
                              float* v) const override {
    return DecodeAny(s, shape, {}, k, v);
  }
  absl::Status DecodeRowsSections(const std::vector<absl::Span<const uint8_t>>& s, const Shape& shape,
                                  absl::Span<const int> rows, float* k, float* v) const override {
    if (rows.empty()) return absl::OkStatus();
    return DecodeAny(s, shape, rows, k, v);
  }

  std::vector<Owner> SectionOwners(size_t) const override {
    return {Owner::kK, Owner::kK, Owner::kK, Owner::kK, Owner::kV, Owner::kV, Owner::kV, Owner::kV};
  }

 private:
  bool sparse_;
  int bits_, kgroup_, vgroup_, rank_, rank_decode_;
  double outliers_;
  int buffer_, loops_;
};

}  // namespace

namespace codec_internal {

absl::StatusOr<std::unique_ptr<KvCodec>> MakeGearCodec(bool sparse_default, ParamReader* p) {
  const bool sparse = p->Bool("sparse", sparse_default);
  const int bits = p->Int("bits", 2, 1, 8);
  const int kgroup = p->Int("kgroup", 64, 1, 1 << 16);
  const int vgroup = p->Int("vgroup", 64, 1, 1 << 16);
  const int rank = p->Int("rank", 4, 0, 64);
  const int rank_decode = p->Int("rank_decode", 2, 0, 64);
  const double outliers = p->Double("outliers", sparse ? 0.02 : 0.0, 0, 0.5);
  const int buffer = p->Int("buffer", 64, 1, 1 << 16);
  const int loops = p->Int("loops", 3, 1, 20);
  RETURN_IF_ERROR(p->Finish());
  if (sparse != sparse_default) {
    return absl::InvalidArgumentError(sparse_default ? "use gear_l for GEAR without outliers" : "gear_l has no outliers");
  }
  return std::unique_ptr<KvCodec>(new GearCodec(sparse, bits, kgroup, vgroup, rank, rank_decode, outliers, buffer, loops));
}

}  // namespace codec_internal
}  // namespace kvrecall
