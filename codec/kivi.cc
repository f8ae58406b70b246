#include "codec/kivi.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "codec/codec_internal.h"
#include "common/status.h"

namespace kvrecall {
namespace {

class GroupQuantCodec final : public KvCodec {
 public:
  GroupQuantCodec(CodecId id, GroupQuantSpec k, GroupQuantSpec v, int residual, bool pre_rope)
      : id_(id), k_(k), v_(v), residual_(residual), pre_rope_(pre_rope) {}

  CodecId id() const override { return id_; }
  std::string name() const override { return id_ == CodecId::kKivi ? "kivi" : "qwc"; }
  std::string params() const override {
    if (id_ == CodecId::kKivi) {
      return absl::StrCat("bits=", k_.bits, ",kgroup=", k_.group, k_.f32_scales ? ",meta=f32" : "",
                          ",residual=", residual_, ",vgroup=", v_.group);
    }
    return absl::StrCat("kbits=", k_.bits, ",kgroup=", k_.group, k_.f32_scales ? ",meta=f32" : "",
                        ",pre_rope=", pre_rope_ ? 1 : 0,
                        ",residual=", residual_, ",vbits=", v_.bits, ",vgroup=", v_.group);
  }

 protected:
  absl::Status EncodeSections(const KvChunkRef& c, EncodeOptions*, std::vector<std::string>* sections) const override {
    const TensorShape s{c.layer_count * c.layout.num_kv_heads, c.tokens, c.layout.head_dim};
    sections->resize(4);
    PackQuant(QuantizeTensor(c.k, s, k_), s, k_, &(*sections)[0], &(*sections)[1]);
    PackQuant(QuantizeTensor(c.v, s, v_), s, v_, &(*sections)[2], &(*sections)[3]);
    return absl::OkStatus();
  }

  absl::Status Check(const std::vector<absl::Span<const uint8_t>>& s, const TensorShape& ts) const {
    if (s.size() != 4) return absl::DataLossError(absl::StrCat(name(), " block has ", s.size(), " sections, want 4"));
    RETURN_IF_ERROR(Annotate(CheckQuantSections(s[0], s[1], ts, k_), "K"));
    return Annotate(CheckQuantSections(s[2], s[3], ts, v_), "V");
  }

  absl::Status DecodeSections(const std::vector<absl::Span<const uint8_t>>& s, const Shape& shape, float* k,
                              float* v) const override {
    const TensorShape ts{shape.heads, shape.tokens, shape.dim};
    RETURN_IF_ERROR(Check(s, ts));
    DequantizeTensor(s[0], s[1], ts, k_, k);
    DequantizeTensor(s[2], s[3], ts, v_, v);
    return absl::OkStatus();
  }

  absl::Status DecodeRowsSections(const std::vector<absl::Span<const uint8_t>>& s, const Shape& shape,
                                  absl::Span<const int> rows, float* k, float* v) const override {
    const TensorShape ts{shape.heads, shape.tokens, shape.dim};
    RETURN_IF_ERROR(Check(s, ts));
    DequantizeRows(s[0], s[1], ts, k_, rows, k);
    DequantizeRows(s[2], s[3], ts, v_, rows, v);
    return absl::OkStatus();
  }

  std::vector<Owner> SectionOwners(size_t) const override { return {Owner::kK, Owner::kK, Owner::kV, Owner::kV}; }

  absl::Status RowRangesSections(const std::vector<absl::Span<const uint8_t>>& s, const Shape& shape,
                                 absl::Span<const int> rows,
                                 std::vector<absl::Span<const uint8_t>>* ranges) const override {
    const TensorShape ts{shape.heads, shape.tokens, shape.dim};
    RETURN_IF_ERROR(Check(s, ts));
    RowRanges(s[0], s[1], ts, k_, rows, ranges);
    RowRanges(s[2], s[3], ts, v_, rows, ranges);
    return absl::OkStatus();
  }

 private:
  CodecId id_;
  GroupQuantSpec k_, v_;
  int residual_;
  bool pre_rope_;
};

}  // namespace

namespace codec_internal {

absl::StatusOr<std::unique_ptr<KvCodec>> MakeGroupQuantCodec(CodecId id, ParamReader* p) {
  GroupQuantSpec k, v;
  k.per_channel = true;
  v.per_channel = false;
  int residual;
  bool pre_rope = false;
  if (id == CodecId::kKivi) {
    k.bits = v.bits = p->Int("bits", 2, 1, 8);
    k.group = p->Int("kgroup", 32, 1, 1 << 16);
    v.group = p->Int("vgroup", 32, 1, 1 << 16);
    residual = p->Int("residual", 32, 0, 1 << 20);
  } else {
    k.bits = p->Int("kbits", 4, 1, 8);
    v.bits = p->Int("vbits", 2, 1, 8);
    k.group = p->Int("kgroup", 64, 1, 1 << 16);
    v.group = p->Int("vgroup", 64, 1, 1 << 16);
    residual = p->Int("residual", 64, 0, 1 << 20);
    pre_rope = p->Bool("pre_rope", false);
  }
  k.f32_scales = v.f32_scales = p->Choice("meta", "f16", {"f16", "f32"}) == "f32";
  RETURN_IF_ERROR(p->Finish());
  return std::unique_ptr<KvCodec>(new GroupQuantCodec(id, k, v, residual, pre_rope));
}

}  // namespace codec_internal

std::vector<int> AllocateBits(const std::vector<double>& c, const std::vector<int>& menu, double budget) {
  std::vector<size_t> level(c.size(), 0);
  if (menu.empty() || c.empty()) return std::vector<int>(c.size(), menu.empty() ? 0 : menu[0]);
  double total = menu[0] * double(c.size());
  const double limit = budget * c.size() + 1e-9;
  while (true) {
    int best = -1;
    double best_gain = 0;
    for (size_t i = 0; i < c.size(); ++i) {
      if (level[i] + 1 >= menu.size()) continue;
      const int b0 = menu[level[i]], b1 = menu[level[i] + 1];
      if (total + (b1 - b0) > limit) continue;
      const double drop = c[i] * (std::pow(2.0, -2.0 * b0) - std::pow(2.0, -2.0 * b1));
      const double gain = drop / (b1 - b0);
      if (gain > best_gain) best_gain = gain, best = static_cast<int>(i);
    }
    if (best < 0) break;
    total += menu[level[best] + 1] - menu[level[best]];
    ++level[best];
  }
  std::vector<int> bits(c.size());
  for (size_t i = 0; i < c.size(); ++i) bits[i] = menu[level[i]];
  return bits;
}

}  // namespace kvrecall
