#include "codec/group_quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

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

// code -> float for every byte value: kLut<B>[byte][j] is the j-th B-bit code
// of `byte` (LSB first), as a float.
template <int kBits>
struct CodeLut {
  static constexpr int kPerByte = 8 / kBits;
  float v[256][kPerByte];
  CodeLut() {
    for (int b = 0; b < 256; ++b)
      for (int j = 0; j < kPerByte; ++j) v[b][j] = static_cast<float>((b >> (j * kBits)) & ((1 << kBits) - 1));
  }
};

// Byte-aligned rows of whole bytes: expand codes through the table, then one
// vectorizable multiply-add pass.
template <int kBits>
void DecodeAligned(const uint8_t* codes, int count, const float* m, const float* delta, float* out) {
  static const CodeLut<kBits> lut;
  constexpr int kPerByte = 8 / kBits;
  float tmp[512];
  for (int base = 0; base < count; base += 512) {
    const int len = std::min(512, count - base);
    const uint8_t* p = codes + base / kPerByte;
    for (int i = 0; i < len / kPerByte; ++i) std::memcpy(tmp + i * kPerByte, lut.v[p[i]], sizeof(lut.v[0]));
    for (int c = 0; c < len; ++c) out[base + c] = m[base + c] + delta[base + c] * tmp[c];
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define KVR_HAVE_AVX2_PATH 1
// AVX2 + FMA: 8 codes of kBits bits per step, extracted with variable shifts
// from a broadcast 32-bit word. Chosen at run time (CPUs without AVX2 use the
// table path above).
template <int kBits>
__attribute__((target("avx2,fma"))) void DecodeAlignedAvx2(const uint8_t* codes, int count, const float* m,
                                                          const float* delta, float* out) {
  const __m256i shifts = _mm256_setr_epi32(0, kBits, 2 * kBits, 3 * kBits, 4 * kBits, 5 * kBits, 6 * kBits, 7 * kBits);
  const __m256i mask = _mm256_set1_epi32((1 << kBits) - 1);
  int c = 0;
  if (kBits == 2) {
    // 16 codes per 32-bit load.
    const __m256i hi = _mm256_add_epi32(shifts, _mm256_set1_epi32(16));
    for (; c + 16 <= count; c += 16) {
      uint32_t word;
      std::memcpy(&word, codes + c / 4, 4);
      const __m256i w = _mm256_set1_epi32(static_cast<int>(word));
      const __m256 f0 = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(w, shifts), mask));
      const __m256 f1 = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(w, hi), mask));
      _mm256_storeu_ps(out + c, _mm256_fmadd_ps(_mm256_loadu_ps(delta + c), f0, _mm256_loadu_ps(m + c)));
      _mm256_storeu_ps(out + c + 8, _mm256_fmadd_ps(_mm256_loadu_ps(delta + c + 8), f1, _mm256_loadu_ps(m + c + 8)));
    }
  }
  for (; c + 8 <= count; c += 8) {
    uint32_t word = 0;
    std::memcpy(&word, codes + c * kBits / 8, kBits);  // 8 codes = kBits bytes
    const __m256i v = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(word)), shifts), mask);
    const __m256 f = _mm256_cvtepi32_ps(v);
    _mm256_storeu_ps(out + c, _mm256_fmadd_ps(_mm256_loadu_ps(delta + c), f, _mm256_loadu_ps(m + c)));
  }
  for (; c < count; ++c) {
    const uint32_t code = (codes[c * kBits / 8] >> ((c * kBits) % 8)) & ((1u << kBits) - 1);
    out[c] = m[c] + delta[c] * static_cast<float>(code);
  }
}

// Per-token groups: one (m, Δ) per `cg` channels (cg a multiple of 8).
template <int kBits>
__attribute__((target("avx2,fma"))) void DecodeGroupsAvx2(const uint8_t* codes, int count, int cg,
                                                         const float* mg, const float* dg, float* out) {
  const __m256i shifts = _mm256_setr_epi32(0, kBits, 2 * kBits, 3 * kBits, 4 * kBits, 5 * kBits, 6 * kBits, 7 * kBits);
  const __m256i mask = _mm256_set1_epi32((1 << kBits) - 1);
  for (int g = 0; g * cg < count; ++g) {
    const __m256 m = _mm256_set1_ps(mg[g]), d = _mm256_set1_ps(dg[g]);
    for (int c = g * cg; c < (g + 1) * cg; c += 8) {
      uint32_t word = 0;
      std::memcpy(&word, codes + c * kBits / 8, kBits);
      const __m256i v = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(word)), shifts), mask);
      _mm256_storeu_ps(out + c, _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(v), m));
    }
  }
}

float LoadScale(const uint8_t* p, size_t i, bool f32);
void RowScales(const uint8_t* scales, const TensorShape& s, const GroupQuantSpec& spec, int h, int t, float* m,
               float* delta);

// Codes c..c+7 of a row as floats.
template <int kBits>
__attribute__((target("avx2,fma"), always_inline)) inline __m256 Decode8(const uint8_t* p, int c, __m256i shifts, __m256i mask) {
  uint32_t word = 0;
  std::memcpy(&word, p + c * kBits / 8, kBits);
  return _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(word)), shifts), mask));
}

// Codes c..c+15 of a row as two float vectors (one load for 2-bit codes).
template <int kBits>
__attribute__((target("avx2,fma"), always_inline)) inline void Decode16(const uint8_t* p, int c, __m256i shifts,
                                                                       __m256i mask, __m256* f0, __m256* f1) {
  if (kBits == 2) {
    uint32_t word;
    std::memcpy(&word, p + c / 4, 4);
    const __m256i w = _mm256_set1_epi32(static_cast<int>(word));
    *f0 = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(w, shifts), mask));
    *f1 = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(w, _mm256_add_epi32(shifts, _mm256_set1_epi32(16))), mask));
  } else {
    *f0 = Decode8<kBits>(p, c, shifts, mask);
    *f1 = Decode8<kBits>(p, c + 8, shifts, mask);
  }
}

// Whole-tensor AVX2 dequantization for 2- and 4-bit codes with head_dim a
// multiple of 16: the row loops inline, with no call per row.
template <int kBits>
__attribute__((target("avx2,fma,f16c"))) void DequantizeAvx2(const uint8_t* scales, const uint8_t* codes,
                                                            const TensorShape& s, const GroupQuantSpec& spec,
                                                            float* out) {
  const int d = s.dim;
  const __m256i shifts = _mm256_setr_epi32(0, kBits, 2 * kBits, 3 * kBits, 4 * kBits, 5 * kBits, 6 * kBits, 7 * kBits);
  const __m256i mask = _mm256_set1_epi32((1 << kBits) - 1);
  const size_t row_bytes = size_t(d) * kBits / 8;
  std::vector<float> m(d), delta(d);
  if (spec.per_channel) {
    const int ng = (s.tokens + spec.group - 1) / spec.group;
    for (int h = 0; h < s.heads; ++h) {
      for (int g = 0; g < ng; ++g) {
        RowScales(scales, s, spec, h, g * spec.group, m.data(), delta.data());
        const int t1 = std::min(s.tokens, (g + 1) * spec.group);
        for (int t = g * spec.group; t < t1; ++t) {
          const size_t row = size_t(h) * s.tokens + t;
          const uint8_t* p = codes + row * row_bytes;
          float* o = out + row * d;
          for (int c = 0; c < d; c += 16) {
            __m256 f0, f1;
            Decode16<kBits>(p, c, shifts, mask, &f0, &f1);
            _mm256_storeu_ps(o + c, _mm256_fmadd_ps(_mm256_loadu_ps(delta.data() + c), f0, _mm256_loadu_ps(m.data() + c)));
            _mm256_storeu_ps(o + c + 8,
                             _mm256_fmadd_ps(_mm256_loadu_ps(delta.data() + c + 8), f1, _mm256_loadu_ps(m.data() + c + 8)));
          }
        }
      }
    }
  } else {
    const int cg = std::min(spec.group, d), ncg = d / cg;
    for (size_t row = 0; row < size_t(s.heads) * s.tokens; ++row) {
      const uint8_t* p = codes + row * row_bytes;
      float* o = out + row * d;
      for (int g = 0; g < ncg; ++g) {
        const size_t at = 2 * (row * ncg + g);
        const __m256 mg = _mm256_set1_ps(LoadScale(scales, at, spec.f32_scales));
        const __m256 dg = _mm256_set1_ps(LoadScale(scales, at + 1, spec.f32_scales));
        for (int c = g * cg; c < (g + 1) * cg; c += 8) _mm256_storeu_ps(o + c, _mm256_fmadd_ps(dg, Decode8<kBits>(p, c, shifts, mask), mg));
      }
    }
  }
}

bool HasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#endif

void DecodeRow(const uint8_t* codes, uint64_t code_bytes, int bits, int64_t first, int count,
               const float* m, const float* delta, float* out) {
  if ((bits == 1 || bits == 2 || bits == 4) && (uint64_t(first) * bits) % 8 == 0 && (uint64_t(count) * bits) % 8 == 0) {
    const uint8_t* p = codes + uint64_t(first) * bits / 8;
#ifdef KVR_HAVE_AVX2_PATH
    if (HasAvx2() && bits >= 2) {
      if (bits == 2) return DecodeAlignedAvx2<2>(p, count, m, delta, out);
      return DecodeAlignedAvx2<4>(p, count, m, delta, out);
    }
#endif
    if (bits == 2) return DecodeAligned<2>(p, count, m, delta, out);
    if (bits == 4) return DecodeAligned<4>(p, count, m, delta, out);
    return DecodeAligned<1>(p, count, m, delta, out);
  }
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

// Token t of head h dequantizes with the (m, Δ) pairs at scale elements
// [RowScaleIndex, RowScaleIndex + RowScaleCount): per channel of t's token
// group, or per channel group of t.
size_t RowScaleIndex(const TensorShape& s, const GroupQuantSpec& spec, int h, int t) {
  return spec.per_channel ? 2 * (size_t(h) * NumGroups(s, spec) + t / spec.group) * s.dim
                          : 2 * (size_t(h) * s.tokens + t) * NumGroups(s, spec);
}
size_t RowScaleCount(const TensorShape& s, const GroupQuantSpec& spec) {
  return 2 * size_t(spec.per_channel ? s.dim : NumGroups(s, spec));
}

float LoadScale(const uint8_t* p, size_t i, bool f32) {
  return f32 ? LoadLE<float>(p + 4 * i) : HalfToFloat(LoadLE<uint16_t>(p + 2 * i));
}

// Per-row (m, Δ) vectors for token t of head h.
void RowScales(const uint8_t* scales, const TensorShape& s, const GroupQuantSpec& spec, int h, int t,
               float* m, float* delta) {
  const bool f32 = spec.f32_scales;
  const size_t base = RowScaleIndex(s, spec, h, t);
  if (spec.per_channel) {
    if (!f32) {  // (m, Δ) interleaved: convert the 2 x dim halves at once, then split
      float pairs[2 * 1024];
      for (int c0 = 0; c0 < s.dim; c0 += 1024) {
        const int cn = std::min(1024, s.dim - c0);
        HalfToFloatN(scales + 2 * (base + 2 * size_t(c0)), pairs, 2 * size_t(cn));
        for (int c = 0; c < cn; ++c) m[c0 + c] = pairs[2 * c], delta[c0 + c] = pairs[2 * c + 1];
      }
      return;
    }
    for (int c = 0; c < s.dim; ++c) {
      m[c] = LoadScale(scales, base + 2 * c, f32);
      delta[c] = LoadScale(scales, base + 2 * c + 1, f32);
    }
  } else {
    const int ncg = NumGroups(s, spec);
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
#ifdef KVR_HAVE_AVX2_PATH
  if (HasAvx2() && (spec.bits == 2 || spec.bits == 4) && s.dim % 16 == 0 &&
      (spec.per_channel || s.dim % std::min(spec.group, s.dim) == 0) &&
      (spec.per_channel || std::min(spec.group, s.dim) % 8 == 0)) {
    if (spec.bits == 2) DequantizeAvx2<2>(scales.data(), codes.data(), s, spec, out);
    else DequantizeAvx2<4>(scales.data(), codes.data(), s, spec, out);
    return;
  }
#endif
  std::vector<float> m(s.dim), delta(s.dim), ones(s.dim, 1.0f), zeros(s.dim, 0.0f), tmp(s.dim);
  const int cg = ChannelGroup(s, spec), ncg = NumGroups(s, spec);
  std::vector<float> gm(spec.per_channel ? 0 : ncg), gd(gm.size());
  for (int h = 0; h < s.heads; ++h) {
    for (int t = 0; t < s.tokens; ++t) {
      const int64_t first = (int64_t(h) * s.tokens + t) * s.dim;
      if (spec.per_channel) {
        // Per-channel scales change only at group boundaries.
        if (t % spec.group == 0) RowScales(scales.data(), s, spec, h, t, m.data(), delta.data());
        DecodeRow(codes.data(), codes.size(), spec.bits, first, s.dim, m.data(), delta.data(), out + first);
      } else {
        // Per-token: one scalar (m, Δ) per channel group.
        const size_t base = 2 * (size_t(h) * s.tokens + t) * ncg;
        for (int g = 0; g < ncg; ++g) {
          gm[g] = LoadScale(scales.data(), base + 2 * g, spec.f32_scales);
          gd[g] = LoadScale(scales.data(), base + 2 * g + 1, spec.f32_scales);
        }
#ifdef KVR_HAVE_AVX2_PATH
        if (HasAvx2() && cg % 8 == 0 && s.dim % cg == 0 && (spec.bits == 2 || spec.bits == 4) &&
            (uint64_t(first) * spec.bits) % 8 == 0) {
          const uint8_t* p = codes.data() + uint64_t(first) * spec.bits / 8;
          if (spec.bits == 2) DecodeGroupsAvx2<2>(p, s.dim, cg, gm.data(), gd.data(), out + first);
          else DecodeGroupsAvx2<4>(p, s.dim, cg, gm.data(), gd.data(), out + first);
          continue;
        }
#endif
        DecodeRow(codes.data(), codes.size(), spec.bits, first, s.dim, zeros.data(), ones.data(), tmp.data());
        for (int g = 0; g < ncg; ++g) {
          const int c1 = std::min(s.dim, (g + 1) * cg);
          for (int c = g * cg; c < c1; ++c) out[first + c] = gm[g] + gd[g] * tmp[c];
        }
      }
    }
  }
}

void DequantizeRows(absl::Span<const uint8_t> scales, absl::Span<const uint8_t> codes,
                    const TensorShape& s, const GroupQuantSpec& spec, absl::Span<const int> rows,
                    float* out) {
  std::vector<float> m(s.dim), delta(s.dim);
  for (int h = 0; h < s.heads; ++h) {
    int cached_group = -1;  // per-channel scales: the token group m/delta hold (rows often share one)
    for (size_t r = 0; r < rows.size(); ++r) {
      const int t = rows[r];
      if (!spec.per_channel || t / spec.group != cached_group) {
        RowScales(scales.data(), s, spec, h, t, m.data(), delta.data());
        cached_group = spec.per_channel ? t / spec.group : -1;
      }
      DecodeRow(codes.data(), codes.size(), spec.bits, (int64_t(h) * s.tokens + t) * s.dim, s.dim, m.data(),
                delta.data(), out + (size_t(h) * rows.size() + r) * s.dim);
    }
  }
}

void RowRanges(absl::Span<const uint8_t> scales, absl::Span<const uint8_t> codes, const TensorShape& s,
               const GroupQuantSpec& spec, absl::Span<const int> rows,
               std::vector<absl::Span<const uint8_t>>* ranges) {
  const size_t w = ScaleWidth(spec), count = RowScaleCount(s, spec);
  for (int h = 0; h < s.heads; ++h) {
    int cached_group = -1;  // per-channel scales: rows of one token group share them
    for (int t : rows) {
      if (!spec.per_channel || t / spec.group != cached_group) {
        ranges->push_back(scales.subspan(RowScaleIndex(s, spec, h, t) * w, count * w));
        cached_group = spec.per_channel ? t / spec.group : -1;
      }
      const uint64_t first_bit = uint64_t(int64_t(h) * s.tokens + t) * s.dim * spec.bits;
      const uint64_t begin = first_bit / 8;
      // Readers of odd widths may load a few bytes past the row's last code.
      const uint64_t end = std::min<uint64_t>(codes.size(), (first_bit + uint64_t(s.dim) * spec.bits + 7) / 8 + 8);
      ranges->push_back(codes.subspan(begin, end - begin));
    }
  }
}

}  // namespace kvrecall
