// A KvCache that runs a KvCodec in streaming mode, as the methods do during
// decoding: per layer, the most recent tokens stay in a full-precision
// (f16) window; when the window holds `residual + chunk` tokens, its oldest
// `chunk` tokens are encoded into a block container, verified, decoded, and
// attended from their decoded values from then on. Keys are compressed
// post-RoPE, or pre-RoPE and rotated after decoding when the codec asks
// (pre_rope=1). SQuat's query subspace is built from the queries seen before
// a layer's first compression, then frozen and reused (codec state).
// GEAR chunks use the decode rank.
#ifndef KVRECALL_ENGINE_CODEC_CACHE_H_
#define KVRECALL_ENGINE_CODEC_CACHE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codec/codec.h"
#include "engine/kv_cache.h"

namespace kvrecall {

struct CodecCacheStats {
  int64_t blocks = 0;
  int64_t block_bytes = 0;
  double k_bits = 0;  // per element over all blocks so far
  double v_bits = 0;
};

// One codec per layer (QWC's allocator gives layers different bit widths).
absl::StatusOr<std::unique_ptr<KvCache>> NewCodecKvCache(std::vector<std::unique_ptr<KvCodec>> per_layer,
                                                         std::string name, std::string model_id);

}  // namespace kvrecall

#endif  // KVRECALL_ENGINE_CODEC_CACHE_H_
