// Builds the KV cache the engine runs with from a spec string, so every
// method is one flag away: `engine:llm perplexity --cache <spec>`.
//   exact                       full-precision f32 (the reference)
//   <codec spec>                any codec of codec/codec.h in streaming mode
//                               (engine/codec_cache.h), e.g. kivi:bits=2,
//                               qwc:kbits=4,vbits=2, gear, gear_l, squat, f16
//   qwc:budget=B[,...]          QWC with the norm-aware allocator: per-layer
//                               K and V bits from ‖W_K‖², ‖W_V‖² (context)
//                               with a mean of B bits
#ifndef KVRECALL_ENGINE_CACHE_FACTORY_H_
#define KVRECALL_ENGINE_CACHE_FACTORY_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/kv_cache.h"

namespace kvrecall {

struct KvCacheContext {
  std::string model_id = "model";
  int num_layers = 0;
  std::vector<double> k_norms, v_norms;  // per layer Frobenius norms of W_K, W_V
};

// INVALID_ARGUMENT for unknown names or parameters.
absl::StatusOr<std::unique_ptr<KvCache>> MakeKvCache(const std::string& spec, const KvCacheContext& context);

// The per-layer codec specs a "qwc:budget=..." spec expands to.
absl::StatusOr<std::vector<std::string>> ExpandCacheSpec(const std::string& spec, const KvCacheContext& context);

}  // namespace kvrecall

#endif  // KVRECALL_ENGINE_CACHE_FACTORY_H_
