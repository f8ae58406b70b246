// StoreStub: typed data-plane calls (store/protocol.h) to one store over a
// ClientTransport. Internal to client/ (engines use client/kv_client.h).
//
// Every block a Get or a compressed Gather returns is verified here
// (block container checksum) before it is reported as present: a corrupted
// reply reads as DATA_LOSS for that item, never as data. Whole-call
// failures (transport errors, error replies) come back as the call's
// status; per-item results as per-item statuses.
//
// Thread safety: thread-safe (the transport is).
#ifndef KVRECALL_CLIENT_STORE_STUB_H_
#define KVRECALL_CLIENT_STORE_STUB_H_

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "codec/block_key.h"
#include "common/transport.h"
#include "store/protocol.h"

namespace kvrecall {

struct GatherRequestItem {
  BlockKey key;
  std::vector<uint32_t> rows;
};

class StoreStub {
 public:
  StoreStub(ClientTransport* transport, std::string token, absl::Duration timeout = absl::Seconds(10))
      : t_(transport), token_(std::move(token)), timeout_(timeout) {}

  absl::StatusOr<std::vector<absl::Status>> Put(absl::Span<const BlockKey> keys, const ConstIov& blocks, bool durable);
  // dst[i] receives block i (its size on success).
  absl::StatusOr<std::vector<absl::StatusOr<size_t>>> Get(absl::Span<const BlockKey> keys, const MutableIov& dst);
  struct ExistsReply {
    uint32_t prefix = 0;
    std::vector<bool> present;
  };
  absl::StatusOr<ExistsReply> Exists(absl::Span<const BlockKey> chain);
  absl::StatusOr<std::vector<absl::Status>> Delete(absl::Span<const BlockKey> keys);
  // Near-data attention (doc/protocol.md, Attend): out [n_queries][head_dim]
  // and lse [n_queries] of the queries over the union of the items' rows.
  struct AttendResult {
    std::vector<float> out, lse;
  };
  absl::StatusOr<AttendResult> Attend(const std::vector<GatherRequestItem>& items, int group, float scale,
                                      absl::Span<const float> queries, int head_dim);
  // Live-recall samples for the server's metrics (1..kMaxRecallSamples).
  absl::Status ReportRecall(const std::vector<RecallSample>& samples);
  // Decoded rows (K then V floats, see BlockStore::GatherRows) per item.
  absl::StatusOr<std::vector<absl::StatusOr<std::vector<float>>>> Gather(const std::vector<GatherRequestItem>& items);

 private:
  uint64_t NextId() { return next_id_.fetch_add(1) + 1; }
  // A request that carries only keys (Exists, Delete), its reply checked.
  absl::StatusOr<Reply> KeysCall(Op op, absl::Span<const BlockKey> keys);
  ClientTransport* t_;
  std::string token_;
  absl::Duration timeout_;
  std::atomic<uint64_t> next_id_{0};
};

}  // namespace kvrecall

#endif  // KVRECALL_CLIENT_STORE_STUB_H_
