// Group-wise asymmetric uniform quantization (algorithms.md notation): for a
// group x, m = min x, Δ = (max x − m)/(2^b − 1), code = clamp(round((x−m)/Δ)),
// x̂ = m + Δ·code, with m and Δ stored as f16 (codes use the f16-rounded m
// and Δ, so encode and decode agree exactly) or, optionally, f32.
//
// A tensor is [heads][tokens][dim] (heads = layers × KV heads of a chunk).
// Grouping:
//   per-channel: a group is one channel over `group` consecutive tokens
//     (KIVI keys); scales [heads][token_groups][dim] (m, Δ) pairs.
//   per-token: a group is `group` consecutive channels of one token (KIVI
//     values; a group wider than the head covers the whole head); scales
//     [heads][tokens][channel_groups] pairs.
// Codes are packed LSB-first, element i of the tensor (row-major) at bit
// i·bits, so any token row can be decoded alone.
#ifndef KVRECALL_CODEC_GROUP_QUANT_H_
#define KVRECALL_CODEC_GROUP_QUANT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace kvrecall {

struct GroupQuantSpec {
  int bits = 2;           // 1..8
  int group = 32;         // tokens (per-channel) or channels (per-token)
  bool per_channel = true;
  bool f32_scales = false;  // (m, Δ) as f32 instead of f16 (exact reference runs)

  absl::Status Validate(int dim) const;
};

struct TensorShape {
  int heads = 0;
  int tokens = 0;
  int dim = 0;
  int64_t elements() const { return int64_t(heads) * tokens * dim; }
};

// Sizes of the two sections for `shape`.
size_t GroupQuantScaleBytes(const TensorShape& shape, const GroupQuantSpec& spec);
size_t GroupQuantCodeBytes(const TensorShape& shape, const GroupQuantSpec& spec);

// Unpacked form, filled by encoders (KIVI's plain quantizer, SQuat's
// error-feedback quantizer) and then packed.
struct UnpackedQuant {
  std::vector<float> scales;  // (m, Δ) pairs in the layout above, as stored
  std::vector<uint8_t> codes;    // [heads][tokens][dim]
};

// Quantizes one group of `count` values (x[i·stride]): stores (m, Δ) in
// scales[0..1] (rounded to f16 unless `f32_scales`) and the codes in
// codes[i·stride]. Values must be finite and within f16 range (callers
// validate).
void QuantizeGroup(const float* x, int64_t stride, int count, int bits, bool f32_scales, float* scales,
                   uint8_t* codes);

// Plain group quantization of x [heads][tokens][dim].
UnpackedQuant QuantizeTensor(const float* x, const TensorShape& shape, const GroupQuantSpec& spec);

// Serializes into two sections (appended to `scales` and `codes`).
void PackQuant(const UnpackedQuant& q, const TensorShape& shape, const GroupQuantSpec& spec,
               std::string* scales, std::string* codes);

// DATA_LOSS unless the sections have exactly the sizes `shape` and `spec` imply.
absl::Status CheckQuantSections(absl::Span<const uint8_t> scales, absl::Span<const uint8_t> codes,
                                const TensorShape& shape, const GroupQuantSpec& spec);

// Dequantizes everything into out [heads][tokens][dim]. REQUIRES: sections
// passed CheckQuantSections.
void DequantizeTensor(absl::Span<const uint8_t> scales, absl::Span<const uint8_t> codes,
                      const TensorShape& shape, const GroupQuantSpec& spec, float* out);

// Dequantizes only token rows `rows` into out [heads][rows.size()][dim].
// REQUIRES: every row in [0, tokens).
void DequantizeRows(absl::Span<const uint8_t> scales, absl::Span<const uint8_t> codes,
                    const TensorShape& shape, const GroupQuantSpec& spec,
                    absl::Span<const int> rows, float* out);

// The bytes DequantizeRows(scales, codes, shape, spec, rows) reads, appended
// to `ranges` in the order it reads them. REQUIRES as DequantizeRows.
void RowRanges(absl::Span<const uint8_t> scales, absl::Span<const uint8_t> codes, const TensorShape& shape,
               const GroupQuantSpec& spec, absl::Span<const int> rows,
               std::vector<absl::Span<const uint8_t>>* ranges);

// Bits per element the two sections cost.
double GroupQuantBitsPerElement(const TensorShape& shape, const GroupQuantSpec& spec);

}  // namespace kvrecall

#endif  // KVRECALL_CODEC_GROUP_QUANT_H_
