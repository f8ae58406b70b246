// StoreService: the data-plane request handler over a BlockStore, for any
// transport (common/transport.h). Parses and validates each request
// (store/protocol.h), authenticates its namespace token, and executes it:
// Put receives payload straight into reserved arena space and commits each
// verified block; Get replies from leased, verified blocks in place; Exists,
// Delete and Gather as documented in doc/protocol.md. Malformed requests get
// an error reply (INVALID_ARGUMENT/UNIMPLEMENTED) and are counted; nothing a
// client sends can crash the server or make it store unverified bytes.
//
// Thread safety: thread-safe; exchanges run concurrently.
#ifndef KVRECALL_STORE_SERVICE_H_
#define KVRECALL_STORE_SERVICE_H_

#include <array>
#include <atomic>
#include <memory>
#include <mutex>

#include "common/env.h"
#include "common/histogram.h"
#include "common/transport.h"
#include "store/block_store.h"
#include "store/protocol.h"

namespace kvrecall {

// Live recall reported by retrieval sessions (the retrieval SLO): sample
// counts and sums, and the attention-mass recall's distribution.
struct RecallStats {
  static constexpr std::array<double, 7> kMassBounds = {0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0};
  uint64_t samples = 0;
  double topk_recall_sum = 0, mass_recall_sum = 0, output_error_sum = 0;
  std::array<uint64_t, kMassBounds.size()> mass_counts{};  // per bucket (not cumulative): mass <= bound
};

struct ServiceStats {
  LatencyHistogram::Snapshot put, get, exists, del, gather, attend;
  RecallStats recall;
};

class StoreService final : public RequestHandler {
 public:
  // Reply payloads beyond this are refused (RESOURCE_EXHAUSTED items).
  static constexpr uint64_t kMaxReplyPayload = 1ull << 30;

  StoreService(BlockStore* store, Env* env) : store_(store), env_(env) {}
  std::unique_ptr<Exchange> Begin(absl::Span<const uint8_t> head, uint64_t payload_len) override;
  ServiceStats Stats() const;
  BlockStore* store() const { return store_; }
  // Draining: every new request is answered UNAVAILABLE.
  void SetDraining(bool draining) { draining_ = draining; }
  bool draining() const { return draining_; }

 private:
  friend class StoreExchange;
  LatencyHistogram* HistogramFor(Op op);
  BlockStore* store_;
  Env* env_;
  void RecordRecall(const std::vector<RecallSample>& samples);
  LatencyHistogram put_, get_, exists_, del_, gather_, attend_, recall_latency_;
  mutable std::mutex recall_mu_;
  RecallStats recall_;  // guarded by recall_mu_
  std::atomic<bool> draining_{false};
};

}  // namespace kvrecall

#endif  // KVRECALL_STORE_SERVICE_H_
