// RetrievalSession: one long sequence whose KV lives in kvrecall, decoded
// step by step with exact attention over the local tokens (sinks, the
// recent window, and tokens waiting to fill a block) plus the top-K older
// tokens a retrieval index picks (index/retrieval_index.h).
//
// Append: a layer's new tokens enter the window; tokens leaving it collect
// into blocks of `block_tokens`, one per KV head, which are encoded (codec),
// saved through the KvClient (one batch per offload) under
// SequenceBlockKey(fingerprint, salt, "<sequence_id>/kvh<h>", layer, 1,
// block) and summarized in the layer's per-KV-head index (with
// segment_blocks, indexed a block at a time and stored a code-sorted
// segment at a time; see the option).
// Step: per KV head, the union over its query heads of each head's top-K
// indexed tokens; then either
//   gather: the store returns those rows (decoded by the block's codec), and
//           attention runs here over local ∪ fetched rows, or
//   attend: each store node computes the partial attention over its rows
//           (output + log-sum-exp), merged here with the local part.
// The heads' requests are all sent before any reply is awaited. Both modes
// give the same result (tested). This is the CPU path; the GPU kernels
// of gpu/ implement the same operations.
//
// Thread safety: one session per sequence, one caller at a time.
#ifndef KVRECALL_CLIENT_RETRIEVAL_SESSION_H_
#define KVRECALL_CLIENT_RETRIEVAL_SESSION_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/kv_client.h"
#include "codec/kv_layout.h"
#include "index/retrieval_index.h"

namespace kvrecall {

struct RetrievalSessionOptions {
  std::string sequence_id = "sequence";
  std::string model_id = "model";
  KvLayout layout;                    // layers, query/KV heads, head_dim, RoPE
  std::string codec = "f16";          // offloaded blocks (a stateless post-RoPE codec)
  std::string index = "a2ats:centroids=256,iters=8";
  int block_tokens = 64;
  // 0: blocks hold tokens in time order, offloaded as each block leaves the
  // window. N > 0: code-sorted segments (index/retrieval_index.h,
  // CodeSortedLayout; needs an index with per-token codes): tokens leaving
  // the window are indexed a block at a time and wait here (f32 K and V)
  // until N blocks' worth have gathered; the segment is then stored in order
  // of (code rank, position), codes ranked by their score under the
  // calibration's mean query, so a step's picks are runs of rows instead of
  // rows scattered over every block, found without a pass over the sealed
  // tokens. Same tokens selected as in time order (tested); the waiting
  // tokens are selected like stored ones and attended here. The longer the
  // segment, the longer the runs: one segment per prefill (a batch job's
  // whole context) makes each picked code a single run per KV head, at the
  // price of holding the prefill here until it seals (segments past 65535
  // tokens keep 4-byte row offsets per code instead of 2).
  int segment_blocks = 0;
  // Offloaded blocks carry a checksum per 2^chunk_shift bytes (0: none), so
  // the store verifies only the rows a step reads instead of whole blocks.
  int chunk_shift = 8;
  int sinks = 4, window = 64;
  int64_t topk = 0;                   // tokens per query head, if > 0
  double topk_fraction = 0.03;        // else this fraction of the offloaded tokens
  enum class Fetch { kGather, kAttend };
  Fetch fetch = Fetch::kAttend;
  // Live recall: every `recall_every`-th step (0: never) also computes exact
  // attention over all the layer's tokens (fetching every offloaded row) and
  // records how much of it the selection covered; the samples also go to the
  // store node owning the sequence's first block, for its metrics (the
  // retrieval SLO, Prometheus kvrecall_retrieval_*), unless report_recall is
  // false. A failed report is counted, never fails the step.
  int recall_every = 0;
  bool report_recall = true;
  // Gather mode: after each Step, fetch ahead the rows the next layer's
  // previous step used (decode order: layer + 1, wrapping), so that step
  // fetches only the rows its selection adds.
  bool prefetch = false;
};

struct RetrievalSessionStats {
  int64_t steps = 0, offloaded_tokens = 0, saved_blocks = 0, saved_bytes = 0;
  int64_t fetched_rows = 0;     // (KV head, token) rows asked of the store (gather and attend)
  int64_t bytes_moved = 0;      // payload bytes returned by the store
  // Live recall (the retrieval SLO), over the sampled (step, query head)s:
  int64_t recall_samples = 0;
  double topk_recall = 0;       // mean |S ∩ TopK(p)| / |S|
  double mass_recall = 0;       // mean Σ_{i∈S} p_i
  double output_error = 0;      // mean relative error of the output vs exact attention
  int64_t recall_reports = 0, recall_report_failures = 0;
  int64_t prefetched_rows = 0, prefetch_hits = 0;  // gather mode with prefetch
  int64_t pending_rows = 0;     // segment_blocks > 0: selected rows still waiting here for their segment
  int64_t layout_bytes = 0;     // segment_blocks > 0: the per-segment row offsets (all layers and KV heads)
  // Time spent in steps, by phase (microseconds, summed).
  double select_us = 0, fetch_us = 0, attend_us = 0;
};

class RetrievalSession {
 public:
  // `calibration`: per (layer, KV head) training sample for the index
  // (layer-major); may be empty for methods that need none.
  static absl::StatusOr<std::unique_ptr<RetrievalSession>> Open(KvClient* client, const RetrievalSessionOptions& options,
                                                                const std::vector<TrainingData>& calibration);
  virtual ~RetrievalSession() = default;

  // Appends `tokens` tokens of `layer` (positions continue from the last
  // Append of that layer): k_pre, k_post, v [tokens][kv_heads][head_dim].
  virtual absl::Status Append(int layer, const float* k_pre, const float* k_post, const float* v, int tokens) = 0;
  // Attention output of the query heads q [q_heads][head_dim] (pre- and
  // post-RoPE) over all tokens appended to `layer` so far: out [q_heads][head_dim].
  virtual absl::Status Step(int layer, const float* q_pre, const float* q_post, float* out) = 0;
  // The token positions the last Step of `layer` attended over, per KV head (sorted).
  virtual const std::vector<std::vector<int64_t>>& last_selection(int layer) const = 0;
  virtual int64_t size(int layer) const = 0;
  virtual RetrievalSessionStats stats() const = 0;
};

}  // namespace kvrecall

#endif  // KVRECALL_CLIENT_RETRIEVAL_SESSION_H_
