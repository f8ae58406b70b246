// kvrecall client library: the one header serving engines include.
//
// A KvClient stores and retrieves immutable KV blocks (block containers,
// codec/container.h) under 128-bit BlockKeys (codec/block_key.h), either in
// an embedded store inside the process (the default: no servers
// configured; host RAM plus an optional SSD directory) or on a set of
// kvrecall-server nodes reached over UCX, placed by weighted rendezvous
// hashing so that every client finds a block on the same node.
//
// Guarantees: a block handed to the caller was verified (container checksum)
// after it arrived; a node that is down, slow or returns bad bytes costs
// misses, never wrong data, and no call waits longer than its deadline
// (Options::timeout per node request). Blocks from another model, codec or
// namespace never match: BlockKeys chain the model fingerprint and the
// namespace salt (ChainBlockKeys(fingerprint, namespace_salt(), tokens, n)).
//
// Results: Save and Delete report a status per key; Load reports the block
// size per key or NOT_FOUND (a miss: absent, evicted, node down, corrupted
// in transit); LookupPrefix returns how many leading keys of a chain are
// present. Errors of the whole call are for misuse (INVALID_ARGUMENT).
//
// Asynchrony: every operation returns a std::future; calls may be issued
// concurrently from any number of threads. Buffers passed to Save and Load
// must stay valid until the future is ready.
//
// Thread safety: thread-safe.
#ifndef KVRECALL_CLIENT_KV_CLIENT_H_
#define KVRECALL_CLIENT_KV_CLIENT_H_

#include <cstdint>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "codec/block_key.h"

namespace kvrecall {

class KvClient {
 public:
  struct Node {
    std::string address;  // "host:port" of a kvrecall-server's data plane
    double weight = 1.0;  // share of the keys it owns
  };

  struct Options {
    // Static member list. Empty (and no etcd): embedded mode.
    std::vector<Node> nodes;
    // Cluster membership from etcd ("host:port" of its gRPC endpoint): the
    // members are the keys under `etcd_prefix` ("<prefix><host:port>", value
    // = weight), followed live; a node that leaves (drain, lease expiry)
    // stops getting requests, one that (re)joins gets them again. If etcd
    // goes away the last known membership stays in force.
    std::string etcd_endpoint;
    std::string etcd_prefix = "/kvrecall/members/";
    // Namespace credentials on the servers (embedded mode makes its own).
    std::string namespace_token;
    std::string namespace_salt;
    // Per-node request deadline; a node that misses it is skipped (its keys
    // read as misses) for `down_backoff`, then tried again.
    absl::Duration timeout = absl::Seconds(2);
    absl::Duration down_backoff = absl::Seconds(1);
    // Copies of each saved block, on the next nodes in rendezvous order;
    // Load and LookupPrefix try them in order.
    int replicas = 1;
    int io_threads = 4;
    // Embedded store.
    uint64_t embedded_host_bytes = 256ull << 20;
    std::string embedded_ssd_path;  // empty: RAM only
    uint64_t embedded_ssd_bytes = 0;
  };

  static absl::StatusOr<std::unique_ptr<KvClient>> Create(const Options& options);
  virtual ~KvClient() = default;

  // The salt to chain into this namespace's BlockKeys.
  virtual std::string namespace_salt() const = 0;
  virtual bool embedded() const = 0;

  // Stores blocks[i] under keys[i] (blocks are block containers).
  virtual std::future<std::vector<absl::Status>> Save(std::vector<BlockKey> keys,
                                                      std::vector<absl::Span<const uint8_t>> blocks) = 0;
  // Leading keys of `chain` present (each on its owner or a replica).
  virtual std::future<absl::StatusOr<int>> LookupPrefix(std::vector<BlockKey> chain) = 0;
  // Copies block i into dst[i]; the size, or NOT_FOUND / OUT_OF_RANGE.
  virtual std::future<std::vector<absl::StatusOr<size_t>>> Load(std::vector<BlockKey> keys,
                                                                std::vector<absl::Span<uint8_t>> dst) = 0;
  virtual std::future<std::vector<absl::Status>> Delete(std::vector<BlockKey> keys) = 0;
  // Token rows of one block each, decoded by the store (K then V floats,
  // [layer_count][kv_heads][rows][head_dim] each).
  struct GatherItem {
    BlockKey key;
    std::vector<uint32_t> rows;
  };
  virtual std::future<std::vector<absl::StatusOr<std::vector<float>>>> Gather(std::vector<GatherItem> items) = 0;

  // Token rows of a long sequence stored in sequence blocks
  // (SequenceBlockKey(fingerprint, namespace_salt(), sequence_id,
  // layer_begin, layer_count, token / block_tokens)): K then V rows in the
  // order asked, each [layer_count][kv_heads][rows][head_dim] f32.
  // NOT_FOUND if any needed block is missing.
  struct SequenceRef {
    Hash128 fingerprint;
    std::string sequence_id;
    int layer_begin = 0, layer_count = 0;
    int block_tokens = 0;
    int kv_heads = 0, head_dim = 0;
  };
  virtual std::future<absl::StatusOr<std::vector<float>>> GatherSequence(SequenceRef sequence,
                                                                        std::vector<int64_t> rows) = 0;

  // Near-data attention: each node holding some of the items computes the
  // exact attention of the queries over its rows (decoded by the block's
  // codec) and returns output + log-sum-exp; the parts are merged here.
  // queries: [layer_count][kv_heads][group][head_dim] f32 (all blocks of one
  // shape); out the same shape, lse [layer_count][kv_heads][group]. NOT_FOUND
  // if some item's block is on no reachable node.
  struct AttendResult {
    std::vector<float> out, lse;
  };
  virtual std::future<absl::StatusOr<AttendResult>> Attend(std::vector<GatherItem> items, int group, float scale,
                                                           std::vector<float> queries, int head_dim) = 0;

  // Live-recall samples of a retrieval session (client/retrieval_session.h),
  // sent to the node that owns `route` for its metrics (Prometheus
  // kvrecall_retrieval_* and the Stats call). Recalls in [0, 1], error >= 0;
  // INVALID_ARGUMENT otherwise.
  struct RecallSample {
    float topk_recall = 0, mass_recall = 0, output_error = 0;
  };
  virtual std::future<absl::Status> ReportRecall(BlockKey route, std::vector<RecallSample> samples) = 0;

  // Embedded mode: the embedded store's metrics in Prometheus text format
  // (the same families a kvrecall-server serves on /metrics); empty when
  // the client talks to servers.
  virtual std::string EmbeddedMetrics() const = 0;

  // Registers a buffer that Save/Load will use, so large transfers need no
  // registration on the way (UCX registers on first use otherwise).
  virtual absl::Status RegisterBuffer(absl::Span<uint8_t> buffer) = 0;

  struct Stats {
    uint64_t saves = 0, loads = 0, hits = 0, misses = 0, node_failures = 0, verify_failures = 0;
    uint64_t membership_changes = 0;
    int nodes = 0;  // current members
  };
  virtual Stats stats() const = 0;
};

}  // namespace kvrecall

#endif  // KVRECALL_CLIENT_KV_CLIENT_H_
