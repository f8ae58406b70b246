// A KvCache backed by a RetrievalSession (client/retrieval_session.h): the
// reference engine decoding with its KV offloaded to kvrecall and attention
// over sinks + window + pending tokens + the retrieved top-K.
//
//   session[:fetch=attend|gather,topk=0.1,block=16,window=64,sinks=4,
//           centroids=N,b=B,recall=N,prefetch=0|1,nodes=host:port;host:port,token=T,salt=S]
//
// recall=N: live recall on every N-th step, reported to the store's metrics.
// prefetch=1 (gather): the next layer's previous rows are fetched ahead.
// A²ATS indexes calibrated on `calibration`; embedded store unless `nodes`
// names kvrecall-server data addresses. Each Begin opens a new sequence.
#ifndef KVRECALL_ENGINE_SESSION_CACHE_H_
#define KVRECALL_ENGINE_SESSION_CACHE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "codec/kv_trace.h"
#include "engine/kv_cache.h"

namespace kvrecall {

absl::StatusOr<std::unique_ptr<KvCache>> NewSessionKvCache(const std::string& spec, const KvTrace* calibration,
                                                           int context_len);

}  // namespace kvrecall

#endif  // KVRECALL_ENGINE_SESSION_CACHE_H_
