// The shape of a model's KV cache, and the model fingerprint.
//
// A KV chunk in memory (what codecs encode) is, per K and per V,
//   [layers][kv_heads][tokens][head_dim]  row-major, in `dtype`.
#ifndef KVRECALL_CODEC_KV_LAYOUT_H_
#define KVRECALL_CODEC_KV_LAYOUT_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/hash.h"

namespace kvrecall {

enum class DType : uint8_t { kF32 = 0, kF16 = 1, kBF16 = 2 };
size_t DTypeSize(DType t);
absl::string_view DTypeName(DType t);

// How RoPE pairs channels: kHalfSplit pairs i with i + d/2 (HF rotate_half);
// kInterleaved pairs 2i with 2i+1 (llama2.c, Meta's original). Pair j rotates
// by pos / scaling * theta^(-2j/d).
enum class RopeStyle : uint8_t { kNone = 0, kHalfSplit = 1, kInterleaved = 2 };
absl::string_view RopeStyleName(RopeStyle s);

struct KvLayout {
  int num_layers = 0;
  int num_q_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  DType dtype = DType::kF16;
  RopeStyle rope_style = RopeStyle::kHalfSplit;
  float rope_theta = 10000.0f;
  float rope_scaling = 1.0f;  // linear position scaling (1 = none)
  bool keys_pre_rope = false;  // keys stored before RoPE is applied

  // INVALID_ARGUMENT naming the first bad field: dimensions in [1, 65535],
  // q heads a multiple of kv heads, head_dim even when RoPE is used, theta and
  // scaling finite and positive.
  absl::Status Validate() const;

  int group_size() const { return num_kv_heads > 0 ? num_q_heads / num_kv_heads : 0; }
  // Elements of K plus V for one token across all layers.
  int64_t kv_elements_per_token() const {
    return 2LL * num_layers * num_kv_heads * head_dim;
  }
  std::string DebugString() const;

  friend bool operator==(const KvLayout& a, const KvLayout& b);
  friend bool operator!=(const KvLayout& a, const KvLayout& b) { return !(a == b); }
};

// Fixed 24-byte little-endian encoding of a KvLayout, shared by the block
// container and the fingerprint (doc/formats.md).
inline constexpr size_t kEncodedLayoutBytes = 24;
void EncodeLayout(const KvLayout& layout, uint8_t* out);
// DATA_LOSS if the bytes are not a valid layout (reserved bytes set, unknown
// enum values, failed Validate()).
absl::StatusOr<KvLayout> DecodeLayout(const uint8_t* in);

// Hash of everything that makes KV bytes interpretable: model id, layout,
// codec id + canonical parameter string, codebook version. Part of every
// BlockKey, so KV from another model, layout, codec or codebook never matches.
Hash128 ModelFingerprint(absl::string_view model_id, const KvLayout& layout, uint16_t codec_id,
                         absl::string_view codec_params, uint32_t codebook_version);

}  // namespace kvrecall

#endif  // KVRECALL_CODEC_KV_LAYOUT_H_
