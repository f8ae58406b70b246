// Builds the KV cache the engine runs with from a spec string, so every
// method is one flag away: `engine:llm perplexity --cache <spec>`.
//   exact                       full-precision f32 (the reference)
//   <codec spec>                any codec of codec/codec.h in streaming mode
//                               (engine/codec_cache.h), e.g. kivi:bits=2,
//                               qwc:kbits=4,vbits=2, gear, gear_l, squat, f16
//   commvq[:bits=2,kdigit=6|4,vbits=8,residual=32,buffer=32,iters=12,train=8192]
//                               CommVQ (codec/commvq.h) with codebooks trained
//                               on `calibration` (kdigit defaults to 4 below
//                               head_dim 64); or commvq:cal=<hash> for a
//                               calibration already registered
//   session[:fetch=attend|gather,topk=0.1,block=16,window=64,sinks=4,nodes=a;b,token=T]
//                               a RetrievalSession (client/retrieval_session.h):
//                               KV offloaded to kvrecall (embedded or servers),
//                               attention over local + retrieved top-K
//   qwc:budget=B[,...]          QWC with the norm-aware allocator: per-layer
//                               K and V bits from ‖W_K‖², ‖W_V‖² (context)
//                               with a mean of B bits
#ifndef KVRECALL_ENGINE_CACHE_FACTORY_H_
#define KVRECALL_ENGINE_CACHE_FACTORY_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "codec/kv_trace.h"
#include "engine/kv_cache.h"

namespace kvrecall {

//   oracle|a2ats|quest|pq[:topk=0.1,sinks=4,window=64,<index params>]  (topk <= 1: a
//                               fraction of the context; > 1: tokens per query head)
//                               attention over sinks + window + top-K chosen
//                               by that retrieval index (engine/retrieval_cache.h);
//                               needs `calibration`
struct KvCacheContext {
  std::string model_id = "model";
  int num_layers = 0;
  std::vector<double> k_norms, v_norms;  // per layer Frobenius norms of W_K, W_V
  const KvTrace* calibration = nullptr;   // retrieval caches: Q/K of other text
  int context_len = 0;                    // the model's context; sets A²ATS's default b
};

// True if `spec` names a retrieval cache (which needs a calibration trace).
bool IsRetrievalCacheSpec(const std::string& spec);
// True if MakeKvCache(spec) needs `calibration`: retrieval caches and
// commvq without a registered calibration.
bool NeedsCalibration(const std::string& spec);

// INVALID_ARGUMENT for unknown names or parameters.
absl::StatusOr<std::unique_ptr<KvCache>> MakeKvCache(const std::string& spec, const KvCacheContext& context);

// Trains a CommVQ calibration for "commvq[:bits=...]" on the trace's
// pre-RoPE keys and values, registers it, and returns the codec spec
// ("commvq:cal=<hash>,..."). INVALID_ARGUMENT for bad parameters.
absl::StatusOr<std::string> TrainCommVqSpec(const std::string& spec, const KvTrace& calibration);

// The per-layer codec specs a "qwc:budget=..." spec expands to.
absl::StatusOr<std::vector<std::string>> ExpandCacheSpec(const std::string& spec, const KvCacheContext& context);

}  // namespace kvrecall

#endif  // KVRECALL_ENGINE_CACHE_FACTORY_H_
