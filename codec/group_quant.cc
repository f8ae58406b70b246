#include "codec/group_quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "codec/bytes.h"
#include "codec/half.h"

namespace kvrecall {
namespace {

int CeilDiv(int a, int b) { return (a + b - 1) / b; }

// A channel group wider than the head covers the whole head.
int ChannelGroup(const TensorShape& s, const GroupQuantSpec& spec) { return std::min(spec.group, s.dim); }

int NumGroups(const TensorShape& s, const GroupQuantSpec& spec) {
  return spec.per_channel ? CeilDiv(s.tokens, spec.group) : CeilDiv(s.dim, ChannelGroup(s, spec));
}

// Reads the b-bit code at bit offset `bit` (LSB-first). Codes of 1, 2, 4, 8
// bits never straddle a byte; others may straddle two.
inline uint32_t ReadCode(const uint8_t* p, uint64_t bit, int bits, uint64_t total_bytes) {
  const uint64_t byte = bit >> 3;
  const int shift = static_cast<int>(bit & 7);
  uint32_t word = p[byte];
  if (shift + bits > 8 && byte + 1 < total_bytes) word |= uint32_t{p[byte + 1]} << 8;
  return (word >> shift) & ((1u << bits) - 1);
}

// Dequantizes `count` consecutive codes starting at element `first` with
// per-element (m, Δ) given by the callables.
template <int kBits>
void DecodeRowFixed(const uint8_t* codes, int64_t first, int count, const float* m, const float* delta,
                    float* out) {
  // kBits in {1, 2, 4, 8}: whole codes per byte, rows start on a code boundary.
  constexpr int kPerByte = 8 / kBits;
  constexpr uint32_t kMask = (1u << kBits) - 1;
  int i = 0;
  const uint64_t bit0 = uint64_t(first) * kBits;
  int64_t byte = static_cast<int64_t>(bit0 >> 3);
  int shift = static_cast<int>(bit0 & 7);
  // Leading partial byte.
  while (i < count && shift != 0) {
    const uint32_t c = (codes[byte] >> shift) & kMask;
    out[i] = m[i] + delta[i] * static_cast<float>(c);
    ++i;
    shift += kBits;
    if (shift == 8) shift = 0, ++byte;
  }
  for (; i + kPerByte <= count; i += kPerByte, ++byte) {
    const uint32_t b = codes[byte];
    for (int j = 0; j < kPerByte; ++j) {
      out[i + j] = m[i + j] + delta[i + j] * static_cast<float>((b >> (j * kBits)) & kMask);
    }
  }
  for (int j = 0; i < count; ++i, ++j) {
    out[i] = m[i] + delta[i] * static_cast<float>((codes[byte] >> (j * kBits)) & kMask);
  }
}

void DecodeRow(const uint8_t* codes, uint64_t code_bytes, int bits, int64_t first, int count,
               const float* m, const float* delta, float* out) {
  switch (bits) {
    case 1: return DecodeRowFixed<1>(codes, first, count, m, delta, out);
    case 2: return DecodeRowFixed<2>(codes, first, count, m, delta, out);
    case 4: return DecodeRowFixed<4>(codes, first, count, m, delta, out);
    case 8: return DecodeRowFixed<8>(codes, first, count, m, delta, out);
    default:
      for (int i = 0; i < count; ++i) {
        out[i] = m[i] + delta[i] * static_cast<float>(
                                       ReadCode(codes, uint64_t(first + i) * bits, bits, code_bytes));
      }
  }
}

size_t ScaleWidth(const GroupQuantSpec& spec) { return spec.f32_scales ? 4 : 2; }

float LoadScale(const uint8_t* p, size_t i, bool f32) {
  return f32 ? LoadLE<float>(p + 4 * i) : HalfToFloat(LoadLE<uint16_t>(p + 2 * i));
}

// Per-row (m, Δ) vectors for token t of head h.
void RowScales(const uint8_t* scales, const TensorShape& s, const GroupQuantSpec& spec, int h, int t,
               float* m, float* delta) {
  const bool f32 = spec.f32_scales;
  if (spec.per_channel) {
    const int ng = NumGroups(s, spec);
    const size_t base = 2 * (size_t(h) * ng + t / spec.group) * s.dim;
    for (int c = 0; c < s.dim; ++c) {
      m[c] = LoadScale(scales, base + 2 * c, f32);
      delta[c] = LoadScale(scales, base + 2 * c + 1, f32);
    }
  } else {
    const int ncg = NumGroups(s, spec);
    const size_t base = 2 * (size_t(h) * s.tokens + t) * ncg;
    for (int g = 0; g < ncg; ++g) {
      const float mg = LoadScale(scales, base + 2 * g, f32);
      const float dg = LoadScale(scales, base + 2 * g + 1, f32);
      const int cg = ChannelGroup(s, spec);
      for (int c = g * cg; c < std::min(s.dim, (g + 1) * cg); ++c) m[c] = mg, delta[c] = dg;
    }
  }
}

}  // namespace

absl::Status GroupQuantSpec::Validate(int dim) const {
  if (bits < 1 || bits > 8) return absl::InvalidArgumentError(absl::StrCat("bits ", bits, " not in [1, 8]"));
  if (group < 1 || group > (1 << 20)) return absl::InvalidArgumentError(absl::StrCat("group ", group, " not in [1, 2^20]"));
  return absl::OkStatus();
}

size_t GroupQuantScaleBytes(const TensorShape& s, const GroupQuantSpec& spec) {
  const size_t groups = spec.per_channel ? size_t(s.heads) * NumGroups(s, spec) * s.dim
                                         : size_t(s.heads) * s.tokens * NumGroups(s, spec);
  return 2 * ScaleWidth(spec) * groups;
}

size_t GroupQuantCodeBytes(const TensorShape& s, const GroupQuantSpec& spec) {
  return static_cast<size_t>((uint64_t(s.elements()) * spec.bits + 7) / 8);
}

double GroupQuantBitsPerElement(const TensorShape& s, const GroupQuantSpec& spec) {
  if (s.elements() == 0) return 0;
  return 8.0 * (GroupQuantScaleBytes(s, spec) + GroupQuantCodeBytes(s, spec)) / s.elements();
}

void QuantizeGroup(const float* x, int64_t stride, int count, int bits, bool f32_scales, float* scales,
                   uint8_t* codes) {
  float mn = x[0], mx = x[0];
  for (int i = 1; i < count; ++i) mn = std::min(mn, x[i * stride]), mx = std::max(mx, x[i * stride]);
  const int levels = (1 << bits) - 1;
  float m = mn, d = (mx - mn) / levels;
  if (!f32_scales) {
    m = HalfToFloat(FloatToHalf(mn));
    // Round Δ up so the f16-rounded (m, Δ) still reach the maximum.
    const float delta = (mx - m) / levels;
    uint16_t d16 = FloatToHalf(delta);
    if (HalfToFloat(d16) < delta && d16 < 0x7bff) ++d16;
    d = HalfToFloat(d16);
  }
  scales[0] = m;
  scales[1] = d;
  const float inv = d > 0 ? 1.0f / d : 0.0f;
  for (int i = 0; i < count; ++i) {
    const float c = std::nearbyint((x[i * stride] - m) * inv);
    codes[i * stride] = static_cast<uint8_t>(std::clamp(c, 0.0f, static_cast<float>(levels)));
  }
}

UnpackedQuant QuantizeTensor(const float* x, const TensorShape& s, const GroupQuantSpec& spec) {
  UnpackedQuant q;
  q.codes.resize(s.elements());
  q.scales.resize(GroupQuantScaleBytes(s, spec) / ScaleWidth(spec));
  const int ng = NumGroups(s, spec);
  for (int h = 0; h < s.heads; ++h) {
    const float* xh = x + size_t(h) * s.tokens * s.dim;
    uint8_t* ch = q.codes.data() + size_t(h) * s.tokens * s.dim;
    if (spec.per_channel) {
      for (int g = 0; g < ng; ++g) {
        const int t0 = g * spec.group, cnt = std::min(spec.group, s.tokens - t0);
        for (int c = 0; c < s.dim; ++c) {
          QuantizeGroup(xh + size_t(t0) * s.dim + c, s.dim, cnt, spec.bits, spec.f32_scales,
                        &q.scales[2 * ((size_t(h) * ng + g) * s.dim + c)], ch + size_t(t0) * s.dim + c);
        }
      }
    } else {
      for (int t = 0; t < s.tokens; ++t) {
        for (int g = 0; g < ng; ++g) {
          const int cg = ChannelGroup(s, spec);
          const int c0 = g * cg, cnt = std::min(cg, s.dim - c0);
          QuantizeGroup(xh + size_t(t) * s.dim + c0, 1, cnt, spec.bits, spec.f32_scales,
                        &q.scales[2 * ((size_t(h) * s.tokens + t) * ng + g)], ch + size_t(t) * s.dim + c0);
        }
      }
    }
  }
  return q;
}

void PackQuant(const UnpackedQuant& q, const TensorShape& s, const GroupQuantSpec& spec,
               std::string* scales, std::string* codes) {
  const size_t sat = scales->size(), w = ScaleWidth(spec);
  scales->resize(sat + w * q.scales.size());
  uint8_t* sp = reinterpret_cast<uint8_t*>(scales->data() + sat);
  for (size_t i = 0; i < q.scales.size(); ++i) {
    if (spec.f32_scales) StoreLE<float>(sp + 4 * i, q.scales[i]);
    else StoreLE<uint16_t>(sp + 2 * i, FloatToHalf(q.scales[i]));
  }
  const size_t cat = codes->size();
  codes->resize(cat + GroupQuantCodeBytes(s, spec), '\0');
  uint8_t* cp = reinterpret_cast<uint8_t*>(codes->data() + cat);
  uint64_t bit = 0;
  for (uint8_t c : q.codes) {
    uint32_t v = c;
    int left = spec.bits;
    while (left > 0) {
      const int shift = static_cast<int>(bit & 7);
      const int take = std::min(left, 8 - shift);
      cp[bit >> 3] |= static_cast<uint8_t>((v & ((1u << take) - 1)) << shift);
      v >>= take;
      left -= take;
      bit += take;
    }
  }
}

absl::Status CheckQuantSections(absl::Span<const uint8_t> scales, absl::Span<const uint8_t> codes,
                                const TensorShape& s, const GroupQuantSpec& spec) {
  if (scales.size() != GroupQuantScaleBytes(s, spec)) {
    return absl::DataLossError(absl::StrCat("scale section has ", scales.size(), " bytes, expected ",
                                            GroupQuantScaleBytes(s, spec)));
  }
  if (codes.size() != GroupQuantCodeBytes(s, spec)) {
    return absl::DataLossError(absl::StrCat("code section has ", codes.size(), " bytes, expected ",
                                            GroupQuantCodeBytes(s, spec)));
  }
  return absl::OkStatus();
}

void DequantizeTensor(absl::Span<const uint8_t> scales, absl::Span<const uint8_t> codes,
                      const TensorShape& s, const GroupQuantSpec& spec, float* out) {
  std::vector<float> m(s.dim), delta(s.dim);
  for (int h = 0; h < s.heads; ++h) {
    for (int t = 0; t < s.tokens; ++t) {
      // Per-channel scales change only at group boundaries.
      if (!spec.per_channel || t % spec.group == 0) RowScales(scales.data(), s, spec, h, t, m.data(), delta.data());
      const int64_t first = (int64_t(h) * s.tokens + t) * s.dim;
      DecodeRow(codes.data(), codes.size(), spec.bits, first, s.dim, m.data(), delta.data(), out + first);
    }
  }
}

void DequantizeRows(absl::Span<const uint8_t> scales, absl::Span<const uint8_t> codes,
                    const TensorShape& s, const GroupQuantSpec& spec, absl::Span<const int> rows,
                    float* out) {
  std::vector<float> m(s.dim), delta(s.dim);
  for (int h = 0; h < s.heads; ++h) {
    for (size_t r = 0; r < rows.size(); ++r) {
      const int t = rows[r];
      RowScales(scales.data(), s, spec, h, t, m.data(), delta.data());
      DecodeRow(codes.data(), codes.size(), spec.bits, (int64_t(h) * s.tokens + t) * s.dim, s.dim, m.data(),
                delta.data(), out + (size_t(h) * rows.size() + r) * s.dim);
    }
  }
}

}  // namespace kvrecall
