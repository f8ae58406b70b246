// A KvCache that attends only over what a retrieval index selects: per
// (layer, KV head), the sinks, the recent window and the union over the GQA
// group of each query head's top-K tokens (index/retrieval_index.h), with
// exact K/V rows for the selected tokens. This is the quality harness for
// retrieval: `engine:llm perplexity --cache a2ats:topk=0.1` reports the
// Δperplexity of attending over a tenth of the context.
//
// Indexes are trained once, from a calibration trace of other text (never
// the text being scored), and reset for every sequence.
#ifndef KVRECALL_ENGINE_RETRIEVAL_CACHE_H_
#define KVRECALL_ENGINE_RETRIEVAL_CACHE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "codec/kv_trace.h"
#include "engine/kv_cache.h"
#include "index/retrieval_index.h"

namespace kvrecall {

// `calibration` must outlive the first Begin() (training happens there).
absl::StatusOr<std::unique_ptr<KvCache>> NewRetrievalKvCache(std::string index_spec, SelectionConfig selection,
                                                             const KvTrace* calibration, std::string name);

}  // namespace kvrecall

#endif  // KVRECALL_ENGINE_RETRIEVAL_CACHE_H_
