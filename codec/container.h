// The block container: the one binary format in which kvrecall stores and
// moves KV (doc/formats.md, "Block container v1").
//
//   header (88 bytes + 8 per section) | sections, back to back
//     [| chunk checksums] | XXH3-64
//
// The trailing checksum covers every byte before it, so any damaged byte of a
// block is detected. A block may also carry chunk checksums (flag bit 0): the
// CRC32C (flag bit 2; the low 32 bits of XXH3-64 in older blocks) of every
// 2^chunk_shift-byte chunk of header and sections, so that a reader of a few rows (Gather, Attend) verifies exactly
// the bytes it reads instead of hashing the whole block (ParseBlockForRows,
// VerifyBlockRanges). ParseBlock() validates everything before returning and
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
inline constexpr uint16_t kBlockFlagChunkSums = 1;
// Set with kBlockFlagChunkSums, never alone: every section starts on a chunk
// boundary (zero bytes in between), so a row that is a multiple of a chunk
// long covers whole chunks and a row read hashes only the bytes it decodes.
inline constexpr uint16_t kBlockFlagAlignedSections = 2;
// Set with kBlockFlagChunkSums (BuildBlock always sets it): the chunk sums are
// CRC32C (common/crc32c.h). Without it they are the low 32 bits of XXH3-64,
// as blocks written before 2026-11-24 have them; both are read.
inline constexpr uint16_t kBlockFlagCrc32cChunkSums = 4;
inline constexpr int kMinChunkShift = 8;   // 256-byte chunks
inline constexpr int kMaxChunkShift = 16;  // 64 KiB

struct BlockHeader {
  uint16_t codec_id = 0;
  KvLayout layout;
  uint32_t layer_begin = 0;  // layers [layer_begin, layer_begin + layer_count)
  uint32_t layer_count = 0;
  uint64_t first_token = 0;  // position of the block's first token
  uint32_t token_count = 0;
  Hash128 fingerprint;
  // 0: no chunk checksums; else chunks of 2^chunk_shift bytes
  // (kMinChunkShift..kMaxChunkShift).
  int chunk_shift = 0;

  friend bool operator==(const BlockHeader& a, const BlockHeader& b);
};

// A parsed block. The spans point into the buffer given to ParseBlock, which
// must outlive the view. From ParseBlock every byte is verified; from
// ParseBlockForRows (`partial`) only the header and section 0, and the rest
// is verified range by range with VerifyBlockRanges before it is read.
struct BlockView {
  BlockHeader header;
  std::vector<absl::Span<const uint8_t>> sections;
  uint64_t checksum = 0;  // the trailer (ParseBlock; 0 in a partial view, which does not read it)
  bool partial = false;
  absl::Span<const uint8_t> bytes;       // the whole block
  absl::Span<const uint8_t> chunk_sums;  // u32 LE per chunk (chunk_shift != 0)
  bool crc_chunk_sums = false;           // the sums are CRC32C (flag bit 2), else XXH3-64's low half
};

// Serializes a block. INVALID_ARGUMENT if the header is inconsistent (invalid
// layout, layer range outside it, more than kMaxBlockSections sections, or a
// total over kMaxBlockBytes).
absl::StatusOr<std::string> BuildBlock(const BlockHeader& header,
                                       const std::vector<absl::Span<const uint8_t>>& sections);

// Parses and verifies `bytes` (see the file comment for the errors); for a
// block with chunk checksums, verifies them all too.
absl::StatusOr<BlockView> ParseBlock(absl::Span<const uint8_t> bytes);

// For reading a few rows: a block with chunk checksums is checked like
// ParseBlock except that only the chunks holding its header and section 0
// (the codec's parameters) are hashed, and the view is `partial`. A block
// without them is parsed and verified whole (ParseBlock).
absl::StatusOr<BlockView> ParseBlockForRows(absl::Span<const uint8_t> bytes);

// Verifies the chunks under `ranges` (each inside view.bytes) of a partial
// view: DATA_LOSS naming the chunk on a mismatch, INVALID_ARGUMENT for a
// range outside the block. OK at once for a fully verified view.
absl::Status VerifyBlockRanges(const BlockView& view, absl::Span<const absl::Span<const uint8_t>> ranges);

// Asks the memory system for the chunks under `ranges` of a partial view and
// for their stored sums (what VerifyBlockRanges will read), without waiting
// for them: a reader of many blocks calls it for the next block while it works
// on this one. Ranges outside the block are ignored; a no-op for a fully
// verified view.
void PrefetchBlockRanges(const BlockView& view, absl::Span<const absl::Span<const uint8_t>> ranges);

inline absl::Span<const uint8_t> AsBytes(absl::string_view s) {
  return absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

}  // namespace kvrecall

#endif  // KVRECALL_CODEC_CONTAINER_H_
