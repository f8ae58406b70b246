// The block container: the one binary format in which kvrecall stores and
// moves KV (doc/formats.md, "Block container v1").
//
//   header (88 bytes + 8 per section) | sections, back to back | XXH3-64
//
// The trailing checksum covers every byte before it, so any damaged byte of a
// block is detected. ParseBlock() validates everything before returning and
// never reads outside the given buffer; its errors name the problem:
//   DATA_LOSS      truncation, trailing bytes, bad magic, bad lengths,
//                  checksum mismatch, invalid layout or reserved fields
//   UNIMPLEMENTED  a format version this reader does not know
// The container does not interpret sections: codecs own their payloads.
#ifndef KVRECALL_CODEC_CONTAINER_H_
#define KVRECALL_CODEC_CONTAINER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "codec/kv_layout.h"
#include "common/hash.h"

namespace kvrecall {

inline constexpr uint32_t kBlockMagic = 0x4352564bu;  // bytes "KVRC"
inline constexpr uint16_t kBlockFormatVersion = 1;
inline constexpr uint32_t kMaxBlockSections = 16;
inline constexpr size_t kBlockFixedHeaderBytes = 88;
inline constexpr size_t kBlockTrailerBytes = 8;
inline constexpr uint64_t kMaxBlockBytes = uint64_t{1} << 34;  // 16 GiB

struct BlockHeader {
  uint16_t codec_id = 0;
  KvLayout layout;
  uint32_t layer_begin = 0;  // layers [layer_begin, layer_begin + layer_count)
  uint32_t layer_count = 0;
  uint64_t first_token = 0;  // position of the block's first token
  uint32_t token_count = 0;
  Hash128 fingerprint;

  friend bool operator==(const BlockHeader& a, const BlockHeader& b);
};

// A parsed, verified block. The spans point into the buffer given to
// ParseBlock, which must outlive the view.
struct BlockView {
  BlockHeader header;
  std::vector<absl::Span<const uint8_t>> sections;
  uint64_t checksum = 0;
};

// Serializes a block. INVALID_ARGUMENT if the header is inconsistent (invalid
// layout, layer range outside it, more than kMaxBlockSections sections, or a
// total over kMaxBlockBytes).
absl::StatusOr<std::string> BuildBlock(const BlockHeader& header,
                                       const std::vector<absl::Span<const uint8_t>>& sections);

// Parses and verifies `bytes` (see the file comment for the errors).
absl::StatusOr<BlockView> ParseBlock(absl::Span<const uint8_t> bytes);

inline absl::Span<const uint8_t> AsBytes(absl::string_view s) {
  return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

}  // namespace kvrecall

#endif  // KVRECALL_CODEC_CONTAINER_H_
