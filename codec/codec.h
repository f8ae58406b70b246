// KvCodec: one interface for every KV compression method. A codec turns a
// chunk of K/V for a layer range into a block container (codec/container.h)
// and back: all of it, or only selected token rows (retrieval gathers).
// The codec id and its canonical parameter string are in every block
// (section 0) and go into the model fingerprint.
//
// Chunk layout (input and decode output), for K and for V:
//   [layer_count][kv_heads][tokens][head_dim] f32, row-major.
// Whether keys are pre- or post-RoPE is the caller's choice, recorded in
// layout.keys_pre_rope; codecs treat keys as given.
//
// Errors: INVALID_ARGUMENT for bad parameters, shapes or non-finite input
// (NaN/Inf, values beyond f16 range); DATA_LOSS for a block whose sections
// do not match its header; FAILED_PRECONDITION for a block of another codec
// or parameter set. Decoders never read outside the block.
// Thread safety: codecs are immutable and thread-safe; EncodeOptions::state
// is owned by one caller.
#ifndef KVRECALL_CODEC_CODEC_H_
#define KVRECALL_CODEC_CODEC_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "codec/container.h"
#include "codec/kv_layout.h"

namespace kvrecall {

enum class CodecId : uint16_t {
  kF32 = 0,
  kF16 = 1,
  kBF16 = 2,
  kKivi = 3,
  kQwc = 4,
  kGear = 5,
  kSquat = 6,
  kCommVq = 7,
};

struct KvChunkRef {
  KvLayout layout;
  int layer_begin = 0;
  int layer_count = 0;
  int64_t first_token = 0;
  int tokens = 0;
  const float* k = nullptr;  // [layer_count][kv_heads][tokens][head_dim]
  const float* v = nullptr;
};

// State a codec derives once (SQuat's per-head query subspace) and reuses for
// later chunks of the same sequence. Opaque to callers.
class CodecState {
 public:
  virtual ~CodecState() = default;
};

struct EncodeOptions {
  Hash128 fingerprint;
  // SQuat: the prompt's queries for the chunk's layers,
  // [layer_count][q_heads][num_queries][head_dim]; used when `state` holds
  // no subspace yet.
  const float* queries = nullptr;
  int num_queries = 0;
  // GEAR: prefill chunks use the prefill rank, later ones the decode rank.
  bool prefill = true;
  // In/out: created by the first Encode that needs it, reused afterwards.
  std::unique_ptr<CodecState>* state = nullptr;
  // Chunk checksums in the block (BlockHeader::chunk_shift; 0: none), for
  // blocks read a few rows at a time.
  int chunk_shift = 0;
};

struct BitsPerElement {
  double k = 0;
  double v = 0;
  double mean() const { return (k + v) / 2; }
};

class KvCodec {
 public:
  virtual ~KvCodec() = default;
  virtual CodecId id() const = 0;
  virtual std::string name() const = 0;
  // Canonical parameters ("bits=2,group=32,..."), sorted by key.
  virtual std::string params() const = 0;
  std::string spec() const { return params().empty() ? name() : name() + ":" + params(); }

  absl::StatusOr<std::string> Encode(const KvChunkRef& chunk, EncodeOptions* options) const;
  // k, v: [layer_count][kv_heads][tokens][head_dim].
  absl::Status Decode(const BlockView& block, float* k, float* v) const;
  // Token offsets `rows` within the block; k, v: [layer_count][kv_heads][rows][head_dim].
  absl::Status DecodeRows(const BlockView& block, absl::Span<const int> rows, float* k, float* v) const;
  // Attention over the token rows `rows` of the block, per block head (layer
  // x KV head) for its `group` query heads: q and out are
  // [layer_count][kv_heads][group][head_dim], lse [layer_count][kv_heads][group]
  // (AttendGroup per head, codec/attention.h). The same as DecodeRows then
  // AttendGroup; f16 reads its rows in place, without the decoded copy.
  // `scratch` (may be null) is reused between calls. INVALID_ARGUMENT for
  // bad rows or group.
  absl::Status AttendRows(const BlockView& block, absl::Span<const int> rows, const float* q, int group,
                          float scale, float* out, float* lse, std::vector<float>* scratch = nullptr) const;
  // The byte ranges of `block` that DecodeRows(block, rows) reads, in the
  // order it reads them, so that a partial view (ParseBlockForRows) can verify
  // exactly those (VerifyBlockRanges). UNIMPLEMENTED for codecs that do not
  // list them (verify the whole block instead); INVALID_ARGUMENT for bad rows.
  absl::Status RowByteRanges(const BlockView& block, absl::Span<const int> rows,
                             std::vector<absl::Span<const uint8_t>>* ranges) const;
  // K and V bits per element of an encoded block, everything counted: the
  // sections each owns plus half of the shared bytes (header, parameters,
  // trailer). (k + v) / 2 == 8 · block bytes / (2 · elements).
  BitsPerElement Bits(const BlockView& block, size_t block_bytes) const;

 protected:
  enum class Owner { kShared, kK, kV };
  struct Shape {
    int heads = 0;  // layer_count × kv_heads
    int tokens = 0;
    int dim = 0;
    int layer_begin = 0;  // the block's first layer (per-layer codebooks)
  };
  // Codec-specific parts. Sections exclude section 0 (parameters).
  virtual absl::Status EncodeSections(const KvChunkRef& chunk, EncodeOptions* options,
                                      std::vector<std::string>* sections) const = 0;
  virtual absl::Status DecodeSections(const std::vector<absl::Span<const uint8_t>>& sections,
                                      const Shape& shape, float* k, float* v) const = 0;
  virtual absl::Status DecodeRowsSections(const std::vector<absl::Span<const uint8_t>>& sections,
                                          const Shape& shape, absl::Span<const int> rows, float* k,
                                          float* v) const = 0;
  virtual std::vector<Owner> SectionOwners(size_t count) const = 0;
  // AttendRows past its checks; by default DecodeRowsSections into `scratch`
  // and AttendGroup.
  virtual absl::Status AttendRowsSections(const std::vector<absl::Span<const uint8_t>>& sections,
                                          const Shape& shape, absl::Span<const int> rows, const float* q,
                                          int group, float scale, float* out, float* lse,
                                          std::vector<float>* scratch) const;
  virtual absl::Status RowRangesSections(const std::vector<absl::Span<const uint8_t>>& sections,
                                         const Shape& shape, absl::Span<const int> rows,
                                         std::vector<absl::Span<const uint8_t>>* ranges) const {
    return absl::UnimplementedError(name() + " does not list the bytes a row read touches");
  }

 private:
  absl::StatusOr<std::vector<absl::Span<const uint8_t>>> CheckBlock(const BlockView& block,
                                                                    Shape* shape) const;
};

// The streaming parameters a codec asks of the cache that runs it.
struct StreamingParams {
  int residual = 0;      // full-precision recent tokens
  int chunk = 32;        // tokens compressed at a time
  bool pre_rope = false; // quantize keys before RoPE
  bool query_pre_rope = false;  // context queries before RoPE (SQuat qspace=pre)
};
// Reads them from a codec's canonical parameters (residual, kgroup/buffer,
// pre_rope), with the codec's defaults.
StreamingParams StreamingParamsOf(const KvCodec& codec);

// Parses "name" or "name:key=value,...". Known: f32, f16, bf16, kivi, qwc,
// gear, gear_l, squat (see each codec's header for its parameters).
// INVALID_ARGUMENT for unknown names, keys or out-of-range values.
absl::StatusOr<std::unique_ptr<KvCodec>> MakeCodec(absl::string_view spec);
// The codec that wrote `block` (from its id and parameter section).
absl::StatusOr<std::unique_ptr<KvCodec>> CodecForBlock(const BlockView& block);

// "key=value,..." -> map; INVALID_ARGUMENT on malformed text.
absl::StatusOr<std::map<std::string, std::string>> ParseParams(absl::string_view text);

// Checks a chunk's shape and that every value is finite and within f16 range.
absl::Status ValidateChunk(const KvChunkRef& chunk);

}  // namespace kvrecall

#endif  // KVRECALL_CODEC_CODEC_H_
