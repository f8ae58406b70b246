#include "codec/attention.h"

#include "codec/half.h"
#include "codec/simd.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace kvrecall {

float AttendRows(const float* q, const float* k, const float* v, int64_t n, int d, int64_t stride,
                 float scale, float* out, float* scratch) {
  std::fill(out, out + d, 0.0f);
  if (n <= 0) return -std::numeric_limits<float>::infinity();
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t r = 0; r < n; ++r) {
    const float s = Dot(q, k + r * stride, d) * scale;
    scratch[r] = s;
    mx = std::max(mx, s);
  }
  double sum = 0;
  for (int64_t r = 0; r < n; ++r) {
    scratch[r] = std::exp(scratch[r] - mx);
    sum += scratch[r];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t r = 0; r < n; ++r) {
    const float p = scratch[r] * inv;
    Axpy(p, v + r * stride, out, d);
  }
  return mx + static_cast<float>(std::log(sum));
}

namespace {

// Eight floats as one value: GCC's vector extension lowers it to one AVX
// register in the AVX2 build and to two SSE registers in the baseline one;
// the lanes do the same float operations either way.
typedef float F8 __attribute__((vector_size(32)));

// Unaligned loads and stores through memcpy (clang does not honour a reduced
// alignment on the vector type: a vmovaps on a 16-byte aligned row faulted).
// Vectors by value: always inlined, none crosses a call (ABI).
__attribute__((always_inline)) inline F8 Load8(const float* p) {
  F8 x;
  std::memcpy(&x, p, sizeof x);
  return x;
}
__attribute__((always_inline)) inline void Store8(float* p, const F8& x) { std::memcpy(p, &x, sizeof x); }

// The helpers below pass vectors by value; always inlined, they never cross
// a call, so the ABI note compilers give for 32-byte vectors in the baseline
// build does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

typedef int32_t I8 __attribute__((vector_size(32)));
typedef uint32_t U8 __attribute__((vector_size(32)));

__attribute__((always_inline)) inline F8 Splat(float x) { return F8{x, x, x, x, x, x, x, x}; }
// mask ? a : b per lane (mask lanes all ones or all zeros).
__attribute__((always_inline)) inline F8 Select(I8 mask, F8 a, F8 b) {
  return reinterpret_cast<F8>((reinterpret_cast<I8>(a) & mask) | (reinterpret_cast<I8>(b) & ~mask));
}

// e^x in 8 lanes for x <= 0 (softmax weights): Cephes' expf (x = n ln 2 + r
// with ln 2 in two parts, a degree-5 polynomial in r, 2^n built in the
// exponent bits), within 1 ulp of std::exp over [-87.3, 0] (checked at
// 635,729 points); 0 below that (e^x under FLT_MIN) and for -inf; NaN stays
// NaN. The same operations in every build, so the baseline and AVX2 kernels
// agree bit for bit.
__attribute__((always_inline)) inline F8 Exp8(F8 x) {
  const I8 under = x < -87.33654f;
  x = Select(under, Splat(-87.0f), x);  // keeps the integer conversion in range
  const F8 fx = x * 1.44269504088896341f + 0.5f;
  I8 n = __builtin_convertvector(fx, I8);       // toward zero ...
  n += __builtin_convertvector(n, F8) > fx;     // ... then floor (a true lane is -1)
  const F8 nf = __builtin_convertvector(n, F8);
  x = x - nf * 0.693359375f;
  x = x - nf * -2.12194440e-4f;
  F8 y = Splat(1.9875691500e-4f);
  y = y * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * (x * x) + x + 1.0f;
  const F8 pow2n = reinterpret_cast<F8>(reinterpret_cast<U8>(n + 127) << 23);
  return Select(under, Splat(0.0f), y * pow2n);
}

// Max of p[0, n).
__attribute__((always_inline)) inline float MaxOf(const float* p, int64_t n) {
  float mx = -std::numeric_limits<float>::infinity();
  int64_t i = 0;
  if (n >= 8) {
    F8 m = Load8(p);
    for (i = 8; i + 8 <= n; i += 8) {
      const F8 x = Load8(p + i);
      m = Select(x > m, x, m);
    }
    float a[8];
    Store8(a, m);
    for (float x : a) mx = std::max(mx, x);
  }
  for (; i < n; ++i) mx = std::max(mx, p[i]);
  return mx;
}

// p[r] = e^(p[r] - m) for r in [0, n) (Exp8, also for a tail under 8), and
// their sum: in 8 float lanes, added up in double.
__attribute__((always_inline)) inline double ExpShiftSum(float* p, int64_t n, float m) {
  F8 acc = Splat(0.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const F8 e = Exp8(Load8(p + i) - m);
    Store8(p + i, e);
    acc += e;
  }
  if (i < n) {
    float t[8];
    for (int j = 0; j < 8; ++j) t[j] = i + j < n ? p[i + j] - m : -std::numeric_limits<float>::infinity();
    const F8 e = Exp8(Load8(t));
    Store8(t, e);
    for (int j = 0; i + j < n; ++j) p[i + j] = t[j];
    acc += e;
  }
  float a[8];
  Store8(a, acc);
  return ((double(a[0]) + a[4]) + (double(a[1]) + a[5])) + ((double(a[2]) + a[6]) + (double(a[3]) + a[7]));
}

// Where the kernel reads its rows, and how it loads eight elements of one as
// floats. F32Rows: f32 rows in place, at a stride. F16Rows: f16 rows (IEEE
// binary16, little-endian) picked by index, converted as they are loaded
// (with F16C in the AVX2 build), so no decoded copy of a row is ever
// written. f16 -> f32 is exact, so the kernel does the same float operations
// on the same values either way.
struct F32Rows {
  using Elem = float;
  static constexpr int kBytes = 4;
  const float* k;
  const float* v;
  int64_t stride;  // floats
  const float* K(int64_t r) const { return k + r * stride; }
  const float* V(int64_t r) const { return v + r * stride; }
  __attribute__((always_inline)) static F8 Load(const float* p, int i) { return Load8(p + i); }
  static float At(const float* p, int i) { return p[i]; }
};

struct F16RowsBase {
  using Elem = uint8_t;
  static constexpr int kBytes = 2;
  const uint8_t* k;
  const uint8_t* v;
  const int* rows;  // the n rows' indices
  int64_t stride;   // bytes between rows
  const uint8_t* K(int64_t r) const { return k + rows[r] * stride; }
  const uint8_t* V(int64_t r) const { return v + rows[r] * stride; }
  static float At(const uint8_t* p, int i) {
    uint16_t h;
    std::memcpy(&h, p + 2 * size_t(i), 2);
    return HalfToFloat(h);
  }
};
struct F16Rows : F16RowsBase {  // any x86-64 or other CPU
  __attribute__((always_inline)) static F8 Load(const uint8_t* p, int i) {
    float t[8];
    for (int j = 0; j < 8; ++j) t[j] = At(p, i + j);
    return Load8(t);
  }
};
#if defined(__x86_64__)
// The AVX2 build's (which requires F16C, HasAvx2): vcvtph2ps straight from
// the row. An asm statement rather than the intrinsic, which could not be
// inlined through the kernel's helpers (they are compiled for both builds).
struct F16RowsF16c : F16RowsBase {
  __attribute__((always_inline)) static F8 Load(const uint8_t* p, int i) {
    F8 x;
    const auto& h = *reinterpret_cast<const char(*)[16]>(p + 2 * size_t(i));
#if defined(__clang__)  // clang gives no 256-bit register operand outside an AVX function: through memory
    asm("vcvtph2ps %1, %%ymm15\n\tvmovups %%ymm15, %0" : "=m"(x) : "m"(h) : "xmm15");
#else
    asm("vcvtph2ps %1, %0" : "=x"(x) : "m"(h));
#endif
    return x;
  }
};
#endif

// Scores of one key row for Gb query heads (q is [Gb][d]), scaled, into
// s[g * cs]: per head exactly Dot's lanes and reduction, but the row is
// loaded once for all heads and the heads' sums are independent chains.
template <int Gb, class Rows = F32Rows>
__attribute__((always_inline)) inline void RowScores(const float* q, int d, const typename Rows::Elem* kr,
                                                     float scale, float* s, int64_t cs) {
  F8 acc[Gb];
  #pragma GCC unroll 4
  for (int g = 0; g < Gb; ++g) acc[g] = F8{0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= d; i += 8) {
    const F8 kv = Rows::Load(kr, i);
    #pragma GCC unroll 4
    for (int g = 0; g < Gb; ++g) acc[g] += Load8(q + size_t(g) * d + i) * kv;
  }
  #pragma GCC unroll 4
  for (int g = 0; g < Gb; ++g) {
    float a[8];
    Store8(a, acc[g]);
    for (int j = i, l = 0; j < d; ++j, ++l) a[l] += q[size_t(g) * d + j] * Rows::At(kr, j);
    s[g * cs] = (((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))) * scale;
  }
}

// Lane g (< 4) of the result: ((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7))
// over the lanes a of acc[g], RowScores' scalar reduction done for four heads
// at once: the same float additions in the same order, so bit for bit the
// same scores (shuffles that map onto vperm2f128 and vshufps).
__attribute__((always_inline)) inline void Reduce4(const F8* acc, float* out) {
  const F8 p = __builtin_shufflevector(acc[0], acc[1], 0, 1, 2, 3, 8, 9, 10, 11) +
               __builtin_shufflevector(acc[0], acc[1], 4, 5, 6, 7, 12, 13, 14, 15);  // [x0 x1 x2 x3 | y0 ..]
  const F8 q = __builtin_shufflevector(acc[2], acc[3], 0, 1, 2, 3, 8, 9, 10, 11) +
               __builtin_shufflevector(acc[2], acc[3], 4, 5, 6, 7, 12, 13, 14, 15);
  const F8 r = __builtin_shufflevector(p, q, 0, 2, 8, 10, 4, 6, 12, 14) +
               __builtin_shufflevector(p, q, 1, 3, 9, 11, 5, 7, 13, 15);  // [x01 x23 z01 z23 | y01 y23 w01 w23]
  const F8 t = __builtin_shufflevector(r, r, 0, 2, 0, 2, 4, 6, 4, 6) +
               __builtin_shufflevector(r, r, 1, 3, 1, 3, 5, 7, 5, 7);
  out[0] = t[0], out[1] = t[4], out[2] = t[1], out[3] = t[5];
}

// RowScores for two key rows at once (kr0, kr1 -> s0, s1): each q load
// serves both rows; each row's sums are exactly RowScores'.
template <int Gb, class Rows>
__attribute__((always_inline)) inline void RowScores2(const float* q, int d, const typename Rows::Elem* kr0,
                                                      const typename Rows::Elem* kr1, float scale, float* s0,
                                                      float* s1, int64_t cs) {
  F8 a0[Gb], a1[Gb];
  #pragma GCC unroll 4
  for (int g = 0; g < Gb; ++g) a0[g] = a1[g] = F8{0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= d; i += 8) {
    const F8 k0 = Rows::Load(kr0, i), k1 = Rows::Load(kr1, i);
    #pragma GCC unroll 4
    for (int g = 0; g < Gb; ++g) {
      const F8 qv = Load8(q + size_t(g) * d + i);
      a0[g] += qv * k0, a1[g] += qv * k1;
    }
  }
  if (Gb == 4 && i == d) {
    float r[4];
    Reduce4(a0, r);
    for (int g = 0; g < 4; ++g) s0[g * cs] = r[g] * scale;
    Reduce4(a1, r);
    for (int g = 0; g < 4; ++g) s1[g * cs] = r[g] * scale;
    return;
  }
  #pragma GCC unroll 4
  for (int g = 0; g < Gb; ++g) {
    float a[8], b[8];
    Store8(a, a0[g]), Store8(b, a1[g]);
    for (int j = i, l = 0; j < d; ++j, ++l) {
      a[l] += q[size_t(g) * d + j] * Rows::At(kr0, j), b[l] += q[size_t(g) * d + j] * Rows::At(kr1, j);
    }
    s0[g * cs] = (((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]))) * scale;
    s1[g * cs] = (((b[0] + b[4]) + (b[1] + b[5])) + ((b[2] + b[6]) + (b[3] + b[7]))) * scale;
  }
}

// RowScores for all G heads of a group, four at a time (registers).
template <class Rows = F32Rows>
__attribute__((always_inline)) inline void GroupRowScores(const float* q, int G, int d,
                                                          const typename Rows::Elem* kr, float scale, float* s,
                                                          int64_t cs) {
  for (int g0 = 0; g0 < G; g0 += 4) {
    const float* qg = q + size_t(g0) * d;
    float* sg = s + size_t(g0) * cs;
    switch (std::min(4, G - g0)) {
      case 4: RowScores<4, Rows>(qg, d, kr, scale, sg, cs); break;
      case 3: RowScores<3, Rows>(qg, d, kr, scale, sg, cs); break;
      case 2: RowScores<2, Rows>(qg, d, kr, scale, sg, cs); break;
      default: RowScores<1, Rows>(qg, d, kr, scale, sg, cs); break;
    }
  }
}

// GroupRowScores for two rows (scores into s and s + 1).
template <class Rows>
__attribute__((always_inline)) inline void GroupRowScores2(const float* q, int G, int d,
                                                           const typename Rows::Elem* kr0,
                                                           const typename Rows::Elem* kr1, float scale, float* s,
                                                           int64_t cs) {
  for (int g0 = 0; g0 < G; g0 += 4) {
    const float* qg = q + size_t(g0) * d;
    float* sg = s + size_t(g0) * cs;
    switch (std::min(4, G - g0)) {
      case 4: RowScores2<4, Rows>(qg, d, kr0, kr1, scale, sg, sg + 1, cs); break;
      case 3: RowScores2<3, Rows>(qg, d, kr0, kr1, scale, sg, sg + 1, cs); break;
      case 2: RowScores2<2, Rows>(qg, d, kr0, kr1, scale, sg, sg + 1, cs); break;
      default: RowScores2<1, Rows>(qg, d, kr0, kr1, scale, sg, sg + 1, cs); break;
    }
  }
}

// out[g] += Σ_r p[g * cs + r] · v_r for the n rows vr[r], Gb heads: Axpy's
// elementwise updates in the same row order, but blocked over 16 columns so
// the Gb x 16 outputs stay in registers while the rows stream past.
template <int Gb, class Rows>
__attribute__((always_inline)) inline void AccumulateRows(const float* p, int64_t cs,
                                                          const typename Rows::Elem* const* vr, int64_t n, int d,
                                                          float* out) {
  int c = 0;
  for (; c + 16 <= d; c += 16) {
    F8 a0[Gb], a1[Gb];
    #pragma GCC unroll 4
    for (int g = 0; g < Gb; ++g) a0[g] = Load8(out + size_t(g) * d + c), a1[g] = Load8(out + size_t(g) * d + c + 8);
    for (int64_t r = 0; r < n; ++r) {
      const F8 v0 = Rows::Load(vr[r], c), v1 = Rows::Load(vr[r], c + 8);
      #pragma GCC unroll 4
      for (int g = 0; g < Gb; ++g) {
        const float w = p[g * cs + r];
        a0[g] += w * v0, a1[g] += w * v1;
      }
    }
    #pragma GCC unroll 4
    for (int g = 0; g < Gb; ++g) Store8(out + size_t(g) * d + c, a0[g]), Store8(out + size_t(g) * d + c + 8, a1[g]);
  }
  for (; c + 8 <= d; c += 8) {
    F8 a0[Gb];
    #pragma GCC unroll 4
    for (int g = 0; g < Gb; ++g) a0[g] = Load8(out + size_t(g) * d + c);
    for (int64_t r = 0; r < n; ++r) {
      const F8 v0 = Rows::Load(vr[r], c);
      #pragma GCC unroll 4
      for (int g = 0; g < Gb; ++g) a0[g] += p[g * cs + r] * v0;
    }
    #pragma GCC unroll 4
    for (int g = 0; g < Gb; ++g) Store8(out + size_t(g) * d + c, a0[g]);
  }
  for (; c < d; ++c) {
    for (int64_t r = 0; r < n; ++r) {
      const float x = Rows::At(vr[r], c);
      #pragma GCC unroll 4
      for (int g = 0; g < Gb; ++g) out[size_t(g) * d + c] += p[g * cs + r] * x;
    }
  }
}

// AttendGroup's body, compiled twice: for the baseline ISA and for AVX2,
// picked at run time. RowScores and AccumulateRows do the same float
// operations in the same order at any vector width (no FMA contraction: the
// AVX2 build does not enable FMA), so both give identical results, equal to
// G passes of Dot and Axpy. Heads go four at a time (registers), key rows
// two at a time.
constexpr int64_t kRowBlock = 64;  // rows per pass of AccumulateRows (their V stays in L1 across column blocks)

template <class Rows>
__attribute__((always_inline)) inline void AttendGroupBody(const float* q, int G, const Rows& src, int64_t n, int d,
                                                           float scale, float* out, float* lse) {
  constexpr int64_t kChunk = 512;  // G x 512 scores stay in L1/L2
  const float kNegInf = -std::numeric_limits<float>::infinity();
  std::fill(out, out + size_t(G) * d, 0.0f);
  std::fill(lse, lse + G, kNegInf);
  if (n <= 0 || G <= 0) return;
  // Scores of one chunk per query head; sized to the rows there are (a
  // store's Attend calls this per block with a few dozen rows).
  const int64_t cs = std::min(kChunk, n);
  constexpr size_t kStackScores = 2048, kStackHeads = 16;  // a store's per-block call: no allocation
  float s_stack[kStackScores], m_stack[kStackHeads];
  double l_stack[kStackHeads];
  std::vector<float> s_heap, m_heap;
  std::vector<double> l_heap;
  float* s = s_stack;
  float* m = m_stack;
  double* l = l_stack;
  if (size_t(G) * cs > kStackScores) s_heap.resize(size_t(G) * cs), s = s_heap.data();
  if (size_t(G) > kStackHeads) m_heap.resize(G), l_heap.resize(G), m = m_heap.data(), l = l_heap.data();
  std::fill(m, m + G, kNegInf);
  std::fill(l, l + G, 0.0);
  const typename Rows::Elem* vr[kRowBlock];
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t cn = std::min(kChunk, n - c0);
    // The V pass below reads this chunk's rows a column block at a time,
    // which the hardware prefetcher does not follow: fetch them into L2
    // now, while K streams (a chunk of f32 V is 256 KiB at d = 128).
    auto prefetch_v = [&](int64_t r) {
      const char* p = reinterpret_cast<const char*>(src.V(c0 + r));
      for (int64_t b = 0; b < int64_t(d) * Rows::kBytes; b += 64) __builtin_prefetch(p + b, 0, 2);
    };
    int64_t r = 0;
    for (; r + 2 <= cn; r += 2) {  // two rows per pass over q
      prefetch_v(r), prefetch_v(r + 1);
      GroupRowScores2<Rows>(q, G, d, src.K(c0 + r), src.K(c0 + r + 1), scale, s + r, cs);
    }
    if (r < cn) {
      prefetch_v(r);
      GroupRowScores<Rows>(q, G, d, src.K(c0 + r), scale, s + r, cs);
    }
    for (int g = 0; g < G; ++g) {
      float* sg = s + size_t(g) * cs;
      const float cm = MaxOf(sg, cn);
      if (cm > m[g]) {  // rescale what was accumulated under the old max
        const float f = std::isinf(m[g]) ? 0.0f : std::exp(m[g] - cm);
        for (int c = 0; c < d; ++c) out[size_t(g) * d + c] *= f;
        l[g] *= f;
        m[g] = cm;
      }
      l[g] += ExpShiftSum(sg, cn, m[g]);
    }
    for (int64_t r0 = 0; r0 < cn; r0 += kRowBlock) {
      const int64_t rn = std::min(kRowBlock, cn - r0);
      for (int64_t i = 0; i < rn; ++i) vr[i] = src.V(c0 + r0 + i);
      for (int g0 = 0; g0 < G; g0 += 4) {
        const float* pg = s + size_t(g0) * cs + r0;
        float* og = out + size_t(g0) * d;
        switch (std::min(4, G - g0)) {
          case 4: AccumulateRows<4, Rows>(pg, cs, vr, rn, d, og); break;
          case 3: AccumulateRows<3, Rows>(pg, cs, vr, rn, d, og); break;
          case 2: AccumulateRows<2, Rows>(pg, cs, vr, rn, d, og); break;
          default: AccumulateRows<1, Rows>(pg, cs, vr, rn, d, og); break;
        }
      }
    }
  }
  for (int g = 0; g < G; ++g) {
    const float inv = static_cast<float>(1.0 / l[g]);
    for (int c = 0; c < d; ++c) out[size_t(g) * d + c] *= inv;
    lse[g] = m[g] + static_cast<float>(std::log(l[g]));
  }
}

__attribute__((always_inline)) inline void GroupScoresBody(const float* q, int G, const float* k, int64_t n, int d,
                                                           int64_t stride, float scale, float* scores) {
  for (int64_t r = 0; r < n; ++r) GroupRowScores(q, G, d, k + r * stride, scale, scores + r, n);
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) void GroupScoresAvx2(const float* q, int G, const float* k, int64_t n, int d,
                                                      int64_t stride, float scale, float* scores) {
  GroupScoresBody(q, G, k, n, d, stride, scale, scores);
}

template <class Rows>
__attribute__((target("avx2,f16c"))) void AttendGroupAvx2(const float* q, int G, const Rows& src, int64_t n, int d,
                                                           float scale, float* out, float* lse) {
  AttendGroupBody(q, G, src, n, d, scale, out, lse);
}

bool HasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2") && HasF16c();
  return has;
}
#endif

}  // namespace

void AttendGroup(const float* q, int G, const float* k, const float* v, int64_t n, int d, int64_t stride,
                 float scale, float* out, float* lse) {
  const F32Rows src{k, v, stride};
#if defined(__x86_64__)
  if (HasAvx2()) return AttendGroupAvx2(q, G, src, n, d, scale, out, lse);
#endif
  AttendGroupBody(q, G, src, n, d, scale, out, lse);
}

void AttendGroupHalfRows(const float* q, int G, const uint8_t* k, const uint8_t* v, const int* rows, int64_t n,
                         int d, int64_t row_bytes, float scale, float* out, float* lse) {
#if defined(__x86_64__)
  if (HasAvx2()) return AttendGroupAvx2(q, G, F16RowsF16c{{k, v, rows, row_bytes}}, n, d, scale, out, lse);
#endif
  AttendGroupBody(q, G, F16Rows{{k, v, rows, row_bytes}}, n, d, scale, out, lse);
}

void GroupScores(const float* q, int G, const float* k, int64_t n, int d, int64_t stride, float scale,
                 float* scores) {
  if (n <= 0 || G <= 0) return;
#if defined(__x86_64__)
  if (HasAvx2()) return GroupScoresAvx2(q, G, k, n, d, stride, scale, scores);
#endif
  GroupScoresBody(q, G, k, n, d, stride, scale, scores);
}

void MergeAttention(float* out_a, float* lse_a, const float* out_b, float lse_b, int d) {
  if (std::isinf(lse_b) && lse_b < 0) return;
  if (std::isinf(*lse_a) && *lse_a < 0) {
    std::copy(out_b, out_b + d, out_a);
    *lse_a = lse_b;
    return;
  }
  const float m = std::max(*lse_a, lse_b);
  const float wa = std::exp(*lse_a - m), wb = std::exp(lse_b - m);
  const float inv = 1.0f / (wa + wb);
  for (int c = 0; c < d; ++c) out_a[c] = (wa * out_a[c] + wb * out_b[c]) * inv;
  *lse_a = m + std::log(wa + wb);
}

}  // namespace kvrecall
